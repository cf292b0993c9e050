"""Where the MQTT password comes from. Regression: ``sudo anoncam diagnose`` on a correctly
installed camera failed ``mqtt.auth`` (found on the emulated Pi), because root has no systemd
credential and the provisioned config names no ``password_file``; the installed credential the
unit loads is now read directly when no systemd credential is there."""

from __future__ import annotations

from pathlib import Path

from firmware.config.settings import MqttConfig
from firmware.mqtt.connect import CREDENTIAL_NAME, read_password


def _installed(tmp_path: Path, secret: str) -> Path:
    folder = tmp_path / "etc-anoncam-credentials"
    folder.mkdir()
    (folder / CREDENTIAL_NAME).write_text(secret + "\n", encoding="utf-8")
    return folder


def test_installed_credential_is_read_without_a_systemd_credential(tmp_path: Path) -> None:
    installed = _installed(tmp_path, "from-the-card")
    config = MqttConfig(username="store-042.door-1")
    assert read_password(config, environ={}, installed=installed) == "from-the-card"


def test_systemd_credential_wins_and_no_user_means_no_password(tmp_path: Path) -> None:
    installed = _installed(tmp_path, "from-the-card")
    creds = tmp_path / "run-credentials"
    creds.mkdir()
    (creds / CREDENTIAL_NAME).write_text("from-systemd", encoding="utf-8")
    config = MqttConfig(username="store-042.door-1")
    env = {"CREDENTIALS_DIRECTORY": str(creds)}
    assert read_password(config, environ=env, installed=installed) == "from-systemd"
    assert read_password(MqttConfig(), environ={}, installed=installed) is None
    assert read_password(config, environ={}, installed=tmp_path / "nowhere") is None
