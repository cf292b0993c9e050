"""MaskHold: a face the detector misses for a moment stays covered, with motion."""

from __future__ import annotations

import numpy as np

from firmware.anonymize.hold import MaskHold

MS = 1_000_000


def _covers(boxes: np.ndarray, target: np.ndarray) -> bool:
    return bool(
        np.any(
            (boxes[:, 0] <= target[0])
            & (boxes[:, 1] <= target[1])
            & (boxes[:, 2] >= target[2])
            & (boxes[:, 3] >= target[3])
        )
    )


def test_missed_frames_are_covered_at_the_moved_position() -> None:
    """A face moving 20 px per frame, missed for two frames, is covered where it went."""
    hold = MaskHold(hold_s=0.5, growth=1.0)
    face = lambda i: np.array([100 + 20 * i, 100, 160 + 20 * i, 170], np.float32)  # noqa: E731
    for i in range(3):
        hold.update(face(i)[None], i * 66 * MS)
    for i in (3, 4):  # detector misses
        out = hold.update(np.zeros((0, 4), np.float32), i * 66 * MS)
        assert len(out) == 1
        assert _covers(out, face(i)), f"frame {i}: {out} does not cover {face(i)}"
    # without motion the old box would no longer cover the face two frames later
    assert not _covers(face(2)[None], face(4))


def test_forgotten_after_hold_time_and_state_bounded() -> None:
    hold = MaskHold(hold_s=0.2, max_faces=8)
    hold.update(np.array([[0, 0, 10, 10]], np.float32), 0)
    assert len(hold.update(np.zeros((0, 4), np.float32), 150 * MS)) == 1
    assert len(hold.update(np.zeros((0, 4), np.float32), 250 * MS)) == 0
    assert len(hold) == 0
    rng = np.random.default_rng(1)
    for t in range(200):
        boxes = rng.uniform(0, 1000, (20, 2)).astype(np.float32)
        hold.update(np.concatenate([boxes, boxes + 30], axis=1), t * 10 * MS)
        assert len(hold) <= 8


def test_detections_always_returned() -> None:
    hold = MaskHold(hold_s=0.0)
    det = np.array([[1, 2, 30, 40], [50, 50, 90, 90]], np.float32)
    out = hold.update(det, 0)
    assert np.array_equal(out[:2], det)
