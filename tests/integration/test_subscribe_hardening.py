"""Issue 12, subscriber side: hostile messages against ``anoncam subscribe`` on a real Mosquitto,
stored in real SQLite. Each test names the item and what broke before the fix."""

from __future__ import annotations

import json
import signal
import sqlite3
import time
from contextlib import closing
from pathlib import Path

import pytest

from firmware import contract
from tests.integration.test_publish import DEVICE, SITE, window
from tests.integration.test_subscribe import Cli, _counts, _line_for, _publish
from tests.support.mosquitto import Broker

pytestmark = pytest.mark.integration
TOPIC = contract.topic("anoncam", SITE, DEVICE, "counts")


def _rows(db: Path, table: str = "windows") -> list[tuple[str, int, str]]:
    with closing(sqlite3.connect(db)) as conn:
        return list(conn.execute(f"SELECT stream, seq, payload FROM {table} ORDER BY stream, seq"))


def _wait_rows(db: Path, n: int, timeout: float = 20) -> list[tuple[str, int, str]]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if db.exists():
            try:
                rows = _rows(db)
            except sqlite3.OperationalError:
                rows = []
            if len(rows) >= n:
                return rows
        time.sleep(0.1)
    return _rows(db) if db.exists() else []


def test_item1_bad_messages_do_not_stop_storing_and_sigint_is_answered(
    mosquitto: Broker, tmp_path: Path
) -> None:
    """Item 1: a schema-valid seq above 2^63 raised OverflowError in paho's thread (SQLite
    INTEGER) and deep nesting raised RecursionError; the process then stored nothing more and
    ignored SIGINT. Now both are refused and reported, later windows are stored, SIGINT ends it."""
    db = tmp_path / "w.db"
    cli = Cli(mosquitto.port, "--sqlite", str(db))
    nested = b'{"a":' + b"[" * 5_000 + b"]" * 5_000 + b"}"  # RecursionError for json.loads
    _publish(
        mosquitto,
        [
            (TOPIC, json.dumps(window(2**64)).encode()),
            (TOPIC, nested),
            _counts(1),
            _counts(2),
        ],
    )
    rows = _wait_rows(db, 2)
    assert [seq for _, seq, _ in rows] == [1, 2]
    cli.proc.send_signal(signal.SIGINT)
    code, _, err = cli.finish(timeout=20)
    assert code == 130, err
    assert "integer out of range" in err and "nested deeper" in err
    assert "2 invalid" in err and "Traceback" not in err


def test_item2_stream_identity_and_conflicts(mosquitto: Broker, tmp_path: Path) -> None:
    """Item 2: de-duplication was on (site, device, seq) only, so a device with a new outbox
    (seq restarting at 1) had its real windows dropped as DUP, and a repeated seq with different
    content vanished silently. Now the key includes "stream" (absent = "" for old devices) and
    a same-key-different-content window is a CONFLICT: printed, counted, stored apart."""
    db = tmp_path / "w.db"
    cli = Cli(mosquitto.port, "--count", "3", "--timeout", "20", "--sqlite", str(db))
    old, new = "0123456789abcdef", "fedcba9876543210"
    _publish(
        mosquitto,
        [
            _counts(1, stream=old),
            _counts(1, stream=new),  # a new outbox: seq 1 again, another window
            _counts(1),  # an old device without stream
            (TOPIC, json.dumps(window(1, stream=old, entries=4)).encode()),  # conflict
            _counts(1, stream=old),  # a plain resend: DUP
        ],
    )
    code, lines, err = cli.finish()
    assert code == 0, err
    assert "CONFLICT" in _line_for(lines, DEVICE, 1, nth=3)
    assert "DUP" in _line_for(lines, DEVICE, 1, nth=4)
    assert "1 conflict(s)" in err and "1 duplicate(s)" in err
    assert "CONFLICT" in err  # logged loudly too
    assert sorted(stream for stream, _, _ in _rows(db)) == ["", old, new]
    (conflict,) = _rows(db, "window_conflicts")
    assert conflict[0] == old and json.loads(conflict[2])["entries"] == 4


