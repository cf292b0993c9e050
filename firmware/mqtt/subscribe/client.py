"""The consumer side of the MQTT contract: receive count windows, check them, de-duplicate, store.

Used by ``anoncam subscribe``; also a small reference for anyone writing their own consumer:

* Delivery is at least once, so the same window can arrive twice (after a device reconnects):
  the stores' keys and :class:`WindowLedger` drop repeats of ``(site, device, stream, seq)``; a
  repeat with other content is a conflict, reported and kept (``window_conflicts``).
* ``seq`` grows by one per window; a jump says windows are missing, unless the new row carries
  ``merged`` (it then stands for the ``merged`` windows ending at its ``seq``).
* Every message goes through :mod:`.intake` (size, nesting, strict JSON, privacy, schema); a
  refused one is reported, counted and acknowledged, and the next one is processed.
* Windows are acknowledged to the broker (MQTT manual ack) only after the stores committed them,
  in batches, from one writer thread. A subscriber killed before the commit loses nothing: its
  persistent session (fixed client id, MQTT 5 session expiry) makes the broker redeliver, and
  the stores absorb the repeat. A store that is down (database restarting) is retried with
  backoff while the broker keeps the unacknowledged windows.
* No exception from a message ends the process: each is reported and survived.

Library code: nothing here prints. The CLI passes callbacks and owns the terminal.
"""

from __future__ import annotations

import logging
import re
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from firmware.config.settings import MqttConfig
from firmware.errors import BrokerError
from firmware.mqtt.connect import (
    build_client,
    connack_failure,
    is_protocol_refusal,
    protocols,
    read_password,
    socket_failure,
)
from firmware.mqtt.subscribe import intake
from firmware.mqtt.subscribe.intake import IntakeError, Window, printable
from firmware.mqtt.subscribe.ledger import Verdict, WindowLedger
from firmware.mqtt.subscribe.sinks import CsvSink, Outcome, Store, StoreUnavailableError, utc_now

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------- MQTT side
#: Default session expiry: a subscriber down for up to a day finds its windows queued.
SESSION_EXPIRY_S = 86_400
_CLIENT_ID_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")


@dataclass(frozen=True)
class Received:
    """One counts window that passed intake, with the verdict of the stores and the ledger."""

    topic: str
    window: Window
    verdict: Verdict


def split_topic(topic: str) -> tuple[str, str, str] | None:
    """``(site, device, kind)`` from ``{prefix}/{site}/{device}/{kind}``; None if it is not one."""
    parts = topic.split("/")
    if len(parts) < 4:
        return None
    return parts[-3], parts[-2], parts[-1]


def default_client_id(share: str | None, host: str | None = None) -> str:
    """``anoncam-sub-{host}`` or ``anoncam-sub-{host}-{share}``: stable across restarts, so the
    broker can keep this subscriber's session. Two subscribers on one host in one group need
    their own ``--client-id`` (the broker would otherwise take one off for the other)."""
    name = host if host is not None else socket.gethostname()
    base = f"anoncam-sub-{name}" + (f"-{share}" if share else "")
    return _CLIENT_ID_UNSAFE.sub("-", base)[:64]


@dataclass
class _Pending:
    mid: int
    qos: int
    topic: str
    window: Window


RECONNECT_MIN_S = 0.25
"""The subscriber's first reconnect delay, in seconds (doubling to 30 s)."""


