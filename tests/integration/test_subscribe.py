"""``anoncam subscribe`` and its pieces: the window ledger (pure), the CLI against a real
Mosquitto (CSV, SQLite, DUP / GAP markers, exit codes) and MQTT 5 shared subscriptions."""

from __future__ import annotations

import csv
import json
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from firmware import contract
from firmware.config.settings import MqttConfig
from firmware.mqtt.subscribe.client import Received, Subscriber
from firmware.mqtt.subscribe.ledger import WindowLedger
from tests.integration.test_publish import DEVICE, REPO, SITE, window
from tests.support.mosquitto import Broker, free_port


# --------------------------------------------------------------------------- ledger (pure)
@pytest.mark.parametrize(
    ("arrivals", "expected"),
    [
        pytest.param([(1, 1), (2, 1), (3, 1)], [("new", 0), ("new", 0), ("new", 0)], id="in-order"),
        pytest.param([(1, 1), (2, 1), (2, 1)], [("new", 0), ("new", 0), ("dup", 0)], id="repeat"),
        pytest.param([(1, 1), (2, 1), (5, 1)], [("new", 0), ("new", 0), ("new", 2)], id="gap"),
        pytest.param(
            [(1, 1), (2, 1), (5, 3)], [("new", 0), ("new", 0), ("new", 0)], id="merged-explains"
        ),
        pytest.param([(1, 1), (4, 2)], [("new", 0), ("new", 1)], id="merged-partly-explains"),
        pytest.param(
            [(1, 1), (3, 1), (2, 1), (2, 1)],
            [("new", 0), ("new", 1), ("late", 0), ("dup", 0)],
            id="late-fills-gap",
        ),
        pytest.param([(7, 1)], [("new", 0)], id="first-seen-is-no-gap"),
    ],
)
def test_ledger_table(arrivals: list[tuple[int, int]], expected: list[tuple[str, int]]) -> None:
    """Table of seq arrivals (seq, merged) -> verdicts: de-duplication, gaps, merged rows."""
    ledger = WindowLedger()
    got = [ledger.observe(SITE, DEVICE, seq, merged) for seq, merged in arrivals]
    assert [(v.kind, v.missing) for v in got] == expected


def test_ledger_keys_devices_apart() -> None:
    """The same seq from two devices is two windows, not a duplicate."""
    ledger = WindowLedger()
    assert ledger.observe("s", "a", 1).kind == "new"
    assert ledger.observe("s", "b", 1).kind == "new"
    assert ledger.observe("t", "a", 1).kind == "new"
    assert ledger.accepted == 3 and ledger.duplicates == 0


def test_ledger_memory_is_bounded() -> None:
    """A long run keeps at most `recent` seqs per device; a repeat older than that is dropped."""
    ledger = WindowLedger(recent=64)
    for seq in range(1, 10_001):
        ledger.observe(SITE, DEVICE, seq)
    assert ledger.state_size() == 64
    assert ledger.observe(SITE, DEVICE, 9_990).kind == "dup"  # recent: known repeat
    assert ledger.observe(SITE, DEVICE, 5).kind == "dup"  # too old to tell: not double-counted
    assert ledger.gaps == 0 and ledger.accepted == 10_000


# --------------------------------------------------------------------------- CLI
def _publish(broker: Broker, messages: list[tuple[str, bytes]]) -> None:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    client.connect(broker.host, broker.port)
    client.loop_start()
    try:
        for topic, payload in messages:
            client.publish(topic, payload, qos=1).wait_for_publish(5)
    finally:
        client.disconnect()
        client.loop_stop()


def _counts(seq: int, device: str = DEVICE, **extra: Any) -> tuple[str, bytes]:
    return (
        contract.topic("anoncam", SITE, device, "counts"),
        json.dumps(window(seq, device=device, **extra)).encode(),
    )


