"""Turn per-frame face detections into short-lived, anonymous tracks.

A track is a face followed from frame to frame so the counter can tell one person crossing the
line from a new person appearing. Nothing here identifies anybody (P3):

* ids are small integers counted from 1 by each :class:`Tracker`; they live in memory only, die
  with the track and are never logged, published or written anywhere;
* association uses geometry only (where a face was, where it is heading, how big it is), never
  appearance, so a person who leaves and comes back is a new track;
* state is bounded: a confirmed track unseen for ``max_age_s`` (a tentative one: for
  :data:`TENTATIVE_MAX_AGE_S`) ends and is removed from every structure, and a hard
  ``max_tracks`` cap guards against a detector gone wild.

Motion model: an alpha-beta filter (the steady-state form of a constant-velocity Kalman filter)
on the box centre, with the box size smoothed separately. Prediction is time based
(``t_ns``), so a file processed faster than real time or a camera that drops frames behaves the
same as a steady live stream.

Association: the score of a (track, detection) pair is ``1 + IoU`` when the predicted box
overlaps the detection by at least ``iou_threshold``; otherwise, for small fast faces whose boxes
no longer overlap from one frame to the next, ``1 - distance / gate`` when the detection centre
lies within a gate around the predicted centre that grows with the time since the track was last
seen. Overlap matches always outrank distance matches. Pairs are taken greedily, best score
first (scipy is not a dependency; with a handful of faces per frame greedy equals Hungarian in
practice).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from firmware.boxes import greedy_pairs, iou_matrix
from firmware.config.settings import Anchor, TrackerConfig
from firmware.frames import Detections

logger = logging.getLogger(__name__)

_NS_PER_S = 1_000_000_000

POSITION_GAIN = 0.75
"""Alpha of the alpha-beta filter: how far the centre moves from the prediction towards a new
detection. Higher follows the detector closely (jittery, but no lag at the counting line); lower
smooths detector jitter but lags a walking face by ``(1 - gain)`` of each surprise."""

VELOCITY_GAIN = 0.3
"""Beta of the alpha-beta filter: how much of a surprise is taken as a change of speed. Higher
reacts faster to a person who stops or turns; lower predicts better through occlusions."""

SIZE_GAIN = 0.5
"""How far the box size moves towards the detected size per match. Faces grow as people approach
the camera; lower values smooth detector jitter in box size."""

GATE_BOXES = 1.0
"""Distance gate at zero elapsed time, in face sizes (``sqrt(w * h)``) around the predicted
centre. A detection farther than the gate that does not overlap the prediction starts a new
track. Larger gates follow faster faces but let a lost track grab a newcomer nearby."""

GATE_BOXES_PER_S_NEW = 12.0
"""Gate growth per second since the last sighting, in face sizes, for a track seen once (its
velocity is unknown, so the next sighting may be anywhere the person could have walked). A
walker at 1.4 m/s covers about 10 face widths per second (a face is ~15 cm wide): the gate is
1.8 face sizes at 15 fps and 3.4 at 5 fps."""

GATE_BOXES_PER_S = 3.0
"""Gate growth per second for a track with a velocity: only a change of pace (stopping,
turning) moves a person off the prediction, about 3 face sizes in a second."""

GATE_MAX_BOXES = 4.0
"""Upper bound of the gate, in face sizes. Without it a track lost near the edge of the view
would grab the next person who appears anywhere near it during ``max_age_s``."""

MAX_SIZE_RATIO = 2.0
"""A distance match needs the two face sizes within this ratio of each other."""

MAX_SPEED_BOXES_PER_S = 30.0
"""Velocity cap, in face sizes per second: a wrong association cannot fling a prediction across
the frame."""

TENTATIVE_MAX_AGE_S = 0.3
"""A tentative track (fewer than ``min_hits`` detections) ends when unseen this long (or
``max_age_s`` if shorter). Its velocity is unknown, so after a gap any detection nearby could be
someone else: a stray false face kept alive for a whole ``max_age_s`` would grab the next person
who appears near it and give that person a false starting side. Dropping it costs little: the
face starts a fresh tentative track on its next detection."""

_MIN_DT_S = 1e-6
"""Below this elapsed time (two frames with the same timestamp) the velocity is left alone."""

_FIELDS = (
    "_ids",
    "_centre",
    "_velocity",
    "_size",
    "_origin",
    "_origin_h",
    "_first_ns",
    "_last_ns",
    "_hits",
    "_missed",
    "_confirmed",
)


@dataclass(frozen=True, slots=True)
class Track:
    """A snapshot of one track at one frame.

    ``box`` is ``x1, y1, x2, y2`` in pixels: the filtered box when the track was matched in this
    frame, the predicted box when it was not (``missed > 0``), the last filtered box for an ended
    track. ``origin`` is the centre of the first detection, so the counter knows on which side of
    the line a track started even if it crossed while still tentative. ``missed`` counts frames
    since the last match.
    """

    id: int
    box: tuple[float, float, float, float]
    first_seen_ns: int
    last_seen_ns: int
    hits: int
    confirmed: bool
    missed: int
    origin: tuple[float, float]
    origin_height: float = 0.0

    @property
    def centre(self) -> tuple[float, float]:
        x1, y1, x2, y2 = self.box
        return ((x1 + x2) / 2.0, (y1 + y2) / 2.0)

    def point(self, anchor: Anchor) -> tuple[float, float]:
        """Where the person stands now: the box's bottom centre (the feet, for a camera looking
        down at an angle) or its centre (for a camera looking straight down)."""
        x1, _, x2, y2 = self.box
        return ((x1 + x2) / 2.0, y2) if anchor == "bottom" else self.centre

    def origin_point(self, anchor: Anchor) -> tuple[float, float]:
        """:meth:`point` of the track's first detection."""
        ox, oy = self.origin
        return (ox, oy + self.origin_height / 2.0) if anchor == "bottom" else self.origin


