"""An int8 copy of the face model: static quantization, QDQ format, per-channel weights.

Run on a development machine (it needs the ``onnx`` package and scikit-image or a folder of
images), never on the device; the device only loads the result with onnxruntime. The int8 file
is written next to the fp32 model as ``centerface-int8.onnx``. The manifest's SHA-256 is the fp32
file's, so the detector loads the int8 file with ``CenterFace(path, check_hash=False)``, which
still checks that it opens and has CenterFace's input and output names.

Steps and why:

1. The fp32 model is converted to opset 13: per-channel ``DequantizeLinear`` needs its ``axis``
   attribute, which opset 11 (the shipped model's) does not have; onnxruntime then refuses the
   quantized graph.
2. ``quant_pre_process`` folds the three BatchNormalization nodes into the ConvTranspose before
   them, so they are quantized as one operator instead of two. Its symbolic shape inference is
   skipped (it needs sympy): ONNX's own shape inference is enough for this all-convolution graph.
3. ``quantize_static``: activations uint8, weights int8 per output channel (U8S8, onnxruntime's
   fast path on x86 with VNNI; on x86 *without* VNNI, U8S8 can saturate and ``reduce_range``
   would be needed). MinMax calibration: the percentile and entropy calibrators stack activations
   into one array and so need every calibration input to have one size, while the detector runs
   at two (full 640x480 and 320x256); MinMax keeps the widest range seen, which favours recall
   of the rare strong activation over precision of the common weak one.
4. The first layer is rewritten to take uint8 BGR pixels packed 2x2
   (:mod:`firmware.models.packed_input`): the same outputs, 6-8 % less time a frame.

Calibration images (the default, documented choice): none of the pictures the tests use.
The tests use scikit-image's ``astronaut.png`` and ``camera.png`` (the face photos), its
face-free set (coffee, rocket, brick, grass, gravel, moon, coins, page, text, hubble, chelsea)
and synthetic scenes on a gravel floor. Calibration uses scikit-image's *other* pictures as
backgrounds (retina, horse, both motorcycles, immunohistochemistry, cells, colour wheel, clock,
logo, phantom, chessboard) with 0-3 faces from ``lfw_subset.npy`` pasted on each at the sizes a
door camera sees at 640x480 (40-110 px tall), tinted like the synthetic scene's skin tones.
Caveat: the 100 LFW faces are also the pool the synthetic scenes draw identities from; only
activation ranges are estimated from them (no weight is trained), and the astronaut and the
cameraman, which the tests and the benchmark clip use, are never in the calibration set.
Each image is fed at both detection sizes, padded to a multiple of 32 exactly as the detector
does, so the zero padding's activations are in range too. ``--calibration-dir`` replaces the
set with your own frames (a few dozen stills from the real camera calibrate best).
"""

from __future__ import annotations

import importlib.util
import logging
import math
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from firmware.errors import InputError, ModelError
from firmware.frames import Image
from firmware.fsutil import sha256_file, write_atomic
from firmware.media.image import IMAGE_SUFFIXES
from firmware.models.manifest import default_model_path
from firmware.models.verify import (
    check_signature,
    open_session,
    sidecar_path,
    verify,
    write_sidecar_hash,
)

logger = logging.getLogger(__name__)

INT8_FILE = "centerface-int8.onnx"
OPSET = 13
CALIBRATION_SIZES: tuple[tuple[int, int], ...] = ((640, 480), (320, 256))
"""Each calibration image is fed fitted into each of these (the full and the fast detect size)."""

BACKGROUNDS: tuple[str, ...] = (
    "retina.jpg",
    "horse.png",
    "motorcycle_left.png",
    "motorcycle_right.png",
    "ihc.png",
    "cell.png",
    "color.png",
    "clock_motion.png",
    "logo.png",
    "phantom.png",
    "chessboard_RGB.png",
)
"""scikit-image pictures no test uses (see the module docstring)."""

_FRAME = (640, 480)
_FACE_PX = (40.0, 110.0)
_TINTS = ((0.80, 0.92, 1.06), (0.70, 0.82, 0.98), (0.86, 0.93, 1.02), (0.62, 0.74, 0.90), (1, 1, 1))
_DEV_HINT = "run it on a development machine: pip install 'anoncam[dev]'"


@dataclass(frozen=True, slots=True)
class QuantizedModel:
    path: Path
    sha256: str
    size: int
    source: Path
    calibration_inputs: int
    seconds: float


def default_int8_path() -> Path:
    """Where the int8 model goes by default: next to the fetched fp32 model."""
    return default_model_path().parent / INT8_FILE


def stale_int8(path: Path | None = None) -> Path | None:
    """``path`` (default: :func:`default_int8_path`) when it should be made (again): missing,
    without its sidecar hash, unreadable, or written before the packed input layout. None when
    it is current."""
    from firmware.models.packing import is_packed

    target = path or default_int8_path()
    if not target.is_file() or not sidecar_path(target).is_file():
        return target
    try:
        first = open_session(target).get_inputs()[0]
    except ModelError:  # unreadable: make it again
        return target
    return None if is_packed(first.type, list(first.shape)) else target


