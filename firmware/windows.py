"""Window aggregator: turns per-frame counts into closed, anonymous count windows in the outbox.

Windows sit on wall-clock boundaries: a frame at UTC epoch time ``t`` belongs to the window
starting at ``floor(t / window_s) * window_s``. The aggregator never reads a clock itself: the
pipeline passes each frame's wall time (the wall clock for live sources, a fixed start epoch plus
media time for files), so a file processed faster than real time gives the same windows as live.

Closing a window is one ``outbox.add_window`` transaction; the aggregator forgets the window only
after it returned. If it raises (StorageError), the window stays in memory and the next call tries
again; the counts of the frame whose ``observe`` raised are not recorded (windows are never lost,
a frame's counts may be).

What a subscriber sees:

- A window with ``frames.processed > 0`` and zero counts: the camera looked and nothing happened.
- A window with ``frames.processed == 0`` and ``occupancy: null``: no frame was processed (camera
  off, pipeline stalled). When a frame arrives after such a gap, each fully elapsed window in
  between is written as such an empty window, so the time line has no holes. A gap longer than
  ``max_gap_windows`` windows (a long stall, or the clock stepping forward when NTP syncs on a Pi
  without a real-time clock) is written as ONE row spanning the whole gap with ``"merged": n``; it
  consumes ``n`` seqs so the contract's rule "seq gaps are explained by merged" holds.
- A frame whose wall time is earlier than the open window (the clock stepped back) is counted in
  the open window: seq order and time order stay the same.
- Window times are unique per device, so a time-series store can key on ``(device, start)``:
  the first window of a run starts at its first frame (to the second, rounded down) instead of
  the boundary before it, and :meth:`WindowAggregator.flush` (end of file, SIGTERM) ends the open
  window at the flush time (to the second, rounded up, never past the boundary) instead of the
  boundary after it. Two runs within one window thus give two rows with different, non-overlapping
  spans (``[17:00:00, 17:00:25)`` and ``[17:00:31, 17:01:00)``), and no window ends in the future
  when it is published. Every other window sits on the grid. A restart gap is not back-filled
  (the new process does not know when the old one stopped); the retained status topic tells that
  story.
- Storage failures (disk full or failing) lose no window: the closed window stays in memory until
  the outbox takes it. The frame whose counts could not be recorded meanwhile is not forgotten
  either: it is counted in ``frames.dropped`` (and ``frames.lost``) of the next window that could
  be stored, so ``processed + dropped`` still accounts for every frame.

Privacy (P1, P5): payloads hold aggregates only. With ``suppress_below = k > 0``, every count,
occupancy figure and dwell count below ``k`` is reported as 0 (a suppressed dwell has null
percentiles) and every window carries ``"suppress_below": k``. There is deliberately no
per-window "something was suppressed" flag: it would reveal the small non-zero count that
suppression exists to hide.

Memory is bounded per window: dwell times are kept in a reservoir sample of at most
``dwell_sample_cap`` values (exact percentiles up to that many tracks per window, an unbiased
sample beyond), seeded by the window's index so the same input always gives the same payload.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from firmware.contract import COUNTS_SCHEMA, check_identifier, utc_iso
from firmware.count import FrameCounts
from firmware.errors import StorageError
from firmware.outbox import Outbox

logger = logging.getLogger(__name__)

_NS = 1_000_000_000


@dataclass(slots=True)
class _Gauge:
    """min / max / mean / last of an integer measured once per processed frame."""

    min: int
    max: int
    total: int
    n: int
    last: int

    @classmethod
    def of(cls, value: int) -> _Gauge:
        return cls(value, value, value, 1, value)

    def add(self, value: int) -> None:
        self.min = min(self.min, value)
        self.max = max(self.max, value)
        self.total += value
        self.n += 1
        self.last = value


@dataclass(slots=True)
class _Window:
    index: int
    sample_cap: int
    start_s: int  # epoch seconds; the boundary, or the first frame's second (see module docstring)
    last_s: int  # the latest frame's second, never before start_s
    entries: int = 0
    exits: int = 0
    visitors: int = 0
    processed: int = 0
    dropped: int = 0
    occupancy: _Gauge | None = None
    zones: dict[str, _Gauge] = field(default_factory=dict)
    dwell_count: int = 0
    dwell_sample: list[float] = field(default_factory=list)
    rng: random.Random = field(init=False)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.index)  # reproducible: file and live runs sample alike

    def add(self, fc: FrameCounts) -> None:
        self.entries += fc.entries
        self.exits += fc.exits
        self.visitors += fc.new_visitors
        self.processed += 1
        self.dropped += fc.dropped
        if self.occupancy is None:
            self.occupancy = _Gauge.of(fc.occupancy)
        else:
            self.occupancy.add(fc.occupancy)
        for name, value in fc.zone_occupancy.items():
            gauge = self.zones.get(name)
            if gauge is None:
                self.zones[name] = _Gauge.of(value)
            else:
                gauge.add(value)
        for dwell in fc.dwell_s:
            # Reservoir sampling (Algorithm R): memory stays at sample_cap however busy the door.
            if len(self.dwell_sample) < self.sample_cap:
                self.dwell_sample.append(float(dwell))
            else:
                j = self.rng.randrange(self.dwell_count + 1)
                if j < self.sample_cap:
                    self.dwell_sample[j] = float(dwell)
            self.dwell_count += 1


class WindowAggregator:
    """Aggregates :class:`FrameCounts` into wall-clock windows and writes each closed one.

    ``window_s``: window length. Shorter windows give finer time lines but smaller counts per
    window, which single out people more easily (raise ``suppress_below`` with them).
    ``suppress_below``: see the module docstring (P5); 0 turns suppression off.
    ``max_gap_windows``: longest run of empty windows written one by one; a longer gap becomes one
    spanning row (one transaction instead of thousands of fsyncs on a clock step).
    ``dwell_sample_cap``: dwell times kept per window for the percentiles.
    ``on_closed``: called with each seq once its window is committed to the outbox (the service
    wakes the publisher with it, so a window goes out at once instead of at the next poll).

    Not thread safe: call it from the frame loop only. A SIGTERM handler should set a flag that
    the loop turns into :meth:`flush`, not call it directly.
    """

    def __init__(
        self,
        outbox: Outbox,
        *,
        site: str,
        device: str,
        window_s: int,
        suppress_below: int = 0,
        max_gap_windows: int = 60,
        dwell_sample_cap: int = 1024,
        on_closed: Callable[[int], None] | None = None,
    ) -> None:
        check_identifier("site", site)
        check_identifier("device", device)
        if window_s < 1:
            raise ValueError(f"window_s must be >= 1 (got {window_s})")
        if suppress_below < 0:
            raise ValueError(f"suppress_below must be >= 0 (got {suppress_below})")
        if max_gap_windows < 0:
            raise ValueError(f"max_gap_windows must be >= 0 (got {max_gap_windows})")
        if dwell_sample_cap < 1:
            raise ValueError(f"dwell_sample_cap must be >= 1 (got {dwell_sample_cap})")
        self._outbox = outbox
        self._site = site
        self._device = device
        self._window_s = window_s
        self._suppress = suppress_below
        self._max_gap = max_gap_windows
        self._sample_cap = dwell_sample_cap
        self._cur: _Window | None = None
        self._last_index: int | None = None  # index of the last window written
        self._covered_s: int | None = None  # end (epoch s) of the last window written
        self._resumed = True  # the next window opened is the first after a start or a flush
        self._clock_back = False
        self._on_closed = on_closed
        self._lost = 0  # frames whose counts a storage failure lost, not yet in a stored window
        self._stream = outbox.bind(site, device)

    @property
    def window_s(self) -> int:
        return self._window_s

    def current(self) -> dict[str, Any] | None:
        """The open window's running totals, for the local preview page only (never published:
        a window still open could single out the one person who just walked in)."""
        w = self._cur
        if w is None:
            return None
        return {
            "start": utc_iso(w.start_s),
            "entries": w.entries,
            "exits": w.exits,
            "visitors": w.visitors,
            "occupancy": None if w.occupancy is None else w.occupancy.last,
            "frames": w.processed,
        }

    def observe(self, fc: FrameCounts, wall_ns: int) -> list[int]:
        """Count one processed frame at UTC epoch ``wall_ns``. Returns the seqs of the windows this
        call closed (the open one and any empty ones after it), oldest first.

        Raises StorageError when a closed window could not be stored; the window is kept and
        written by a later call, and this frame is counted as dropped in the next window stored.
        """
        try:
            return self._observe(fc, wall_ns)
        except StorageError:
            self._lost += 1 + fc.dropped
            raise

    def _observe(self, fc: FrameCounts, wall_ns: int) -> list[int]:
        idx = wall_ns // (self._window_s * _NS)
        closed: list[int] = []
        cur = self._cur
        if cur is not None and idx > cur.index:
            closed.append(self._write(cur))
            cur = None
        if cur is None:
            if self._last_index is not None and idx > self._last_index + 1:
                closed.extend(self._fill_gap(self._last_index + 1, idx))
            cur = self._cur = self._open(self._clamp(idx), wall_ns)
        elif idx < cur.index:
            self._warn_clock_back(idx, cur.index)
        else:
            self._clock_back = False
        cur.last_s = max(cur.last_s, min(wall_ns // _NS, (cur.index + 1) * self._window_s - 1))
        cur.add(fc)
        return closed

    def flush(self, wall_ns: int) -> int | None:
        """Close the open window (end of file, shutdown) and write any empty windows that fully
        elapsed between it and ``wall_ns``. Returns the last seq written, None if nothing was."""
        last: int | None = None
        if self._cur is not None:
            w = self._cur
            boundary = (w.index + 1) * self._window_s
            at = -(-wall_ns // _NS)  # rounded up: the window holds every frame before the flush
            last = self._write(w, end_s=min(boundary, max(at, w.last_s + 1)))
            self._resumed = True
        if self._last_index is not None:
            idx = wall_ns // (self._window_s * _NS)
            if idx > self._last_index + 1:
                last = self._fill_gap(self._last_index + 1, idx)[-1]
        return last

    # -- internals -----------------------------------------------------------------------------

    def _open(self, idx: int, wall_ns: int) -> _Window:
        boundary = idx * self._window_s
        start = boundary
        if self._resumed:
            # The first window after a start or a flush: from its first frame, so it never shares
            # its span with the previous run's row for the same window (see module docstring).
            start = max(boundary, wall_ns // _NS)
            self._resumed = False
        if self._covered_s is not None:
            start = max(start, self._covered_s)
        start = min(start, boundary + self._window_s - 1)
        return _Window(idx, self._sample_cap, start_s=start, last_s=start)

    def _clamp(self, idx: int) -> int:
        if self._last_index is not None and idx < self._last_index:
            self._warn_clock_back(idx, self._last_index)
            return self._last_index
        return idx

    def _warn_clock_back(self, idx: int, into: int) -> None:
        if not self._clock_back:
            logger.warning(
                "wall clock went back %d window(s); counting in window %s until it catches up",
                into - idx,
                utc_iso(into * self._window_s),
            )
            self._clock_back = True

    def _add(self, first: int, stop: int, w: _Window | None, *, end_s: int | None = None) -> int:
        """Write one row; frames lost to earlier storage failures ride along with it."""
        lost = self._lost
        start_s = first * self._window_s if w is None else w.start_s
        end_s = stop * self._window_s if end_s is None else end_s
        seq = self._outbox.add_window(
            lambda seq: self._payload(seq, first, stop, w, start_s, end_s, lost),
            windows=stop - first,
        )
        self._lost -= lost  # only after the commit: a failed write keeps them for the next row
        self._covered_s = end_s
        return seq

    def _write(self, w: _Window, *, end_s: int | None = None) -> int:
        seq = self._add(w.index, w.index + 1, w, end_s=end_s)
        self._cur = None  # only now, after the transaction committed
        self._last_index = w.index
        self._closed(seq)
        return seq

    def _fill_gap(self, first: int, stop: int) -> list[int]:
        """Write the empty windows ``first .. stop - 1``."""
        n = stop - first
        if n > self._max_gap:
            logger.warning(
                "no frames from %s to %s: writing one empty row for %d windows",
                utc_iso(first * self._window_s),
                utc_iso(stop * self._window_s),
                n,
            )
            seq = self._add(first, stop, None)
            self._last_index = stop - 1
            self._closed(seq)
            return [seq]
        seqs = []
        for i in range(first, stop):
            seqs.append(self._add(i, i + 1, None))
            self._last_index = i
            self._closed(seqs[-1])
        return seqs

    def _closed(self, seq: int) -> None:
        # Called after the window's transaction committed, e.g. to wake the publisher.
        if self._on_closed is not None:
            self._on_closed(seq)

    def _s(self, value: int) -> int:
        return 0 if value < self._suppress else value

    def _gauge(self, g: _Gauge) -> dict[str, Any]:
        mean = g.total / g.n
        return {
            "min": self._s(g.min),
            "max": self._s(g.max),
            "mean": 0.0 if mean < self._suppress else round(mean, 3),
            "last": self._s(g.last),
        }

    def _dwell(self, w: _Window | None) -> dict[str, Any]:
        count = 0 if w is None else self._s(w.dwell_count)
        if w is None or count == 0:
            return {"count": 0, "p50": None, "p90": None}
        p50, p90 = np.quantile(np.asarray(w.dwell_sample, dtype=np.float64), [0.5, 0.9])
        return {"count": count, "p50": round(float(p50), 1), "p90": round(float(p90), 1)}

    def _payload(
        self,
        seq: int,
        first: int,
        stop: int,
        w: _Window | None,
        start_s: int,
        end_s: int,
        lost: int,
    ) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "schema": COUNTS_SCHEMA,
            "site": self._site,
            "device": self._device,
            "stream": self._stream,
            "seq": seq,
            "start": utc_iso(start_s),
            "end": utc_iso(end_s),
            "entries": 0 if w is None else self._s(w.entries),
            "exits": 0 if w is None else self._s(w.exits),
            "visitors": 0 if w is None else self._s(w.visitors),
            "occupancy": None if w is None or w.occupancy is None else self._gauge(w.occupancy),
            "dwell_s": self._dwell(w),
            "frames": {
                "processed": 0 if w is None else w.processed,
                "dropped": lost + (0 if w is None else w.dropped),
            },
        }
        if lost:
            payload["frames"]["lost"] = lost
        zones: Mapping[str, _Gauge] = {} if w is None else w.zones
        if zones:
            payload["zones"] = {name: self._gauge(g) for name, g in sorted(zones.items())}
        if self._suppress > 0:
            payload["suppress_below"] = self._suppress
        if stop - first > 1:
            payload["merged"] = stop - first
        return payload
