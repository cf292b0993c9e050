"""``anoncam run`` (a subprocess) against broker outages, a crash and a stop: no window is lost.

The consumer side is what a real BI pipeline should run: a durable MQTT session
(:class:`~tests.support.scenes.Listener` with ``durable=True``) on a broker that keeps sessions
across restarts (:func:`~tests.support.scenes.persistent_broker`), so windows published while
the consumer was reconnecting are queued for it; repeats (QoS 1 is at least once) are removed by
``seq``, with :class:`~firmware.mqtt.subscribe.ledger.WindowLedger` and ``anoncam subscribe``'s
SQLite primary key.
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import signal
import sqlite3
import subprocess
import time
from contextlib import closing
from pathlib import Path

import pytest

from firmware.mqtt.subscribe.intake import counts_window
from firmware.mqtt.subscribe.sinks import SqliteStore
from firmware.outbox import outbox_path, read_stats
from tests.support.mosquitto import Broker, free_port, make_broker
from tests.support.scenes import (
    BUSY_DOOR,
    OUTBOX_NAME,
    SHORT_CLIP,
    Listener,
    Rendered,
    RunProcess,
    anoncam,
    assert_contiguous,
    outbox_state,
    persistent_broker,
    processed,
    rendered,
    run_args,
    sum_of,
    wait_session_saved,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def door(tmp_path_factory: pytest.TempPathFactory) -> Rendered:
    return rendered(tmp_path_factory, BUSY_DOOR)


@pytest.fixture(scope="module")
def short(tmp_path_factory: pytest.TempPathFactory) -> Rendered:
    return rendered(tmp_path_factory, SHORT_CLIP)


def _closed(log: str) -> int:
    found = re.search(r"processed (\d+) frames, closed (\d+) window\(s\)", log)
    assert found, log
    return int(found.group(2))


def _frames(log: str) -> int:
    found = re.search(r"processed (\d+) frames", log)
    assert found, log
    return int(found.group(1))


def _wait_stored(state: Path, depth: int, timeout: float) -> bool:
    """Wait until the run's outbox holds ``depth`` unsent windows (read-only, while it runs)."""
    path = outbox_path(state)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError, sqlite3.Error, ValueError):
            if path.is_file() and read_stats(path).depth >= depth:
                return True
        time.sleep(0.1)
    return False


def _wait_windows(listener: Listener, n: int, timeout: float) -> None:
    assert listener.wait(lambda r: len(r.distinct()) >= n, timeout), sorted(listener.distinct())


def test_broker_down_at_start(door: Rendered, tmp_path: Path) -> None:
    """The broker is down when the run starts and comes up a few seconds later: the run counts
    from the first frame (the windows wait in the outbox), then delivers every window in order;
    exit 0, outbox empty, and the totals match the truth."""
    broker = persistent_broker(tmp_path / "broker")
    broker.start()
    listener = Listener(broker, durable=True, client_id="bi-down-at-start")
    broker.stop()  # a clean stop saves the consumer's session
    wait_session_saved(tmp_path / "broker", "bi-down-at-start")
    state = tmp_path / "state"
    run = RunProcess(run_args(door.path, broker.port, state, window=5, drain_timeout=30))
    try:
        assert run.wait_log("not reachable yet", 30), run.stderr
        # counting goes on without a broker: windows are stored while it is down
        assert _wait_stored(state, 1, 60), "no window stored while the broker was down"
        assert run.proc.poll() is None, "the run should still be going when the broker starts"
        broker.start()
        assert run.wait(90) == 0, run.stderr
        left = outbox_state(state)
        assert left.depth == 0
        n = left.next_seq - 1
        assert listener.wait_seqs(n, 20), sorted(listener.distinct())
        windows = listener.distinct()
        assert_contiguous(windows, n)
        assert sum_of(windows, "entries") == door.true_entries
        assert sum_of(windows, "exits") == door.true_exits
        assert processed(windows) == door.frames
        assert "connected to MQTT broker" in run.stderr
    finally:
        run.stop()
        listener.close()
        broker.stop()


