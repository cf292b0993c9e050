"""The MQTT publisher against a real Mosquitto, a real SQLite outbox and real paho clients.

Also holds small helpers (a valid counts window, a recording subscriber) that the other MQTT
integration test files import.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from firmware import contract
from firmware.config.settings import HomeAssistantConfig, MqttConfig
from firmware.mqtt.publish import OCCUPANCY_TEMPLATE, Publisher
from firmware.mqtt.subscribe.ledger import WindowLedger
from firmware.outbox import Outbox
from tests.support.mosquitto import Broker, make_broker

pytestmark = pytest.mark.integration

SITE, DEVICE = "store-042", "door-1"
REPO = Path(__file__).resolve().parents[2]


# --------------------------------------------------------------------------- helpers
def window(seq: int, *, site: str = SITE, device: str = DEVICE, **extra: Any) -> dict[str, Any]:
    """A counts window that validates against the schema."""
    body: dict[str, Any] = {
        "schema": "anoncam/counts/1",
        "site": site,
        "device": device,
        "seq": seq,
        "start": "2026-11-23T17:00:00Z",
        "end": "2026-11-23T17:01:00Z",
        "entries": seq % 5,
        "exits": seq % 3,
        "visitors": seq % 7,
        "occupancy": {"min": 0, "max": 3, "mean": 1.4, "last": seq % 4},
        "dwell_s": {"count": 3, "p50": 12.5, "p90": 40.0},
        "frames": {"processed": 900, "dropped": 12},
    }
    body.update(extra)
    return body


def health() -> dict[str, Any]:
    """What the service's health probe reports off a Pi (unknown figures are null)."""
    return {
        "fps": 15.0,
        "detector_latency_ms": 21.5,
        "dropped_frames": 0,
        "cpu_temp_c": None,
        "throttling": None,
        "camera": "ok",
    }


def fill(outbox: Outbox, n: int, **extra: Any) -> list[int]:
    return [outbox.add_window(lambda seq: window(seq, **extra)) for _ in range(n)]


@dataclass
class Message:
    topic: str
    payload: bytes
    retain: bool

    def json(self) -> Any:
        return json.loads(self.payload)


