"""The frame loop: source -> anonymizing stage -> tracker -> counter -> window aggregator.

Collaborators are passed in (``service.py`` wires the real ones); this module owns no config,
no MQTT and no process state. Data flows one way; the only things that leave are anonymized
images (to the sinks: preview) and anonymous counts (to the aggregator, then the outbox).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol

from firmware.anonymize.backfill import Lookahead
from firmware.anonymize.stage import Anonymized, AnonymizingStage
from firmware.count import FrameCounts
from firmware.errors import StorageError
from firmware.sources.base import FrameSource
from firmware.track import Tracker, TrackUpdate
from firmware.windows import WindowAggregator

logger = logging.getLogger(__name__)


class Counter(Protocol):
    """Turns tracks into per-frame counts (:class:`firmware.count.LineCounter`)."""

    def update(self, u: TrackUpdate, t_ns: int) -> FrameCounts: ...


Sink = Callable[[Anonymized], None]
"""Receives every processed, anonymized frame (e.g. the preview hub, a video writer)."""


@dataclass
class LoopStats:
    """Running figures for health messages; numbers only."""

    frames: int = 0
    failed_frames: int = 0
    dropped: int = 0
    windows_closed: int = 0
    started_s: float = field(default_factory=time.monotonic)
    detect_ms_ewma: float = 0.0
    fps_ewma: float = 0.0
    last_frame_s: float = 0.0
    last_wall_ns: int = 0
    storage_errors: int = 0

    def as_health(self) -> dict[str, float | int | None]:
        """The loop's figures under the health schema's names (None before the first frame)."""
        started = self.frames > 0
        return {
            "fps": round(self.fps_ewma, 2) if started else None,
            "detector_latency_ms": round(self.detect_ms_ewma, 2) if started else None,
            "frames": self.frames,
            "dropped_frames": self.dropped,
            "failed_frames": self.failed_frames,
        }


class WallClock:
    """Maps a frame's timestamp to UTC epoch ns for window alignment.

    Live sources use the wall clock at processing time. File sources use a fixed epoch plus the
    media time, so a file processed faster than real time gives the windows it would have given
    live, and the same file always splits the same way for a given ``epoch_ns``.
    """

    def __init__(self, live: bool, epoch_ns: int | None = None) -> None:
        self.live = live
        self.epoch_ns = epoch_ns if epoch_ns is not None else time.time_ns()

    def __call__(self, t_ns: int) -> int:
        return time.time_ns() if self.live else self.epoch_ns + t_ns


def run(
    source: FrameSource,
    stage: AnonymizingStage,
    tracker: Tracker,
    counter: Counter,
    aggregator: WindowAggregator,
    *,
    clock: WallClock,
    stop: threading.Event,
    sinks: Sequence[Sink] = (),
    on_frame: Callable[[LoopStats], None] | None = None,
    stats: LoopStats | None = None,
    lookahead: Lookahead | None = None,
) -> LoopStats:
    """Process frames until the source ends or ``stop`` is set; return the loop's figures.

    The caller flushes the aggregator's last partial window (it knows whether the end was a
    clean end of file, a signal, or an error). With ``lookahead``, sinks get each image
    ``lookahead.delay`` frames late, with faces that walked in masked from their first sliver;
    counting never waits.
    """
    stats = stats or LoopStats()
    seen_dropped = source.dropped
    for frame in source.frames():
        if stop.is_set():
            break
        result = stage.process(frame)
        if sinks:
            for ready in lookahead.push(result) if lookahead is not None else (result,):
                for sink in sinks:
                    sink(ready)
        update = tracker.update(result.detections, frame.t_ns)
        counts = counter.update(update, frame.t_ns)
        dropped_now = source.dropped - seen_dropped
        seen_dropped = source.dropped
        if dropped_now:
            counts = replace(counts, dropped=dropped_now)
        wall = clock(frame.t_ns)
        try:
            stats.windows_closed += len(aggregator.observe(counts, wall))
        except StorageError as exc:
            # A full or failing disk: the open window stays in memory and is written when the
            # next frame closes it again; only this frame's counts are lost. Keep counting.
            stats.storage_errors += 1
            if stats.storage_errors == 1 or stats.storage_errors % 1000 == 0:
                logger.error(
                    "cannot store a closed window (%d time(s) so far): %s; fix: %s",
                    stats.storage_errors,
                    exc,
                    exc.hint,
                )
        _account(stats, result, dropped_now, wall)
        if on_frame is not None:
            on_frame(stats)
    if lookahead is not None and sinks:
        for ready in lookahead.flush():
            for sink in sinks:
                sink(ready)
    return stats


def _account(stats: LoopStats, result: Anonymized, dropped: int, wall_ns: int) -> None:
    now = time.monotonic()
    if stats.frames:
        dt = now - stats.last_frame_s
        if dt > 0:
            stats.fps_ewma = 1.0 / dt if stats.fps_ewma == 0 else 0.9 * stats.fps_ewma + 0.1 / dt
    stats.last_frame_s = now
    stats.frames += 1
    stats.failed_frames += int(result.failed)
    stats.dropped += dropped
    stats.detect_ms_ewma = (
        result.detect_ms
        if stats.frames == 1
        else 0.9 * stats.detect_ms_ewma + 0.1 * result.detect_ms
    )
    stats.last_wall_ns = wall_ns