def test_broker_down_for_the_whole_run_then_delivered_next_start(
    door: Rendered, short: Rendered, tmp_path: Path
) -> None:
    """No broker at all: the run ends with exit 1 and a message naming the broker, how many
    windows were not acknowledged and where they wait. The next start (same state dir, a short
    clip) delivers them first, unchanged, then its own: nothing lost, seqs contiguous."""
    port = free_port()
    state = tmp_path / "state"
    code, log = anoncam(run_args(door.path, port, state, window=10, drain_timeout=2))
    assert code == 1, log
    kept = outbox_state(state)
    n_old = kept.next_seq - 1
    assert kept.depth == n_old >= 3
    error = next(line for line in log.splitlines() if line.startswith("anoncam: error:"))
    assert f"127.0.0.1:{port}" in error
    assert f"{n_old} window(s) not acknowledged" in error
    assert str(state / OUTBOX_NAME) in error and "next start" in error
    assert "fix:" in log

    broker = persistent_broker(tmp_path / "broker", port=port)
    broker.start()
    listener = Listener(broker)
    try:
        code, log2 = anoncam(run_args(short.path, port, state, window=10, drain_timeout=15))
        assert code == 0, log2
        left = outbox_state(state)
        assert left.depth == 0
        n = left.next_seq - 1
        assert n == n_old + _closed(log2)
        assert listener.wait_seqs(n, 15), sorted(listener.distinct())
        windows = listener.distinct()
        assert_contiguous(windows, n)
        assert [windows[s] for s in range(1, n_old + 1)] == list(kept.payloads)
        assert sum_of({s: windows[s] for s in range(1, n_old + 1)}, "entries") == door.true_entries
    finally:
        listener.close()
        broker.stop()


def test_broker_killed_mid_run_then_restarted(door: Rendered, tmp_path: Path) -> None:
    """The broker dies (SIGKILL) after the first window and comes back on the same port: every
    window arrives; after de-duplication by seq (the ledger, and the SQLite primary key that
    ``anoncam subscribe --sqlite`` uses) seqs are 1..N without a gap, and any repeat is an
    identical resend (all that QoS 1 allows)."""
    broker = persistent_broker(tmp_path / "broker")
    broker.start()
    listener = Listener(broker, durable=True, client_id="bi-broker-killed")
    wait_session_saved(tmp_path / "broker", "bi-broker-killed")  # autosaved every second
    state = tmp_path / "state"
    run = RunProcess(run_args(door.path, broker.port, state, window=5, drain_timeout=30))
    try:
        _wait_windows(listener, 1, 60)
        broker.kill()
        # windows close while the broker is gone: wait until one waits in the outbox
        assert _wait_stored(state, 1, 60), "no window stored while the broker was down"
        assert run.proc.poll() is None, "the broker should come back while the run counts"
        broker.start()
        assert run.wait(90) == 0, run.stderr
        left = outbox_state(state)
        assert left.depth == 0
        n = left.next_seq - 1
        assert listener.wait_seqs(n, 20), sorted(listener.distinct())
        windows = listener.distinct()  # also checks that every repeat is identical
        assert_contiguous(windows, n)
        assert listener.ledger.accepted == n and listener.ledger.missing == 0
        assert len(listener.windows()) == n + listener.ledger.duplicates
        assert sum_of(windows, "entries") == door.true_entries
        assert sum_of(windows, "exits") == door.true_exits
        assert "lost connection to MQTT broker" in run.stderr

        sink = SqliteStore(tmp_path / "bi.sqlite3")
        for window in listener.windows():  # repeats included
            raw = json.dumps(window).encode()
            sink.store(
                [counts_window(raw, window["site"], window["device"])], "2026-01-01T00:00:00Z"
            )
        sink.close()
        with closing(sqlite3.connect(tmp_path / "bi.sqlite3")) as conn:
            seqs = [r[0] for r in conn.execute("SELECT seq FROM windows ORDER BY seq")]
        assert seqs == list(range(1, n + 1))
    finally:
        run.stop()
        listener.close()
        broker.stop()


