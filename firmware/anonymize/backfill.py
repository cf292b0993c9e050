"""Cover a face in the frames *before* the detector first found it, by delaying output.

A face walking into view is missed while only a sliver of it shows (a forehead and eyes at the
bottom edge): the detector needs about half a face. The mask hold cannot help, since it only
remembers faces already seen. This stage keeps the last ``delay`` anonymized frames back; when a
face appears that no mask of the previous frame covered, its box, grown with the time between
the frames, is also covered in every frame still held back. The face's entry is masked, at the
cost of ``delay`` frames of latency (0.5 s at the defaults): fine for files, the preview and
snapshots; counting never waits for it.

Knobs: ``delay`` frames of look-back (``hold_s * fps`` is a good match); ``growth`` as in
:class:`firmware.anonymize.hold.MaskHold` (how fast the uncertainty about an unseen face widens).
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import replace

import numpy as np
from numpy.typing import NDArray

from firmware.anonymize.cover import Anonymizer
from firmware.anonymize.stage import Anonymized
from firmware.boxes import grow_boxes, iou_matrix

_NS = 1e9


def _uncovered(dets: NDArray[np.float32], masks: NDArray[np.float32]) -> NDArray[np.float32]:
    """Detections whose centre lies in no mask of the previous frame and that overlap none."""
    if len(dets) == 0 or len(masks) == 0:
        return dets
    cx = (dets[:, 0] + dets[:, 2]) / 2
    cy = (dets[:, 1] + dets[:, 3]) / 2
    inside = (
        (cx[:, None] >= masks[None, :, 0])
        & (cx[:, None] <= masks[None, :, 2])
        & (cy[:, None] >= masks[None, :, 1])
        & (cy[:, None] <= masks[None, :, 3])
    ).any(axis=1)
    overlap = iou_matrix(dets, masks).max(axis=1) > 0.1
    kept: NDArray[np.float32] = dets[~inside & ~overlap]
    return kept


def delay_frames(hold_s: float, fps: float) -> int:
    """Frames to hold back: the mask hold's duration at the source's frame rate."""
    return max(0, math.ceil(hold_s * fps)) if fps > 0 else 0


class Lookahead:
    """Delays anonymized frames by ``delay`` and back-fills masks of newly appearing faces."""

    def __init__(self, anonymizer: Anonymizer, delay: int, *, growth: float = 2.0) -> None:
        if delay < 0:
            raise ValueError(f"delay must be >= 0, got {delay}")
        self.anonymizer = anonymizer
        self.delay = delay
        self.growth = growth
        self._held: deque[tuple[Anonymized, list[NDArray[np.float32]]]] = deque()
        self._prev_masks = np.zeros((0, 4), np.float32)

    def push(self, result: Anonymized) -> list[Anonymized]:
        """Add the newest result; return the results that leave now (oldest first)."""
        dets = result.detections.boxes if not result.failed else np.zeros((0, 4), np.float32)
        new = _uncovered(np.asarray(dets, np.float32), self._prev_masks)
        self._prev_masks = result.masks if not result.failed else self._prev_masks
        if len(new):
            for older, extra in self._held:
                dt = max(0.0, (result.t_ns - older.t_ns) / _NS)
                extra.append(grow_boxes(new, 1.0 + self.growth * dt))
        self._held.append((result, []))
        out: list[Anonymized] = []
        while len(self._held) > self.delay:
            out.append(self._release())
        return out

    def flush(self) -> list[Anonymized]:
        """Release every held result (end of input)."""
        out = [self._release() for _ in range(len(self._held))]
        self._prev_masks = np.zeros((0, 4), np.float32)
        return out

    def _release(self) -> Anonymized:
        result, extra = self._held.popleft()
        if not extra or result.failed:
            return result
        boxes = np.concatenate(extra)
        image = self.anonymizer.apply(result.image, boxes)
        return replace(result, image=image, masks=np.concatenate([result.masks, boxes]))
