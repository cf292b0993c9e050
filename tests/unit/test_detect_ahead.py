"""``detect_ahead``: several frames detected at once come back in frame order, and a detector
failure on one of them is carried to ``finish``, which covers that frame whole (fail closed)."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from firmware.anonymize.ahead import detect_ahead
from firmware.anonymize.cover import Anonymizer
from firmware.anonymize.hold import MaskHold
from firmware.anonymize.stage import AnonymizingStage
from firmware.frames import Detections, Frame, Image


class SlowOnEvenFrames:
    """A FaceDetector stand-in whose answer depends on the frame (one box at x = its first
    pixel's value) and which is slower on even frames, so with two workers odd frames finish
    first; it raises on the frames listed in ``fail``. Records how many run at once."""

    def __init__(self, fail: set[int] = frozenset()) -> None:  # type: ignore[assignment]
        self.fail = fail
        self.running = 0
        self.most_at_once = 0
        self._lock = threading.Lock()

    def __call__(self, image: Image) -> Detections:
        index = int(image[0, 0, 0])
        with self._lock:
            self.running += 1
            self.most_at_once = max(self.most_at_once, self.running)
        try:
            time.sleep(0.03 if index % 2 == 0 else 0.001)
            if index in self.fail:
                raise RuntimeError(f"detector broke on frame {index}")
            x = float(index)
            return Detections.from_boxes([[x, 10, x + 20, 30]], np.array([0.9], np.float32))
        finally:
            with self._lock:
                self.running -= 1


def _frames(n: int) -> list[Frame]:
    out = []
    rng = np.random.default_rng(3)
    for i in range(n):
        image = rng.integers(100, 255, (60, 80, 3), dtype=np.uint8)
        image[0, 0, 0] = i
        out.append(Frame(image, t_ns=i * 40_000_000, index=i))
    return out


def _stage(detector: SlowOnEvenFrames) -> AnonymizingStage:
    return AnonymizingStage(detector, Anonymizer("solid", "box", 1.0), MaskHold(0.0))


@pytest.mark.parametrize("workers", [1, 2, 3])
def test_results_come_back_in_frame_order(workers: int) -> None:
    detector = SlowOnEvenFrames()
    frames = _frames(12)
    got = list(detect_ahead(_stage(detector), iter(frames), workers))
    assert [f.index for f, _ in got] == list(range(12))
    for frame, detected in got:
        assert detected.detections is not None and detected.error is None
        assert detected.detections.boxes[0, 0] == frame.index  # this frame's own answer
    assert detector.most_at_once == workers


def test_a_failed_frame_is_covered_whole_and_the_rest_go_on() -> None:
    detector = SlowOnEvenFrames(fail={4, 5})
    stage = _stage(detector)
    frames = _frames(8)
    results = [stage.finish(f, d) for f, d in detect_ahead(stage, iter(frames), 2)]
    assert [r.index for r in results] == list(range(8))
    assert [r.failed for r in results] == [i in {4, 5} for i in range(8)]
    for frame, r in zip(frames, results, strict=True):
        if r.failed:  # the whole-frame cover, nothing of the source left as it was
            assert np.array_equal(r.image, stage.anonymizer.mask_all(frame.image))
            assert (r.image != frame.image).any(axis=2).mean() > 0.9
        else:  # its own face box is black, the rest untouched
            x = frame.index
            assert (r.image[10:30, x : x + 20] < 40).all()
            assert np.array_equal(r.image[40:], frame.image[40:])
    assert stage.failures == 2


def test_an_error_reading_frames_is_raised_after_the_frames_before_it() -> None:
    def frames() -> object:
        yield from _frames(3)
        raise OSError("truncated video")

    stage = _stage(SlowOnEvenFrames())
    seen = []
    with pytest.raises(OSError, match="truncated"):
        for frame, _ in detect_ahead(stage, frames(), 2):  # type: ignore[arg-type]
            seen.append(frame.index)
    assert seen == [0, 1, 2]


def test_workers_must_be_positive() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        next(detect_ahead(_stage(SlowOnEvenFrames()), iter(_frames(1)), 0))
