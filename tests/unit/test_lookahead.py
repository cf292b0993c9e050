"""Lookahead: a face that appears is also masked in the frames held back before it."""

from __future__ import annotations

import numpy as np

from firmware.anonymize.cover import Anonymizer
from firmware.anonymize.stage import Anonymized
from firmware.frames import Detections

MS = 1_000_000


def _result(i: int, boxes: list[list[float]], masks: list[list[float]] | None = None) -> Anonymized:
    img = np.full((100, 200, 3), 200, np.uint8)
    dets = Detections.from_boxes(boxes) if boxes else Detections.empty()
    m = np.array(masks if masks is not None else boxes, np.float32).reshape(-1, 4)
    return Anonymized(i * 66 * MS, i, img.copy(), dets, False, 1.0, m)


def test_new_face_is_backfilled_into_held_frames() -> None:
    from firmware.anonymize.backfill import Lookahead

    la = Lookahead(Anonymizer("solid", "box", 1.0), delay=3)
    out = []
    out += la.push(_result(0, []))
    out += la.push(_result(1, []))
    out += la.push(_result(2, [[150, 80, 190, 100]]))  # first sighting, at the bottom edge
    out += la.push(_result(3, [[150, 70, 190, 100]], masks=[[150, 70, 190, 100]]))
    out += la.flush()
    assert [r.index for r in out] == [0, 1, 2, 3]
    for r in out[:2]:
        # the frames before the first sighting are covered where the face was entering
        assert (r.image[85:100, 155:185] == 0).all(), f"frame {r.index} not back-filled"
        assert (r.image[:50, :100] == 200).all(), "back-fill must stay near the face"


def test_known_face_adds_nothing_and_delay_zero_passes_through() -> None:
    from firmware.anonymize.backfill import Lookahead

    la = Lookahead(Anonymizer("solid", "box", 1.0), delay=2)
    first = _result(0, [[10, 10, 50, 50]])
    out = la.push(first) + la.push(_result(1, [[12, 10, 52, 50]])) + la.flush()
    assert out[0].image is first.image, (
        "a face already masked in the previous frame adds no back-fill"
    )
    la0 = Lookahead(Anonymizer(), delay=0)
    r = _result(0, [[10, 10, 50, 50]])
    assert la0.push(r) == [r]
