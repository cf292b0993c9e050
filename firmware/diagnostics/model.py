"""Model: the face model is present and is the one in the manifest; one inference is timed.

The timing is compared with what this class of hardware should do at the configured detection
size. The reference figures are per model and hardware class at 640x480, scaled by the padded
pixel count (CenterFace's cost is close to linear in pixels). A run more than
:data:`SLOW_FACTOR` times slower than the reference WARNs: the CPU is throttled, busy with
something else, or the detection size is larger than the installer meant.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np

from firmware.diagnostics.base import Check, Context, fail, ok, skip, warn
from firmware.errors import AnoncamError, ModelError

NAMES = ("model.file", "model.inference")

#: Reference inference time in ms at 640x480 (0.31 MP), by model and hardware class, with the
#: default 2 onnxruntime threads. x86: measured on a 2-core x86-64 VM (onnxruntime 1.32, the
#: optimized CenterFace: 42 ms). Pi 5 and Pi 4: estimates from the relative speed of their cores
#: (Cortex-A76 at 2.4 GHz, Cortex-A72 at 1.8 GHz) until the Pi benchmarks
#: (tests/benchmarks) replace them; the 2x tolerance absorbs the uncertainty.
REFERENCE_MS: dict[str, dict[str, float]] = {
    "centerface": {"x86": 45.0, "pi5": 110.0, "pi4": 300.0},
}
REFERENCE_PIXELS = 640 * 480
SLOW_FACTOR = 2.0
TIMED_RUNS = 3


def detect_size(ctx: Context) -> tuple[int, int]:
    """The size the detector sees: the configured detection copy, else the camera's detection
    (lores) stream, else the source's frame size."""
    det = ctx.config.detector
    if det.detect_width is not None and det.detect_height is not None:
        return det.detect_width, det.detect_height
    src = ctx.config.source
    if src.kind == "picamera2":
        return src.lores_width, src.lores_height
    return src.width, src.height


def expected_ms(hardware: str, size: tuple[int, int], model: str = "centerface") -> float | None:
    """The reference time for ``size`` on ``hardware``, or None without a reference."""
    reference = REFERENCE_MS.get(model, {}).get(hardware)
    if reference is None:
        return None
    w, h = size
    padded = math.ceil(w / 32) * 32 * math.ceil(h / 32) * 32
    return reference * padded / REFERENCE_PIXELS


def _model_path(ctx: Context) -> Path:
    from firmware.models.manifest import default_model_path

    return Path(ctx.config.detector.model) if ctx.config.detector.model else default_model_path()


def check_file(ctx: Context) -> Check:
    name = "model.file"
    from firmware.models.verify import verify

    try:
        path = _model_path(ctx)
        model = verify(path)
    except ModelError as exc:
        return fail(name, exc.message, exc.hint)
    return ok(
        name,
        f"{model.path}: SHA-256 matches the manifest ({model.sha256[:12]}…), {model.size} bytes",
        path=str(model.path),
        sha256=model.sha256,
        size=model.size,
    )


def check_inference(ctx: Context) -> Check:
    name = "model.inference"
    from firmware.detect.centerface import CenterFace

    det = ctx.config.detector
    w, h = detect_size(ctx)
    try:
        detector = CenterFace(
            _model_path(ctx), threshold=det.threshold, detect_size=(w, h), threads=det.threads
        )
        rng = np.random.default_rng(0)
        image = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
        detector(image)  # the first run at a new size allocates buffers
        times = []
        for _ in range(TIMED_RUNS):
            t0 = time.perf_counter()
            detector(image)
            times.append((time.perf_counter() - t0) * 1000.0)
    except AnoncamError as exc:
        return fail(name, f"inference at {w}x{h} failed: {exc.message}", exc.hint)
    measured = min(times)  # the least disturbed run: other processes only ever add time
    hardware = ctx.host.hardware_class
    expected = expected_ms(hardware, (w, h))
    figures = {
        "ms": round(measured, 1),
        "expected_ms": None if expected is None else round(expected, 1),
        "hardware": hardware,
        "width": w,
        "height": h,
        "threads": det.threads,
        "max_fps": round(1000.0 / measured, 1),
    }
    detail = (
        f"{measured:.0f} ms per detection at {w}x{h} with {det.threads} thread(s) "
        f"(at most {1000.0 / measured:.0f} fps)"
    )
    if expected is None:
        return ok(name, f"{detail}; no reference figure for this hardware ({hardware})", **figures)
    detail += f"; expected about {expected:.0f} ms on {hardware}"
    if measured > SLOW_FACTOR * expected:
        return warn(
            name,
            f"{detail}: more than {SLOW_FACTOR:g}x slower",
            "check power.throttling and power.temperature, stop other heavy processes, or lower "
            "detector.detect_width/detect_height (smaller is faster but misses distant faces)",
            **figures,
        )
    return ok(name, detail, **figures)


def run(ctx: Context) -> list[Check]:
    file_check = check_file(ctx)
    if file_check.status == "FAIL":
        return [file_check, skip("model.inference", "not tried: no verified model")]
    if not ctx.wants("model.inference"):  # seconds of timed runs on a Pi: only when asked
        return [file_check]
    return [file_check, check_inference(ctx)]
