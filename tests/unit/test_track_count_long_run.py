"""A long run of people coming and going: counts stay right and state stays bounded.

Guards habit 7 (bounded state on a device that runs for months): every per-track structure of
the tracker and the counter must be pruned when a track ends. The scene is procedural and
seeded: people walk in or out across the line at random lanes and speeds, some are occluded for
a few frames, some turn back before the line, and the detector adds stray one-frame false faces.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from firmware.config.settings import CounterConfig, TrackerConfig
from firmware.count import LineCounter
from firmware.frames import Detections
from firmware.track import Tracker

W, H = 640, 480
FPS = 15.0
FRAMES = 20_000
FACE = 36.0


@dataclass
class Walker:
    start: int
    x: float
    y0: float
    vy: float  # px per frame, signed
    turn_at: float | None  # y where the walker turns back, or None
    hidden: range

    def centre(self, f: int) -> tuple[float, float] | None:
        k = f - self.start
        if k < 0 or f in self.hidden:
            return None
        y = self.y0 + self.vy * k
        if self.turn_at is not None:
            # Walk to turn_at, then walk back the same way.
            reach = abs(self.turn_at - self.y0)
            travelled = abs(self.vy) * k
            if travelled > reach:
                y = self.turn_at - np.sign(self.vy) * (travelled - reach)
                if (self.vy > 0 and y < self.y0) or (self.vy < 0 and y > self.y0):
                    return None
        if not 30 <= y <= H - 30:
            return None
        return (self.x, y)


def scene(seed: int) -> tuple[list[Walker], int, int]:
    rng = np.random.default_rng(seed)
    walkers: list[Walker] = []
    entries = exits = 0
    f = 0
    lanes = np.linspace(60, W - 60, 9)
    lane_free = np.zeros(len(lanes), int)  # frame from which a lane is free again
    while f < FRAMES - 200:
        f += int(rng.integers(6, 14))
        lane = int(rng.integers(len(lanes)))
        if lane_free[lane] > f:
            continue
        down = bool(rng.random() < 0.5)
        speed = float(rng.uniform(5, 12))
        y0 = 40.0 if down else H - 40.0
        turn = None
        if rng.random() < 0.1:
            turn = 160.0 if down else 320.0  # turns back well before the band
        hidden = range(0)
        if rng.random() < 0.2:
            mid = f + int(200 / speed)
            hidden = range(mid, mid + int(rng.integers(2, 8)))
        x = float(lanes[lane] + rng.uniform(-8, 8))
        walkers.append(Walker(f, x, y0, speed if down else -speed, turn, hidden))
        lane_free[lane] = f + int(2 * (H - 80) / speed) + 20
        if turn is None:
            entries += down
            exits += not down
    return walkers, entries, exits


def test_long_run_state_bounded_and_counts_right() -> None:
    """20,000 frames (22 min at 15 fps) of traffic: tracker and counter hold only the tracks
    alive now, everything is forgotten at the end, and >= 98 % of crossings are counted."""
    walkers, want_in, want_out = scene(seed=42)
    rng = np.random.default_rng(1)
    tracker = Tracker(TrackerConfig())
    counter = LineCounter(CounterConfig(), W, H)
    alive: list[Walker] = []
    nxt = 0
    got_in = got_out = visitors = 0
    max_tracker = max_counter = max_people = 0
    for f in range(FRAMES):
        t = round(f * 1e9 / FPS)
        while nxt < len(walkers) and walkers[nxt].start <= f:
            alive.append(walkers[nxt])
            nxt += 1
        alive = [w for w in alive if f - w.start < 400]
        centres = [c for w in alive if (c := w.centre(f)) is not None]
        if rng.random() < 0.05:  # a stray false face for one frame
            centres.append((float(rng.uniform(40, W - 40)), float(rng.uniform(40, H - 40))))
        boxes = [[x - FACE / 2, y - FACE / 2, x + FACE / 2, y + FACE / 2] for x, y in centres]
        d = Detections.from_boxes(boxes) if boxes else Detections.empty()
        u = tracker.update(d, t)
        fc = counter.update(u, t)
        got_in += fc.entries
        got_out += fc.exits
        visitors += fc.new_visitors
        sizes_t = set(tracker.state_sizes().values())
        sizes_c = set(counter.state_sizes().values())
        assert len(sizes_t) == 1 and len(sizes_c) == 1, "per-track structures out of step"
        max_tracker = max(max_tracker, len(tracker))
        max_counter = max(max_counter, len(counter))
        max_people = max(max_people, len(centres))

    assert want_in > 300 and want_out > 300  # the scene really is busy
    # Bounded by what is in view now (plus tracks waiting out max_age), not by the run length.
    assert max_tracker <= 2 * max_people + 5
    assert max_counter <= max_tracker
    assert abs(got_in - want_in) <= 0.02 * want_in
    assert abs(got_out - want_out) <= 0.02 * want_out
    assert abs(visitors - len(walkers)) <= 0.02 * len(walkers)

    t_end = round(FRAMES * 1e9 / FPS) + 2 * 10**9
    counter.update(tracker.update(Detections.empty(), t_end), t_end)
    assert set(tracker.state_sizes().values()) == {0}
    assert set(counter.state_sizes().values()) == {0}