class Cli:
    """`python -m firmware subscribe ...` as a subprocess; waits until it has subscribed."""

    def __init__(self, broker_port: int, *args: str, wait_subscribed: bool = True) -> None:
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "firmware",
                "subscribe",
                "--mqtt-host",
                "127.0.0.1",
                "--mqtt-port",
                str(broker_port),
                *args,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=REPO,
        )
        self.stderr: list[str] = []
        self._subscribed = threading.Event()
        self._reader = threading.Thread(target=self._read_stderr, daemon=True)
        self._reader.start()
        if wait_subscribed and not self._subscribed.wait(15):
            self.proc.kill()
            _, _, err = self.finish()
            raise AssertionError(f"the subscriber did not subscribe:\n{err}")

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.stderr.append(line)
            if "subscribed to" in line:
                self._subscribed.set()

    def finish(self, timeout: float = 20) -> tuple[int, list[str], str]:
        assert self.proc.stdout is not None
        try:
            code = self.proc.wait(timeout)  # output is small: it fits the pipe buffer
            out = self.proc.stdout.read()
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait(5)
            self.proc.stdout.close()
            self._reader.join(5)
            assert self.proc.stderr is not None
            self.proc.stderr.close()
        return code, out.splitlines(), "".join(self.stderr)


def _line_for(lines: list[str], device: str, seq: int, nth: int = 0) -> str:
    found = [ln for ln in lines if ln.split()[:3] == [SITE, device, str(seq)]]
    assert len(found) > nth, (device, seq, lines)
    return found[nth]


@pytest.mark.integration
def test_subscribe_dedupes_flags_gaps_and_stores(mosquitto: Broker, tmp_path: Path) -> None:
    """Repeats are marked DUP and stored once, a seq jump is a GAP unless 'merged' explains it,
    an invalid message is reported with its topic and failing field and skipped; CSV and SQLite
    hold each distinct window once, and a later run cannot duplicate SQLite rows."""
    csv_path, db_path = tmp_path / "w.csv", tmp_path / "w.db"
    cli = Cli(
        mosquitto.port,
        "--count",
        "6",
        "--timeout",
        "20",
        "--csv",
        str(csv_path),
        "--sqlite",
        str(db_path),
    )
    bad = window(7)
    del bad["frames"]
    _publish(
        mosquitto,
        [
            _counts(1),
            _counts(2),
            _counts(2),
            _counts(3),
            _counts(6),
            (contract.topic("anoncam", SITE, DEVICE, "counts"), json.dumps(bad).encode()),
            _counts(9, merged=3),
            _counts(1, device="door-2"),
        ],
    )
    code, lines, err = cli.finish()
    assert code == 0, err
    assert "DUP" in _line_for(lines, DEVICE, 2, nth=1)
    assert "DUP" not in _line_for(lines, DEVICE, 2, nth=0)
    assert "GAP (2 missing)" in _line_for(lines, DEVICE, 6)
    nine = _line_for(lines, DEVICE, 9)
    assert "merged 3" in nine and "GAP" not in nine
    assert "invalid counts message skipped" in err and "'frames' is a required property" in err
    assert contract.topic("anoncam", SITE, DEVICE, "counts") in err
    assert "6 window(s), 1 duplicate(s), 1 gap(s) (2 missing), 1 invalid" in err

    with csv_path.open() as f:
        rows = list(csv.DictReader(f))
    assert [(r["device"], int(r["seq"])) for r in rows] == [
        (DEVICE, 1),
        (DEVICE, 2),
        (DEVICE, 3),
        (DEVICE, 6),
        (DEVICE, 9),
        ("door-2", 1),
    ]
    assert rows[4]["merged"] == "3" and rows[0]["occupancy_last"] == "1"

    # A fresh subscriber has no memory of seq 1; the SQLite key still refuses it (DUP, not
    # counted), and the next new window is stored.
    again = Cli(mosquitto.port, "--count", "1", "--timeout", "20", "--sqlite", str(db_path))
    _publish(mosquitto, [_counts(1), _counts(10)])
    code, lines, err = again.finish()
    assert code == 0, err
    assert "DUP" in _line_for(lines, DEVICE, 1)
    with sqlite3.connect(db_path) as db:
        stored = db.execute(
            "SELECT device, seq, payload FROM windows ORDER BY device, seq"
        ).fetchall()
    db.close()
    assert [(d, s) for d, s, _ in stored] == [
        (DEVICE, 1),
        (DEVICE, 2),
        (DEVICE, 3),
        (DEVICE, 6),
        (DEVICE, 9),
        (DEVICE, 10),
        ("door-2", 1),
    ]
    contract.validate("counts", json.loads(stored[0][2]))


