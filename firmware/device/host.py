"""The seam through which anoncam sees the machine it runs on: files under a root, and commands.

Nothing reads ``/proc`` or runs ``vcgencmd`` directly: it asks a :class:`Host`, which reads files
relative to a root directory and runs commands through a :class:`CommandRunner`. On a device the
root is ``/`` and the runner is :func:`subprocess_runner`; tests build a Host from a recording of
a real Pi 4, Pi 5 or x86 machine (:mod:`firmware.device.recorded`), so the parsing of
``throttled=0x50005`` or ``NTPSynchronized=no`` is tested against what the tools really print.
Shared by the health figures (:mod:`firmware.runtime.health`) and the diagnostics.
"""

from __future__ import annotations

import glob
import os
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol


class CommandRunner(Protocol):
    """Runs ``argv`` and returns ``(returncode, stdout, stderr)``.

    Raises :class:`FileNotFoundError` when the program does not exist (no ``vcgencmd`` off a Pi,
    no ``systemctl`` without systemd): checks tell "not installed" apart from "failed".
    """

    def __call__(self, argv: Sequence[str], timeout: float) -> tuple[int, str, str]: ...


#: Exit status reported for a command that did not finish in time (as coreutils' ``timeout``).
TIMEOUT_STATUS = 124


def subprocess_runner(argv: Sequence[str], timeout: float) -> tuple[int, str, str]:
    """Run a real command in the C locale: its output is parsed, so it must not be translated."""
    env = dict(os.environ, LC_ALL="C", LANG="C", SYSTEMD_PAGER="", SYSTEMD_COLORS="0")
    try:
        proc = subprocess.run(
            list(argv),
            capture_output=True,
            text=True,
            errors="replace",
            timeout=timeout,
            check=False,
            env=env,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout.decode(errors="replace") if isinstance(exc.stdout, bytes) else ""
        return TIMEOUT_STATUS, out, f"{argv[0]}: timed out after {timeout:g} s"
    except PermissionError as exc:
        return 126, "", f"{argv[0]}: {exc.strerror}"
    return proc.returncode, proc.stdout, proc.stderr


@dataclass(frozen=True)
class CommandResult:
    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def first_error_line(self) -> str:
        """The most telling line of output for a failure message."""
        for text in (self.stderr, self.stdout):
            for line in text.splitlines():
                if line.strip():
                    return line.strip()
        return f"exit status {self.returncode}"


class Host:
    """The machine being diagnosed: files under ``root`` and commands through ``run``.

    Command results are cached for the life of the Host, so the camera and service checks that
    both ask ``systemctl`` see one consistent answer and the device is asked once.
    """

    def __init__(self, root: Path = Path("/"), run: CommandRunner = subprocess_runner) -> None:
        self.root = Path(root)
        self._run = run
        self._cache: dict[tuple[str, ...], CommandResult | None] = {}

    def __repr__(self) -> str:
        return f"Host(root={str(self.root)!r})"

    def path(self, path: str) -> Path:
        """``/proc/uptime`` under this host's root."""
        return self.root / path.lstrip("/")

    def read_text(self, path: str) -> str | None:
        """The file's text, or None when it is missing or unreadable (sysfs files come and go)."""
        try:
            return self.path(path).read_text(encoding="utf-8", errors="replace")
        except OSError:
            return None

    def glob(self, pattern: str) -> list[str]:
        """Absolute paths (as seen on the host) matching ``pattern``, sorted."""
        base = str(self.root).rstrip("/")
        hits = glob.glob(str(self.path(pattern)))
        return sorted("/" + os.path.relpath(h, base or "/").lstrip("/") for h in hits)

    def command(self, *argv: str, timeout: float = 10.0) -> CommandResult | None:
        """Run ``argv``; None when the program is not installed."""
        key = tuple(argv)
        if key not in self._cache:
            try:
                code, out, err = self._run(key, timeout)
            except FileNotFoundError:
                self._cache[key] = None
            else:
                self._cache[key] = CommandResult(key, code, out, err)
        return self._cache[key]

    # -- facts several checks need --------------------------------------------------------------

    @property
    def model(self) -> str | None:
        """The board name from the device tree (``Raspberry Pi 4 Model B Rev 1.4``), if any."""
        text = self.read_text("/proc/device-tree/model")
        if text is None:
            return None
        return text.rstrip("\x00\n ").strip() or None

    @property
    def is_raspberry_pi(self) -> bool:
        model = self.model
        return model is not None and model.startswith("Raspberry Pi")

    @property
    def hardware_class(self) -> str:
        """``pi5``, ``pi4``, ``pi`` (an older or other Pi), ``x86`` or ``other``."""
        model = self.model or ""
        if model.startswith("Raspberry Pi 5") or model.startswith("Raspberry Pi Compute Module 5"):
            return "pi5"
        if model.startswith("Raspberry Pi 4") or model.startswith("Raspberry Pi Compute Module 4"):
            return "pi4"
        if model.startswith("Raspberry Pi"):
            return "pi"
        cpuinfo = self.read_text("/proc/cpuinfo") or ""
        # Only x86 kernels print vendor_id (GenuineIntel, AuthenticAMD) in /proc/cpuinfo.
        if any(line.startswith("vendor_id") for line in cpuinfo.splitlines()):
            return "x86"
        return "other"


def parse_key_values(text: str) -> dict[str, str]:
    """``Key=value`` lines (``timedatectl show``, ``systemctl show``) into a dict."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip():
            out[key.strip()] = value.strip()
    return out
