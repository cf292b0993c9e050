"""A real Mosquitto running the generated passwd and acl: least privilege, proven on the wire.

With MQTT 5 and QoS 1 the broker answers an unauthorized publish with PUBACK reason code 135
("Not authorized"); with MQTT 3.1.1 it drops it silently, which we check from the subscriber side.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.reasoncodes import ReasonCode

from provisioning import broker, mosquitto
from provisioning.inventory.loader import load as load_inventory
from tests.support.mosquitto import Broker, make_broker
from tests.unit.test_provision_support import write_fleet

pytestmark = pytest.mark.integration
NOT_AUTHORIZED = 135


class Session:
    """A paho client made synchronous enough for assertions."""

    def __init__(
        self,
        b: Broker,
        user: str,
        password: str,
        *,
        protocol: MQTTProtocolVersion = MQTTProtocolVersion.MQTTv5,
    ) -> None:
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"t-{user}-{time.monotonic_ns()}",
            protocol=protocol,
        )
        self.client.username_pw_set(user, password)
        self.connack: ReasonCode | None = None
        self.acks: dict[int, ReasonCode] = {}
        self.subacks: dict[int, list[ReasonCode]] = {}
        self.messages: list[tuple[str, bytes]] = []
        self.event = threading.Event()
        self.client.on_connect = self._on_connect
        self.client.on_publish = self._on_publish
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = lambda _c, _u, m: self.messages.append((m.topic, bytes(m.payload)))
        # connect_async before loop_start: the loop thread owns the socket from the start, so no
        # socket is left for the garbage collector (pytest treats that ResourceWarning as an error).
        self.client.connect_async(b.host, b.port, keepalive=30)
        self.client.loop_start()
        assert self.event.wait(5), "no CONNACK"

    def _on_connect(self, _c: Any, _u: Any, _f: Any, rc: ReasonCode, _p: Any = None) -> None:
        self.connack = rc
        self.event.set()

    def _on_publish(self, _c: Any, _u: Any, mid: int, rc: ReasonCode, _p: Any = None) -> None:
        self.acks[mid] = rc

    def _on_subscribe(
        self, _c: Any, _u: Any, mid: int, rcs: list[ReasonCode], _p: Any = None
    ) -> None:
        self.subacks[mid] = rcs

    def publish(self, topic: str, payload: bytes = b"{}", *, retain: bool = False) -> ReasonCode:
        info = self.client.publish(topic, payload, qos=1, retain=retain)
        deadline = time.monotonic() + 5
        while info.mid not in self.acks and time.monotonic() < deadline:
            time.sleep(0.01)
        return self.acks[info.mid]

    def subscribe(self, topic: str) -> list[ReasonCode]:
        _, mid = self.client.subscribe(topic, qos=1)
        assert mid is not None
        deadline = time.monotonic() + 5
        while mid not in self.subacks and time.monotonic() < deadline:
            time.sleep(0.01)
        return self.subacks[mid]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def _wait(pred: Any, timeout: float = 3.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.02)
    return False


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[tuple[Broker, dict[str, str]]]:
    inv = load_inventory(write_fleet(tmp_path / "fleet", homeassistant=True))
    out = tmp_path / "broker-files"
    broker.write_broker(inv, out)
    passwords = {a.username: broker.account_password(inv, a).value for a in mosquitto.accounts(inv)}
    b = make_broker(
        tmp_path / "mosquitto",
        f"password_file {out / 'passwd'}\nacl_file {out / 'acl'}\n",
        anonymous=False,
    )
    b.start()
    yield b, passwords
    b.stop()


def test_device_publishes_only_under_its_own_subtree(fleet: tuple[Broker, dict[str, str]]) -> None:
    b, pw = fleet
    reader = Session(b, "dashboard", pw["dashboard"])
    cam = Session(b, "store-042.door-1", pw["store-042.door-1"])
    try:
        assert not reader.connack.is_failure and not cam.connack.is_failure  # type: ignore[union-attr]
        assert not any(rc.is_failure for rc in reader.subscribe("anoncam/#"))
        own = cam.publish("anoncam/store-042/door-1/counts", b'{"entries": 1}')
        assert not own.is_failure
        assert (
            cam.publish("anoncam/store-042/door-1/status", b'{"state":"online"}', retain=True).value
            < 128
        )
        assert (
            cam.publish("anoncam/store-042/door-2/counts", b'{"entries": 99}').value
            == NOT_AUTHORIZED
        )
        assert cam.publish("anoncam/other/topic").value == NOT_AUTHORIZED
        assert (
            cam.publish("homeassistant/device/anoncam_store-042_door-2/config").value
            == NOT_AUTHORIZED
        )
        # Home Assistant discovery is on: exactly its own discovery topic, and HA's status to read.
        assert (
            cam.publish("homeassistant/device/anoncam_store-042_door-1/config", retain=True).value
            < 128
        )
        assert not any(rc.is_failure for rc in cam.subscribe("homeassistant/status"))
        # A sentinel from the same client, sent last: the broker keeps one client's order, so
        # once it arrives every earlier publish that was routed at all has arrived before it.
        assert cam.publish("anoncam/store-042/door-1/health", b"{}").value < 128
        assert _wait(lambda: any(t.endswith("/health") for t, _ in reader.messages))
        topics = [t for t, _ in reader.messages]
        assert topics == [
            "anoncam/store-042/door-1/counts",
            "anoncam/store-042/door-1/status",
            "anoncam/store-042/door-1/health",
        ]
    finally:
        reader.close()
        cam.close()


def test_device_reads_nothing_else(fleet: tuple[Broker, dict[str, str]]) -> None:
    """A camera never receives counts of other cameras, even if it subscribes to them."""
    b, pw = fleet
    cam1 = Session(b, "store-042.door-1", pw["store-042.door-1"])
    cam2 = Session(b, "store-042.door-2", pw["store-042.door-2"])
    try:
        granted = cam1.subscribe("anoncam/#")
        assert not any(rc.is_failure for rc in granted)
        # QoS 1: the broker routes a message before it acknowledges it, so after this PUBACK
        # anything meant for cam1 is already queued ahead of cam1's own sentinel below.
        assert cam2.publish("anoncam/store-042/door-2/counts").value < 128
        sentinel = ("anoncam/store-042/door-1/diagnostics", b'{"nonce":"sentinel"}')
        assert cam1.publish(*sentinel).value < 128
        assert _wait(lambda: sentinel in cam1.messages)
        assert cam1.messages == [sentinel]
    finally:
        cam1.close()
        cam2.close()


def test_device_reads_its_own_diagnostics_probe_only(fleet: tuple[Broker, dict[str, str]]) -> None:
    """'anoncam diagnose' times a publish/receive round trip on the device's own diagnostics
    topic: the ACL lets the camera read that probe back, and no other camera's."""
    b, pw = fleet
    cam1 = Session(b, "store-042.door-1", pw["store-042.door-1"])
    cam2 = Session(b, "store-042.door-2", pw["store-042.door-2"])
    try:
        cam1.subscribe("anoncam/store-042/door-1/diagnostics")
        cam1.subscribe("anoncam/store-042/door-2/diagnostics")
        assert cam1.publish("anoncam/store-042/door-1/diagnostics", b'{"nonce":"a"}').value < 128
        assert cam2.publish("anoncam/store-042/door-2/diagnostics", b'{"nonce":"b"}').value < 128
        # cam2's probe was routed before its PUBACK: a later probe of cam1's own comes after it.
        assert cam1.publish("anoncam/store-042/door-1/diagnostics", b'{"nonce":"c"}').value < 128
        assert _wait(lambda: len(cam1.messages) >= 2)
        assert cam1.messages == [
            ("anoncam/store-042/door-1/diagnostics", b'{"nonce":"a"}'),
            ("anoncam/store-042/door-1/diagnostics", b'{"nonce":"c"}'),
        ]
    finally:
        cam1.close()
        cam2.close()


