"""The frame loop survives a failing outbox (full disk, card remounted read-only)."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from firmware.anonymize.stage import stage_from_settings
from firmware.config.settings import (
    AnonymizerConfig,
    CounterConfig,
    DetectorConfig,
    TrackerConfig,
)
from firmware.count import LineCounter
from firmware.outbox import Outbox
from firmware.runtime.pipeline import LoopStats, WallClock, run
from firmware.sources.synthetic.scene import SyntheticScene
from firmware.track import Tracker
from firmware.windows import WindowAggregator

pytestmark = pytest.mark.integration


def test_storage_failure_mid_run_keeps_counting(tmp_path: Path) -> None:
    """Regression: a StorageError from the aggregator used to end the run and lose the open
    window. Now the loop logs it, keeps counting, and the window is written once the outbox
    works again (SQLite's query_only switch stands in for a read-only filesystem)."""
    scene = SyntheticScene(320, 240, fps=10, duration_s=4)
    outbox = Outbox(tmp_path / "outbox.sqlite3")
    aggregator = WindowAggregator(outbox, site="s", device="d", window_s=1)
    conn = outbox._conn
    assert conn is not None

    def on_frame(stats: LoopStats) -> None:
        if stats.frames == 8:
            conn.execute("PRAGMA query_only=1")
        elif stats.frames == 25:
            conn.execute("PRAGMA query_only=0")

    stats = run(
        scene,
        stage_from_settings(DetectorConfig(), AnonymizerConfig(), deadline=False),
        Tracker(TrackerConfig()),
        LineCounter(CounterConfig(), 320, 240),
        aggregator,
        clock=WallClock(False, epoch_ns=0),
        stop=threading.Event(),
        on_frame=on_frame,
    )
    aggregator.flush(stats.last_wall_ns + 1)
    assert stats.frames == scene.frame_count == 40
    assert stats.storage_errors > 0
    rows = outbox.pending(100)
    processed = sum(json.loads(r.payload)["frames"]["processed"] for r in rows)
    # only the frames whose observe() raised are missing; every window is there
    assert processed == stats.frames - stats.storage_errors
    assert [json.loads(r.payload)["seq"] for r in rows] == list(range(1, len(rows) + 1))
    outbox.close()


class SteppedClock(WallClock):
    """The wall clock of a device whose time is set back by a day part way (NTP correcting a
    dead RTC battery's date, a hand-set clock): a stand-in for the one boundary a test cannot
    move, the system clock."""

    def __init__(self, epoch_ns: int, step_at_ns: int, back_ns: int) -> None:
        super().__init__(False, epoch_ns)
        self.step_at_ns, self.back_ns = step_at_ns, back_ns

    def __call__(self, t_ns: int) -> int:
        wall = self.epoch_ns + t_ns
        return wall - self.back_ns if t_ns >= self.step_at_ns else wall


def test_a_clock_stepped_back_by_a_day_is_logged_and_in_health(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Regression (issue 12 item 20): the wall clock jumping back by a day gave windows with
    earlier times and nothing in health said why. The loop now logs the step and health carries
    clock_back_steps and clock_back_s (optional fields of the health schema)."""
    from firmware.contract import validate
    from firmware.runtime.health import HealthProbe

    day = 86_400 * 10**9
    scene = SyntheticScene(160, 120, fps=10, duration_s=2)
    outbox = Outbox(tmp_path / "outbox.sqlite3")
    aggregator = WindowAggregator(outbox, site="s", device="d", window_s=60)
    stats = run(
        scene,
        stage_from_settings(DetectorConfig(), AnonymizerConfig(), deadline=False),
        Tracker(TrackerConfig()),
        LineCounter(CounterConfig(), 160, 120),
        aggregator,
        clock=SteppedClock(1_800_000_000 * 10**9, step_at_ns=10**9, back_ns=day),
        stop=threading.Event(),
    )
    outbox.close()
    assert stats.frames == 20
    assert stats.clock_back_steps == 1 and abs(stats.clock_back_s - 86_400 + 0.1) < 0.01
    assert any("wall clock stepped back by 86399.9 s" in r.getMessage() for r in caplog.records)
    health = {"schema": "anoncam/health/1", **HealthProbe(stats)(), "outbox_depth": 0}
    health |= {"oldest_unsent_age_s": None, "merged_total": 0}
    validate("health", health)
    assert health["clock_back_steps"] == 1
