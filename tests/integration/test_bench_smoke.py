"""scripts/bench-counting --quick: the counting benchmark CI runs, so it cannot rot. Figures are
not judged against the target here (a few seconds of scene say little); the structure, the
bookkeeping (windows hold what the counter counted) and the matching rule are."""

from __future__ import annotations

import json
import subprocess
from typing import Any

import pytest

from firmware.sources.synthetic.people import Crossing
from tests.benchmarks.bench_counting import DENSITIES, Event, Result, _table, match
from tests.support.scenes import REPO

pytestmark = pytest.mark.integration


def _quick_rows(*extra: str) -> list[dict[str, Any]]:
    """``bench-counting --quick --json`` with ``extra``: its rows; it must exit 0."""
    proc = subprocess.run(
        [str(REPO / "scripts" / "bench-counting"), "--quick", "--json", *extra],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]


@pytest.mark.slow
def test_quick_counting_bench_runs_every_density() -> None:
    """--quick --json (person tracks on whole bodies, the product's mode) prints one object per
    density (1 to 4 in view) with plausible figures;
    the script itself fails (exit 1) if the windows do not add up to what the counter counted."""
    rows = _quick_rows()
    assert [r["max_in_view"] for r in rows] == [d.max_in_view for d in DENSITIES]
    for r in rows:
        assert r["frames"] == 100 and r["seconds"] == 10.0, r
        assert r["fps"] > 0 and r["detect_ms"] > 0, r
        assert (r["window_entries"], r["window_exits"]) == (r["entries"], r["exits"]), r
        assert r["matched"] + r["missed"] == r["true_entries"] + r["true_exits"], r
        assert r["matched"] + r["extra"] == r["entries"] + r["exits"], r
        assert 0.0 <= r["match_accuracy"] <= 1.0
    assert sum(r["true_entries"] + r["true_exits"] for r in rows) > 0, "some crossings to count"


@pytest.mark.slow
def test_quick_counting_bench_counts_face_tracks_with_faces() -> None:
    """--faces (the mode before person counting) runs face tracks on the head-and-torso scene
    through the same loop to the end, and the windows add up to the counter's events."""
    rows = _quick_rows("--faces", "--max-in-view", "2")
    assert [r["max_in_view"] for r in rows] == [2]
    (r,) = rows
    assert r["frames"] == 100 and r["fps"] > 0, r
    assert (r["window_entries"], r["window_exits"]) == (r["entries"], r["exits"]), r
    assert r["matched"] + r["missed"] == r["true_entries"] + r["true_exits"], r


@pytest.mark.slow
def test_quick_counting_bench_counts_full_bodies() -> None:
    """--people --bodies (issue 9): person tracks on full bodies, some seen from behind; the
        few crossings of 10 s at 3 in view are all counted (NanoDet sees the bodies), and --bodies
        with --faces is a usage error (exit 2: body crossings are the feet's, face tracks count the
    sprites)."""
    rows = _quick_rows("--people", "--bodies", "--back-share", "0.5", "--max-in-view", "3")
    (r,) = rows
    assert r["frames"] == 100 and r["fps"] > 0, r
    assert (r["window_entries"], r["window_exits"]) == (r["entries"], r["exits"]), r
    assert r["true_entries"] + r["true_exits"] > 0, r
    assert r["matched"] == r["true_entries"] + r["true_exits"] and r["extra"] == 0, r
    proc = subprocess.run(
        [str(REPO / "scripts" / "bench-counting"), "--quick", "--faces", "--bodies"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2 and "--faces" in proc.stderr


def test_matching_is_one_to_one_by_direction_within_tolerance() -> None:
    """A count matches a true crossing only in the same direction, within the tolerance, and
    each side at most once, with as many pairs as the tolerance allows."""
    truth = [Crossing(10.0, "entry"), Crossing(10.5, "entry"), Crossing(20.0, "exit")]
    events = [
        Event(10.4, "entry"),
        Event(10.6, "entry"),
        Event(10.7, "entry"),
        Event(20.2, "entry"),
        Event(25.0, "exit"),
    ]
    assert match(events, truth, 1.0) == (2, 1, 3)  # matched, missed (the exit), extra
    assert match([], truth, 1.0) == (0, 3, 0)
    assert match([Event(11.2, "entry")], truth[:1], 1.0) == (0, 1, 1)
    # counted a little late, each within 1 s of its own crossing: all three pair up, where
    # pairing the closest first (12.0-12.0, 12.6-12.6) left a miss at 11.5 and an extra at 12.8
    close = [Crossing(11.5, "exit"), Crossing(12.0, "exit"), Crossing(12.6, "exit")]
    late = [Event(12.0, "exit"), Event(12.6, "exit"), Event(12.8, "exit")]
    assert match(late, close, 1.0) == (3, 0, 0)
    # events too early for one crossing are false counts, not taken by a later crossing
    assert match([Event(1.0, "exit"), Event(3.1, "exit")], [Crossing(3.0, "exit")], 1.0) == (
        1,
        0,
        1,
    )


def test_accuracy_figures_and_table() -> None:
    """acc lets a miss and a false count of the same direction cancel; match does not."""
    r = Result(
        density="2 in view",
        max_in_view=2,
        seconds=60.0,
        frames=600,
        true_entries=10,
        true_exits=10,
        entries=10,
        exits=9,
        matched=18,
        missed=2,
        extra=1,
        window_entries=10,
        window_exits=9,
        fps=25.0,
        detect_ms=30.0,
    )
    assert r.accuracy == pytest.approx(0.95)
    assert r.match_accuracy == pytest.approx(18 / 21)
    table = _table([r])
    assert "2 in view" in table and "95.0%" in table and "85.7%" in table
