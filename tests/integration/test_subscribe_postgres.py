"""``anoncam subscribe --postgres`` against a real PostgreSQL and a real Mosquitto: tables made on
first use, idempotent upserts, conflicts kept, clear errors, acknowledgement only after commit
(a subscriber killed while the database is down loses nothing), shared subscribers."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import psycopg
import pytest

from tests.integration.test_publish import DEVICE, REPO, SITE, window
from tests.integration.test_subscribe import Cli, _counts, _line_for, _publish
from tests.support.mosquitto import Broker
from tests.support.postgres import PASSWORD, Postgres

pytestmark = pytest.mark.integration


def _keys(dsn: str, table: str = "windows") -> list[tuple[str, int]]:
    with psycopg.connect(dsn) as conn:
        return [
            (r[0], r[1])
            for r in conn.execute(f"SELECT device, seq FROM {table} ORDER BY device, seq")
        ]


def _wait_count(dsn: str, n: int, timeout: float = 30) -> int:
    deadline = time.monotonic() + timeout
    got = 0
    while time.monotonic() < deadline:
        try:
            got = len(_keys(dsn))
        except psycopg.Error:
            got = 0
        if got >= n:
            return got
        time.sleep(0.2)
    return got


def test_postgres_sink_upserts_keeps_conflicts_and_types(
    mosquitto: Broker, postgres_dsn: str
) -> None:
    """Tables are created on first use; a resend is stored once, a same-key-other-content
    window lands in window_conflicts; a second run on the same database adds no duplicate."""
    cli = Cli(mosquitto.port, "--count", "3", "--timeout", "20", "--postgres", postgres_dsn)
    conflict = (_counts(2)[0], json.dumps(window(2, exits=0)).encode())
    _publish(mosquitto, [_counts(1), _counts(2), _counts(2), _counts(3), conflict])
    code, lines, err = cli.finish()
    assert code == 0, err
    assert "CONFLICT" in _line_for(lines, DEVICE, 2, nth=2)
    assert _keys(postgres_dsn) == [(DEVICE, 1), (DEVICE, 2), (DEVICE, 3)]
    assert _keys(postgres_dsn, "window_conflicts") == [(DEVICE, 2)]
    with psycopg.connect(postgres_dsn) as conn:
        start, payload, lag = conn.execute(
            "SELECT window_start, payload, stored_at - received_at FROM windows WHERE seq = 1"
        ).fetchone()
    assert start.isoformat() == "2026-11-23T17:00:00+00:00" and payload["seq"] == 1
    assert lag.total_seconds() < 5

    again = Cli(mosquitto.port, "--count", "1", "--timeout", "20", "--postgres", postgres_dsn)
    _publish(mosquitto, [_counts(1), _counts(4)])
    code, lines, err = again.finish()
    assert code == 0, err
    assert "DUP" in _line_for(lines, DEVICE, 1)
    assert _keys(postgres_dsn) == [(DEVICE, s) for s in (1, 2, 3, 4)]


def _subscribe_exit(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "firmware", "subscribe", "--mqtt-port", "1", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )


def test_postgres_errors_are_clear(postgres_server: Postgres, postgres_dsn: str) -> None:
    """A malformed DSN, a refused password, a missing database and a foreign 'windows' table
    each give one message with the fix and exit 2, never a traceback or the password."""
    bad_dsn = _subscribe_exit("--postgres", "host=127.0.0.1 port")
    wrong_pw = _subscribe_exit("--postgres", postgres_server.dsn(password="nope"))
    no_db = _subscribe_exit("--postgres", postgres_server.dsn("nosuchdb"))
    with psycopg.connect(postgres_dsn) as conn:
        conn.execute("CREATE TABLE windows (site text, seq int)")
    foreign = _subscribe_exit("--postgres", postgres_dsn)
    for result, words in [
        (bad_dsn, "not a valid DSN"),
        (wrong_pw, "refused the password"),
        (no_db, "does not exist"),
        (foreign, "not an anoncam windows table"),
    ]:
        assert result.returncode == 2, result.stderr
        assert words in result.stderr and "fix:" in result.stderr, result.stderr
        assert "Traceback" not in result.stderr and PASSWORD not in result.stderr


def test_killed_while_database_down_loses_nothing(
    mosquitto: Broker, postgres_server: Postgres, postgres_dsn: str
) -> None:
    """Windows arrive while PostgreSQL is down: they are not acknowledged; the subscriber is
    SIGKILLed, the database comes back, the subscriber restarts with its client id and the
    broker redelivers them: every window stored exactly once. (Acking on receipt, as paho
    does by default, loses all five.)"""
    cli = Cli(mosquitto.port, "--postgres", postgres_dsn, "--client-id", "bi-kill")
    _publish(mosquitto, [_counts(1)])
    assert _wait_count(postgres_dsn, 1) == 1
    postgres_server.stop()
    try:
        _publish(mosquitto, [_counts(s) for s in range(2, 7)])
        deadline = time.monotonic() + 20
        while not any("retrying" in line for line in cli.stderr) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert any("retrying" in line for line in cli.stderr), "".join(cli.stderr)
        cli.proc.send_signal(signal.SIGKILL)
        cli.finish()
    finally:
        postgres_server.start()
    again = Cli(
        mosquitto.port,
        "--postgres",
        postgres_dsn,
        "--client-id",
        "bi-kill",
        "--count",
        "5",
        "--timeout",
        "30",
    )
    code, _, err = again.finish(timeout=40)
    assert code == 0, err
    assert _keys(postgres_dsn) == [(DEVICE, s) for s in range(1, 7)]


def test_shared_subscribers_into_one_database(mosquitto: Broker, postgres_dsn: str) -> None:
    """Two --share members write into one database: together they store every window exactly
    once, and one SIGKILLed and restarted loses none of its share."""

    def member(name: str) -> Cli:
        return Cli(mosquitto.port, "--share", "bi", "--client-id", name, "--postgres", postgres_dsn)

    a, b = member("bi-a"), member("bi-b")
    first = [_counts(s, device=d) for d in ("door-1", "door-2") for s in range(1, 11)]
    _publish(mosquitto, first + first[:5])  # five resends
    assert _wait_count(postgres_dsn, 20) == 20
    a.proc.send_signal(signal.SIGKILL)
    a.finish()
    _publish(mosquitto, [_counts(s, device=d) for d in ("door-1", "door-2") for s in range(11, 21)])
    a = member("bi-a")  # its queued share is delivered now
    try:
        assert _wait_count(postgres_dsn, 40) == 40
        time.sleep(0.5)  # a would-be duplicate has time to show
        keys = _keys(postgres_dsn)
        assert keys == sorted({(d, s) for d in ("door-1", "door-2") for s in range(1, 21)})
        assert SITE
    finally:
        for m in (a, b):
            m.proc.send_signal(signal.SIGINT)
            m.finish()
