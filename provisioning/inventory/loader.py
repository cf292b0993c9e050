"""Reading an inventory file: TOML in, :func:`~provisioning.inventory.checks.validate`d out."""

from __future__ import annotations

from pathlib import Path

from firmware.config.settings import (
    read_toml,
)
from provisioning.inventory.checks import validate
from provisioning.inventory.schema import LoadedInventory


def load(path: Path | str) -> LoadedInventory:
    """Read and validate an inventory file."""
    p = Path(path).absolute()
    data = read_toml(
        p,
        what="inventory",
        missing_hint="create one with 'anoncam provision init DIR' and pass it with --inventory",
    )
    return validate(data, path=p)
