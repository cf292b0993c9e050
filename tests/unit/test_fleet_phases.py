"""fleet-sim's per-phase latency: a window belongs to the fault whose span it closed in."""

from __future__ import annotations

from tests.benchmarks.fleet_sim import phase_latencies


def test_windows_split_into_steady_state_and_each_faults_span() -> None:
    closed = {("s", "d", i): float(i) for i in range(10)}  # closed at t = 0..9 s
    latency = {k: (5.0 if 3 <= t < 5 else 0.1) for k, t in closed.items()}
    phases = phase_latencies(latency, closed, [("broker restart", 3.0)], span_s=2.0)
    by_name = {ph["phase"]: ph for ph in phases}
    assert by_name["broker restart"]["windows"] == 2  # t = 3 and 4
    assert by_name["broker restart"]["p99_s"] == 5.0
    steady = by_name["steady (no fault within span)"]
    assert steady["windows"] == 8 and steady["max_s"] == 0.1


def test_a_fault_with_no_window_in_its_span_reports_none() -> None:
    closed = {("s", "d", 1): 1.0}
    phases = phase_latencies({("s", "d", 1): 0.2}, closed, [("db restart", 50.0)], span_s=10.0)
    by_name = {ph["phase"]: ph for ph in phases}
    assert by_name["db restart"]["windows"] == 0
    assert by_name["steady (no fault within span)"]["windows"] == 1
