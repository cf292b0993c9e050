"""Counter behaviour on hand-built frame sequences, run through the real tracker.

Each scene is a list of people; a person is a dict ``frame -> face centre (pixels)`` built from
keyframes. The default line is horizontal at mid-height with the inside below it, so on a
640x480 frame the line is at y = 240 and the hysteresis band (0.02) is y in [230.4, 249.6].
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest

from firmware.config.settings import CounterConfig, TrackerConfig, ZoneConfig
from firmware.count import FrameCounts, LineCounter
from firmware.errors import ConfigError
from firmware.frames import Detections
from firmware.track import Track, Tracker, TrackUpdate

W, H = 640, 480
FPS = 15.0
FACE = 40.0

Person = dict[int, tuple[float, float]]


def t_of(frame: int, fps: float = FPS) -> int:
    return round(frame * 1e9 / fps)


def path(*keys: tuple[int, float, float]) -> Person:
    """A face centre on every frame from the first keyframe to the last, linearly interpolated."""
    out: Person = {}
    for (f0, x0, y0), (f1, x1, y1) in itertools.pairwise(keys):
        for f in range(f0, f1 + 1):
            a = (f - f0) / (f1 - f0)
            out[f] = (x0 + a * (x1 - x0), y0 + a * (y1 - y0))
    if len(keys) == 1:
        out[keys[0][0]] = (keys[0][1], keys[0][2])
    return out


def hide(person: Person, frames: Iterable[int]) -> Person:
    """The same person, not detected on ``frames`` (occlusion, missed detection)."""
    gone = set(frames)
    return {f: c for f, c in person.items() if f not in gone}


def hold(person: Person, start: int, frames: int, jitter: float = 0.0, seed: int = 0) -> Person:
    """Insert a stop: the position at ``start`` held for ``frames`` frames, later frames shifted."""
    rng = np.random.default_rng(seed)
    out = {f: c for f, c in person.items() if f <= start}
    x, y = person[start]
    for k in range(1, frames + 1):
        out[start + k] = (x + rng.uniform(-jitter, jitter), y + rng.uniform(-jitter, jitter))
    for f, c in person.items():
        if f > start:
            out[f + frames] = c
    return out


def detections(people: list[Person], frame: int, size: float = FACE) -> Detections:
    boxes = [
        [cx - size / 2, cy - size / 2, cx + size / 2, cy + size / 2]
        for p in people
        if (c := p.get(frame)) is not None
        for cx, cy in [c]
    ]
    return Detections.from_boxes(boxes) if boxes else Detections.empty()


@dataclass
class Run:
    tracker: Tracker
    counter: LineCounter
    counts: list[FrameCounts] = field(default_factory=list)
    updates: list[TrackUpdate] = field(default_factory=list)

    @property
    def entries(self) -> int:
        return sum(c.entries for c in self.counts)

    @property
    def exits(self) -> int:
        return sum(c.exits for c in self.counts)

    @property
    def visitors(self) -> int:
        return sum(c.new_visitors for c in self.counts)

    @property
    def dwell(self) -> list[float]:
        return [d for c in self.counts for d in c.dwell_s]

    @property
    def confirmed_ids(self) -> set[int]:
        return {t.id for u in self.updates for t in u.active}


def run(
    people: list[Person],
    *,
    counter: CounterConfig | None = None,
    tracker: TrackerConfig | None = None,
    fps: float = FPS,
    size: float = FACE,
    tail_s: float = 1.5,
) -> Run:
    """Feed the scene through a fresh tracker and counter, then empty frames so every track ends."""
    tcfg = tracker or TrackerConfig()
    trk = Tracker(tcfg)
    cnt = LineCounter(counter or CounterConfig(anchor="centre"), W, H)
    last = max(max(p) for p in people)
    out = Run(tracker=trk, counter=cnt)
    for f in range(last + 1 + int(tail_s * fps) + 1):
        u = trk.update(detections(people, f, size), t_of(f, fps))
        out.updates.append(u)
        out.counts.append(cnt.update(u, t_of(f, fps)))
    return out


DOWN = path((0, 320, 80), (40, 320, 400))  # outside -> inside, 8 px per frame
UP = path((0, 320, 400), (40, 320, 80))
# Back and forth, 4 frames each, between 2 px before the line (y=238, in the band) and 16 px
# past it (y=256, beyond the band on the inside), as keyframes (frame, x, y).
WOBBLE = [
    (15, 320, 238),
    (19, 320, 238),
    (20, 320, 256),
    (24, 320, 256),
    (25, 320, 238),
    (29, 320, 238),
    (30, 320, 256),
    (34, 320, 256),
    (35, 320, 238),
    (39, 320, 238),
]


@dataclass(frozen=True)
class Case:
    name: str
    people: list[Person]
    expect: tuple[int, int, int]  # entries, exits, visitors
    kwargs: dict[str, Any] = field(default_factory=dict)


CASES = [
    Case("one person walks in", [DOWN], (1, 0, 1)),
    Case("one person walks out", [UP], (0, 1, 1)),
    Case(
        "first seen inside, walks out: an exit",
        [path((0, 320, 300), (20, 320, 100))],
        (0, 1, 1),
    ),
    Case(
        "wobble across the line but never back beyond the band counts once",
        [path((0, 320, 80), *WOBBLE, (55, 320, 420))],
        (1, 0, 1),
    ),
    Case(
        "each genuine crossing counts: in, back out, in again",
        [path((0, 320, 80), (15, 320, 320), (30, 320, 160), (45, 320, 320), (60, 320, 420))],
        (2, 1, 1),
    ),
    Case(
        "walks to the line, stands on it with detector jitter, walks in: one entry",
        [hold(path((0, 320, 80), (20, 320, 240), (40, 320, 400)), 20, 60, jitter=5.0, seed=2)],
        (1, 0, 1),
    ),
    Case(
        "two people cross at once in opposite directions",
        [path((0, 300, 80), (40, 300, 400)), path((0, 335, 400), (40, 335, 80))],
        (1, 1, 2),
    ),
    Case(
        "two people cross side by side in the same direction",
        [path((0, 290, 80), (40, 290, 400)), path((0, 335, 80), (40, 335, 400))],
        (2, 0, 2),
    ),
    Case(
        "occlusion mid-crossing shorter than max_age: one crossing",
        [hide(DOWN, range(16, 23))],
        (1, 0, 1),
    ),
    Case(
        "occluded while the prediction runs over the line, reappears outside: nothing",
        [hide(hold(path((0, 320, 80), (18, 320, 224), (36, 320, 80)), 18, 12), range(12, 24))],
        (0, 0, 1),
    ),
    Case(
        "turns back before the line: nothing",
        [path((0, 320, 80), (20, 320, 220), (40, 320, 80))],
        (0, 0, 1),
    ),
    Case(
        "turns back inside the band, past the line itself: nothing",
        [path((0, 320, 80), (20, 320, 246), (40, 320, 80))],
        (0, 0, 1),
    ),
    Case(
        "approaches, stops in the band, walks back out: nothing",
        [hold(path((0, 320, 80), (20, 320, 238), (40, 320, 80)), 20, 45, jitter=3.0, seed=1)],
        (0, 0, 1),
    ),
    Case(
        "approaches, stops in the band and vanishes there: nothing",
        [hold(path((0, 320, 80), (20, 320, 244)), 20, 20)],
        (0, 0, 1),
    ),
    Case(
        "fast walker at 4 fps jumps over the whole band in one frame",
        [path((0, 320, 90), (6, 320, 450))],
        (1, 0, 1),
        {"fps": 4.0},
    ),
    Case(
        "tentative track crosses before min_hits, then confirms inside: entry",
        [path((0, 320, 200), (4, 320, 260), (12, 320, 380))],
        (1, 0, 1),
        {"tracker": TrackerConfig(min_hits=5)},
    ),
    Case(
        "first seen inside the band, walks in: not counted (documented)",
        [path((0, 320, 242), (20, 320, 420))],
        (0, 0, 1),
    ),
    Case(
        "a stray false face inside does not lend its side to a newcomer outside",
        [path((0, 320, 330)), path((8, 320, 200), (30, 320, 80))],
        (0, 0, 1),
    ),
    Case(
        "too brief to confirm: no visitor, no crossing",
        [path((0, 320, 200), (1, 320, 280))],
        (0, 0, 0),
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_crossings(case: Case) -> None:
    """Table of frame sequences with the entries, exits and visitors they must produce."""
    r = run(case.people, **case.kwargs)
    assert (r.entries, r.exits, r.visitors) == case.expect
    assert len(r.counter) == 0, "counter state left after every track ended"
    assert len(r.tracker) == 0, "tracker state left after every track ended"


def test_occlusion_keeps_one_id() -> None:
    """A person hidden for 7 frames (0.47 s < max_age) mid-crossing keeps a single track id."""
    r = run([hide(DOWN, range(16, 23))])
    assert len(r.confirmed_ids) == 1
    assert r.entries == 1


@pytest.mark.parametrize(
    ("inside", "entries", "exits"),
    [((1.0, 0.0), 1, 0), ((0.0, 1.0), 0, 1)],
    ids=["inside top-right", "inside bottom-left"],
)
def test_diagonal_line_inside_point_sets_direction(
    inside: tuple[float, float], entries: int, exits: int
) -> None:
    """The same walk across a diagonal line is an entry or an exit depending on ``inside``."""
    walk = path((0, 100, 400), (40, 500, 100))  # bottom-left to top-right, crosses y = x
    r = run(
        [walk], counter=CounterConfig(anchor="centre", line=(0.0, 0.0, 1.0, 1.0), inside=inside)
    )
    assert (r.entries, r.exits) == (entries, exits)


def test_occupancy_follows_people_in_and_out() -> None:
    """Occupancy counts confirmed tracks on the inside, and drops when they leave or end."""
    a = path((0, 200, 80), (30, 200, 400), (60, 200, 400))  # walks in, stays
    b = path((0, 440, 400), (10, 440, 400), (40, 440, 80))  # starts inside, walks out
    r = run([a, b])
    occ = [c.occupancy for c in r.counts]
    assert occ[5] == 1  # b confirmed inside, a still outside
    assert occ[50] == 1  # a inside, b gone out
    assert occ[20] == 2  # a settled inside at frame 16, b leaves the band at frame 26
    assert occ[-1] == 0  # every track ended
    assert r.entries == 1 and r.exits == 1


def test_occupancy_both_inside() -> None:
    """Two people standing inside are an occupancy of 2; one of them outside does not count."""
    inside1 = path((0, 200, 350), (30, 200, 350))
    inside2 = path((0, 400, 350), (30, 400, 350))
    outside = path((0, 300, 100), (30, 300, 100))
    r = run([inside1, inside2, outside])
    assert r.counts[10].occupancy == 2


ZONES = CounterConfig(
    anchor="centre",
    zones=[
        ZoneConfig(name="left", polygon=[(0.0, 0.0), (0.5, 0.0), (0.5, 1.0), (0.0, 1.0)]),
        ZoneConfig(name="corner", polygon=[(1.0, 1.0), (0.5, 1.0), (1.0, 0.5)]),
    ],
)


def test_zone_occupancy_per_zone() -> None:
    """Each zone counts the confirmed tracks whose centre lies in its polygon, 0 when empty."""
    left = path((0, 100, 300), (30, 100, 300))
    corner = path((0, 600, 460), (30, 600, 460))  # x=0.94, y=0.96: inside the triangle
    elsewhere = path((0, 400, 100), (30, 400, 100))
    r = run([left, corner, elsewhere], counter=ZONES)
    assert r.counts[0].zone_occupancy == {"left": 0, "corner": 0}  # nobody confirmed yet
    assert r.counts[10].zone_occupancy == {"left": 1, "corner": 1}
    assert r.counts[-1].zone_occupancy == {"left": 0, "corner": 0}


def test_zone_concave_polygon_many_points() -> None:
    """Point-in-polygon on an L-shaped (concave) zone matches the union of its two rectangles."""
    l_shape = [(0.1, 0.1), (0.4, 0.1), (0.4, 0.6), (0.9, 0.6), (0.9, 0.9), (0.1, 0.9)]
    cfg = CounterConfig(anchor="centre", zones=[ZoneConfig(name="ell", polygon=l_shape)])
    counter = LineCounter(cfg, W, H)
    rng = np.random.default_rng(7)
    pts = rng.uniform(0, 1, size=(400, 2))
    expected = int(
        np.count_nonzero(
            ((pts[:, 0] > 0.1) & (pts[:, 0] < 0.4) & (pts[:, 1] > 0.1) & (pts[:, 1] < 0.9))
            | ((pts[:, 0] > 0.1) & (pts[:, 0] < 0.9) & (pts[:, 1] > 0.6) & (pts[:, 1] < 0.9))
        )
    )
    active = tuple(
        Track(i + 1, (x * W - 5, y * H - 5, x * W + 5, y * H + 5), 0, 0, 3, True, 0, (x * W, y * H))
        for i, (x, y) in enumerate(pts.tolist())
    )
    fc = counter.update(TrackUpdate(active=active, confirmed_now=active), 0)
    assert fc.zone_occupancy == {"ell": expected}
    assert 50 < expected < 350  # the sample really exercises both outcomes


def test_duplicate_zone_names_rejected() -> None:
    """Two zones with one name would silently merge their counts in FrameCounts."""
    from firmware.config.settings import from_dict

    square = [(0.0, 0.0), (0.5, 0.0), (0.5, 0.5)]
    zones = [{"name": "a", "polygon": square}, {"name": "a", "polygon": square}]
    with pytest.raises(ConfigError) as e:
        from_dict({"counter": {"zones": zones}})
    assert "duplicate zone name(s) a" in str(e.value)
    # the counter refuses them too when handed an unvalidated config
    cfg = CounterConfig.model_construct(
        zones=[ZoneConfig(name="a", polygon=square), ZoneConfig(name="a", polygon=square)]
    )
    with pytest.raises(ConfigError) as e:
        LineCounter(cfg, W, H)
    assert e.value.problems == [("counter.zones[1].name", "duplicate zone name 'a'")]


def test_dwell_from_first_to_last_inside_sighting() -> None:
    """Dwell runs from the first frame settled inside to the last sighting inside."""
    # 20 px per frame: y=240 at frame 10 (band), 260 at frame 11 (inside), stands until 80.
    person = path((0, 320, 40), (20, 320, 440), (80, 320, 440))
    r = run([person])
    assert r.entries == 1
    assert r.dwell == [pytest.approx((t_of(80) - t_of(11)) / 1e9)]


def test_dwell_includes_tentative_time_when_first_seen_inside() -> None:
    """A track first detected inside dwells from its first detection, not from confirmation."""
    r = run([path((0, 320, 400), (45, 320, 400))])
    assert r.dwell == [pytest.approx(t_of(45) / 1e9)]


def test_no_dwell_for_outside_or_single_sighting() -> None:
    """Tracks never inside, and a track inside for one instant only, report no dwell."""
    outside = path((0, 100, 100), (30, 100, 100))
    # Confirmed on its last frame, the only one on the inside.
    one_instant = path((0, 500, 160), (2, 500, 260))
    r = run([outside, one_instant])
    assert r.visitors == 2
    assert r.entries == 1
    assert r.dwell == []


def test_dwell_reported_in_the_frame_the_track_ends() -> None:
    """Dwell appears exactly once, in the frame whose update ends the track."""
    r = run([path((0, 320, 400), (15, 320, 400))])
    frames = [i for i, c in enumerate(r.counts) if c.dwell_s]
    ended = [i for i, u in enumerate(r.updates) if any(t.confirmed for t in u.ended)]
    assert frames == ended and len(frames) == 1


def test_counter_forgets_ended_tracks() -> None:
    """Per-track state exists while a track lives and is gone in the frame it ends."""
    r = run([DOWN], tail_s=0.0)
    assert set(r.counter.state_sizes().values()) == {1}  # DOWN is still alive at the end
    t = t_of(41) + round(1.1e9)
    r.counter.update(r.tracker.update(Detections.empty(), t), t)
    assert set(r.counter.state_sizes().values()) == {0}


def test_predicted_positions_do_not_count() -> None:
    """A track missed in this frame never settles a side, even if its predicted box crossed."""
    counter = LineCounter(CounterConfig(anchor="centre"), W, H)
    outside = Track(1, (300, 180, 340, 220), 0, 0, 3, True, 0, (320, 200))
    counter.update(TrackUpdate(active=(outside,), confirmed_now=(outside,)), 0)
    predicted_in = Track(1, (300, 330, 340, 370), 0, 0, 3, True, 2, (320, 200))
    fc = counter.update(TrackUpdate(active=(predicted_in,)), 1)
    assert (fc.entries, fc.exits, fc.occupancy) == (0, 0, 0)
    seen_in = Track(1, (300, 330, 340, 370), 0, 2, 4, True, 0, (320, 200))
    fc = counter.update(TrackUpdate(active=(seen_in,)), 2)
    assert (fc.entries, fc.exits, fc.occupancy) == (1, 0, 1)


def test_counter_started_after_tracker_adopts_tracks() -> None:
    """Active tracks the counter never saw confirmed get state from their origin, not a crash."""
    counter = LineCounter(CounterConfig(anchor="centre"), W, H)
    tr = Track(7, (300, 330, 340, 370), 0, 0, 9, True, 0, (320, 100))
    fc = counter.update(TrackUpdate(active=(tr,)), 0)
    assert (fc.entries, fc.new_visitors, fc.occupancy) == (1, 0, 1)
    assert len(counter) == 1


def test_frame_counts_carry_numbers_only() -> None:
    """P1/P3: nothing in FrameCounts is an id or a box; only counts, times and zone names."""
    r = run([DOWN, UP], counter=ZONES)
    for c in r.counts:
        for name in ("entries", "exits", "occupancy", "new_visitors", "dropped", "t_ns"):
            assert type(getattr(c, name)) is int
        assert all(type(d) is float for d in c.dwell_s)
        assert all(type(k) is str and type(v) is int for k, v in c.zone_occupancy.items())
        assert c.dropped == 0


def test_rejects_empty_frame_size() -> None:
    with pytest.raises(ValueError, match="frame size"):
        LineCounter(CounterConfig(anchor="centre"), 0, 480)


@pytest.mark.parametrize(
    ("anchor", "expect"),
    [("bottom", (1, 0)), ("centre", (0, 0))],
    ids=["bottom-anchor-counts-the-feet", "centre-anchor-ignores-them"],
)
def test_anchor_picks_the_point_of_a_person_box(anchor: str, expect: tuple[int, int]) -> None:
    """A person box (120 px tall) whose feet walk from 40 px above the line to 20 px past it,
    while its centre stays 40 px short of the line: the default bottom anchor counts the entry
    (where a person stands, seen by a camera looking down at an angle), the centre anchor (for a
    camera looking straight down) does not. Regression for issue 9: face and box-centre counting
    missed people whose feet crossed a line placed at the door's threshold."""
    walk = path((0, 320, 140), (30, 320, 200))  # box centres; the line is y = 240
    size = 120.0
    trk = Tracker(TrackerConfig())
    cnt = LineCounter(CounterConfig(anchor=anchor), W, H)  # type: ignore[arg-type]
    entries = exits = 0
    for f in range(31 + 30):
        boxes = (
            [[c[0] - 30, c[1] - size / 2, c[0] + 30, c[1] + size / 2]]
            if (c := walk.get(f)) is not None
            else []
        )
        dets = Detections.from_boxes(boxes) if boxes else Detections.empty()
        counts = cnt.update(trk.update(dets, t_of(f)), t_of(f))
        entries, exits = entries + counts.entries, exits + counts.exits
    assert (entries, exits) == expect