class Recorder:
    """A plain paho subscriber that records what arrives (the test's independent witness)."""

    def __init__(
        self,
        broker: Broker,
        topics: list[str],
        *,
        qos: int = 1,
        configure: Callable[[mqtt.Client], None] | None = None,
    ) -> None:
        self.messages: list[Message] = []
        self._cond = threading.Condition()
        self._subscribed = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        if configure is not None:
            configure(self.client)
        topics_qos = [(t, qos) for t in topics]

        def on_connect(c: mqtt.Client, u: Any, f: Any, rc: Any, p: Any) -> None:
            c.subscribe(topics_qos)

        def on_subscribe(c: mqtt.Client, u: Any, mid: int, rcs: Any, p: Any) -> None:
            self._subscribed.set()

        def on_message(c: mqtt.Client, u: Any, m: mqtt.MQTTMessage) -> None:
            with self._cond:
                self.messages.append(Message(m.topic, bytes(m.payload), bool(m.retain)))
                self._cond.notify_all()

        self.client.on_connect = on_connect
        self.client.on_subscribe = on_subscribe
        self.client.on_message = on_message
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        assert self._subscribed.wait(5), "test subscriber got no SUBACK"

    def on(self, kind: str) -> list[Message]:
        with self._cond:
            return [m for m in self.messages if m.topic.endswith("/" + kind)]

    def seqs(self) -> list[int]:
        return [int(m.json()["seq"]) for m in self.on("counts")]

    def wait(self, predicate: Callable[[Recorder], bool], timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate(self):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(remaining)
        return True

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def retained_status(broker: Broker, **kw: Any) -> dict[str, Any]:
    """The retained status a newly arriving subscriber sees."""
    rec = Recorder(broker, [contract.topic("anoncam", SITE, DEVICE, "status")], **kw)
    try:
        assert rec.wait(lambda r: bool(r.on("status")), 5), "no retained status"
        first = rec.on("status")[0]
        assert first.retain
        return dict(first.json())
    finally:
        rec.close()


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def check_payload(message: Message) -> None:
    """P1 and the contract: every published payload validates and carries no per-person key."""
    kind = message.topic.rsplit("/", 1)[-1]
    body = message.json()
    if kind in contract.KINDS:
        contract.validate(kind, body)
    assert contract.find_forbidden(body) == [], message.topic


@pytest.fixture
def outbox(tmp_path: Path) -> Iterator[Outbox]:
    box = Outbox(tmp_path / "outbox.db")
    yield box
    box.close()


def publisher_for(broker: Broker, outbox: Outbox, **kw: Any) -> Publisher:
    mqtt_kw = {k: kw.pop(k) for k in list(kw) if k in MqttConfig.model_fields}
    mqtt_kw.setdefault("health_interval_s", 1)
    config = MqttConfig(host=broker.host, port=broker.port, **mqtt_kw)
    return Publisher(
        config, site=SITE, device=DEVICE, outbox=outbox, health=health, version="0.1.0-test", **kw
    )


# --------------------------------------------------------------------------- tests
def test_delivers_windows_in_order_then_offline(mosquitto: Broker, outbox: Outbox) -> None:
    """N windows arrive once each in seq order, the outbox is emptied only by broker acks, status
    goes retained online -> offline, and every payload validates with no forbidden key (P1)."""
    everything = Recorder(mosquitto, ["anoncam/#"])
    pub = publisher_for(mosquitto, outbox)
    assert pub.start(wait_connected_s=5)
    assert everything.wait(lambda r: len(r.on("status")) == 1, 5)  # the broker has it now
    assert retained_status(mosquitto)["state"] == "online"
    fill(outbox, 60)
    pub.wake()
    assert everything.wait(lambda r: len(r.on("counts")) == 60), everything.seqs()
    assert everything.seqs() == list(range(1, 61))
    wait_until(lambda: outbox.stats().depth == 0, 5, "the outbox to empty")
    assert everything.wait(lambda r: len(r.on("health")) >= 1, 3), "no health message"
    assert pub.stop(drain_timeout_s=5) is True
    assert not pub.connected
    offline = retained_status(mosquitto)
    assert offline["state"] == "offline" and offline["version"] == "0.1.0-test"
    everything.close()
    for message in everything.messages:
        check_payload(message)
    health_msg = everything.on("health")[0].json()
    assert health_msg["camera"] == "ok" and "outbox_depth" in health_msg


def test_windows_added_later_are_sent_promptly(mosquitto: Broker, outbox: Outbox) -> None:
    """A window added while connected goes out on wake(), not at the next safety poll: with the
    poll and the health timer an hour away, only wake() can make it arrive within the wait."""
    rec = Recorder(mosquitto, ["anoncam/+/+/counts", "anoncam/+/+/status"])
    pub = publisher_for(mosquitto, outbox, poll_s=3600.0, health_interval_s=3600)
    assert pub.start(wait_connected_s=5)
    # the first drain pass has run once the session is up and online is published
    assert rec.wait(lambda r: len(r.on("status")) >= 1, 10)
    fill(outbox, 1)
    pub.wake()
    assert rec.wait(lambda r: len(r.on("counts")) == 1, 30)
    assert pub.stop(5)
    rec.close()


def test_last_will_on_abrupt_death(mosquitto: Broker, tmp_path: Path) -> None:
    """SIGKILL of the publishing process: the broker publishes the retained offline Last Will.

    Issue 12, item 25: the will's ``since`` was the connect time, so 'offline since' showed when
    the device came up; it is null now (the moment is the message's arrival), and the status
    payloads name their schema."""
    script = textwrap.dedent(f"""
        import sys, time
        from pathlib import Path
        from firmware.config.settings import MqttConfig
        from firmware.outbox import Outbox
        from firmware.mqtt.publish import Publisher
        outbox = Outbox(Path({str(tmp_path / "child.db")!r}))
        pub = Publisher(MqttConfig(host={mosquitto.host!r}, port={mosquitto.port}),
                        site={SITE!r}, device={DEVICE!r}, outbox=outbox,
                        health=lambda: {{}}, version="0.1.0-child")
        print("connected" if pub.start(wait_connected_s=10) else "not connected", flush=True)
        time.sleep(60)
    """)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, env=env)
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == b"connected"
        status_topic = contract.topic("anoncam", SITE, DEVICE, "status")
        rec = Recorder(mosquitto, [status_topic])
        assert rec.wait(lambda r: len(r.on("status")) == 1, 5)
        online = rec.on("status")[0].json()
        assert (online["state"], online["schema"]) == ("online", "anoncam/status/1")
        assert isinstance(online["since"], str)
        child.send_signal(signal.SIGKILL)
        child.wait(5)
        assert rec.wait(lambda r: len(r.on("status")) == 2, 5), "no Last Will"
        will = rec.on("status")[1]
        check_payload(will)
        assert will.json() == {
            "schema": "anoncam/status/1",
            "state": "offline",
            "version": "0.1.0-child",
            "since": None,
        }
        rec.close()
        assert retained_status(mosquitto)["state"] == "offline"  # and it is retained
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(5)
        if child.stdout is not None:
            child.stdout.close()


