"""scripts/bench-pipeline, briefly: the per-stage profile of the service's frame loop runs the
real loop with both detectors and its figures add up; the Pi estimate scales by the published
single-core ratio. CI runs it so the benchmark cannot rot; the figures are not judged here."""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.benchmarks.bench_pipeline import PI_SYSBENCH, STAGES, Profile, pi_estimates
from tests.support.scenes import REPO

pytestmark = pytest.mark.integration


@pytest.mark.slow
def test_pipeline_bench_times_every_stage_of_the_default_loop() -> None:
    args = ["--seconds", "2", "--sysbench-seconds", "0", "--json"]
    proc = subprocess.run(
        [str(REPO / "scripts" / "bench-pipeline"), *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    r = json.loads(proc.stdout)
    assert r["frames"] == 30 and r["size"] == "1280x720" and r["detection_stream"] == "640x360"
    # NanoDet on one frame in two (the default cadence), CenterFace on each
    assert r["person_calls"] == 15, r
    for stage in ("person detect", "face detect", "hold + cover", "track + count"):
        assert r["wall_ms"][stage] > 0 and r["cpu_ms"][stage] > 0, (stage, r)
    assert set(r["wall_ms"]) == {*STAGES, "other"}
    # the stages and the rest make up the whole loop
    assert sum(r["wall_ms"].values()) == pytest.approx(r["frame_ms"], rel=0.02, abs=0.05)
    assert r["fps"] == pytest.approx(1000 / r["frame_ms"], rel=0.02)
    assert r["host_sysbench"] is None and r["pi"] == []


def test_pi_estimate_scales_each_stage_by_the_sysbench_ratio() -> None:
    wall = dict.fromkeys(STAGES, 1.0) | {"face detect": 10.0, "person detect": 6.0, "other": 0}
    p = Profile(100, 2.0, wall, wall, 50, 0, 0)  # 20 ms a frame
    rows = {row["board"]: row for row in pi_estimates(p, host=2 * PI_SYSBENCH["Raspberry Pi 4"])}
    pi4 = rows["Raspberry Pi 4"]
    assert pi4["slower"] == 2.0
    assert (pi4["face_ms"], pi4["person_ms_per_frame"], pi4["frame_ms"]) == (20.0, 12.0, 40.0)
    assert pi4["fps_at_most"] == 25.0
    pi5 = rows["Raspberry Pi 5"]
    assert pi5["slower"] == pytest.approx(2 * 1477.83 / 2737.49, abs=0.01)
    assert pi5["fps_at_most"] > pi4["fps_at_most"]