def test_sigkill_mid_run_then_restart_loses_no_closed_window(
    mosquitto: Broker, door: Rendered, short: Rendered, tmp_path: Path
) -> None:
    """``anoncam run`` is SIGKILLed (power cut, OOM kill) after a few windows, then started again
    with the same state dir: every window closed before the kill is delivered (delivered before
    it, or from the outbox after the restart), the new run's seqs continue from the persisted
    next seq, and the subscriber sees 1..N with no gap.

    By design the window that was open at the kill is lost: its frames were counted in memory
    and never committed (a window is written in one transaction when it closes). So the
    committed windows hold fewer frames than the video, and that is all that is missing."""
    listener = Listener(mosquitto)
    state = tmp_path / "state"
    run = RunProcess(run_args(door.path, mosquitto.port, state, window=5, drain_timeout=15))
    try:
        _wait_windows(listener, 2, 60)
        assert run.proc.poll() is None, "the kill should hit a running process"
        run.proc.send_signal(signal.SIGKILL)
        assert run.wait(10) == -signal.SIGKILL
        after_kill = outbox_state(state)
        committed = after_kill.next_seq - 1
        assert committed >= 2
        before = set(listener.distinct())
        assert before <= set(range(1, committed + 1))

        code, log = anoncam(run_args(short.path, mosquitto.port, state, window=5))
        assert code == 0, log
        left = outbox_state(state)
        assert left.depth == 0
        n = left.next_seq - 1
        assert n == committed + _closed(log), "seqs continue from the persisted next seq"
        assert listener.wait_seqs(n, 15), sorted(listener.distinct())
        windows = listener.distinct()
        assert_contiguous(windows, n)
        first_run = {s: w for s, w in windows.items() if s <= committed}
        assert processed(first_run) < door.frames  # the open window died with the process
        assert processed(windows) - processed(first_run) == short.frames
    finally:
        run.stop()
        listener.close()


def test_sigterm_flushes_the_partial_window_and_drains(
    mosquitto: Broker, door: Rendered, tmp_path: Path
) -> None:
    """SIGTERM mid-run (systemd stop): the partial window is closed and written, the outbox is
    drained, exit 0; every frame processed before the signal is in a delivered window."""
    listener = Listener(mosquitto)
    state = tmp_path / "state"
    run = RunProcess(run_args(door.path, mosquitto.port, state, window=5, drain_timeout=15))
    try:
        _wait_windows(listener, 1, 60)
        assert run.proc.poll() is None
        run.send(signal.SIGTERM)
        assert run.wait(30) == 0, run.stderr
        assert "SIGTERM received" in run.stderr
        left = outbox_state(state)
        assert left.depth == 0
        n = left.next_seq - 1
        assert listener.wait_seqs(n, 10), sorted(listener.distinct())
        windows = listener.distinct()
        assert_contiguous(windows, n)
        frames = _frames(run.stderr)
        assert frames < door.frames, "the signal should have stopped the run early"
        assert processed(windows) == frames
    finally:
        run.stop()
        listener.close()


def test_refused_password_stops_the_run_with_the_fix(short: Rendered, tmp_path: Path) -> None:
    """A wrong password is not a broker outage: the run stops at once with exit 1, the broker's
    answer and the fix (not a silent retry loop that counts into an outbox nobody drains)."""
    passwd = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"
    pwfile = tmp_path / "passwd"
    subprocess.run(
        [passwd, "-b", "-c", str(pwfile), "door-1", "right"], check=True, capture_output=True
    )
    pwfile.chmod(0o600)
    broker = make_broker(tmp_path / "auth", f"password_file {pwfile}", anonymous=False)
    broker.start()
    secret = tmp_path / "mqtt-password"
    secret.write_text("wrong\n")
    config = tmp_path / "config.toml"
    config.write_text(f'[mqtt]\nusername = "door-1"\npassword_file = "{secret}"\n')
    try:
        started = time.monotonic()
        code, log = anoncam(
            [
                "run",
                "--config",
                str(config),
                *run_args(short.path, broker.port, tmp_path / "state")[1:],
            ],
            timeout=60,
        )
        assert code == 1, log
        assert time.monotonic() - started < 30
        error = next(line for line in log.splitlines() if line.startswith("anoncam: error:"))
        assert f"{broker.host}:{broker.port}" in error and "not authorized" in error.lower()
        assert "fix:" in log
        assert "processed" not in log, "nothing is counted for a device the broker refuses"
    finally:
        broker.stop()