def test_broker_down_at_start_then_up(tmp_path: Path, outbox: Outbox) -> None:
    """Broker absent at start: start() reports it without raising, the publisher keeps trying, and
    once the broker is up every window arrives in order."""
    broker = make_broker(tmp_path / "late-broker")
    fill(outbox, 10)
    pub = publisher_for(broker, outbox, reconnect_min_s=2.0)
    try:
        assert pub.start(wait_connected_s=0.5) is False
        wait_until(lambda: pub.failed_attempts >= 1, 5, "a failed attempt")
        assert pub.last_error is not None and "connection refused" in str(pub.last_error)
        assert pub.wait_connected(0.05) is False  # transient: reported, not raised
        # The next attempt is >= 2 s away: start the broker and the witness before it.
        broker.start()
        rec = Recorder(broker, ["anoncam/+/+/counts"])
        assert pub.wait_connected(8)
        assert pub.last_error is None
        assert rec.wait(lambda r: len(r.on("counts")) == 10)
        assert rec.seqs() == list(range(1, 11))
        assert pub.stop(5)
        rec.close()
    finally:
        broker.stop()


def test_broker_killed_mid_run_loses_nothing(tmp_path: Path, outbox: Outbox) -> None:
    """Broker SIGKILLed while windows are in flight, restarted on the same port: rows are acked
    only after the broker got them, everything still pending is resent, and after de-duplication
    the seqs are contiguous with no gap."""
    broker = make_broker(tmp_path / "crashy")
    broker.start()
    # QoS 0 for the witness: it sends nothing back, so the broker's death closes its socket
    # cleanly and every message the broker forwarded is readable.
    before = Recorder(broker, ["anoncam/+/+/counts"], qos=0)
    pub = publisher_for(broker, outbox, reconnect_min_s=2.0)
    try:
        assert pub.start(wait_connected_s=5)
        fill(outbox, 150)
        pub.wake()
        assert before.wait(lambda r: len(r.on("counts")) >= 10)
        broker.kill()
        wait_until(lambda: not pub.connected, 5, "the publisher to notice")
        time.sleep(0.2)  # let the witness read what is still in its socket
        received_before = set(before.seqs())
        pending_after_kill = {row.seq for row in outbox.pending(limit=1000)}
        # Nothing was acked (deleted) that the broker had not delivered.
        assert set(range(1, 151)) <= received_before | pending_after_kill
        before.close()

        attempts = pub.failed_attempts
        fill(outbox, 20)  # windows closed while the broker is down
        pub.wake()
        wait_until(lambda: pub.failed_attempts > attempts, 6, "a failed reconnect")
        broker.start()  # the next attempt is >= 2 s away
        after = Recorder(broker, ["anoncam/+/+/counts"])
        assert pub.wait_connected(8)
        wait_until(lambda: outbox.stats().depth == 0, 10, "the outbox to drain")
        assert after.wait(lambda r: set(r.seqs()) >= pending_after_kill | set(range(151, 171)))

        ledger = WindowLedger()
        accepted = [
            s for s in before.seqs() + after.seqs() if ledger.observe(SITE, DEVICE, s).accepted
        ]
        assert sorted(accepted) == list(range(1, 171))
        assert ledger.gaps == 0
        after_seqs = after.seqs()
        assert after_seqs == sorted(after_seqs)  # resent in order
        assert pub.stop(5)
        after.close()
    finally:
        broker.stop()