def test_subscriber_reads_all_and_cannot_publish(fleet: tuple[Broker, dict[str, str]]) -> None:
    b, pw = fleet
    reader = Session(b, "dashboard", pw["dashboard"])
    cam2 = Session(b, "store-042.door-2", pw["store-042.door-2"])
    try:
        reader.subscribe("anoncam/#")
        assert cam2.publish("anoncam/store-042/door-2/counts", b"x").value < 128
        assert _wait(lambda: reader.messages == [("anoncam/store-042/door-2/counts", b"x")])
        assert reader.publish("anoncam/store-042/door-2/counts", b"forged").value == NOT_AUTHORIZED
        assert reader.publish("anoncam/anything").value == NOT_AUTHORIZED
    finally:
        reader.close()
        cam2.close()


def test_mqtt311_unauthorized_publish_is_dropped(fleet: tuple[Broker, dict[str, str]]) -> None:
    """MQTT 3.1.1 has no negative PUBACK: the forged message must simply never arrive."""
    b, pw = fleet
    reader = Session(b, "dashboard", pw["dashboard"])
    cam = Session(
        b, "store-042.door-1", pw["store-042.door-1"], protocol=MQTTProtocolVersion.MQTTv311
    )
    try:
        reader.subscribe("anoncam/#")
        cam.publish("anoncam/store-042/door-2/counts", b"forged")
        cam.publish("anoncam/store-042/door-1/counts", b"real")
        # "real" was sent after "forged" by the same client: once it is here, so would be forged.
        assert _wait(lambda: len(reader.messages) >= 1)
        assert reader.messages == [("anoncam/store-042/door-1/counts", b"real")]
    finally:
        reader.close()
        cam.close()


@pytest.mark.parametrize("user", ["store-042.door-1", "nobody"])
def test_wrong_password_is_refused(fleet: tuple[Broker, dict[str, str]], user: str) -> None:
    b, _ = fleet
    s = Session(b, user, "not-the-password")
    try:
        assert s.connack is not None and s.connack.is_failure
        assert s.connack.value in (134, 135)  # bad user name or password / not authorized
    finally:
        s.close()
