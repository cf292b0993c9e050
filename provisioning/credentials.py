"""The fleet's secret store: generated MQTT passwords (and client keys), one file each, 0600.

Layout under ``fleet.secrets_dir`` (0700)::

    devices/{site}/{device}/mqtt-password
    devices/{site}/{device}/mqtt-client.key, mqtt-client.crt   (with client certificates)
    subscribers/{username}/mqtt-password
    ca/fleet-ca.key, fleet-ca.crt                               (with client certificates)

A secret is created once and then kept: every command that needs one reuses the file, so
re-running ``provision broker`` or ``provision image`` never changes a camera's password. Only an
explicit rotation replaces it. A secret file found group- or world-readable is tightened to 0600.
"""

from __future__ import annotations

import logging
import os
import secrets
import stat
from dataclasses import dataclass
from pathlib import Path

from firmware.errors import OutputError
from firmware.fsutil import write_atomic

logger = logging.getLogger(__name__)

#: 32 URL-safe characters, 192 random bits: safe with Mosquitto's low PBKDF2 iteration count.
PASSWORD_BYTES = 24


def ensure_private_dir(path: Path) -> None:
    """Create ``path`` (and parents) with mode 0700; tighten it if it exists."""
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        if stat.S_IMODE(path.stat().st_mode) & 0o077:
            os.chmod(path, 0o700)
    except OSError as exc:
        raise OutputError(
            f"{path}: cannot create the secrets folder ({exc.strerror})",
            hint="check the path and its permissions",
        ) from None


def write_private(path: Path, data: bytes) -> None:
    """Atomically write ``data`` to ``path`` with mode 0600 (never visible with wider modes)."""
    ensure_private_dir(path.parent)
    write_atomic(path, data, mode=0o600)


def read_private(path: Path) -> bytes:
    """Read a secret, tightening its mode to 0600 first if anyone else could read it."""
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        logger.warning("%s was readable by others (mode %o); set it to 0600", path, mode)
        os.chmod(path, 0o600)
    return path.read_bytes()


@dataclass(frozen=True)
class Secret:
    value: str
    path: Path
    created: bool  # new this run (first use or rotation)


class SecretStore:
    def __init__(self, root: Path) -> None:
        self.root = root

    def device_dir(self, site: str, device: str) -> Path:
        return self.root / "devices" / site / device

    def subscriber_dir(self, username: str) -> Path:
        return self.root / "subscribers" / username

    def ca_dir(self) -> Path:
        return self.root / "ca"

    def private_folder(self, folder: Path) -> Path:
        """Create ``folder`` and every folder from the store's root down to it with mode 0700."""
        ensure_private_dir(self.root)
        current = self.root
        for part in folder.relative_to(self.root).parts:
            current = current / part
            ensure_private_dir(current)
        return folder

    def password(self, folder: Path, *, rotate: bool = False) -> Secret:
        """The MQTT password in ``folder``: created on first use, replaced only if ``rotate``."""
        path = folder / "mqtt-password"
        if path.is_file() and not rotate:
            value = read_private(path).decode("utf-8").strip()
            if value:
                return Secret(value, path, created=False)
        value = secrets.token_urlsafe(PASSWORD_BYTES)
        self.private_folder(folder)
        write_private(path, (value + "\n").encode())
        logger.info("%s %s", "rotated" if rotate else "created", path)
        return Secret(value, path, created=True)

    def existing_password(self, folder: Path) -> str | None:
        path = folder / "mqtt-password"
        if not path.is_file():
            return None
        return read_private(path).decode("utf-8").strip() or None
