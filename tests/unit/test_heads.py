"""Head regions of person boxes (issue 9): a face the face detector misses is still covered."""

from __future__ import annotations

import numpy as np

from firmware.anonymize.cover import Anonymizer
from firmware.anonymize.heads import HEAD_FRACTION, head_boxes


def test_head_region_is_the_top_of_the_box_with_margins() -> None:
    """A 100x300 person at (200, 100): the region spans the box's width plus margins and its top
    HEAD_FRACTION plus a margin above, so the head of a standing person is inside it."""
    ((x1, y1, x2, y2),) = head_boxes(np.array([[200, 100, 300, 400]]), 640, 480)
    assert x1 < 200 and x2 > 300
    assert y1 < 100 and y2 == 100 + HEAD_FRACTION * 300
    # a head (1/7 of the height, centred) lies inside
    assert (x1, y1) <= (230, 100) and (x2, y2) >= (270, 100 + 300 / 7)


def test_person_cut_by_the_top_edge_gets_the_top_of_what_is_visible() -> None:
    """Fail closed at the edge: the box starts above the frame (head outside or partly in), so
    the region covers the visible top of the box instead of vanishing."""
    ((_, y1, _, y2),) = head_boxes(np.array([[100, -200, 200, 100]]), 640, 480)
    assert y1 == 0 and y2 >= HEAD_FRACTION * 300


def test_boxes_outside_the_frame_give_no_region_and_empty_input_is_empty() -> None:
    assert head_boxes(np.array([[700, 10, 800, 200]]), 640, 480).shape == (0, 4)
    assert head_boxes(np.zeros((0, 5)), 640, 480).shape == (0, 4)


def test_exact_regions_are_covered_as_given_faces_are_grown() -> None:
    """The anonymizer covers head regions exactly (they are generous already) and faces grown
    by mask_scale; nothing outside either changes."""
    rng = np.random.default_rng(3)
    image = rng.integers(0, 255, (200, 300, 3), dtype=np.uint8)
    heads = np.array([[10, 10, 60, 40]], np.float32)
    out = Anonymizer("solid", "box", 1.6).apply(image, np.zeros((0, 4)), exact=heads)
    assert (out[10:40, 10:60] != image[10:40, 10:60]).any(axis=2).all()
    untouched = np.ones(image.shape[:2], bool)
    untouched[10:40, 10:60] = False
    assert (out[untouched] == image[untouched]).all()
