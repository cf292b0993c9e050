"""The consumer side of the MQTT contract: receive count windows, check them, de-duplicate, store.

Used by ``anoncam subscribe``; also a small reference for anyone writing their own consumer:

* Delivery is at least once, so the same window can arrive twice (after a device reconnects):
  :class:`WindowLedger` drops repeats of ``(site, device, seq)``.
* ``seq`` grows by one per window; a jump says windows are missing, unless the new row carries
  ``merged`` (it then stands for the ``merged`` windows ending at its ``seq``).
* Every message is validated against the JSON Schema; an invalid one is skipped and counted.

Library code: nothing here prints. The CLI passes callbacks and owns the terminal.
"""

from __future__ import annotations

import csv
import json
import logging
import sqlite3
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import paho.mqtt.client as mqtt
from paho.mqtt.enums import MQTTProtocolVersion
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from firmware import contract
from firmware.config import MqttConfig
from firmware.errors import BrokerError, OutputError
from firmware.mqtt_connect import (
    build_client,
    connack_failure,
    is_protocol_refusal,
    protocols,
    read_password,
    socket_failure,
)

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------- ledger
@dataclass(frozen=True)
class Verdict:
    """What the ledger thinks of one window.

    ``kind``: ``new`` (first time, newest so far), ``late`` (first time, older than the newest:
    fills an earlier gap) or ``dup`` (seen before, or too old to tell: skipped).
    ``missing``: windows neither received nor accounted for between the previous newest and this
    one (0: no gap).
    """

    kind: Literal["new", "late", "dup"]
    missing: int = 0

    @property
    def accepted(self) -> bool:
        return self.kind != "dup"


@dataclass
class _Stream:
    highest: int
    recent: deque[int] = field(default_factory=deque)
    seen: set[int] = field(default_factory=set)


class WindowLedger:
    """De-duplication and gap detection per ``(site, device)`` in bounded memory.

    Per device it keeps the highest ``seq`` and the last ``recent`` seqs received. Trade-off of
    ``recent``: a repeat older than that many windows cannot be recognised, so it is treated as a
    duplicate (a consumer double-counting is worse than one missing a very late window); resends
    after an outage are at most a few in-flight windows old, far inside the default.
    """

    def __init__(self, recent: int = 256) -> None:
        if recent < 1:
            raise ValueError("recent must be >= 1")
        self._recent = recent
        self._streams: dict[tuple[str, str], _Stream] = {}
        self.accepted = 0
        self.duplicates = 0
        self.gaps = 0
        self.missing = 0

    def observe(self, site: str, device: str, seq: int, merged: int = 1) -> Verdict:
        """Record window ``seq`` (standing for ``merged`` windows ending at ``seq``)."""
        stream = self._streams.get((site, device))
        if stream is None:
            stream = self._streams[(site, device)] = _Stream(highest=seq)
            verdict = Verdict("new")
        elif seq in stream.seen or seq <= stream.highest - self._recent:
            self.duplicates += 1
            return Verdict("dup")
        elif seq > stream.highest:
            missing = max(0, (seq - max(merged, 1)) - stream.highest)
            stream.highest = seq
            verdict = Verdict("new", missing)
        else:
            verdict = Verdict("late")
            self.missing = max(0, self.missing - 1)  # it was counted missing when the gap showed
        self._remember(stream, seq)
        self.accepted += 1
        if verdict.missing:
            self.gaps += 1
            self.missing += verdict.missing
        return verdict

    def _remember(self, stream: _Stream, seq: int) -> None:
        stream.recent.append(seq)
        stream.seen.add(seq)
        while len(stream.recent) > self._recent:
            stream.seen.discard(stream.recent.popleft())

    def state_size(self) -> int:
        """Seqs held in memory over all devices (bounded by devices x ``recent``)."""
        return sum(len(s.seen) for s in self._streams.values())