@pytest.mark.integration
def test_subscribe_json_and_status(mosquitto: Broker) -> None:
    """--json prints one valid counts object per accepted window, nothing for a duplicate."""
    status = (
        contract.topic("anoncam", SITE, DEVICE, "status"),
        b'{"state":"online","version":"0.1.0","since":"2026-11-23T17:00:00Z"}',
    )
    cli = Cli(mosquitto.port, "--count", "2", "--timeout", "20", "--json")
    _publish(mosquitto, [status, _counts(1), _counts(1), _counts(2)])
    code, lines, err = cli.finish()
    assert code == 0, err
    objects = [json.loads(ln) for ln in lines]
    assert [o["seq"] for o in objects] == [1, 2]
    for o in objects:
        contract.validate("counts", o)


@pytest.mark.integration
def test_subscribe_reads_config_and_broad_topic(mosquitto: Broker, tmp_path: Path) -> None:
    """--config supplies the [mqtt] section (here a custom prefix), flags override it (the port),
    and a broad --topic brings status once, not twice."""
    config = tmp_path / "device.toml"
    config.write_text('[mqtt]\nhost = "127.0.0.1"\nport = 1\nprefix = "fleet"\n')
    cli = Cli(mosquitto.port, "--config", str(config), "--topic", "fleet/#", "--count", "1")
    status = b'{"state":"online","version":"0.1.0","since":"2026-11-23T17:00:00Z"}'
    body = json.dumps(window(4)).encode()
    _publish(
        mosquitto,
        [
            (contract.topic("fleet", SITE, DEVICE, "status"), status),
            (contract.topic("anoncam", SITE, DEVICE, "counts"), body),  # other prefix: unseen
            (contract.topic("fleet", SITE, DEVICE, "counts"), body),
        ],
    )
    code, lines, err = cli.finish()
    assert code == 0, err
    assert sum(ln.startswith("STATUS ") for ln in lines) == 1
    assert "fleet/#" in err and "anoncam/+/+/status" not in err
    assert _line_for(lines, DEVICE, 4)


@pytest.mark.integration
def test_subscribe_timeout_exits_1(mosquitto: Broker) -> None:
    """--count not reached within --timeout: exit 1 with a message saying so."""
    cli = Cli(mosquitto.port, "--count", "3", "--timeout", "1")
    _publish(mosquitto, [_counts(1)])
    code, _, err = cli.finish()
    assert code == 1
    assert "timeout: 1 of 3 window(s)" in err and "fix:" in err


@pytest.mark.integration
def test_subscribe_refused_exits_1() -> None:
    """No broker on the port: exit 1 with the reason and the fix, no traceback."""
    cli = Cli(free_port(), "--count", "1", "--timeout", "5", wait_subscribed=False)
    code, _, err = cli.finish()
    assert code == 1
    assert "connection refused" in err and "fix:" in err and "Traceback" not in err


@pytest.mark.integration
def test_subscribe_usage_errors_exit_2() -> None:
    """Bad arguments are usage errors (exit 2), before any network."""
    result = subprocess.run(
        [sys.executable, "-m", "firmware", "subscribe", "--count", "0"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=30,
    )
    assert result.returncode == 2 and "--count" in result.stderr


# --------------------------------------------------------------------------- shared subscription
@pytest.mark.integration
def test_shared_subscription_splits_windows(mosquitto: Broker) -> None:
    """Two subscribers in one $share group together receive every window exactly once."""
    config = MqttConfig(host=mosquitto.host, port=mosquitto.port)
    got: dict[str, list[tuple[str, int]]] = {"a": [], "b": []}
    lock = threading.Lock()

    def collect(name: str) -> Any:
        def on_window(r: Received) -> None:
            with lock:
                got[name].append((r.window.device, r.window.seq))

        return on_window

    members = [
        Subscriber(config, share="fleet", on_window=collect(n), client_id=f"member-{n}")
        for n in ("a", "b")
    ]
    for m in members:
        m.connect(5)
    try:
        sent = [(dev, seq) for dev in ("door-1", "door-2") for seq in range(1, 11)]
        _publish(mosquitto, [_counts(seq, device=dev) for dev, seq in sent])
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with lock:
                if len(got["a"]) + len(got["b"]) >= len(sent):
                    break
            time.sleep(0.02)
        time.sleep(0.3)  # would-be extra copies have time to show up
        with lock:
            a, b = list(got["a"]), list(got["b"])
        assert len(a) + len(b) == len(sent)
        assert sorted(a + b) == sorted(sent)
        assert a and b, "one member got everything: the group did not share"
        assert all(
            f.startswith("$share/fleet/") for f in members[0].filters if f.endswith("counts")
        )
    finally:
        for m in members:
            m.close()
