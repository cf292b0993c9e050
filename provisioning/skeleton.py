"""``provision init DIR``: a commented inventory skeleton that validates as written."""

from __future__ import annotations

import base64
from importlib import resources
from pathlib import Path

from firmware.errors import OutputError, UsageError
from firmware.fsutil import write_atomic
from provisioning.inventory.schema import PLACEHOLDER_KEY_COMMENT

INVENTORY_NAME = "inventory.toml"


def placeholder_key() -> str:
    """A well-formed all-zero ed25519 public key: it validates, but nobody can log in with it."""
    blob = b"\x00\x00\x00\x0bssh-ed25519\x00\x00\x00\x20" + bytes(32)
    return base64.b64encode(blob).decode()


def skeleton_text() -> str:
    text = resources.files("provisioning").joinpath("templates/inventory.toml").read_text("utf-8")
    return text.replace("@@PLACEHOLDER_KEY@@", placeholder_key()).replace(
        "@@PLACEHOLDER_COMMENT@@", PLACEHOLDER_KEY_COMMENT
    )


def is_placeholder(key: str) -> bool:
    parts = key.split()
    return len(parts) >= 2 and parts[1] == placeholder_key()


def write_skeleton(directory: Path) -> Path:
    target = directory / INVENTORY_NAME
    if target.exists():
        raise UsageError(
            f"{target} already exists; not overwriting it",
            hint="edit it, or pass an empty folder to 'provision init'",
        )
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(
            f"{directory}: cannot create ({exc.strerror})", hint="pick a writable folder"
        ) from None
    write_atomic(target, skeleton_text().encode(), mode=0o644)
    return target
