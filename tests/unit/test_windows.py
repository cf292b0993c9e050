"""The window aggregator, writing into a real SQLite outbox."""

from __future__ import annotations

import dataclasses
import json
import os
import random
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from firmware.contract import find_forbidden, validate
from firmware.count import FrameCounts
from firmware.errors import StorageError
from firmware.outbox import Outbox
from firmware.windows import WindowAggregator
from tests.unit.test_outbox import fill, small_filesystem

S = 1_000_000_000
T0 = 1_795_453_200 * S  # 2026-11-23T17:00:00Z, a minute boundary


@pytest.fixture
def outbox(tmp_path: Path) -> Iterator[Outbox]:
    with Outbox(tmp_path / "outbox.db") as ob:
        yield ob


def agg(ob: Outbox, **kw: Any) -> WindowAggregator:
    kw.setdefault("window_s", 60)
    return WindowAggregator(ob, site="store-042", device="door-1", **kw)


def payloads(ob: Outbox) -> list[dict[str, Any]]:
    return [json.loads(r.payload) for r in ob.pending(limit=1_000_000)]


def test_windows_align_on_wall_clock_boundaries(outbox: Outbox) -> None:
    """A window is [floor(t / 60 s) * 60 s, +60 s); the first one of a run starts at its first
    frame instead (issue 12, item 23: two runs in one window must not share a start)."""
    a = agg(outbox)
    closed: list[int] = []
    for s in range(30, 120):  # 17:00:30 .. 17:01:59, one frame a second
        closed += a.observe(FrameCounts(t_ns=s * S, occupancy=1), T0 + s * S)
    assert closed == [1]
    assert a.observe(FrameCounts(t_ns=0), T0 + 120 * S) == [2]
    first, second = payloads(outbox)
    assert (first["start"], first["end"]) == ("2026-11-23T17:00:30Z", "2026-11-23T17:01:00Z")
    assert (second["start"], second["end"]) == ("2026-11-23T17:01:00Z", "2026-11-23T17:02:00Z")
    assert first["frames"]["processed"] == 30 and second["frames"]["processed"] == 60


def test_a_frame_on_the_boundary_opens_the_next_window(outbox: Outbox) -> None:
    a = agg(outbox)
    assert a.observe(FrameCounts(t_ns=0, entries=1), T0 + 60 * S - 1) == []
    assert a.observe(FrameCounts(t_ns=1, exits=1), T0 + 60 * S) == [1]
    a.flush(T0 + 61 * S)
    w0, w1 = payloads(outbox)
    assert (w0["entries"], w0["exits"], w0["start"]) == (1, 0, "2026-11-23T17:00:59Z")
    assert (w1["entries"], w1["exits"], w1["start"]) == (0, 1, "2026-11-23T17:01:00Z")


