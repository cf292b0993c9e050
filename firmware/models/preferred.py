"""Which face model ``anoncam blur`` runs when ``--model`` is not given.

The int8 model (``anoncam models quantize``; ``scripts/setup`` makes it on a development
machine) runs CenterFace about twice as fast as fp32 on a CPU with int8 dot-product
instructions, with the same recall on the benchmark's faces. Without those instructions its
speed-up shrinks, and on x86 without VNNI onnxruntime's u8s8 kernels can saturate, which costs
recall: there the fp32 model stays the default. So the int8 model is preferred only when

- the file is there next to the fetched model, with its ``.sha256`` sidecar;
- scikit-image is importable (a derived model must find the faces in its two reference portraits
  before use, see :mod:`firmware.detect.selftest`);
- the CPU has int8 dot-product instructions: ``avx512_vnni`` or ``avx_vnni`` on x86,
  ``asimddp`` (the Armv8.2 dot product; a Pi 5 has it, a Pi 4 does not) on 64-bit ARM.

Anything else gives the manifest's fp32 model. The choice and its reason are logged, and
``--model`` always wins. The service (``anoncam run``) is not affected: it uses
``detector.model``, whose default is the manifest's file.
"""

from __future__ import annotations

import importlib.util
import logging
from dataclasses import dataclass
from pathlib import Path

from firmware.models.quantize import default_int8_path
from firmware.models.verify import sidecar_path

logger = logging.getLogger(__name__)

INT8_FLAGS: tuple[str, ...] = ("avx512_vnni", "avx_vnni", "asimddp")
"""cpuinfo flags of int8 dot-product instructions, which onnxruntime's int8 kernels use."""

FP32_THRESHOLD = 0.2
INT8_THRESHOLD = 0.15
"""The int8 model scores the smallest faces lower than fp32 does. On real footage of distant
pedestrians (OpenCV's vtest.avi, 300 frames, 341 faces under 16 px that fp32 finds at 0.2) it
matched 315 of them at 0.2 and left 6 uncovered in the blurred output; at 0.15 it matched 335 and
left none uncovered (``scripts/bench --clip vtest``). A lower threshold masks a few more non-faces,
which costs some of the scene, never privacy."""


@dataclass(frozen=True, slots=True)
class ModelChoice:
    path: Path | None  # None: the manifest's fp32 model
    reason: str

    @property
    def threshold(self) -> float:
        """The score threshold that gives this model fp32's recall at 0.2."""
        return INT8_THRESHOLD if self.int8 else FP32_THRESHOLD

    @property
    def int8(self) -> bool:
        return self.path is not None


def int8_dot_product(cpuinfo: str) -> str | None:
    """The first int8 dot-product flag in ``/proc/cpuinfo``'s text, or None.

    x86 lists them on ``flags`` lines, 64-bit ARM on ``Features`` lines."""
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() in ("flags", "features"):
            have = set(value.split())
            for flag in INT8_FLAGS:
                if flag in have:
                    return flag
    return None


def read_cpuinfo(path: Path = Path("/proc/cpuinfo")) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def choose_face_model(
    int8_path: Path | None = None,
    cpuinfo: str | None = None,
    *,
    selftest_possible: bool | None = None,
) -> ModelChoice:
    """The model for ``anoncam blur`` without ``--model``; see the module docstring."""
    path = int8_path if int8_path is not None else default_int8_path()
    if not path.is_file() or not sidecar_path(path).is_file():
        return ModelChoice(None, f"no int8 model at {path} (make one: anoncam models quantize)")
    if selftest_possible is None:
        selftest_possible = importlib.util.find_spec("skimage") is not None
    if not selftest_possible:
        return ModelChoice(
            None, "the int8 model needs scikit-image to check itself, which is not installed"
        )
    flag = int8_dot_product(read_cpuinfo() if cpuinfo is None else cpuinfo)
    if flag is None:
        return ModelChoice(
            None,
            "this CPU has no int8 dot-product instructions (VNNI, asimddp), where int8 gains "
            "little and can lose recall",
        )
    return ModelChoice(path, f"int8 model {path}: this CPU has {flag}")
