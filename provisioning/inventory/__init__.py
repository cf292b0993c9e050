"""The fleet inventory: one TOML file describing the broker, the sites and every camera.

Rooms: :mod:`~provisioning.inventory.schema` (the typed model, no I/O),
:mod:`~provisioning.inventory.checks` (every problem at once, including each camera's own config
validation), :mod:`~provisioning.inventory.loader` (reading the file). The package exposes the
two calls installers' commands need.
"""

from provisioning.inventory.loader import load
from provisioning.inventory.schema import PLACEHOLDER_KEY_COMMENT

__all__ = ["PLACEHOLDER_KEY_COMMENT", "load"]