@dataclass(frozen=True, slots=True)
class TrackUpdate:
    """What one :meth:`Tracker.update` call produced.

    ``active``: confirmed tracks alive after this frame, matched or predicted, in id order.
    ``confirmed_now``: tracks that reached ``min_hits`` in this frame (also in ``active``).
    ``ended``: tracks that ended in this frame, tentative ones included; they are already gone
    from the tracker. Only confirmed ones matter for counting.
    """

    active: tuple[Track, ...] = ()
    confirmed_now: tuple[Track, ...] = ()
    ended: tuple[Track, ...] = ()


class Tracker:
    """Associates face detections across frames into anonymous tracks with ephemeral ids.

    ``config.min_hits``: detections before a track is confirmed. Higher rejects flickering false
    detections but a face must be seen longer before it counts.
    ``config.max_age_s``: a track unseen this long ends. Longer bridges longer occlusions, but
    two people passing the same spot within that time may be joined.
    ``config.iou_threshold``: minimum overlap of predicted box and detection for an overlap match.
    ``max_tracks``: hard cap on tracks held at once; detections beyond it start no track (a
    warning is logged when the cap is first hit).
    """

    def __init__(self, config: TrackerConfig, *, max_tracks: int = 256) -> None:
        if max_tracks < 1:
            raise ValueError(f"Tracker: max_tracks must be >= 1, got {max_tracks}")
        self._min_hits = int(config.min_hits)
        self._max_age_ns = round(config.max_age_s * _NS_PER_S)
        self._tentative_age_ns = round(min(config.max_age_s, TENTATIVE_MAX_AGE_S) * _NS_PER_S)
        self._iou_threshold = float(config.iou_threshold)
        self._max_tracks = max_tracks
        self._next_id = 1
        self._last_t_ns: int | None = None
        self._saturated = False
        self._clear()

    def __len__(self) -> int:
        """Tracks held now, tentative and confirmed."""
        return int(self._ids.shape[0])

    def state_sizes(self) -> dict[str, int]:
        """Rows in each per-track structure (for tests and benchmarks: all must stay bounded)."""
        return {name.lstrip("_"): int(getattr(self, name).shape[0]) for name in _FIELDS}

    def update(self, detections: Detections, t_ns: int) -> TrackUpdate:
        """Associate ``detections`` (pixels of the frame at ``t_ns``) with the tracks.

        ``t_ns`` is the frame's monotonic timestamp; ages and predictions use it, not frame
        counts. If it goes back (a looping file), every track ends and tracking starts afresh.
        """
        t_ns = int(t_ns)
        ended: list[Track] = []
        if self._last_t_ns is not None and t_ns < self._last_t_ns:
            # A looping file or a clock reset: predictions over negative time are meaningless.
            logger.warning(
                "frame time went back by %.3f s; ending %d track(s)",
                (self._last_t_ns - t_ns) / _NS_PER_S,
                len(self),
            )
            ended.extend(self._snapshots(np.arange(len(self)), self._centre))
            self._clear()
        self._last_t_ns = t_ns

        unseen_ns = t_ns - self._last_ns
        expired = unseen_ns > np.where(self._confirmed, self._max_age_ns, self._tentative_age_ns)
        if expired.any():
            ended.extend(self._snapshots(np.flatnonzero(expired), self._centre))
            self._keep(~expired)

        elapsed_s = (t_ns - self._last_ns).astype(np.float64) / _NS_PER_S
        pred_centre = self._centre + self._velocity * elapsed_s[:, None]

        det_boxes = detections.boxes.astype(np.float64)
        det_centre = (det_boxes[:, :2] + det_boxes[:, 2:]) / 2.0
        det_wh = np.maximum(det_boxes[:, 2:] - det_boxes[:, :2], 1e-3)
        rows, cols = self._associate(pred_centre, elapsed_s, det_boxes, det_centre, det_wh)

        newly = np.zeros(0, np.intp)
        if rows.size:
            self._correct(
                rows, det_centre[cols], det_wh[cols], pred_centre[rows], elapsed_s[rows], t_ns
            )
            was = self._confirmed[rows]
            now = self._hits[rows] >= self._min_hits
            self._confirmed[rows] = now
            newly = rows[now & ~was]
        matched = np.zeros(len(self), bool)
        matched[rows] = True
        self._missed[~matched] += 1

        unmatched = np.ones(len(det_boxes), bool)
        unmatched[cols] = False
        start = len(self)
        self._spawn(det_centre[unmatched], det_wh[unmatched], t_ns)
        born = np.arange(start, len(self))
        newly = np.concatenate([newly, born[self._confirmed[born]]])

        now_centre = (
            self._centre
            + self._velocity * ((t_ns - self._last_ns).astype(np.float64) / _NS_PER_S)[:, None]
        )
        active = np.flatnonzero(self._confirmed)
        return TrackUpdate(
            active=self._snapshots(active, now_centre),
            confirmed_now=self._snapshots(np.sort(newly), now_centre),
            ended=tuple(ended),
        )

    def predict_boxes(self, t_ns: int) -> NDArray[np.float32]:
        """``(N, 4)`` boxes, predicted at ``t_ns``, of every live track (tentative ones too) not
        matched to a detection at ``t_ns``, without changing any state: where people are between
        two person detections, or where a person the detector just missed is (head masking;
        the matched ones are the detections themselves)."""
        unseen = self._last_ns < int(t_ns)
        if not unseen.any():
            return np.zeros((0, 4), np.float32)
        elapsed_s = (int(t_ns) - self._last_ns[unseen]).astype(np.float64) / _NS_PER_S
        centre = self._centre[unseen] + self._velocity[unseen] * elapsed_s[:, None]
        half = self._size[unseen] / 2.0
        out: NDArray[np.float32] = np.concatenate([centre - half, centre + half], axis=1).astype(
            np.float32
        )
        return out

    # -- internals -------------------------------------------------------------------------

    def _associate(
        self,
        pred_centre: NDArray[np.float64],
        elapsed_s: NDArray[np.float64],
        det_boxes: NDArray[np.float64],
        det_centre: NDArray[np.float64],
        det_wh: NDArray[np.float64],
    ) -> tuple[NDArray[np.intp], NDArray[np.intp]]:
        n, m = len(pred_centre), len(det_boxes)
        if n == 0 or m == 0:
            return np.zeros(0, np.intp), np.zeros(0, np.intp)
        half = self._size / 2.0
        pred_boxes = np.concatenate([pred_centre - half, pred_centre + half], axis=1)
        iou = iou_matrix(pred_boxes, det_boxes).astype(np.float64)
        overlap = iou >= self._iou_threshold

        trk_size = np.sqrt(self._size[:, 0] * self._size[:, 1])
        det_size = np.sqrt(det_wh[:, 0] * det_wh[:, 1])
        dist = np.hypot(
            det_centre[None, :, 0] - pred_centre[:, None, 0],
            det_centre[None, :, 1] - pred_centre[:, None, 1],
        )
        growth = np.where(self._hits == 1, GATE_BOXES_PER_S_NEW, GATE_BOXES_PER_S)
        reach = np.minimum(GATE_BOXES + growth * elapsed_s, GATE_MAX_BOXES)
        gate = np.maximum(trk_size[:, None], det_size[None, :]) * reach[:, None]
        ratio = trk_size[:, None] / det_size[None, :]
        near = (dist < gate) & (ratio < MAX_SIZE_RATIO) & (ratio > 1.0 / MAX_SIZE_RATIO)
        score = np.where(overlap, 1.0 + iou, np.where(near, 1.0 - dist / gate, 0.0))
        return greedy_pairs(score, overlap | near)

    def _correct(
        self,
        rows: NDArray[np.intp],
        meas_centre: NDArray[np.float64],
        meas_wh: NDArray[np.float64],
        pred_centre: NDArray[np.float64],
        elapsed_s: NDArray[np.float64],
        t_ns: int,
    ) -> None:
        residual = meas_centre - pred_centre
        has_dt = (elapsed_s > _MIN_DT_S)[:, None]
        dt = np.maximum(elapsed_s, _MIN_DT_S)[:, None]
        # Restart the filter from the measurement on a track's second sighting (no velocity to
        # filter yet) and after a miss: a prediction carried through an occlusion is stale, and
        # blending with it could drag a person who stopped behind a pillar across the line.
        restart = ((self._hits[rows] == 1) | (self._missed[rows] > 0))[:, None]
        velocity = np.where(
            restart,
            (meas_centre - self._centre[rows]) / dt,
            self._velocity[rows] + VELOCITY_GAIN * residual / dt,
        )
        velocity = np.where(has_dt, velocity, self._velocity[rows])
        centre = np.where(restart, meas_centre, pred_centre + POSITION_GAIN * residual)
        size = self._size[rows] + SIZE_GAIN * (meas_wh - self._size[rows])

        speed = np.hypot(velocity[:, 0], velocity[:, 1])
        cap = MAX_SPEED_BOXES_PER_S * np.sqrt(size[:, 0] * size[:, 1])
        velocity *= (np.minimum(speed, cap) / np.maximum(speed, 1e-9))[:, None]

        self._centre[rows] = centre
        self._velocity[rows] = velocity
        self._size[rows] = size
        self._last_ns[rows] = t_ns
        self._hits[rows] += 1
        self._missed[rows] = 0

    def _spawn(self, centre: NDArray[np.float64], wh: NDArray[np.float64], t_ns: int) -> None:
        room = self._max_tracks - len(self)
        if len(centre) > room:
            if not self._saturated:
                logger.warning(
                    "tracker full (%d tracks): new faces are not tracked until some end; "
                    "check the detector threshold",
                    self._max_tracks,
                )
                self._saturated = True
            centre, wh = centre[:room], wh[:room]
        elif self._saturated:
            logger.info("tracker has room again")
            self._saturated = False
        k = len(centre)
        if k == 0:
            return
        hits = np.ones(k, np.int64)
        new: dict[str, NDArray[Any]] = {
            "_ids": np.arange(self._next_id, self._next_id + k, dtype=np.int64),
            "_centre": centre,
            "_velocity": np.zeros((k, 2)),
            "_size": wh,
            "_origin": centre.copy(),
            "_origin_h": wh[:, 1].copy(),
            "_first_ns": np.full(k, t_ns, np.int64),
            "_last_ns": np.full(k, t_ns, np.int64),
            "_hits": hits,
            "_missed": np.zeros(k, np.int64),
            "_confirmed": hits >= self._min_hits,
        }
        self._next_id += k
        for name in _FIELDS:
            setattr(self, name, np.concatenate([getattr(self, name), new[name]]))

    def _keep(self, mask: NDArray[np.bool_]) -> None:
        for name in _FIELDS:
            setattr(self, name, getattr(self, name)[mask])

    def _clear(self) -> None:
        self._ids: NDArray[np.int64] = np.zeros(0, np.int64)
        self._centre: NDArray[np.float64] = np.zeros((0, 2))
        self._velocity: NDArray[np.float64] = np.zeros((0, 2))
        self._size: NDArray[np.float64] = np.zeros((0, 2))
        self._origin: NDArray[np.float64] = np.zeros((0, 2))
        self._origin_h: NDArray[np.float64] = np.zeros(0)
        self._first_ns: NDArray[np.int64] = np.zeros(0, np.int64)
        self._last_ns: NDArray[np.int64] = np.zeros(0, np.int64)
        self._hits: NDArray[np.int64] = np.zeros(0, np.int64)
        self._missed: NDArray[np.int64] = np.zeros(0, np.int64)
        self._confirmed: NDArray[np.bool_] = np.zeros(0, bool)

    def _snapshots(self, idx: NDArray[np.intp], centre: NDArray[np.float64]) -> tuple[Track, ...]:
        if idx.size == 0:
            return ()
        c = centre[idx]
        half = self._size[idx] / 2.0
        boxes = np.concatenate([c - half, c + half], axis=1).tolist()
        return tuple(
            Track(
                id=i,
                box=(b[0], b[1], b[2], b[3]),
                first_seen_ns=f,
                last_seen_ns=last,
                hits=h,
                confirmed=conf,
                missed=mi,
                origin=(o[0], o[1]),
                origin_height=oh,
            )
            for i, b, f, last, h, conf, mi, o, oh in zip(
                self._ids[idx].tolist(),
                boxes,
                self._first_ns[idx].tolist(),
                self._last_ns[idx].tolist(),
                self._hits[idx].tolist(),
                self._confirmed[idx].tolist(),
                self._missed[idx].tolist(),
                self._origin[idx].tolist(),
                self._origin_h[idx].tolist(),
                strict=True,
            )
        )