def scene(n: int, seed: int = 7) -> list[tuple[int, FrameCounts]]:
    """(media time ns, counts) of a busy 15 fps door: crossings, dwell, zones, drops."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        media = i * S // 15
        out.append(
            (
                media,
                FrameCounts(
                    t_ns=media,
                    entries=int(rng.random() < 0.02),
                    exits=int(rng.random() < 0.02),
                    occupancy=rng.randrange(0, 6),
                    new_visitors=int(rng.random() < 0.03),
                    dwell_s=tuple(rng.uniform(1, 90) for _ in range(int(rng.random() < 0.03))),
                    zone_occupancy={"till": rng.randrange(0, 3), "entrance": rng.randrange(0, 2)},
                    dropped=int(rng.random() < 0.01),
                ),
            )
        )
    return out


def test_file_time_and_live_time_give_identical_windows(tmp_path: Path) -> None:
    """A file is timed as (fixed start epoch + media time) and may run faster than real time;
    a live source passes the wall clock. Same wall times, same counts -> same payloads, whatever
    FrameCounts.t_ns holds (media time vs a monotonic clock) and whenever it is processed."""
    start_epoch = T0 + 17 * S
    frames = scene(15 * 200)
    results = []
    clocks: list[tuple[str, Callable[[int], int]]] = [
        ("file", lambda m: m),  # media time
        ("live", lambda m: 987_654_321_000 + m),  # a monotonic clock
    ]
    for name, t_of in clocks:
        with Outbox(tmp_path / f"{name}.db") as ob:
            a = agg(ob, suppress_below=2)
            for media, fc in frames:
                a.observe(dataclasses.replace(fc, t_ns=t_of(media)), start_epoch + media)
            a.flush(start_epoch + frames[-1][0])
            # Each outbox has its own random stream id; everything else must match.
            results.append([{k: v for k, v in p.items() if k != "stream"} for p in payloads(ob)])
    assert results[0] == results[1]
    assert len(results[0]) == 4  # 17:00:17 .. 17:03:37 touches four minutes


def test_empty_windows_tell_camera_off_from_nothing_happened(outbox: Outbox) -> None:
    """Windows without frames are written (no hole in the time line) with frames.processed 0 and
    occupancy null; a quiet window the camera watched has processed > 0 and occupancy 0."""
    a = agg(outbox)
    a.observe(FrameCounts(t_ns=0), T0 + 5 * S)
    assert a.observe(FrameCounts(t_ns=1, entries=1), T0 + 3 * 60 * S + 5 * S) == [1, 2, 3]
    quiet, off1, off2 = payloads(outbox)
    assert quiet["frames"]["processed"] == 1
    assert quiet["occupancy"] == {"min": 0, "max": 0, "mean": 0.0, "last": 0}
    for off, minute in ((off1, 1), (off2, 2)):
        assert off["frames"] == {"processed": 0, "dropped": 0}
        assert off["occupancy"] is None
        assert (off["entries"], off["exits"], off["visitors"]) == (0, 0, 0)
        assert off["dwell_s"] == {"count": 0, "p50": None, "p90": None}
        assert off["start"] == f"2026-11-23T17:0{minute}:00Z" and "merged" not in off
        validate("counts", off)


def test_a_long_gap_is_one_row_that_accounts_for_its_seqs(outbox: Outbox) -> None:
    """A clock step or a day-long stall must not cost thousands of transactions; the one row
    spans the gap, says merged = n and consumes n seqs, so seq gaps stay explained."""
    a = agg(outbox, max_gap_windows=5)
    a.observe(FrameCounts(t_ns=0), T0)
    closed = a.observe(FrameCounts(t_ns=1), T0 + 101 * 60 * S)
    assert closed == [1, 101]
    a.flush(T0 + 101 * 60 * S)
    rows = payloads(outbox)
    assert [r["seq"] for r in rows] == [1, 101, 102]
    gap = rows[1]
    assert gap["merged"] == 100 and gap["frames"]["processed"] == 0
    assert (gap["start"], gap["end"]) == ("2026-11-23T17:01:00Z", "2026-11-23T18:41:00Z")
    assert sum(r.get("merged", 1) for r in rows) == outbox.stats().next_seq - 1
    for r in rows:
        validate("counts", r)


def test_suppression_hides_small_counts_and_says_so(outbox: Outbox) -> None:
    """P5: with suppress_below = 3, counts of 1 and 2 read 0, a dwell of two tracks is hidden,
    and every window (not only the suppressed ones) carries suppress_below."""
    a = agg(outbox, suppress_below=3)
    for i in range(5):
        a.observe(
            FrameCounts(
                t_ns=i,
                entries=1 if i < 2 else 0,  # 2 entries
                exits=1,  # 5 exits
                occupancy=2,
                new_visitors=1 if i == 0 else 0,
                dwell_s=(12.0,) if i < 2 else (),
                zone_occupancy={"till": 4},
            ),
            T0 + i * S,
        )
    for i in range(4):
        a.observe(FrameCounts(t_ns=i, dwell_s=(5.0, 6.0), occupancy=7), T0 + 60 * S + i * S)
    a.flush(T0 + 120 * S)
    small, big = payloads(outbox)
    assert (small["entries"], small["exits"], small["visitors"]) == (0, 5, 0)
    assert small["occupancy"] == {"min": 0, "max": 0, "mean": 0.0, "last": 0}
    assert small["dwell_s"] == {"count": 0, "p50": None, "p90": None}
    assert small["zones"] == {"till": {"min": 4, "max": 4, "mean": 4.0, "last": 4}}
    assert small["suppress_below"] == 3 and big["suppress_below"] == 3
    assert big["dwell_s"]["count"] == 8 and big["occupancy"]["max"] == 7
    for p in (small, big):
        validate("counts", p)
        assert "suppressed" not in p  # a per-window flag would reveal the hidden small count


def test_no_suppression_field_when_off(outbox: Outbox) -> None:
    a = agg(outbox)
    a.observe(FrameCounts(t_ns=0, entries=1), T0)
    a.flush(T0)
    (p,) = payloads(outbox)
    assert p["entries"] == 1 and "suppress_below" not in p


def test_flush_closes_the_open_window_at_the_flush_time(outbox: Outbox) -> None:
    """End of file and SIGTERM: the partial window spans its first frame to the flush time (to
    the second), not the grid, so it is not published with an end in the future (issue 12,
    item 23); frames.processed shows how much of it was seen."""
    a = agg(outbox)
    assert a.flush(T0) is None  # nothing seen, nothing written
    a.observe(FrameCounts(t_ns=0, entries=2), T0 + 10 * S)
    assert a.flush(T0 + 12 * S) == 1
    assert a.flush(T0 + 13 * S) is None
    (p,) = payloads(outbox)
    assert (p["start"], p["end"]) == ("2026-11-23T17:00:10Z", "2026-11-23T17:00:12Z")
    assert p["entries"] == 2


def test_flush_after_a_stall_writes_the_elapsed_empty_windows(outbox: Outbox) -> None:
    a = agg(outbox)
    a.observe(FrameCounts(t_ns=0), T0)
    assert a.flush(T0 + 3 * 60 * S + 1) == 3  # window 0, then empty 17:01 and 17:02
    rows = payloads(outbox)
    assert [r["frames"]["processed"] for r in rows] == [1, 0, 0]


def test_clock_stepping_back_counts_in_the_open_window(outbox: Outbox) -> None:
    """NTP may step the clock back; windows must still come out in time order, one per seq."""
    a = agg(outbox)
    a.observe(FrameCounts(t_ns=0, entries=1), T0 + 5 * 60 * S)
    assert a.observe(FrameCounts(t_ns=1, entries=1), T0 + 2 * 60 * S) == []
    a.flush(T0 + 5 * 60 * S)
    a.observe(FrameCounts(t_ns=2, exits=1), T0)  # after a flush, still no going back
    a.flush(T0)
    first, second = payloads(outbox)
    assert first["entries"] == 2 and first["start"] == "2026-11-23T17:05:00Z"
    # after the first row's end (17:05:01): the two rows never share a start
    assert second["exits"] == 1 and second["start"] == "2026-11-23T17:05:01Z"


def test_a_window_is_kept_until_the_outbox_has_it(outbox: Outbox) -> None:
    """'Only then forgets it': when the write fails (here SQLite's query_only switch stands in
    for a filesystem remounted read-only), the window stays in memory and a later call writes it."""
    a = agg(outbox)
    for s in range(10):
        a.observe(FrameCounts(t_ns=s, entries=1), T0 + s * S)
    conn = outbox._conn
    assert conn is not None
    conn.execute("PRAGMA query_only=1")
    with pytest.raises(StorageError):
        a.observe(FrameCounts(t_ns=60, entries=1), T0 + 60 * S)
    conn.execute("PRAGMA query_only=0")
    assert a.observe(FrameCounts(t_ns=61, entries=1), T0 + 61 * S) == [1]
    (p,) = payloads(outbox)
    assert p["entries"] == 10 and p["frames"]["processed"] == 10


def test_dwell_memory_is_bounded_in_a_busy_window(outbox: Outbox) -> None:
    """A window with 100k dwell samples keeps a fixed-size reservoir, and its percentiles stay
    close to the truth (uniform 0..100 s: p50 50, p90 90)."""
    a = agg(outbox, dwell_sample_cap=1024)
    rng = random.Random(3)
    batch = 1000
    a.observe(FrameCounts(t_ns=0, dwell_s=tuple(rng.uniform(0, 100) for _ in range(batch))), T0)
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        for i in range(1, 100):
            dwell = tuple(rng.uniform(0, 100) for _ in range(batch))
            a.observe(FrameCounts(t_ns=i, dwell_s=dwell), T0 + i * S // 100)
            del dwell
        grown = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()
    assert grown < 200_000, f"window state grew by {grown} bytes"  # 99k floats would be ~3 MB
    a.flush(T0)
    (p,) = payloads(outbox)
    assert p["dwell_s"]["count"] == 100 * batch
    assert abs(p["dwell_s"]["p50"] - 50) < 5 and abs(p["dwell_s"]["p90"] - 90) < 4


def test_every_payload_validates_and_carries_nothing_personal(tmp_path: Path) -> None:
    """P1: whatever the mix (busy, quiet, off, gaps, suppression, merges at the outbox cap),
    every payload matches the schema and find_forbidden finds nothing."""
    with Outbox(tmp_path / "o.db", max_rows=5) as ob:
        a = agg(ob, window_s=10, suppress_below=2, max_gap_windows=2)
        for media, fc in scene(15 * 120, seed=11):
            a.observe(fc, T0 + media)
        a.observe(FrameCounts(t_ns=0), T0 + 500 * S)  # a gap longer than max_gap_windows
        a.observe(FrameCounts(t_ns=0), T0 + 530 * S)  # a short one
        a.flush(T0 + 531 * S)
        rows = payloads(ob)
    assert any("merged" in r for r in rows)
    for r in rows:
        validate("counts", r)
        assert find_forbidden(r) == []


def test_bad_arguments_are_rejected(outbox: Outbox) -> None:
    with pytest.raises(ValueError, match="site"):
        WindowAggregator(outbox, site="Store 42", device="d", window_s=60)
    with pytest.raises(ValueError, match="device"):
        WindowAggregator(outbox, site="s", device="door/1", window_s=60)
    with pytest.raises(ValueError, match="window_s"):
        WindowAggregator(outbox, site="s", device="d", window_s=0)
    with pytest.raises(ValueError, match="suppress_below"):
        WindowAggregator(outbox, site="s", device="d", window_s=60, suppress_below=-1)


# --------------------------------------------------------------------------- issue 12
def test_two_runs_in_one_window_have_distinct_non_overlapping_times(tmp_path: Path) -> None:
    """Issue 12, item 23: two runs inside one 60 s window published seq 1 and 2 with the same
    start/end, and a time-series store keyed on (device, start) kept one of them. The stopped
    run's row also ended at 17:01:00, in the future when it was published at 17:00:25."""
    db = tmp_path / "outbox.db"
    with Outbox(db) as ob:  # run 1: 17:00:03 .. SIGTERM at 17:00:25.3
        a = agg(ob)
        for s in range(3, 26):
            a.observe(FrameCounts(t_ns=s * S, entries=1), T0 + s * S)
        a.flush(T0 + 25 * S + 300_000_000)
    with Outbox(db) as ob:  # run 2: from 17:00:31 into the next window
        a = agg(ob)
        for s in range(31, 62):
            a.observe(FrameCounts(t_ns=s * S, exits=1), T0 + s * S)
        a.flush(T0 + 62 * S)
        first, second, third = payloads(ob)
    assert (first["start"], first["end"]) == ("2026-11-23T17:00:03Z", "2026-11-23T17:00:26Z")
    assert (second["start"], second["end"]) == ("2026-11-23T17:00:31Z", "2026-11-23T17:01:00Z")
    assert third["start"] == "2026-11-23T17:01:00Z"
    assert first["end"] <= second["start"]  # no overlap: a sum over time counts each frame once
    assert (first["entries"], second["exits"]) == (23, 29)
    for p in (first, second, third):
        validate("counts", p)


