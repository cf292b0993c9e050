"""Tracker behaviour on hand-built detection sequences."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from firmware.config.settings import TrackerConfig
from firmware.frames import Detections
from firmware.track import Track, Tracker, TrackUpdate

MS = 1_000_000
S = 1_000_000_000
FRAME = round(S / 15)


def box(cx: float, cy: float, size: float = 40.0) -> list[float]:
    return [cx - size / 2, cy - size / 2, cx + size / 2, cy + size / 2]


def dets(*centres: tuple[float, float], size: float = 40.0) -> Detections:
    if not centres:
        return Detections.empty()
    return Detections.from_boxes([box(x, y, size) for x, y in centres])


def feed(
    tracker: Tracker, frames: list[Detections], t0: int = 0, dt: int = FRAME
) -> list[TrackUpdate]:
    return [tracker.update(d, t0 + i * dt) for i, d in enumerate(frames)]


@pytest.mark.parametrize("min_hits", [1, 3, 5])
def test_confirmed_after_min_hits(min_hits: int) -> None:
    """A track is reported (active, confirmed_now) exactly on its min_hits-th detection."""
    tracker = Tracker(TrackerConfig(min_hits=min_hits))
    ups = feed(tracker, [dets((100 + 5 * i, 100)) for i in range(8)])
    first_active = next(i for i, u in enumerate(ups) if u.active)
    assert first_active == min_hits - 1
    assert [len(u.confirmed_now) for u in ups] == [int(i == min_hits - 1) for i in range(8)]
    assert all(len(u.active) == 1 for u in ups[min_hits - 1 :])
    t = ups[min_hits - 1].confirmed_now[0]
    assert t.confirmed and t.hits == min_hits and t.id == 1


def test_ids_start_at_one_per_tracker() -> None:
    """P3: ids are per-Tracker counters from 1; a new Tracker does not continue an old sequence."""
    for _ in range(2):
        tracker = Tracker(TrackerConfig(min_hits=1))
        u = tracker.update(dets((100, 100), (300, 100), (500, 100)), 0)
        assert [t.id for t in u.active] == [1, 2, 3]


def test_ended_after_max_age_in_time_not_frames() -> None:
    """A track ends when unseen for more than max_age_s of frame time, however many frames pass."""
    tracker = Tracker(TrackerConfig(min_hits=1, max_age_s=1.0))
    tracker.update(dets((100, 100)), 0)
    # 900 frames 1 ms apart: far more frames than a frame-count age would allow, only 0.9 s.
    for i in range(1, 901):
        u = tracker.update(Detections.empty(), i * MS)
        assert not u.ended
    assert [t.missed for t in u.active] == [900]
    assert not tracker.update(Detections.empty(), S).ended  # exactly max_age: still alive
    u = tracker.update(Detections.empty(), S + 1)
    assert [t.id for t in u.ended] == [1] and u.active == ()
    assert len(tracker) == 0


def test_ended_at_low_frame_rate() -> None:
    """At 0.5 fps one missed frame is already 2 s: the track ends on that frame."""
    tracker = Tracker(TrackerConfig(min_hits=1, max_age_s=1.0))
    tracker.update(dets((100, 100)), 0)
    u = tracker.update(Detections.empty(), 2 * S)
    assert len(u.ended) == 1


def test_tentative_track_dropped_and_reported() -> None:
    """A track that never confirms is removed from every structure and reported as ended."""
    tracker = Tracker(TrackerConfig(min_hits=3, max_age_s=0.5))
    ups = feed(tracker, [dets((100, 100)), dets((102, 100))] + [Detections.empty()] * 10)
    ended = [t for u in ups for t in u.ended]
    assert len(ended) == 1 and not ended[0].confirmed and ended[0].hits == 2
    assert all(not u.active for u in ups)
    assert set(tracker.state_sizes().values()) == {0}


def test_state_pruned_in_every_structure() -> None:
    """Every per-track array shrinks back to zero rows once all tracks ended."""
    tracker = Tracker(TrackerConfig(min_hits=2, max_age_s=0.5))
    feed(tracker, [dets((100, 100), (300, 300), (500, 100))] * 5)
    assert set(tracker.state_sizes().values()) == {3}
    tracker.update(Detections.empty(), 10 * S)
    assert set(tracker.state_sizes().values()) == {0}


def test_prediction_continues_motion_while_missed() -> None:
    """During a miss the reported box is the constant-velocity prediction, not the last box."""
    tracker = Tracker(TrackerConfig(min_hits=1))
    feed(tracker, [dets((100 + 10 * i, 200)) for i in range(6)])  # 10 px per frame to the right
    u = tracker.update(Detections.empty(), 8 * FRAME)  # 3 frames after the last sighting
    (t,) = u.active
    assert t.missed == 1
    assert t.centre[0] == pytest.approx(180.0, abs=1.0)
    assert t.centre[1] == pytest.approx(200.0, abs=1.0)
    assert t.last_seen_ns == 5 * FRAME


def test_occlusion_bridged_with_same_id() -> None:
    """A walker missing for 10 frames (0.67 s < max_age) is picked up again by the same track."""
    tracker = Tracker(TrackerConfig(min_hits=3, max_age_s=1.0))
    frames = [
        dets((100 + 8 * i, 200)) if not 10 <= i < 20 else Detections.empty() for i in range(30)
    ]
    ups = feed(tracker, frames)
    ids = {t.id for u in ups for t in u.active}
    assert ids == {1}
    assert ups[-1].active[0].missed == 0 and ups[-1].active[0].hits == 20


def test_small_fast_face_followed_by_distance() -> None:
    """A 16 px face moving 30 px per frame never overlaps itself: the centre-distance fallback
    must still follow it as one track (IoU alone would start a new track every frame)."""
    tracker = Tracker(TrackerConfig(min_hits=3))
    ups = feed(tracker, [dets((50 + 30 * i, 120), size=16) for i in range(15)], dt=round(S / 10))
    assert {t.id for u in ups for t in u.active} == {1}
    assert ups[-1].active[0].hits == 15


def test_far_detection_starts_a_new_track() -> None:
    """A detection far outside the gate does not hijack an existing track."""
    tracker = Tracker(TrackerConfig(min_hits=1))
    tracker.update(dets((100, 100)), 0)
    u = tracker.update(dets((500, 400)), FRAME)
    assert [(t.id, t.missed) for t in u.active] == [(1, 1), (2, 0)]


def test_gate_stops_growing_for_long_lost_tracks() -> None:
    """With a long max_age, a face appearing 6 face sizes from where a track was lost 2 s ago is
    a newcomer: an unbounded gate would hand the newcomer the lost track's id and side."""
    tracker = Tracker(TrackerConfig(min_hits=1, max_age_s=3.0))
    feed(tracker, [dets((100, 100))] * 5)
    u = tracker.update(dets((100 + 6 * 40, 100)), 4 * FRAME + 2 * S)
    assert [(t.id, t.missed) for t in u.active] == [(1, 1), (2, 0)]