def test_home_assistant_discovery(mosquitto: Broker, outbox: Outbox) -> None:
    """Discovery is retained on homeassistant/device/<node>/config with four sensors reading the
    counts topic, and is sent again when Home Assistant announces itself online."""
    rec = Recorder(mosquitto, ["homeassistant/device/+/config"])
    pub = publisher_for(mosquitto, outbox, homeassistant=HomeAssistantConfig(enabled=True))
    assert pub.start(wait_connected_s=5)
    assert rec.wait(lambda r: len(r.messages) == 1, 5)
    msg = rec.messages[0]
    assert msg.topic == f"homeassistant/device/anoncam_{SITE}_{DEVICE}/config"
    body = msg.json()
    assert contract.find_forbidden(body) == []
    components = body["components"]
    assert sorted(c["value_template"] for c in components.values()) == sorted(
        [
            "{{ value_json.entries }}",
            "{{ value_json.exits }}",
            "{{ value_json.visitors }}",
            OCCUPANCY_TEMPLATE,
        ]
    )
    assert all(c["platform"] == "sensor" and c["unique_id"] for c in components.values())
    assert body["state_topic"] == contract.topic("anoncam", SITE, DEVICE, "counts")
    assert body["availability"][0]["topic"] == pub.status_topic

    later = Recorder(mosquitto, ["homeassistant/device/+/config"])
    assert later.wait(lambda r: len(r.messages) == 1, 5) and later.messages[0].retain
    rec.client.publish("homeassistant/status", b"online", qos=1).wait_for_publish(5)
    assert rec.wait(lambda r: len(r.messages) == 2, 5), "discovery not re-sent on HA birth"
    assert pub.stop(5)
    rec.close()
    later.close()


def test_stop_reports_undelivered_windows(tmp_path: Path, outbox: Outbox) -> None:
    """stop() with the broker unreachable waits at most its timeout, returns False and keeps
    every window in the outbox for the next start."""
    broker = make_broker(tmp_path / "never-started")
    fill(outbox, 3)
    pub = publisher_for(broker, outbox)
    pub.start()
    t0 = time.monotonic()
    assert pub.stop(drain_timeout_s=0.5) is False
    assert time.monotonic() - t0 < 3
    assert [r.seq for r in outbox.pending()] == [1, 2, 3]


def test_windows_nobody_subscribes_to_wait_in_the_outbox(
    mosquitto: Broker, outbox: Outbox, caplog: pytest.LogCaptureFixture
) -> None:
    """Under MQTT 5 the broker answers a window nobody subscribes to with PUBACK 0x10 and drops
    it. The publisher keeps such windows in the outbox and offers them again, so a subscriber
    that arrives later (a shared subscriber after a broker restart) still gets every one."""
    status = Recorder(mosquitto, ["anoncam/+/+/status"])
    pub = publisher_for(mosquitto, outbox)
    assert pub.start(wait_connected_s=5) and pub.protocol == "5"
    fill(outbox, 5)
    with caplog.at_level("WARNING", logger="firmware.mqtt.publish"):
        pub.wake()
        wait_until(lambda: "no subscriber for window seq 1" in caplog.text, 10, "the 0x10 answer")
    assert [r.seq for r in outbox.pending()] == [1, 2, 3, 4, 5]
    late = Recorder(mosquitto, ["anoncam/+/+/counts"])
    assert late.wait(lambda r: len(r.on("counts")) >= 5, 20), late.seqs()
    # each once; in order only from the first retry on: a subscriber that arrives while the
    # first burst is in flight takes its later windows before the held ones
    assert sorted(late.seqs()) == [1, 2, 3, 4, 5]
    wait_until(lambda: outbox.stats().depth == 0, 5, "the outbox to empty")
    assert pub.stop(5)
    late.close()
    status.close()


