"""A Host that answers from a recording of a real machine, for tests and for replaying a report.

A recording is a directory::

    pi4/
      README.md            where and how it was recorded
      root/                files as found on the machine (/proc/device-tree/model, /sys/...)
      commands.toml        what each command printed
      scenarios/NAME.toml  the same commands in another state (under-voltage, unsynchronized, ...)

``commands.toml`` holds ``[[command]]`` entries with ``argv``, ``returncode``, ``stdout`` and
``stderr``. A scenario's entries replace the base entries with the same ``argv``; an entry with
``absent = true`` removes the command. A command that is not in the recording behaves as a
program that is not installed (:class:`FileNotFoundError`), which is what a Debian x86 box does
for ``vcgencmd``.
"""

from __future__ import annotations

import errno
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from firmware.device.host import Host


class RecordedRunner:
    """A :class:`~firmware.diagnostics.base.CommandRunner` that replays recorded outputs."""

    def __init__(self, answers: dict[tuple[str, ...], tuple[int, str, str]]) -> None:
        self.answers = dict(answers)
        self.asked: list[tuple[str, ...]] = []

    def __call__(self, argv: Sequence[str], timeout: float) -> tuple[int, str, str]:
        key = tuple(argv)
        self.asked.append(key)
        if key not in self.answers:
            raise FileNotFoundError(errno.ENOENT, "No such file or directory", key[0])
        return self.answers[key]


def _entries(path: Path) -> list[dict[str, Any]]:
    with path.open("rb") as f:
        data = tomllib.load(f)
    entries: list[dict[str, Any]] = data.get("command", [])
    for entry in entries:
        if not isinstance(entry.get("argv"), list) or not entry["argv"]:
            raise ValueError(f"{path}: every [[command]] needs a non-empty argv list")
    return entries


Answers = dict[tuple[str, ...], tuple[int, str, str]]


def load_answers(directory: Path, scenario: str | None = None) -> Answers:
    answers: Answers = {}
    files = [directory / "commands.toml"]
    if scenario is not None:
        files.append(directory / "scenarios" / f"{scenario}.toml")
    for path in files:
        for entry in _entries(path):
            key = tuple(str(a) for a in entry["argv"])
            if entry.get("absent", False):
                answers.pop(key, None)
                continue
            answers[key] = (
                int(entry.get("returncode", 0)),
                str(entry.get("stdout", "")),
                str(entry.get("stderr", "")),
            )
    return answers


def load_host(directory: Path, scenario: str | None = None, *, root: Path | None = None) -> Host:
    """A Host whose files come from ``directory/root`` (or ``root``) and whose commands replay
    ``commands.toml`` plus the named scenario."""
    runner = RecordedRunner(load_answers(Path(directory), scenario))
    return Host(root=root if root is not None else Path(directory) / "root", run=runner)