class Subscriber:
    """Follows count windows (and device status) on one broker and stores them.

    ``share``: join MQTT 5 shared subscription group ``$share/{share}/...`` for the windows, so
    several subscribers split a fleet (each window goes to one of them). Status is never shared:
    every member wants every device's state, and brokers send no retained messages to shared
    subscriptions.

    ``client_id`` (default :func:`default_client_id`) and ``session_expiry_s``: the broker keeps
    the session (subscriptions and unacknowledged or queued windows) that long after a
    disconnect; 0 asks for a clean session that ends with the connection.

    ``batch_max`` / ``batch_linger_s``: a batch is committed when it holds ``batch_max`` windows
    or its first window waited ``batch_linger_s``. Larger batches cost fewer commits under load;
    the linger adds at most that much latency when the fleet is quiet.
    """

    def __init__(
        self,
        config: MqttConfig,
        *,
        topics: Sequence[str] | None = None,
        share: str | None = None,
        stores: Sequence[Store] = (),
        csv: CsvSink | None = None,
        on_window: Callable[[Received], None] | None = None,
        on_status: Callable[[str, str, dict[str, Any]], None] | None = None,
        ledger: WindowLedger | None = None,
        client_id: str | None = None,
        session_expiry_s: int = SESSION_EXPIRY_S,
        batch_max: int = 200,
        batch_linger_s: float = 0.05,
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
        self._stores = list(stores)
        self._csv = csv
        self._on_window = on_window
        self._on_status = on_status
        self.ledger = ledger or WindowLedger(gaps=not share)
        self.invalid = 0
        self.errors = 0
        self._password = read_password(config)
        self.client_id = client_id or default_client_id(share)
        self._session_expiry_s = session_expiry_s
        self._batch_max = batch_max
        self._linger = batch_linger_s
        self._client: mqtt.Client | None = None
        self._cond = threading.Condition()
        self._connack: ReasonCode | None = None
        self._suback: list[ReasonCode] | None = None
        self._queue: deque[_Pending] = deque()
        self._busy = False
        self._stopping = False
        self._writer = threading.Thread(target=self._write_loop, name="anoncam-store", daemon=True)
        self._writer.start()

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
        persistent = self._session_expiry_s > 0
        client = build_client(
            self._config,
            client_id=self.client_id,
            protocol=protocol,
            password=self._password,
            reconnect=True,
            manual_ack=True,
            persistent=persistent,
        )
        # First retry after 0.25 s, doubling to 30 s: a broker restarted in about a second is
        # back before the third try (T+1.25 s), not after paho's default ramp (1, 2 s: T+3 s),
        # and every window the fleet sent meanwhile waits for this subscription (PUBACK 0x10).
        # paho annotates the delays as int; it only adds and doubles them (_reconnect_wait).
        client.reconnect_delay_set(RECONNECT_MIN_S, 30)  # type: ignore[arg-type]
        # Second line of defence: paho logs an exception from any callback instead of letting
        # it end its network thread (our callbacks catch their own; see _on_message).
        client.suppress_exceptions = True
        client.on_connect = self._on_connect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        with self._cond:
            self._client = client
            self._connack = None
            self._suback = None
        try:
            if protocol == mqtt.MQTTv5:
                props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
                props.SessionExpiryInterval = self._session_expiry_s
                client.connect(
                    self._config.host,
                    self._config.port,
                    self._config.keepalive_s,
                    clean_start=not persistent,
                    properties=props,
                )
            else:
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
            "subscribed to %s on %s:%s as %s",
            ", ".join(self.filters),
            self._config.host,
            self._config.port,
            self.client_id,
        )
        return None

    def _shutdown(self, client: mqtt.Client) -> None:
        client.disconnect()
        client.loop_stop()

    def close(self, drain_timeout: float = 5.0) -> None:
        """Store and acknowledge what was received (up to ``drain_timeout``), then disconnect.
        Anything not committed by then stays unacknowledged: the broker keeps it for the next
        run (persistent session)."""
        deadline = time.monotonic() + drain_timeout
        with self._cond:
            while (self._queue or self._busy) and time.monotonic() < deadline:
                self._cond.wait(0.1)
            self._stopping = True
            self._cond.notify_all()
            client, self._client = self._client, None
        self._writer.join(drain_timeout + 5)
        if client is not None:
            self._shutdown(client)
        for store in self._stores:
            store.close()
        if self._csv is not None:
            self._csv.close()

    # ------------------------------------------------------------------ waiting
    def wait(self, *, count: int | None, timeout: float | None) -> bool:
        """Block until ``count`` distinct windows were stored (True) or ``timeout`` passed
        (False). Without ``count`` it runs until the timeout (True) or forever. Wakes at least
        once a second, so SIGINT is always answered."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while True:
                if count is not None and self.ledger.accepted >= count:
                    return True
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return count is None
                self._cond.wait(min(remaining, 1.0) if remaining is not None else 1.0)

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
            # Subscribing on every connect is harmless with a kept session and needed without.
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
            queued = self._handle(message)
        except Exception:  # one bad message must never stop the subscriber (issue 12 item 1)
            with self._cond:
                self.errors += 1
            logger.exception(
                "%s: message could not be processed; skipped", printable(message.topic)
            )
            queued = False
        if not queued:
            client.ack(message.mid, message.qos)

    def _reject(self, topic: str, kind: str, why: object) -> None:
        with self._cond:
            self.invalid += 1
        logger.warning("%s: invalid %s message skipped: %s", printable(topic), kind, printable(why))

    def _handle(self, message: mqtt.MQTTMessage) -> bool:
        """Check one message; True when it was queued for the writer (which acknowledges it)."""
        topic = message.topic
        where = split_topic(topic)
        if where is None:
            logger.debug("ignoring message on %s", printable(topic))
            return False
        site, device, kind = where
        if kind not in ("counts", "status"):
            logger.debug("ignoring %s message on %s", printable(kind), printable(topic))
            return False
        payload = bytes(message.payload)
        if kind == "status":
            if not payload:
                return False  # a cleared retained status
            try:
                body = intake.status_body(payload)
            except IntakeError as exc:
                self._reject(topic, kind, exc)
                return False
            if self._on_status is not None:
                self._on_status(site, device, body)
            return False
        try:
            window = intake.counts_window(payload, site, device)
        except IntakeError as exc:
            self._reject(topic, kind, exc)
            return False
        with self._cond:
            self._queue.append(_Pending(message.mid, message.qos, topic, window))
            self._cond.notify_all()
        return True

    # ------------------------------------------------------------------ the writer thread
    def _next_batch(self) -> list[_Pending] | None:
        with self._cond:
            while not self._queue and not self._stopping:
                self._cond.wait()
            if self._stopping and not self._queue:
                return None
            linger_until = time.monotonic() + self._linger
            while len(self._queue) < self._batch_max and not self._stopping:
                remaining = linger_until - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            batch = [self._queue.popleft() for _ in range(min(self._batch_max, len(self._queue)))]
            self._busy = True
            return batch

    def _write_loop(self) -> None:
        while True:
            batch = self._next_batch()
            if batch is None:
                return
            try:
                self._write(batch)
            except Exception:  # a bug here must not stop the subscriber either
                with self._cond:
                    self.errors += 1
                logger.exception("storing a batch of %d window(s) failed", len(batch))
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()

    def _commit(self, windows: list[Window]) -> list[Outcome | None] | None:
        """Every store's outcome (the first store decides); None when stopping before a store
        came back (the windows stay unacknowledged)."""
        received = utc_now()
        delay = 0.2
        outcome: list[Outcome | None] = [None] * len(windows)
        for n, store in enumerate(self._stores):
            while True:
                try:
                    got = store.store(windows, received)
                    break
                except StoreUnavailableError as exc:
                    logger.warning("%s; retrying in %.1f s (windows stay queued)", exc, delay)
                with self._cond:
                    if self._stopping:
                        return None
                    self._cond.wait(delay)
                delay = min(delay * 2, 5.0)
            if n == 0:
                outcome = list(got)
        return outcome

    def _write(self, batch: list[_Pending]) -> None:
        windows = [p.window for p in batch]
        try:
            outcomes = self._commit(windows)
        except Exception as exc:  # the database refused the batch: find the one it refuses
            if len(batch) > 1:
                logger.info("batch refused (%s); storing one by one", exc)
                for p in batch:
                    self._write([p])
                return
            self._reject(batch[0].topic, "counts", f"the store refused it: {exc}")
            self._ack(batch[0])
            return
        if outcomes is None:
            return
        for pending, stored in zip(batch, outcomes, strict=True):
            self._settle(pending, stored)

    def _settle(self, pending: _Pending, stored: Outcome | None) -> None:
        w = pending.window
        with self._cond:
            verdict = self.ledger.observe(
                w.site, w.device, w.seq, w.merged, stream_id=w.stream, digest=w.digest
            )
            if stored in ("dup", "conflict") and verdict.kind != stored:
                if verdict.accepted:
                    self.ledger.override(Verdict(stored))
                elif stored == "conflict":
                    self.ledger.conflicts += 1
                    self.ledger.duplicates -= verdict.kind == "dup"
                verdict = Verdict(stored)
        if verdict.kind == "conflict":
            logger.error(
                "CONFLICT %s: window %s/%s stream %r seq %d arrived again with different "
                "content; both kept (table window_conflicts)",
                printable(pending.topic),
                w.site,
                w.device,
                w.stream,
                w.seq,
            )
        if self._csv is not None and verdict.kind != "dup":
            self._csv.write(w, conflict=verdict.kind == "conflict")
        self._ack(pending)
        if self._on_window is not None:
            self._on_window(Received(pending.topic, w, verdict))
        with self._cond:
            self._cond.notify_all()

    def _ack(self, pending: _Pending) -> None:
        with self._cond:
            client = self._client
        if client is not None:
            client.ack(pending.mid, pending.qos)
