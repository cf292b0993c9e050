"""Turn tracks into anonymous counts: line crossings with direction, occupancy, zones, dwell.

Geometry is in normalized image coordinates (x / width, y / height), like the config. The
counting line is the infinite line through ``counter.line``'s two points (a half-plane test, so a
person walking past the end of a short segment still counts; draw the line across the whole
door). ``counter.inside`` picks the store side: the signed distance ``s`` of a track centre is
positive inside and negative outside.

Each confirmed track has a *settled side*: -1 outside, +1 inside, 0 unknown. It changes only when
a track matched in this frame is more than ``hysteresis`` beyond the line (``|s| > hysteresis``);
inside the band ``|s| <= hysteresis`` it keeps its previous value. A change -1 -> +1 is an entry,
+1 -> -1 an exit. Consequences:

* wobbling on the line counts once: after an entry the next event can only be an exit, and only
  once the track is really back beyond the band;
* a fast walker that jumps over the whole band between two frames still counts (sides, not band
  visits, are compared);
* a person who approaches, stops in the band and walks back counts nothing;
* positions predicted through an occlusion never settle a side (the tracker may extrapolate a
  person who stopped behind a pillar across the line); the next real sighting decides.

Where a track starts: its side is initialized from ``Track.origin``, the centre of its first
detection, so a track that crosses while still tentative counts once it is confirmed. A track
whose first detection lies inside the band starts *unknown* (0) and settles to the first side it
leaves the band to **without counting**: we did not see where it came from, and counting a
half-crossing would turn every face that pops up on the line into an entry or exit.

Occupancy counts confirmed active tracks on the inside: settled side +1, or, for an unknown side,
``s > 0``. Dwell is the time from a track's first to its last sighting on the inside (by the same
test), reported when the track ends; tracks never seen inside, or seen inside at one instant only
(zero-length dwell, which is not a measurement), report no dwell.

State: four small arrays with one row per confirmed, not yet ended track. A row is removed in the
frame its track ends (supervision's LineZone keeps per-track history forever; a device that runs
for months cannot). Only numbers leave: :class:`~firmware.events.FrameCounts` has no id, no box.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from firmware.config.settings import Anchor, CounterConfig
from firmware.errors import ConfigError
from firmware.track import Track, TrackUpdate

logger = logging.getLogger(__name__)

_NS_PER_S = 1_000_000_000
_OUTSIDE, _UNKNOWN, _INSIDE = -1, 0, 1


@dataclass(frozen=True, slots=True)
class FrameCounts:
    """Counts observed in one frame.

    ``t_ns``: the frame's timestamp (media time for files, wall clock for live sources).
    ``entries`` / ``exits``: line crossings completed in this frame.
    ``occupancy``: confirmed tracks currently on the inside of the line (or in the zones).
    ``new_visitors``: tracks confirmed in this frame (each track counts once, ever).
    ``dwell_s``: dwell times of tracks that ended in this frame, in seconds.
    ``zone_occupancy``: per zone name, confirmed tracks inside it now.
    ``dropped``: frames the source dropped since the previous observation.
    """

    t_ns: int
    entries: int = 0
    exits: int = 0
    occupancy: int = 0
    new_visitors: int = 0
    dwell_s: tuple[float, ...] = ()
    zone_occupancy: dict[str, int] = field(default_factory=dict)
    dropped: int = 0


class LineCounter:
    """Counts entries, exits, occupancy, zone occupancy, visitors and dwell from tracker updates.

    ``config.hysteresis`` (normalized distance): larger stops double counts from jittery boxes
    and people lingering on the line, but a person must walk further past the line, and a track
    that ends inside the band is not counted. Keep it below the distance people walk in view on
    each side of the line.
    """

    def __init__(self, config: CounterConfig, frame_width: int, frame_height: int) -> None:
        if frame_width <= 0 or frame_height <= 0:
            raise ValueError(
                f"LineCounter: frame size must be positive, got {frame_width}x{frame_height}"
            )
        x1, y1, x2, y2 = config.line
        direction = np.array([x2 - x1, y2 - y1], np.float64)
        normal = np.array([-direction[1], direction[0]]) / np.hypot(*direction)
        self._origin = np.array([x1, y1], np.float64)
        inside = np.array(config.inside, np.float64)
        # Orient the normal so the inside point has a positive signed distance.
        self._normal = normal * np.sign(float((inside - self._origin) @ normal))
        self._hysteresis = float(config.hysteresis)
        self._scale = np.array([1.0 / frame_width, 1.0 / frame_height], np.float64)
        self._anchor: Anchor = config.anchor
        self._zones = _Zones(config)
        self._ids: NDArray[np.int64] = np.zeros(0, np.int64)
        self._side: NDArray[np.int8] = np.zeros(0, np.int8)
        self._first_inside_ns: NDArray[np.int64] = np.zeros(0, np.int64)
        self._last_inside_ns: NDArray[np.int64] = np.zeros(0, np.int64)

    def __len__(self) -> int:
        """Tracks the counter holds state for (confirmed, not yet ended)."""
        return int(self._ids.shape[0])

    def state_sizes(self) -> dict[str, int]:
        """Rows in each per-track structure (for tests and benchmarks: all must stay bounded)."""
        return {
            "ids": int(self._ids.shape[0]),
            "side": int(self._side.shape[0]),
            "first_inside_ns": int(self._first_inside_ns.shape[0]),
            "last_inside_ns": int(self._last_inside_ns.shape[0]),
        }

    def update(self, u: TrackUpdate, t_ns: int) -> FrameCounts:
        """Counts for the frame at ``t_ns`` given the tracker's update for that frame."""
        t_ns = int(t_ns)
        dwell = self._forget(u.ended)
        active = u.active
        n = len(active)
        if n == 0:
            return FrameCounts(t_ns=t_ns, dwell_s=dwell, zone_occupancy=self._zones.count(None))

        ids = np.fromiter((t.id for t in active), np.int64, n)
        centres = (
            np.array([t.point(self._anchor) for t in active], np.float64).reshape(n, 2)
            * self._scale
        )
        seen = np.fromiter((t.missed == 0 for t in active), bool, n)
        self._admit(active, ids)
        rows = np.searchsorted(self._ids, ids)

        s = (centres - self._origin) @ self._normal
        side = self._side[rows]
        beyond = np.where(
            s > self._hysteresis, _INSIDE, np.where(s < -self._hysteresis, _OUTSIDE, side)
        )
        new_side = np.where(seen, beyond, side).astype(np.int8)
        entries = int(np.count_nonzero((side == _OUTSIDE) & (new_side == _INSIDE)))
        exits = int(np.count_nonzero((side == _INSIDE) & (new_side == _OUTSIDE)))
        self._side[rows] = new_side

        inside = np.where(new_side != _UNKNOWN, new_side == _INSIDE, s > 0)
        r = rows[inside & seen]
        first = self._first_inside_ns[r]
        self._first_inside_ns[r] = np.where(first < 0, t_ns, first)
        self._last_inside_ns[r] = t_ns

        return FrameCounts(
            t_ns=t_ns,
            entries=entries,
            exits=exits,
            occupancy=int(np.count_nonzero(inside)),
            new_visitors=len(u.confirmed_now),
            dwell_s=dwell,
            zone_occupancy=self._zones.count(centres),
        )

    # -- internals -------------------------------------------------------------------------

    def _admit(self, active: Sequence[Track], ids: NDArray[np.int64]) -> None:
        """Start state for tracks seen for the first time, from where they were first detected.

        Normally these are the tracker's ``confirmed_now``; taking every unknown active track
        also copes with a counter started after its tracker.
        """
        unknown = ~np.isin(ids, self._ids)
        if not unknown.any():
            return
        idx = np.flatnonzero(unknown).tolist()
        k = len(idx)
        origin = (
            np.array([active[i].origin_point(self._anchor) for i in idx], np.float64).reshape(k, 2)
            * self._scale
        )
        first_ns = np.array([active[i].first_seen_ns for i in idx], np.int64)
        s0 = (origin - self._origin) @ self._normal
        side0 = np.where(
            s0 > self._hysteresis, _INSIDE, np.where(s0 < -self._hysteresis, _OUTSIDE, _UNKNOWN)
        ).astype(np.int8)
        inside0 = np.where(side0 != _UNKNOWN, side0 == _INSIDE, s0 > 0)
        since = np.where(inside0, first_ns, -1).astype(np.int64)

        all_ids = np.concatenate([self._ids, ids[unknown]])
        order = np.argsort(all_ids, kind="stable")
        self._ids = all_ids[order]
        self._side = np.concatenate([self._side, side0])[order]
        self._first_inside_ns = np.concatenate([self._first_inside_ns, since])[order]
        self._last_inside_ns = np.concatenate([self._last_inside_ns, since])[order]

    def _forget(self, ended: Sequence[Track]) -> tuple[float, ...]:
        """Drop the state of ended tracks; return the dwell times of those seen inside."""
        if not ended or self._ids.size == 0:
            return ()
        gone = np.fromiter((t.id for t in ended), np.int64, len(ended))
        drop = np.isin(self._ids, gone)
        if not drop.any():
            return ()
        first = self._first_inside_ns[drop]
        last = self._last_inside_ns[drop]
        measured = (first >= 0) & (last > first)
        dwell = ((last[measured] - first[measured]) / _NS_PER_S).tolist()
        keep = ~drop
        self._ids = self._ids[keep]
        self._side = self._side[keep]
        self._first_inside_ns = self._first_inside_ns[keep]
        self._last_inside_ns = self._last_inside_ns[keep]
        return tuple(float(d) for d in dwell)