def test_item4_per_person_fields_and_oversize_refused_unknown_fields_dropped(
    mosquitto: Broker, tmp_path: Path
) -> None:
    """Item 4 (P1): a payload with "boxes" and "track_ids" was accepted and stored verbatim, and
    a window padded to 1 MB was stored whole. Now per-person payloads and oversize ones are
    refused, and only the fields the schema knows are stored."""
    db = tmp_path / "w.db"
    cli = Cli(mosquitto.port, "--count", "1", "--timeout", "20", "--sqlite", str(db))
    _publish(
        mosquitto,
        [
            (TOPIC, json.dumps(window(1, boxes=[[1, 2, 3, 4]], track_ids=[7])).encode()),
            (TOPIC, json.dumps(window(2, padding="x" * 1_000_000)).encode()),
            (
                TOPIC,
                json.dumps(
                    window(3, note="kept out", frames={"processed": 9, "dropped": 0, "spare": 1})
                ).encode(),
            ),
        ],
    )
    code, _, err = cli.finish()
    assert code == 0, err
    assert "per-person field" in err and "$.boxes" in err and "exceeds" in err
    ((_, seq, payload),) = _rows(db)
    stored = json.loads(payload)
    assert seq == 3 and "note" not in stored and stored["frames"] == {"processed": 9, "dropped": 0}


def test_item10_terminal_escapes_are_escaped(mosquitto: Broker) -> None:
    """Item 10: a status "version" of "\\x1b[2J..." was printed raw, so a device could clear or
    rewrite the operator's terminal. Now control characters are printed as escapes."""
    status = {
        "state": "online",
        "version": "\x1b[2J\x1b]0;pwned\x07",
        "since": "2026-11-23T17:00:00Z",
    }
    cli = Cli(mosquitto.port, "--count", "1", "--timeout", "20")
    _publish(
        mosquitto,
        [
            (contract.topic("anoncam", SITE, DEVICE, "status"), json.dumps(status).encode()),
            _counts(1),
        ],
    )
    code, lines, err = cli.finish()
    assert code == 0, err
    out = "\n".join(lines)
    assert "\x1b" not in out and "\x07" not in out and "\x1b" not in err
    assert "\\x1b[2J" in out


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param(json.dumps(window(11)).replace('"seq": 11', '"seq": 11.0'), id="float-seq"),
        pytest.param(
            json.dumps(window(11, start="2026-11-23T17:01:00Z", end="2026-11-23T17:00:00Z")),
            id="end-before-start",
        ),
        pytest.param(json.dumps(window(11)).replace('"mean": 1.4', '"mean": NaN'), id="nan"),
        pytest.param(json.dumps(window(11)).replace('"mean": 1.4', '"mean": 1e999'), id="inf"),
    ],
)
def test_item19_strict_numbers_and_times(mosquitto: Broker, tmp_path: Path, payload: str) -> None:
    """Item 19: the subscriber accepted seq 11.0, end before start, and "mean": NaN. Now each
    is refused as invalid and not stored; the next valid window still is."""
    db = tmp_path / "w.db"
    cli = Cli(mosquitto.port, "--count", "1", "--timeout", "20", "--sqlite", str(db))
    _publish(mosquitto, [(TOPIC, payload.encode()), _counts(12)])
    code, _, err = cli.finish()
    assert code == 0, err
    assert "1 invalid" in err
    assert [seq for _, seq, _ in _rows(db)] == [12]


def test_item24_windows_published_while_down_are_delivered(mosquitto: Broker) -> None:
    """Item 24: a random client id and a clean session lost every window published while the
    subscriber was down. Now a fixed client id with a persistent session (MQTT 5 session
    expiry) makes the broker queue them for the next run."""
    first = Cli(mosquitto.port, "--count", "1", "--timeout", "20", "--client-id", "bi-1")
    _publish(mosquitto, [_counts(1)])
    assert first.finish()[0] == 0
    _publish(mosquitto, [_counts(2), _counts(3)])  # nobody connected
    second = Cli(mosquitto.port, "--count", "2", "--timeout", "20", "--client-id", "bi-1")
    code, lines, err = second.finish()
    assert code == 0, err
    assert _line_for(lines, DEVICE, 2) and _line_for(lines, DEVICE, 3)
    assert "as bi-1" in err