def test_windows_carry_the_outbox_stream(tmp_path: Path) -> None:
    """Issue 12, item 2: every window names its stream, so a subscriber can tell a new outbox's
    seq 1 from the old one's."""
    with Outbox(tmp_path / "outbox.db") as ob:
        a = agg(ob)
        a.observe(FrameCounts(t_ns=0), T0)
        a.flush(T0 + 3 * 60 * S + 1)  # the open window and two empty ones
        got = payloads(ob)
        assert [p["stream"] for p in got] == [ob.stream] * 3


def test_frames_lost_to_a_failed_write_are_counted_in_the_next_stored_window(
    outbox: Outbox,
) -> None:
    """Issue 12, item 6: while the outbox could not store a window, each frame's counts were
    lost with no marker (319 frames processed, the outbox accounted for 297 with dropped: 0).
    Now processed + dropped over the stored windows accounts for every frame seen."""
    a = agg(outbox)
    seen = 0
    for s in range(60):
        a.observe(FrameCounts(t_ns=s * S, entries=1), T0 + s * S)
        seen += 1
    conn = outbox._conn
    assert conn is not None
    conn.execute("PRAGMA query_only=1")
    for s in range(60, 65):
        with pytest.raises(StorageError):
            a.observe(FrameCounts(t_ns=s * S, entries=1, dropped=2), T0 + s * S)
        seen += 3  # the frame itself and the two the camera dropped before it
    conn.execute("PRAGMA query_only=0")
    for s in range(65, 130):
        a.observe(FrameCounts(t_ns=s * S), T0 + s * S)
        seen += 1
    a.flush(T0 + 130 * S)
    got = payloads(outbox)
    assert sum(p["frames"]["processed"] + p["frames"]["dropped"] for p in got) == seen
    assert got[0]["frames"] == {"processed": 60, "dropped": 15, "lost": 15}
    assert all("lost" not in p["frames"] for p in got[1:])
    for p in got:
        validate("counts", p)