# --------------------------------------------------------------------------- rows and sinks
COLUMNS = (
    "site",
    "device",
    "seq",
    "start",
    "end",
    "entries",
    "exits",
    "visitors",
    "occupancy_min",
    "occupancy_max",
    "occupancy_mean",
    "occupancy_last",
    "dwell_count",
    "dwell_p50",
    "dwell_p90",
    "frames_processed",
    "frames_dropped",
    "merged",
)


def flatten(window: dict[str, Any]) -> dict[str, Any]:
    """One table row from a validated counts window (occupancy is null when nothing was seen)."""
    occ = window.get("occupancy") or {}
    dwell = window.get("dwell_s") or {}
    frames = window.get("frames") or {}
    return {
        "site": window["site"],
        "device": window["device"],
        "seq": window["seq"],
        "start": window["start"],
        "end": window["end"],
        "entries": window["entries"],
        "exits": window["exits"],
        "visitors": window["visitors"],
        "occupancy_min": occ.get("min"),
        "occupancy_max": occ.get("max"),
        "occupancy_mean": occ.get("mean"),
        "occupancy_last": occ.get("last"),
        "dwell_count": dwell.get("count"),
        "dwell_p50": dwell.get("p50"),
        "dwell_p90": dwell.get("p90"),
        "frames_processed": frames.get("processed"),
        "frames_dropped": frames.get("dropped"),
        "merged": window.get("merged", 1),
    }


class Sink(Protocol):
    def write(self, window: dict[str, Any]) -> None: ...
    def close(self) -> None: ...


class CsvSink:
    """Appends one row per accepted window; writes the header only into an empty file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._file = path.open("a", newline="", encoding="utf-8")
        except OSError as exc:
            raise OutputError(
                f"--csv {path}: cannot open: {exc.strerror}", hint="choose a writable path"
            ) from None
        self._writer = csv.DictWriter(self._file, fieldnames=COLUMNS)
        if self._file.tell() == 0:
            self._writer.writeheader()
            self._file.flush()

    def write(self, window: dict[str, Any]) -> None:
        try:
            self._writer.writerow(flatten(window))
            self._file.flush()
        except OSError as exc:
            raise OutputError(
                f"--csv {self.path}: write failed: {exc.strerror}",
                hint="check free disk space and permissions",
            ) from None

    def close(self) -> None:
        self._file.close()


class SqliteSink:
    """Inserts into table ``windows``; the primary key (site, device, seq) drops repeats."""

    def __init__(self, path: Path) -> None:
        self.path = path
        cols = ", ".join(f"{c} {'INTEGER' if c == 'seq' else ''}".strip() for c in COLUMNS)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            # Written from paho's network thread, created here: one writer at a time.
            self._db = sqlite3.connect(path, check_same_thread=False)
            self._db.execute(
                f"CREATE TABLE IF NOT EXISTS windows ({cols}, payload TEXT NOT NULL, "
                "received_at TEXT NOT NULL, PRIMARY KEY (site, device, seq))"
            )
            self._db.commit()
        except (sqlite3.Error, OSError) as exc:
            raise OutputError(
                f"--sqlite {path}: cannot open the database: {exc}",
                hint="choose a writable path to a SQLite file (or a new one)",
            ) from None
        marks = ", ".join("?" for _ in range(len(COLUMNS) + 2))
        self._insert = (
            f"INSERT OR IGNORE INTO windows ({', '.join(COLUMNS)}, payload, received_at) "
            f"VALUES ({marks})"
        )

    def write(self, window: dict[str, Any]) -> None:
        row = flatten(window)
        received = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        try:
            with self._db:
                self._db.execute(
                    self._insert,
                    [*(row[c] for c in COLUMNS), json.dumps(window, sort_keys=True), received],
                )
        except sqlite3.Error as exc:
            raise OutputError(
                f"--sqlite {self.path}: insert failed: {exc}",
                hint="check free disk space and that no other program locks the file",
            ) from None

    def close(self) -> None:
        self._db.close()


# --------------------------------------------------------------------------- MQTT side
@dataclass(frozen=True)
class Received:
    """One counts message that passed validation, with the ledger's verdict."""

    topic: str
    window: dict[str, Any]
    verdict: Verdict