class _Zones:
    """Point in polygon for every zone at once: even-odd ray casting over all their edges."""

    def __init__(self, config: CounterConfig) -> None:
        self.names = [z.name for z in config.zones]
        duplicates = [
            (f"counter.zones[{i}].name", f"duplicate zone name {name!r}")
            for i, name in enumerate(self.names)
            if name in self.names[:i]
        ]
        if duplicates:
            raise ConfigError(
                "counter.zones: zone names must be unique",
                problems=duplicates,
                hint="give each [[counter.zones]] entry its own name",
            )
        starts: list[int] = []
        a: list[NDArray[np.float64]] = []
        b: list[NDArray[np.float64]] = []
        for zone in config.zones:
            corners = np.array(zone.polygon, np.float64)
            starts.append(sum(len(x) for x in a))
            a.append(corners)
            b.append(np.roll(corners, 1, axis=0))
        self._starts = np.array(starts, np.intp)
        self._a = np.concatenate(a) if a else np.zeros((0, 2))
        self._b = np.concatenate(b) if b else np.zeros((0, 2))
        dy = self._b[:, 1] - self._a[:, 1]
        # Horizontal edges never straddle a ray; a dummy divisor avoids a division by zero.
        self._dy = np.where(dy == 0, 1.0, dy)

    def count(self, points: NDArray[np.float64] | None) -> dict[str, int]:
        """Per zone name, how many ``points`` (normalized, (N, 2)) lie inside it."""
        if not self.names:
            return {}
        if points is None or len(points) == 0:
            return dict.fromkeys(self.names, 0)
        px = points[:, 0:1]
        py = points[:, 1:2]
        ax, ay, bx, by = self._a[:, 0], self._a[:, 1], self._b[:, 0], self._b[:, 1]
        straddles = (ay > py) != (by > py)
        x_cross = ax + (bx - ax) * (py - ay) / self._dy
        crossings = (straddles & (px < x_cross)).astype(np.int64)
        per_zone = np.add.reduceat(crossings, self._starts, axis=1)
        inside = (per_zone % 2) == 1
        return dict(zip(self.names, inside.sum(axis=0).tolist(), strict=True))


class SwitchableCounter:
    """A :class:`LineCounter` whose line can be replaced from another thread (the preview page).

    :meth:`request` only records the new line; the frame loop's next :meth:`update` applies it,
    so a switch always falls between two frames. The new line gets a fresh counter: tracks already
    in view are adopted with the side they started on, so a crossing in progress still counts once.
    """

    def __init__(self, config: CounterConfig, frame_width: int, frame_height: int) -> None:
        self._size = (frame_width, frame_height)
        self._counter = LineCounter(config, frame_width, frame_height)
        self._pending: CounterConfig | None = None
        self._lock = threading.Lock()

    def request(self, config: CounterConfig) -> None:
        """Switch to ``config`` from the next frame on (thread safe)."""
        with self._lock:
            self._pending = config
        logger.info("counting line changed; applied from the next frame")

    def update(self, u: TrackUpdate, t_ns: int) -> FrameCounts:
        with self._lock:
            pending, self._pending = self._pending, None
        if pending is not None:
            self._counter = LineCounter(pending, *self._size)
        return self._counter.update(u, t_ns)