def test_keep_until_subscribed_off_lets_the_broker_drop_them(
    mosquitto: Broker, outbox: Outbox
) -> None:
    """With mqtt.keep_until_subscribed off, PUBACK 0x10 acknowledges the window as before: the
    outbox empties with nobody listening and a later subscriber gets nothing."""
    pub = publisher_for(mosquitto, outbox, keep_until_subscribed=False)
    assert pub.start(wait_connected_s=5)
    fill(outbox, 3)
    pub.wake()
    wait_until(lambda: outbox.stats().depth == 0, 10, "the outbox to empty")
    late = Recorder(mosquitto, ["anoncam/+/+/counts"])
    fill(outbox, 1)
    pub.wake()
    assert late.wait(lambda r: len(r.on("counts")) >= 1, 10)
    assert late.seqs() == [4]
    assert pub.stop(5)
    late.close()


# --------------------------------------------------------------------------- issue 12
def test_backlog_after_a_rename_goes_out_on_the_topic_of_its_ids(
    mosquitto: Broker, outbox: Outbox
) -> None:
    """Issue 12, item 5: windows written as other/t1 before a rename went out on the new
    device's topic, and the official subscriber rejected them (payload names other/t1, the
    topic t1/t1). Each window now goes out on the topic of the ids it carries."""
    fill(outbox, 2, site="other", device="t1")
    fill(outbox, 1)
    rec = Recorder(mosquitto, ["anoncam/+/+/counts"])
    pub = publisher_for(mosquitto, outbox)
    assert pub.start(wait_connected_s=5)
    assert rec.wait(lambda r: len(r.on("counts")) == 3, 10)
    assert pub.stop(5)
    rec.close()
    got = [(m.topic, m.json()["site"], m.json()["device"]) for m in rec.on("counts")]
    assert got == [
        ("anoncam/other/t1/counts", "other", "t1"),
        ("anoncam/other/t1/counts", "other", "t1"),
        (contract.topic("anoncam", SITE, DEVICE, "counts"), SITE, DEVICE),
    ]


def test_turning_discovery_off_removes_the_retained_discovery(
    mosquitto: Broker, outbox: Outbox
) -> None:
    """Issue 12, item 25: with discovery turned off, the retained discovery stayed on the broker
    and Home Assistant kept the sensors. The next start clears it (an empty retained message)."""
    config_topic = f"homeassistant/device/anoncam_{SITE}_{DEVICE}/config"
    on = publisher_for(mosquitto, outbox, homeassistant=HomeAssistantConfig(enabled=True))
    rec = Recorder(mosquitto, [config_topic])
    assert on.start(wait_connected_s=5)
    assert rec.wait(lambda r: len(r.messages) == 1, 5)
    assert on.stop(5)
    off = publisher_for(mosquitto, outbox)
    assert off.start(wait_connected_s=5)
    assert rec.wait(lambda r: len(r.messages) == 2, 5), "discovery was not cleared"
    assert rec.messages[1].payload == b""
    wait_until(lambda: outbox.note("homeassistant_discovery_topic") is None, 5, "the note")
    assert off.stop(5)
    rec.close()
    marker = "anoncam-test/marker"
    late = Recorder(mosquitto, [config_topic, marker])  # a Home Assistant starting now
    # Retained messages come right after SUBACK, before anything published later: the marker.
    late.client.publish(marker, b"m", qos=1).wait_for_publish(5)
    assert late.wait(lambda r: any(m.topic == marker for m in r.messages), 5)
    assert [m.topic for m in late.messages] == [marker]
    late.close()
    # Nothing left to clear, nothing sent: a window delivered shows the session got past the
    # point where discovery is handled (before the outbox is drained).
    watch = Recorder(mosquitto, [config_topic, contract.topic("anoncam", SITE, DEVICE, "counts")])
    again = publisher_for(mosquitto, outbox)
    fill(outbox, 1)
    assert again.start(wait_connected_s=5)
    assert watch.wait(lambda r: bool(r.on("counts")), 5)
    assert again.stop(5)
    watch.close()
    assert [m.topic for m in watch.messages if m.topic == config_topic] == []
