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