def test_a_full_disk_during_a_run_loses_no_frame_from_the_accounts(tmp_path: Path) -> None:
    """Issue 12, item 6, on a real 1 MB tmpfs filled to the last byte mid-run: the write fails
    with 'disk full' (not 'failing'), and once space is back every frame is accounted for."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    with (
        small_filesystem(tmp_path / "fs", "1m") as where,
        Outbox(where / "outbox.db", min_free_mb=0) as ob,
    ):
        a = agg(ob, window_s=1)
        seen, errors, t = 0, [], 0
        padding = {"till": 1, **{f"zone-{i:02d}": 1 for i in range(40)}}  # bigger rows
        fill(where)
        while len(errors) < 3 and t < 2000:
            fc = FrameCounts(t_ns=t * S, entries=1, zone_occupancy=padding)
            try:
                a.observe(fc, T0 + t * S)
            except StorageError as exc:
                errors.append(exc)
            seen += 1
            t += 1
        assert errors, "the filesystem never filled"
        assert all("disk full" in e.message and "not failing" in e.hint for e in errors)
        os.remove(where / "fill")
        for _ in range(3):
            a.observe(FrameCounts(t_ns=t * S), T0 + t * S)
            seen += 1
            t += 1
        a.flush(T0 + t * S)
        got = payloads(ob)
    assert sum(p["frames"]["processed"] + p["frames"]["dropped"] for p in got) == seen
    assert sum(p["frames"].get("lost", 0) for p in got) == len(errors)