def split_topic(topic: str) -> tuple[str, str, str] | None:
    """``(site, device, kind)`` from ``{prefix}/{site}/{device}/{kind}``; None if it is not one."""
    parts = topic.split("/")
    if len(parts) < 4:
        return None
    return parts[-3], parts[-2], parts[-1]


class Subscriber:
    """Follows count windows (and device status) on one broker.

    ``share``: join MQTT 5 shared subscription group ``$share/{share}/...`` for the windows, so
    several subscribers split a fleet (each window goes to one of them). Status is never shared:
    every member wants every device's state, and brokers send no retained messages to shared
    subscriptions.
    """

    def __init__(
        self,
        config: MqttConfig,
        *,
        topics: Sequence[str] | None = None,
        share: str | None = None,
        sinks: Sequence[Sink] = (),
        on_window: Callable[[Received], None] | None = None,
        on_status: Callable[[str, str, dict[str, Any]], None] | None = None,
        ledger: WindowLedger | None = None,
        client_id: str | None = None,
    ) -> None:
        self._config = config
        window_filters = list(topics) if topics else [f"{config.prefix}/+/+/counts"]
        if share:
            if any(c in share for c in "/+#"):
                raise ValueError("a share group name cannot contain '/', '+' or '#'")
            window_filters = [f"$share/{share}/{t}" for t in window_filters]
        status = f"{config.prefix}/+/+/status"
        # A broad --topic (anoncam/#) already brings status; a second filter would bring it twice.
        if share or not any(
            mqtt.topic_matches_sub(t, f"{config.prefix}/s/d/status") for t in window_filters
        ):
            window_filters.append(status)
        self.filters = window_filters
        self._sinks = list(sinks)
        self._on_window = on_window
        self._on_status = on_status
        self.ledger = ledger or WindowLedger()
        self.invalid = 0
        self._password = read_password(config)
        self._client_id = client_id or f"anoncam-sub-{uuid.uuid4().hex[:10]}"
        self._client: mqtt.Client | None = None
        self._cond = threading.Condition()
        self._connack: ReasonCode | None = None
        self._suback: list[ReasonCode] | None = None
        self._error: BaseException | None = None

    # ------------------------------------------------------------------ connection
    def connect(self, timeout: float = 10.0) -> None:
        """Connect and subscribe; raise BrokerError with the reason and the fix if refused."""
        order = protocols(self._config.protocol)
        for i, protocol in enumerate(order):
            reason = self._try_connect(protocol, timeout)
            if reason is None:
                return
            if i + 1 < len(order) and is_protocol_refusal(reason):
                logger.info("broker refused MQTT 5; trying MQTT 3.1.1")
                continue
            raise connack_failure(self._config, reason).error

    def _try_connect(self, protocol: MQTTProtocolVersion, timeout: float) -> ReasonCode | None:
        client = build_client(
            self._config,
            client_id=self._client_id,
            protocol=protocol,
            password=self._password,
            reconnect=True,
        )
        client.reconnect_delay_set(1, 30)
        client.on_connect = self._on_connect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        with self._cond:
            self._client = client
            self._connack = None
            self._suback = None
        try:
            client.connect(self._config.host, self._config.port, self._config.keepalive_s)
        except OSError as exc:
            raise socket_failure(self._config, exc).error from None
        client.loop_start()
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._connack is None or (not self._connack.is_failure and self._suback is None):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            connack, suback = self._connack, self._suback
        if connack is None or (not connack.is_failure and suback is None):
            self._shutdown(client)
            raise BrokerError(
                f"MQTT broker {self._config.host}:{self._config.port} did not answer within "
                f"{timeout:.0f} s",
                hint="check that the port is an MQTT listener and whether it expects TLS "
                "(--tls-ca)",
            )
        if connack.is_failure:
            self._shutdown(client)
            return connack
        assert suback is not None
        refused = [
            f"{f} ({rc})" for f, rc in zip(self.filters, suback, strict=False) if rc.is_failure
        ]
        if refused:
            self._shutdown(client)
            raise BrokerError(
                f"broker refused the subscription to {', '.join(refused)}",
                hint="check the broker ACL grants this user read access to these topics",
            )
        logger.info(
            "subscribed to %s on %s:%s",
            ", ".join(self.filters),
            self._config.host,
            self._config.port,
        )
        return None

    def _shutdown(self, client: mqtt.Client) -> None:
        client.disconnect()
        client.loop_stop()

    def close(self) -> None:
        with self._cond:
            client, self._client = self._client, None
        if client is not None:
            self._shutdown(client)
        for sink in self._sinks:
            sink.close()

    # ------------------------------------------------------------------ waiting
    def wait(self, *, count: int | None, timeout: float | None) -> bool:
        """Block until ``count`` distinct windows arrived (True) or ``timeout`` passed (False).

        Without ``count`` it runs until the timeout (True) or forever. A sink failure is raised
        here.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while True:
                if self._error is not None:
                    raise self._error
                if count is not None and self.ledger.accepted >= count:
                    return True
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return count is None
                self._cond.wait(remaining if remaining is not None else 1.0)

    # ------------------------------------------------------------------ callbacks (paho thread)
    def _on_connect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.ConnectFlags,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if reason.is_failure:
            if self._connack is not None and not self._connack.is_failure:
                # A reconnect refused after we once got in: say so, paho keeps retrying.
                logger.error("%s", connack_failure(self._config, reason).error)
        else:
            # Subscribing here re-subscribes after every reconnect (clean session).
            client.subscribe([(f, 1) for f in self.filters])
        with self._cond:
            self._connack = reason
            self._cond.notify_all()

    def _on_subscribe(
        self,
        client: mqtt.Client,
        userdata: Any,
        mid: int,
        reasons: list[ReasonCode],
        properties: Properties | None,
    ) -> None:
        with self._cond:
            self._suback = reasons
            self._cond.notify_all()

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        try:
            self._handle(message.topic, bytes(message.payload))
        except OutputError as exc:
            # Stop rather than silently lose data the user asked to store.
            with self._cond:
                self._error = exc
                self._cond.notify_all()

    def _handle(self, topic: str, payload: bytes) -> None:
        where = split_topic(topic)
        if where is None:
            logger.debug("ignoring message on %s", topic)
            return
        site, device, kind = where
        if kind not in ("counts", "status"):
            logger.debug("ignoring %s message on %s", kind, topic)
            return
        if kind == "status" and not payload:
            return  # a cleared retained status
        try:
            body = json.loads(payload)
            contract.validate(kind, body)
            if kind == "counts" and (body["site"], body["device"]) != (site, device):
                raise ValueError(
                    f"payload names {body['site']}/{body['device']}, the topic {site}/{device}"
                )
        except (ValueError, UnicodeDecodeError) as exc:  # JSONDecodeError is a ValueError
            with self._cond:
                self.invalid += 1
            logger.warning("%s: invalid %s message skipped: %s", topic, kind, exc)
            return
        if kind == "status":
            if self._on_status is not None:
                self._on_status(site, device, body)
            return
        with self._cond:
            verdict = self.ledger.observe(
                site, device, int(body["seq"]), int(body.get("merged", 1))
            )
        if verdict.accepted:
            for sink in self._sinks:
                sink.write(body)
        if self._on_window is not None:
            self._on_window(Received(topic, body, verdict))
        with self._cond:
            self._cond.notify_all()
