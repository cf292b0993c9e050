"""The systemd unit: the hardening the issue asks for, and systemd itself accepts every line."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from provisioning import layout, payload


def test_unit_has_the_required_settings() -> None:
    unit = payload.render_unit()
    settings = dict(
        line.split("=", 1) for line in unit.splitlines() if "=" in line and not line.startswith("#")
    )
    assert settings["Type"] == "notify" and settings["Restart"] == "always"
    assert int(settings["WatchdogSec"]) > 0
    assert settings["ProtectSystem"] == "strict" and settings["ReadWritePaths"] == layout.STATE_DIR
    for flag in ("NoNewPrivileges", "PrivateTmp", "ProtectHome"):
        assert settings[flag] == "true", flag
    assert settings["SupplementaryGroups"] == "video"
    assert settings["LoadCredential"] == f"mqtt-password:{layout.PASSWORD_PATH}"
    assert settings["User"] == layout.SERVICE_USER
    assert (
        settings["ExecStart"] == f"{layout.VENV_DIR}/bin/anoncam run --config {layout.CONFIG_PATH}"
    )
    assert "PrivateDevices" not in settings  # it would hide the camera


def test_systemd_accepts_the_unit(tmp_path: Path) -> None:
    """systemd-analyze reports unknown keys and bad values; only the not-yet-installed venv
    may be missing here."""
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze not installed")
    path = tmp_path / layout.SERVICE_NAME
    path.write_text(payload.render_unit())
    proc = subprocess.run(["systemd-analyze", "verify", str(path)], capture_output=True, text=True)
    complaints = [
        line
        for line in (proc.stdout + proc.stderr).splitlines()
        if line.strip() and "is not executable" not in line
    ]
    assert complaints == []
