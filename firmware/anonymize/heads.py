"""Head regions of person boxes: the privacy net under the face detector.

A face too small, blurred, turned away or looking down for CenterFace is still a face. Every
person box therefore has its head region covered too, whatever the face detector says. The
region is generous on purpose (recall first, as for faces): the top ``HEAD_FRACTION`` of the box
plus a margin above it, across the box's whole width, clipped to the frame.

Fail closed at the frame edge: a person cut by the top of the frame may have the head outside
it; the region is then the top of what is visible, so whatever part of a head is in the frame
is covered.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

HEAD_FRACTION = 0.28
"""Share of a person box's height, from its top, that is covered. A standing adult's head is
about 1/7 to 1/8 of the body; a box cut at the hips (a person near a camera looking down) or a
person bending makes it larger. 0.28 covers the head in all of those; more costs only mosaic."""

ABOVE_FRACTION = 0.06
"""Margin above the box, as a share of its height: detectors often cut the top of the hair."""

SIDE_FRACTION = 0.08
"""Margin on each side, as a share of the box's width (a head turned sideways sticks out)."""


def head_boxes(people: NDArray[np.floating], width: int, height: int) -> NDArray[np.float32]:
    """``(N, 4)`` head regions, in pixels clipped to a ``width`` x ``height`` frame, for ``(N, 4+)``
    person boxes; boxes that end up empty (a person box entirely outside the frame) are dropped."""
    b = np.asarray(people, np.float32)[:, :4]
    if len(b) == 0:
        return np.zeros((0, 4), np.float32)
    w = np.maximum(b[:, 2] - b[:, 0], 1.0)
    h = np.maximum(b[:, 3] - b[:, 1], 1.0)
    top = np.clip(b[:, 1], 0, height)  # the visible top: the head's remains when cut by the edge
    out = np.stack(
        [
            b[:, 0] - SIDE_FRACTION * w,
            b[:, 1] - ABOVE_FRACTION * h,
            b[:, 2] + SIDE_FRACTION * w,
            np.maximum(b[:, 1] + HEAD_FRACTION * h, top + HEAD_FRACTION * h),
        ],
        axis=1,
    )
    out[:, [0, 2]] = np.clip(out[:, [0, 2]], 0, width)
    out[:, [1, 3]] = np.clip(out[:, [1, 3]], 0, height)
    keep = (out[:, 2] > out[:, 0]) & (out[:, 3] > out[:, 1])
    result: NDArray[np.float32] = out[keep].astype(np.float32)
    return result
