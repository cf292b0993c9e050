"""The frame loop: source -> person detector -> tracker -> counter -> window aggregator, and
source -> anonymizing stage (faces, plus the heads of the people found) -> sinks.

With a person detector (the default), people are counted whether or not a face shows: the
tracker follows person boxes, detected every ``people_every`` frames and predicted in between
(the tracker's motion model), and the head region of every person box is covered in the frame
besides every detected face. Without one (``people.enabled = false``), the tracker follows the
face detections, as before people counting existed.

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
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

from firmware.anonymize.backfill import Lookahead
from firmware.anonymize.heads import head_boxes
from firmware.anonymize.stage import Anonymized, AnonymizingStage
from firmware.count import FrameCounts
from firmware.detect.base import PersonDetector, detect_on_frame
from firmware.errors import StorageError
from firmware.frames import Detections, Frame
from firmware.sources.base import FrameSource
from firmware.track import Tracker, TrackUpdate
from firmware.windows import WindowAggregator

logger = logging.getLogger(__name__)


class Counter(Protocol):
    """Turns tracks into per-frame counts (:class:`firmware.count.LineCounter`)."""

    def update(self, u: TrackUpdate, t_ns: int) -> FrameCounts: ...


Sink = Callable[[Anonymized], None]
"""Receives every processed, anonymized frame (e.g. the preview hub, a video writer)."""


#: A backwards step of the wall clock larger than this is reported; NTP slews smaller ones.
CLOCK_STEP_NS = 1_000_000_000


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
    people_ms_ewma: float = 0.0
    people_failed: int = 0
    clock_back_steps: int = 0
    clock_back_s: float = 0.0

    def as_health(self) -> dict[str, Any]:
        """The loop's figures under the health schema's names (None before the first frame).

        ``frames`` stays the integer version-1 consumers read; ``frames_since_start`` has the
        shape of a counts window's ``frames`` object, so one parser reads both topics.
        """
        started = self.frames > 0
        return {
            "fps": round(self.fps_ewma, 2) if started else None,
            "detector_latency_ms": round(self.detect_ms_ewma, 2) if started else None,
            "frames": self.frames,
            "frames_since_start": {"processed": self.frames, "dropped": self.dropped},
            "dropped_frames": self.dropped,
            "failed_frames": self.failed_frames,
            "clock_back_steps": self.clock_back_steps,
            "clock_back_s": round(self.clock_back_s, 3),
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


class PeopleStage:
    """Person detection at a cadence, tracking and counting from person tracks, head regions.

    ``every``: run the detector on one frame in ``every`` (1: all). Between two detections the
    tracker's prediction places the people (for the head masks) and the counts carry the last
    occupancy; crossings are decided on detection frames. ``every = 2`` halves the detector's
    cost; people walk about 1/15 of the frame height per second, so at 15 fps a track moves a few
    pixels between detections and none is lost.
    ``heads``: cover the head region of every person box (privacy; on by default).
    """

    def __init__(
        self,
        detector: PersonDetector,
        tracker: Tracker,
        counter: Counter,
        *,
        every: int = 2,
        heads: bool = True,
    ) -> None:
        if every < 1:
            raise ValueError(f"every must be >= 1, got {every}")
        self.detector = detector
        self.tracker = tracker
        self.counter = counter
        self.every = every
        self.heads = heads
        self._frames = 0
        self._last = FrameCounts(t_ns=0)
        self._failing = False

    def detect(self, frame: Frame) -> Detections:
        """People in ``frame.image`` pixels (detected on the low-resolution stream if any)."""
        return detect_on_frame(self.detector, frame)

    def step(
        self, frame: Frame, stats: LoopStats
    ) -> tuple[FrameCounts, NDArray[np.float32] | None, bool]:
        """Counts for ``frame``, the head regions to cover in it, and whether detection failed
        (then the frame must be masked entirely)."""
        due = self._frames % self.every == 0
        self._frames += 1
        t_ns = frame.t_ns
        people: Detections | None = None
        failed = False
        if due:
            start = time.perf_counter()
            try:
                people = self.detect(frame)
            except Exception as exc:  # any failure fails closed, whatever its type
                failed = True
                stats.people_failed += 1
                if not self._failing:
                    logger.error("person detection failed, masking whole frames: %s", exc)
                    self._failing = True
            else:
                if self._failing:
                    logger.warning("person detection recovered")
                    self._failing = False
            ms = (time.perf_counter() - start) * 1e3
            a = 1.0 if stats.people_ms_ewma == 0 else 0.1
            stats.people_ms_ewma = a * ms + (1 - a) * stats.people_ms_ewma
        if people is not None:
            counts = self.counter.update(self.tracker.update(people, t_ns), t_ns)
            self._last = counts
            boxes = np.concatenate([people.boxes, self.tracker.predict_boxes(t_ns)])
        else:
            # Between detections: no events, the occupancy of the last detection frame.
            counts = FrameCounts(
                t_ns=t_ns,
                occupancy=self._last.occupancy,
                zone_occupancy=dict(self._last.zone_occupancy),
            )
            boxes = self.tracker.predict_boxes(t_ns)
        heads = head_boxes(boxes, frame.width, frame.height) if self.heads else None
        return counts, heads, failed


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
    people: PeopleStage | None = None,
) -> LoopStats:
    """Process frames until the source ends or ``stop`` is set; return the loop's figures.

    The caller flushes the aggregator's last partial window (it knows whether the end was a
    clean end of file, a signal, or an error). With ``lookahead``, sinks get each image
    ``lookahead.delay`` frames late, with faces that walked in masked from their first sliver;
    counting never waits. With ``people``, counting follows its person tracks (and its
    ``tracker`` and ``counter``; the ``tracker`` and ``counter`` arguments are then unused).
    """
    stats = stats or LoopStats()
    seen_dropped = source.dropped
    for frame in source.frames():
        if stop.is_set():
            break
        if people is not None:
            counts, heads, people_failed = people.step(frame, stats)
            result = stage.process(frame, heads=heads, people_failed=people_failed)
        else:
            result = stage.process(frame)
            update = tracker.update(result.detections, frame.t_ns)
            counts = counter.update(update, frame.t_ns)
        if sinks:
            for ready in lookahead.push(result) if lookahead is not None else (result,):
                for sink in sinks:
                    sink(ready)
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
    if stats.frames > 1 and wall_ns < stats.last_wall_ns - CLOCK_STEP_NS:
        # Windows are aligned on the wall clock: a step back (NTP after a dead RTC battery, a
        # hand-set date) makes later windows carry earlier times. Said once per step, and
        # counted for health, so a subscriber can see why times repeat.
        back_s = (stats.last_wall_ns - wall_ns) / 1e9
        stats.clock_back_steps += 1
        stats.clock_back_s = max(stats.clock_back_s, back_s)
        logger.warning(
            "wall clock stepped back by %.1f s; windows keep counting in the open window until "
            "it catches up (health: clock_back_steps %d)",
            back_s,
            stats.clock_back_steps,
        )
    stats.last_wall_ns = wall_ns