# -- calibration images -------------------------------------------------------------------------
def _skimage_data() -> Path:
    spec = importlib.util.find_spec("skimage")
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(
            "the built-in calibration set needs scikit-image, which is not installed",
            hint=f"{_DEV_HINT}, or pass --calibration-dir with your own JPEG/PNG frames",
        )
    return Path(next(iter(spec.submodule_search_locations))) / "data"


def _cover(image: Image, width: int, height: int, rng: np.random.Generator) -> Image:
    """Scale ``image`` to cover ``width`` x ``height`` (zoomed 1-1.4x) and crop at random."""
    from firmware.media.resize import resize_bgr

    h, w = image.shape[:2]
    s = max(width / w, height / h) * rng.uniform(1.0, 1.4)
    rw, rh = max(width, math.ceil(w * s)), max(height, math.ceil(h * s))
    big = resize_bgr(image, rw, rh)
    x = int(rng.integers(0, rw - width + 1))
    y = int(rng.integers(0, rh - height + 1))
    return np.ascontiguousarray(big[y : y + height, x : x + width])


def _paste_face(canvas: Image, face: NDArray[np.uint8], rng: np.random.Generator) -> None:
    """Paste a grey LFW face, tinted, as an ellipse of a realistic size at a random place."""
    from firmware.media.resize import resize_bgr

    h, w = canvas.shape[:2]
    fh = int(rng.uniform(*_FACE_PX))
    fw = max(8, round(fh * 0.8))
    tint = np.array(_TINTS[int(rng.integers(len(_TINTS)))], np.float32)
    grey = np.repeat(face[:, :, None], 3, axis=2)
    scaled = resize_bgr(grey, fw, fh).astype(np.float32) * tint * rng.uniform(0.7, 1.15)
    x = int(rng.integers(0, w - fw))
    y = int(rng.integers(0, h - fh))
    yy, xx = np.ogrid[:fh, :fw]
    inside = ((xx + 0.5 - fw / 2) / (fw / 2)) ** 2 + ((yy + 0.5 - fh / 2) / (fh / 2)) ** 2 <= 1.0
    np.copyto(
        canvas[y : y + fh, x : x + fw],
        np.clip(scaled, 0, 255).astype(np.uint8),
        where=inside[:, :, None],
    )


def builtin_calibration_images(count: int = 24, *, seed: int = 0) -> list[Image]:
    """``count`` 640x480 BGR pictures: untested scikit-image backgrounds with LFW faces on them.

    Deterministic for a given ``count`` and ``seed``; about a quarter have no face, as most
    frames of a door camera have none.
    """
    from firmware.media.image import read_image

    if count < 1:
        raise ValueError(f"count must be at least 1, got {count}")
    data = _skimage_data()
    lfw_path = data / "lfw_subset.npy"
    if not lfw_path.is_file():
        raise ModelError(
            f"{lfw_path}: missing from the installed scikit-image",
            hint="reinstall it: pip install --force-reinstall scikit-image",
        )
    # The file holds 100 faces, then 100 non-faces; only the faces are pasted.
    faces = np.clip(np.load(lfw_path, allow_pickle=False)[:100] * 255.0 + 0.5, 0, 255)
    faces = faces.astype(np.uint8)
    backgrounds = [read_image(data / name) for name in BACKGROUNDS]
    rng = np.random.default_rng(seed)
    out: list[Image] = []
    for i in range(count):
        canvas = _cover(backgrounds[i % len(backgrounds)], *_FRAME, rng)
        for _ in range(int(rng.choice(4, p=[0.25, 0.35, 0.25, 0.15]))):
            _paste_face(canvas, faces[int(rng.integers(len(faces)))], rng)
        out.append(canvas)
    return out


def folder_calibration_images(folder: Path, limit: int = 64) -> list[Image]:
    """Up to ``limit`` JPEG/PNG pictures from ``folder`` (sorted by name, evenly spread)."""
    from firmware.media.image import read_image

    if not folder.is_dir():
        raise InputError(f"{folder}: not a directory", hint="pass a folder of JPEG or PNG frames")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise InputError(
            f"{folder}: no JPEG or PNG images in it",
            hint="put a few dozen camera stills (.jpg/.png) in the folder",
        )
    if len(files) > limit:
        picks = np.linspace(0, len(files) - 1, limit).round().astype(int)
        files = [files[i] for i in picks]
    return [read_image(p) for p in files]


