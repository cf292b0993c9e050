"""The shell scripts users run (the README's commands, CI's entry, field-tech wrappers) pass
shellcheck: a quoting slip there breaks a fresh machine's set-up, not just a test."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = [ROOT / ".ci" / "run"] + [
    p
    for p in sorted((ROOT / "scripts").iterdir())
    if p.is_file() and p.read_bytes().startswith(b"#!/usr/bin/env bash")
]
# Helpers of scripts (scripts/NAME.d/): sourced libraries and scripts run by them.
HELPERS = sorted((ROOT / "scripts").glob("*.d/*.sh"))


def test_scripts_are_executable_and_pass_shellcheck() -> None:
    assert len(SCRIPTS) >= 6
    for script in SCRIPTS:
        assert script.stat().st_mode & 0o111, f"{script} is not executable"
    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck not installed (scripts/setup installs it)")
    proc = subprocess.run(
        ["shellcheck", "-x", *map(str, SCRIPTS + HELPERS)],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stdout
