"""The check result type and the context a check sees (config, and the host through
:class:`firmware.device.host.Host`).

Checks never open ``/proc`` or run ``vcgencmd`` directly: they ask a :class:`Host`, which reads
files relative to a root directory and runs commands through a :class:`CommandRunner`. On a
device the root is ``/`` and the runner is :func:`subprocess_runner`; tests build a Host from a
recording of a real Pi 4, Pi 5 or x86 machine (:mod:`firmware.device.recorded`), so the
parsing of ``throttled=0x50005`` or ``NTPSynchronized=no`` is tested against what the tools
really print.

What does not go through the seam, on purpose: the network (MQTT checks talk to the real broker),
the model (a real inference), the state directory (real ``statvfs`` and a real temp file) and the
outbox database (real SQLite, opened read-only). Those are the things a field tech wants tested
for real.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from firmware.config.settings import Config
from firmware.device.host import Host


class Status(enum.StrEnum):
    """OK: fine. WARN: works but needs attention. FAIL: broken, diagnose exits 1.
    SKIP: not applicable here or not tried (the detail says why)."""

    OK = "OK"
    WARN = "WARN"
    FAIL = "FAIL"
    SKIP = "SKIP"


@dataclass(frozen=True)
class Check:
    """One line of the diagnosis.

    ``name`` is ``family.item`` (``power.throttling``); ``detail`` is one line of what was found;
    ``hint`` is the fix (empty when OK); ``figures`` holds the measured values for machines
    (JSON-able: numbers, strings, booleans, None, lists and dicts of those).
    """

    name: str
    status: Status
    detail: str
    hint: str = ""
    figures: dict[str, Any] = field(default_factory=dict)

    @property
    def family(self) -> str:
        return self.name.split(".", 1)[0]

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "status": str(self.status),
            "detail": self.detail,
            "hint": self.hint,
            "figures": dict(self.figures),
        }


def ok(name: str, detail: str, **figures: Any) -> Check:
    return Check(name, Status.OK, detail, "", figures)


def warn(name: str, detail: str, hint: str, **figures: Any) -> Check:
    return Check(name, Status.WARN, detail, hint, figures)


def fail(name: str, detail: str, hint: str, **figures: Any) -> Check:
    return Check(name, Status.FAIL, detail, hint, figures)


def skip(name: str, detail: str, hint: str = "", **figures: Any) -> Check:
    return Check(name, Status.SKIP, detail, hint, figures)


@dataclass(frozen=True)
class Context:
    """Everything a check may look at.

    ``config_path`` is None when no config file was found and defaults are in use.
    ``timeout_s`` bounds each network step (DNS, TCP, TLS, MQTT connect, round trip).
    ``only`` is ``--only``'s selection (None: everything), so a family can leave out a slow item
    nobody asked for.
    """

    config: Config
    host: Host
    config_path: Path | None = None
    timeout_s: float = 5.0
    only: frozenset[str] | None = None

    def wants(self, name: str) -> bool:
        """Whether check ``name`` (``family.item``) was selected."""
        return self.only is None or name in self.only or name.split(".")[0] in self.only