def test_reacquired_track_restarts_from_the_detection() -> None:
    """After a miss the track jumps to the new detection instead of blending it with the stale
    prediction: blending could drag a person who stopped behind a pillar across the line."""
    tracker = Tracker(TrackerConfig(min_hits=1, max_age_s=2.0))
    feed(tracker, [dets((100 + 10 * i, 200)) for i in range(6)])  # 150 px/s to the right
    # Hidden for 9 frames; meanwhile the person stopped at x=170 (prediction: x=250).
    for i in range(6, 15):
        tracker.update(Detections.empty(), i * FRAME)
    u = tracker.update(dets((170, 200)), 15 * FRAME)
    (t,) = u.active
    assert t.centre == pytest.approx((170.0, 200.0), abs=1e-3)
    # The new velocity is the mean over the gap (20 px in 10 frames), not the old 10 px/frame.
    u = tracker.update(Detections.empty(), 16 * FRAME)
    assert u.active[0].centre[0] == pytest.approx(172.0, abs=0.1)


def test_very_different_size_starts_a_new_track() -> None:
    """A nearby detection three times larger is another face, not the same one."""
    tracker = Tracker(TrackerConfig(min_hits=1))
    tracker.update(dets((100, 100), size=20), 0)
    u = tracker.update(dets((130, 100), size=60), FRAME)
    assert len(u.active) == 2


