"""P2 held by the type: the anonymizing stage's result carries no raw pixels.

Before the redesign ``Anonymized.frame`` was the source frame itself, so every sink (preview hub,
video writer, a test's hook) received the unanonymized picture next to the anonymized one and had
to be trusted to drop it. These tests fail if any field of a result is a :class:`Frame` or an
array sharing memory with the source frame's pixels, for a normal frame and a failed one.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from firmware.anonymize.cover import Anonymizer
from firmware.anonymize.hold import MaskHold
from firmware.anonymize.stage import Anonymized, AnonymizingStage
from firmware.frames import Detections, Frame, Image


class FixedDetector:
    """Our own FaceDetector protocol: one fixed face, or an error (the detector failing)."""

    def __init__(self, fail: bool = False) -> None:
        self.fail = fail

    def __call__(self, image: Image) -> Detections:
        if self.fail:
            raise RuntimeError("detector broke")
        return Detections.from_boxes([[40, 30, 80, 80]], np.array([0.9], np.float32))


def _frame() -> Frame:
    rng = np.random.default_rng(7)
    image = rng.integers(0, 255, (120, 160, 3), dtype=np.uint8)
    lores = np.ascontiguousarray(image[::2, ::2])
    return Frame(image, t_ns=123_000_000, index=4, lores=lores)


def _raw_arrays(frame: Frame) -> list[np.ndarray]:
    return [a for a in (frame.image, frame.lores) if a is not None]


def _values(result: Anonymized) -> list[object]:
    out: list[object] = []
    for f in dataclasses.fields(result):
        value = getattr(result, f.name)
        out.append(value)
        if isinstance(value, Detections):
            out.append(value.array)
    return out


@pytest.mark.parametrize("fail", [False, True], ids=["detected", "detector-failed"])
def test_result_holds_no_source_frame_or_its_pixels(fail: bool) -> None:
    frame = _frame()
    stage = AnonymizingStage(FixedDetector(fail), Anonymizer("mosaic", "box", 1.6), MaskHold(0.5))
    result = stage.process(frame)
    assert result.failed is fail
    for value in _values(result):
        assert not isinstance(value, Frame), "a result must not carry the source Frame"
        if isinstance(value, np.ndarray):
            for raw in _raw_arrays(frame):
                assert not np.shares_memory(value, raw), "a result array aliases raw pixels"
    # What it keeps: when and how big, and the anonymized picture.
    assert (result.t_ns, result.index, result.width, result.height) == (123_000_000, 4, 160, 120)
    assert not np.array_equal(result.image[30:80, 40:80], frame.image[30:80, 40:80])


def test_result_type_declares_no_frame_field() -> None:
    """The type itself, not just one instance: no field may be typed as a Frame."""
    annotations = {f.name: str(f.type) for f in dataclasses.fields(Anonymized)}
    assert not any("Frame" in t for t in annotations.values()), annotations