def to_blob(image: Image, fit: tuple[int, int], multiple: int = 32) -> NDArray[np.float32]:
    """The detector's input for ``image`` fitted into ``fit``: RGB NCHW float, zero-padded to a
    multiple of 32 (the same preparation as :class:`firmware.detect.centerface.CenterFace`)."""
    from firmware.media.resize import resize_bgr_to_rgb

    h, w = image.shape[:2]
    s = min(fit[0] / w, fit[1] / h, 1.0)
    rw, rh = max(1, round(w * s)), max(1, round(h * s))
    rgb = resize_bgr_to_rgb(image, rw, rh) if (rw, rh) != (w, h) else image[:, :, ::-1]
    ph, pw = math.ceil(rh / multiple) * multiple, math.ceil(rw / multiple) * multiple
    blob = np.zeros((1, 3, ph, pw), np.float32)
    blob[0, :, :rh, :rw] = rgb.transpose(2, 0, 1)
    return blob


# -- quantization -------------------------------------------------------------------------------
def _imports() -> tuple[Any, Any, Any]:
    try:
        import onnx
        import onnxruntime
        from onnxruntime import quantization
    except ImportError as exc:
        raise ModelError(
            f"quantizing needs the 'onnx' and 'onnxruntime' packages ({exc})", hint=_DEV_HINT
        ) from None
    return onnx, onnxruntime, quantization


def quantize(
    output: Path | None = None,
    *,
    source: Path | None = None,
    images: Sequence[Image] | None = None,
    sizes: Sequence[tuple[int, int]] = CALIBRATION_SIZES,
    packed: bool = True,
) -> QuantizedModel:
    """Write an int8 QDQ copy of the fp32 model to ``output`` (default: next to it).

    ``source`` defaults to the fetched model (then its manifest hash is checked); ``images``
    defaults to :func:`builtin_calibration_images`. ``packed`` (the default) makes the model
    take uint8 BGR pixels packed 2x2 (:mod:`firmware.models.packed_input`, the same outputs,
    faster); ``packed=False`` keeps the fp32 model's float RGB input. The file is written
    atomically.
    """
    start = time.perf_counter()
    onnx, ort, q = _imports()
    src = verify(source, check_hash=source is None)
    target = Path(output) if output is not None else default_int8_path()
    if target.resolve() == src.path.resolve():
        raise InputError(f"{target}: would overwrite the fp32 model", hint="choose another -o FILE")
    calibration = list(images) if images is not None else builtin_calibration_images()
    if not calibration:
        raise InputError("no calibration images", hint="pass at least one image")
    blobs = [to_blob(img, fit) for img in calibration for fit in sizes]
    name = src.spec.input

    from onnxruntime.quantization import CalibrationDataReader

    class _Reader(CalibrationDataReader):  # type: ignore[misc]
        def __init__(self) -> None:
            self._it: Iterator[NDArray[np.float32]] = iter(blobs)

        def get_next(self) -> dict[str, NDArray[np.float32]] | None:
            blob = next(self._it, None)
            return None if blob is None else {name: blob}

    # The pre-processing sessions print a warning per unused BatchNorm counter otherwise.
    ort.set_default_logger_severity(3)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ModelError(
            f"{target.parent}: cannot create the folder ({exc})", hint="pass a writable -o FILE"
        ) from None
    with tempfile.TemporaryDirectory(prefix="anoncam-quantize-") as tmp:
        opset13 = Path(tmp) / "opset13.onnx"
        prepared = Path(tmp) / "prepared.onnx"
        quantized = Path(tmp) / "int8.onnx"
        model = onnx.version_converter.convert_version(onnx.load(str(src.path)), OPSET)
        onnx.save(model, str(opset13))
        q.quant_pre_process(str(opset13), str(prepared), skip_symbolic_shape=True)
        logger.info(
            "calibrating on %d inputs (%d images x %d sizes)",
            len(blobs),
            len(calibration),
            len(sizes),
        )
        q.quantize_static(
            str(prepared),
            str(quantized),
            _Reader(),
            quant_format=q.QuantFormat.QDQ,
            per_channel=True,
            activation_type=q.QuantType.QUInt8,
            weight_type=q.QuantType.QInt8,
            calibrate_method=q.CalibrationMethod.MinMax,
        )
        if packed:
            from firmware.models.packed_input import pack_input

            graph = onnx.load(str(quantized))
            pack_input(graph)
            onnx.checker.check_model(graph)
            onnx.save(graph, str(quantized))
        check_signature(quantized, src.spec)
        write_atomic(target, quantized.read_bytes(), mode=0o644)
    digest = sha256_file(target)
    # The manifest pins the fp32 file; a derived model carries its own hash next to it, so
    # `--model` can still refuse a corrupted or swapped copy.
    write_sidecar_hash(target, digest)
    seconds = time.perf_counter() - start
    logger.info(
        "wrote %s (%d bytes, sha256 %s) in %.1f s", target, target.stat().st_size, digest, seconds
    )
    return QuantizedModel(target, digest, target.stat().st_size, src.path, len(blobs), seconds)