def test_people_passing_keep_their_ids() -> None:
    """Two faces walking past each other in opposite directions, 35 px apart, do not swap ids."""
    tracker = Tracker(TrackerConfig(min_hits=3))
    frames = [dets((300, 80 + 8 * i), (335, 400 - 8 * i)) for i in range(41)]
    ups = feed(tracker, frames)
    first = {t.id: t.centre for t in ups[5].active}
    last = {t.id: t.centre for t in ups[-1].active}
    assert set(first) == set(last) == {1, 2}
    for tid in (1, 2):
        # Whoever started at the top must end at the bottom, on the same x lane.
        assert abs(first[tid][0] - last[tid][0]) < 5
        assert (first[tid][1] < 240) == (last[tid][1] > 240)


def test_side_by_side_walkers_keep_their_ids() -> None:
    """Two faces walking together, boxes overlapping a little, stay two tracks on their lanes."""
    tracker = Tracker(TrackerConfig(min_hits=3))
    ups = feed(tracker, [dets((300, 80 + 8 * i), (336, 80 + 8 * i)) for i in range(40)])
    lanes = {t.id: round(t.centre[0]) for u in ups for t in u.active}
    assert {t.id for u in ups for t in u.active} == {1, 2}
    assert sorted(lanes.values()) == [300, 336]


def test_best_overlap_wins() -> None:
    """Greedy assignment gives each track the detection it overlaps most, not the first listed."""
    tracker = Tracker(TrackerConfig(min_hits=1))
    tracker.update(dets((100, 100), (140, 100)), 0)
    u = tracker.update(dets((142, 100), (101, 100)), FRAME)
    by_id = {t.id: t.centre[0] for t in u.active}
    assert by_id[1] == pytest.approx(101, abs=1) and by_id[2] == pytest.approx(142, abs=1)
    assert len(tracker) == 2


def test_time_going_back_ends_all_tracks(caplog: pytest.LogCaptureFixture) -> None:
    """A clock that jumps back (looping file) ends every track rather than predicting backwards."""
    tracker = Tracker(TrackerConfig(min_hits=1))
    tracker.update(dets((100, 100), (300, 100)), 5 * S)
    with caplog.at_level(logging.WARNING, logger="firmware.track"):
        u = tracker.update(dets((100, 100)), S)
    assert [t.id for t in u.ended] == [1, 2]
    assert [t.id for t in u.active] == [3]
    assert "went back" in caplog.text


def test_max_tracks_caps_state(caplog: pytest.LogCaptureFixture) -> None:
    """A detector gone wild (300 faces) cannot grow the tracker beyond max_tracks."""
    tracker = Tracker(TrackerConfig(), max_tracks=50)
    many = dets(*[(20 + 30 * (i % 20), 20 + 30 * (i // 20)) for i in range(300)], size=10)
    with caplog.at_level(logging.WARNING, logger="firmware.track"):
        tracker.update(many, 0)
        tracker.update(many, FRAME)
    assert len(tracker) == 50
    assert caplog.text.count("tracker full") == 1


def test_same_timestamp_twice_is_harmless() -> None:
    """Two frames with one timestamp (image folders) leave velocity finite and the track alive."""
    tracker = Tracker(TrackerConfig(min_hits=1))
    tracker.update(dets((100, 100)), 0)
    tracker.update(dets((110, 100)), FRAME)
    u = tracker.update(dets((112, 100)), FRAME)
    (t,) = u.active
    assert all(np.isfinite(t.box)) and t.hits == 3


def test_track_reports_origin_and_times() -> None:
    """origin is the first detection's centre; first/last seen follow frame times."""
    tracker = Tracker(TrackerConfig(min_hits=2))
    ups = feed(tracker, [dets((100, 100)), dets((110, 104)), dets((120, 108))], t0=7 * S)
    t = ups[-1].active[0]
    assert t.origin == (100.0, 100.0)
    assert (t.first_seen_ns, t.last_seen_ns) == (7 * S, 7 * S + 2 * FRAME)
    assert isinstance(t, Track) and t.centre[0] == pytest.approx(120, abs=1)


def test_rejects_bad_max_tracks() -> None:
    with pytest.raises(ValueError, match="max_tracks"):
        Tracker(TrackerConfig(), max_tracks=0)
