"""Which checks exist, running a selection of them, and the facts about the host.

A check family that crashes (a bug, or the machine answering in a way nobody foresaw) becomes a
FAIL line naming the exception: a diagnosis must report every other family rather than die.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

from firmware import __version__
from firmware.config import settings as config_module
from firmware.config.settings import Config
from firmware.device.host import Host
from firmware.diagnostics import camera, clock, model, mqtt, power, storage, systemd
from firmware.diagnostics.base import Check, Context, Status, fail
from firmware.errors import UsageError

logger = logging.getLogger(__name__)

#: Where a provisioned device keeps its config (provisioning.layout.CONFIG_PATH).
DEFAULT_CONFIG = Path("/etc/anoncam/config.toml")

#: Families in report order: what the device sees, what it runs, how it talks, then the machine.
FAMILIES: dict[str, ModuleType] = {
    "camera": camera,
    "model": model,
    "mqtt": mqtt,
    "clock": clock,
    "power": power,
    "storage": storage,
    "service": systemd,
}


def check_names() -> list[str]:
    """Every family and every ``family.item`` name, for ``--only`` and its help."""
    names: list[str] = []
    for family, module in FAMILIES.items():
        names.append(family)
        names.extend(module.NAMES)
    return names


def parse_only(text: str | None) -> set[str] | None:
    """``mqtt,power.throttling`` -> a set of names; None for all. Raises UsageError on a typo."""
    if text is None:
        return None
    wanted = {part.strip() for part in text.split(",") if part.strip()}
    known = set(check_names())
    unknown = sorted(wanted - known)
    if unknown or not wanted:
        raise UsageError(
            f"--only: unknown check(s) {', '.join(unknown) or '(none given)'}",
            hint=f"choose from: {', '.join(FAMILIES)} or one of their items "
            f"(e.g. {', '.join(power.NAMES)})",
        )
    return wanted


@dataclass(frozen=True)
class ConfigChoice:
    """The config a diagnosis uses and where it came from (``path`` None: built-in defaults)."""

    config: Config
    path: Path | None


def resolve_config(explicit: Path | None, default: Path = DEFAULT_CONFIG) -> ConfigChoice:
    """``--config FILE`` if given (ConfigError if missing or invalid), else the device's config
    if it exists, else the defaults."""
    if explicit is not None:
        return ConfigChoice(config_module.load(explicit), Path(explicit))
    if default.is_file():
        return ConfigChoice(config_module.load(default), default)
    return ConfigChoice(Config.model_validate({}), None)


def run_checks(ctx: Context, only: set[str] | None = None) -> list[Check]:
    """Run the selected families (all by default) and return their checks in report order."""
    results: list[Check] = []
    ctx = replace(ctx, only=None if only is None else frozenset(only))
    for family, module in FAMILIES.items():
        items = set(module.NAMES)
        if only is not None and family not in only and not (items & only):
            continue
        run: Callable[[Context], list[Check]] = module.run
        t0 = time.monotonic()
        try:
            checks = run(ctx)
        except Exception as exc:  # the diagnosis goes on: report the crash as this family's result
            logger.exception("check family %s crashed", family)
            checks = [
                fail(
                    family,
                    f"the {family} check crashed: {type(exc).__name__}: {exc}",
                    "report this with 'anoncam support-bundle' output",
                )
            ]
        logger.debug("%s checks took %.2f s", family, time.monotonic() - t0)
        if only is not None and family not in only:
            checks = [c for c in checks if c.name in only or c.name == family]
        results.extend(checks)
    return results


def host_facts(host: Host) -> dict[str, Any]:
    """Identity of the machine, read through the host seam (so recordings can answer too)."""
    os_release: dict[str, str] = {}
    for line in (host.read_text("/etc/os-release") or "").splitlines():
        key, sep, value = line.partition("=")
        if sep:
            os_release[key.strip()] = value.strip().strip('"')
    uptime_text = (host.read_text("/proc/uptime") or "").split()
    try:
        uptime: float | None = float(uptime_text[0])
    except (IndexError, ValueError):
        uptime = None
    return {
        "hostname": (host.read_text("/proc/sys/kernel/hostname") or "").strip() or None,
        "model": host.model,
        "hardware": host.hardware_class,
        "os": os_release.get("PRETTY_NAME"),
        "kernel": (host.read_text("/proc/sys/kernel/osrelease") or "").strip() or None,
        "uptime_s": uptime,
    }


@dataclass(frozen=True)
class Report:
    """A finished diagnosis."""

    checks: list[Check]
    host: dict[str, Any]
    generated: str
    config_path: Path | None
    version: str = __version__

    @property
    def failed(self) -> bool:
        return any(c.status == Status.FAIL for c in self.checks)

    def counts(self) -> dict[str, int]:
        return {str(s): sum(1 for c in self.checks if c.status == s) for s in Status}

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": "anoncam/diagnose/1",
            "version": self.version,
            "generated": self.generated,
            "host": self.host,
            "config": {
                "path": None if self.config_path is None else str(self.config_path),
                "found": self.config_path is not None,
            },
            "summary": self.counts(),
            "checks": [c.to_dict() for c in self.checks],
        }


def diagnose(ctx: Context, only: set[str] | None = None) -> Report:
    """Run the checks and wrap them with the host facts and the time."""
    generated = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    checks = run_checks(ctx, only)
    return Report(
        checks=checks, host=host_facts(ctx.host), generated=generated, config_path=ctx.config_path
    )


def exit_code(checks: Sequence[Check]) -> int:
    """0 when nothing FAILs, 1 otherwise."""
    return 1 if any(c.status == Status.FAIL for c in checks) else 0
