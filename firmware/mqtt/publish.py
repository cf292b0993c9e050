"""The MQTT publisher: drains the outbox to the broker, at least once, in order.

One supervisor thread owns the connection. Each connection is a *session* with a fresh paho
client (paho's own network thread does the I/O); when a session ends, everything still in the
outbox is sent again on the next one. That costs a few duplicates after an outage, which the
contract allows (subscribers de-duplicate on ``seq``), and it keeps no hidden queue in memory:
the SQLite outbox is the only queue, so a power cut loses nothing.

A row is acknowledged in the outbox only in paho's ``on_publish`` for that row's message id,
i.e. once the broker sent PUBACK, and, under MQTT 5, only if the PUBACK's reason code is not a
failure. A rejected row stays and is retried after a pause. So does a row the broker accepted
but had no subscriber for (reason code 0x10, "No matching subscribers"), unless
``mqtt.keep_until_subscribed`` is off: the broker drops such a message, and a Mosquitto 2.0 that
restarted has forgotten its shared subscriptions until their subscribers connect again.
(MQTT 3.1.1 has no such reason code: a broker that drops a message it may not accept, as
Mosquitto does for an ACL denial, still acknowledges it. Prefer MQTT 5, which
``mqtt.protocol = "auto"`` tries first.)

Connection problems are split in two (see :mod:`firmware.mqtt.connect`): a refused password or a
certificate we do not trust is *fatal*: logged as an ERROR with the fix, exposed in
:attr:`Publisher.last_error`, raised from :meth:`Publisher.wait_connected`, and retried only
every ``fatal_retry_s``. A broker that is down or unreachable is *transient*: retried with
exponential backoff between ``reconnect_min_s`` and ``reconnect_max_s``.

Topics (``{prefix}/{site}/{device}/…``): ``counts`` QoS 1; ``status`` QoS 1 retained, with a
retained ``offline`` Last Will; ``health`` QoS 0. Optional Home Assistant discovery.

Each window goes out on the topic of the site and device it carries, not the ones configured
now: after a rename, the backlog written under the old ids reaches subscribers on the old topic
(where its payload's ids agree with the topic) and new windows, in a new stream, on the new one.

The discovery topic published is remembered in the outbox (:meth:`Outbox.note`): when discovery
is turned off, or the device's ids change, the next session clears the old retained discovery
with an empty retained message, so Home Assistant removes sensors nobody feeds.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from firmware import contract
from firmware.config.settings import MqttConfig
from firmware.errors import AnoncamError, BrokerError, StorageError
from firmware.mqtt.connect import (
    ConnectFailure,
    build_client,
    connack_failure,
    is_protocol_refusal,
    protocols,
    read_password,
    socket_failure,
    tls_context,
)
from firmware.outbox import Outbox, OutboxRow

logger = logging.getLogger(__name__)

# A session that has not received CONNACK after this long is given up and retried.
_CONNACK_TIMEOUT_S = 10.0
# Safety net when nobody calls wake(): the outbox is looked at at least this often.
_POLL_S = 2.0
# After the broker rejects a row (MQTT 5 PUBACK failure), wait this long before sending again:
# a rejection (ACL, quota) rarely fixes itself within seconds.
_REJECT_PAUSE_S = 30.0
# After the broker said no subscriber matched a window (MQTT 5 PUBACK 0x10, and
# mqtt.keep_until_subscribed), offer it again after a quarter of the time it has waited so far,
# within these bounds (see unsubscribed_pause).
_UNSUBSCRIBED_PAUSE_MIN_S = 0.5
_UNSUBSCRIBED_PAUSE_MAX_S = 60.0
_UNSUBSCRIBED_PAUSE_SHARE = 0.25
_NO_MATCHING_SUBSCRIBERS = 0x10
# After the outbox database failed (disk, lock), wait this long before reading it again.
_STORAGE_PAUSE_S = 5.0
STATUS_SCHEMA = "anoncam/status/1"
_HA_NOTE = "homeassistant_discovery_topic"  # outbox note: the retained discovery topic we left


def _protocol_name(p: MQTTProtocolVersion) -> str:
    return "5" if p == MQTTProtocolVersion.MQTTv5 else "3.1.1"


def unsubscribed_pause(waited_s: float) -> float:
    """How long a window nobody subscribed to waits before it is offered again, when the held
    windows have waited ``waited_s`` so far: a quarter of that, from 0.5 s up to 60 s.

    So a subscriber that comes back after an absence of T gets the held windows at most about
    T/4 + 0.5 s later (a broker restart of about a second costs about a second, not the 2-4 s
    of a doubling ramp), while a fleet waiting out a long outage offers each window every
    minute at most once (1000 devices: about 17 messages a second)."""
    return min(
        max(waited_s * _UNSUBSCRIBED_PAUSE_SHARE, _UNSUBSCRIBED_PAUSE_MIN_S),
        _UNSUBSCRIBED_PAUSE_MAX_S,
    )


class Publisher:
    """Publishes the outbox's windows, the device status and health to one broker.

    ``health`` is called every ``config.health_interval_s`` (from the publisher's thread) and must
    return a JSON-able dict with the device figures the health schema requires (``fps``,
    ``detector_latency_ms``, ``dropped_frames``, ``cpu_temp_c``, ``throttling``, ``camera``); the
    publisher adds the outbox figures, ``schema`` and ``time``.

    Call :meth:`wake` after each ``outbox.add_window`` so the window leaves at once; without it
    the outbox is still looked at every 2 s.

    Tuning: ``max_inflight`` bounds unacknowledged QoS 1 messages; more hides round-trip latency
    after an outage, fewer resends less when the connection drops. ``reconnect_min_s`` /
    ``reconnect_max_s`` bound the backoff; ``fatal_retry_s`` is the slow retry after a refused
    password or untrusted certificate (so a fix on the broker side is picked up without a restart).
    ``poll_s`` is the safety poll of the outbox between wakes (2 s): shorter costs CPU on an idle
    device, longer only matters if a caller forgets to wake the publisher.
    """

    def __init__(
        self,
        config: MqttConfig,
        *,
        site: str,
        device: str,
        outbox: Outbox,
        health: Callable[[], dict[str, Any]],
        version: str,
        client_id: str | None = None,
        max_inflight: int = 20,
        reconnect_min_s: float = 1.0,
        reconnect_max_s: float = 60.0,
        fatal_retry_s: float = 60.0,
        poll_s: float = _POLL_S,
    ) -> None:
        # Read secrets and certificates now, so a bad path is a ConfigError at start-up, not a
        # log line in a background thread.
        self._password = read_password(config)
        if config.tls is not None:
            tls_context(config.tls)
        self._config = config
        self._site = site
        self._device = device
        self._outbox = outbox
        self._health = health
        self._version = version
        self._client_id = client_id or f"anoncam-{site}-{device}"
        self._max_inflight = max_inflight
        self._reconnect_min_s = reconnect_min_s
        self._reconnect_max_s = reconnect_max_s
        self._fatal_retry_s = fatal_retry_s
        self._poll_s = poll_s

        self.status_topic = contract.topic(config.prefix, site, device, "status")
        self.health_topic = contract.topic(config.prefix, site, device, "health")

        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)  # notified on connect, failure and ack
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

        # Guarded by _lock.
        self._client: mqtt.Client | None = None
        self._connected = False
        self._connack: ReasonCode | None = None
        self._session_over = threading.Event()
        self._by_mid: dict[int, int | None] = {}  # mid -> outbox seq (None: status / discovery)
        self._then: dict[int, Callable[[], None]] = {}  # mid -> what to do once acknowledged
        self._early: dict[int, ReasonCode] = {}  # PUBACKs that beat publish() returning its mid
        self._inflight_seqs: set[int] = set()
        self._paused_until = 0.0
        self._unsubscribed_pause = 0.0  # > 0 while windows wait for a subscriber
        self._unsubscribed_since = 0.0  # monotonic time of the first 0x10 of this wait
        self._last_error: BrokerError | None = None
        self._last_fatal = False
        self._failed_attempts = 0
        self._protocol: MQTTProtocolVersion | None = None
        self._since = 0.0
        self._ha_due = False
        self._recovered = False

    # ------------------------------------------------------------------ public state
    @property
    def connected(self) -> bool:
        with self._lock:
            return self._connected

    @property
    def last_error(self) -> BrokerError | None:
        """The last connection or delivery problem, None once connected cleanly."""
        with self._lock:
            return self._last_error

    @property
    def failed_attempts(self) -> int:
        """Connection attempts that failed since the publisher started."""
        with self._lock:
            return self._failed_attempts

    @property
    def protocol(self) -> str | None:
        """MQTT version of the current or last session: ``"5"``, ``"3.1.1"`` or None."""
        with self._lock:
            return None if self._protocol is None else _protocol_name(self._protocol)

    # ------------------------------------------------------------------ lifecycle
    def start(self, wait_connected_s: float = 0.0) -> bool:
        """Start the background connection; optionally wait for the first connection.

        Returns whether connected. Raises BrokerError when the broker refused our credentials or
        we refused its certificate. An unreachable broker is not an error here: the publisher keeps
        trying in the background and the outbox keeps every window meanwhile.
        """
        if self._thread is not None:
            raise RuntimeError("Publisher.start() called twice")
        self._stopping.clear()
        self._thread = threading.Thread(target=self._run, name="anoncam-publisher", daemon=True)
        self._thread.start()
        if wait_connected_s > 0:
            return self.wait_connected(wait_connected_s)
        return self.connected

    def start_first(self, timeout_s: float) -> bool:
        """Start, and wait for the first connection attempt to settle: connected (True), refused
        for good (BrokerError: a wrong password must stop a start), or not reachable (False, as
        soon as the attempt failed: counting must not wait for a broker that is down, the outbox
        keeps the windows). At most ``timeout_s`` for a broker that does not answer at all."""
        self.start()
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while not self._connected and self._failed_attempts == 0:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
        # The attempt that failed may have been a refusal: wait_connected raises it.
        return self.wait_connected(0)

    def wait_connected(self, timeout: float) -> bool:
        """Wait until connected (True) or ``timeout`` passes (False).

        Raises BrokerError when the last attempt was refused for a reason retrying cannot fix.
        """
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                if self._connected:
                    return True
                if self._last_fatal and self._last_error is not None:
                    err = self._last_error
                    raise BrokerError(err.message, hint=err.hint)
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(remaining)

    def wake(self) -> None:
        """Tell the publisher a new window is in the outbox (cheap; call after ``add_window``)."""
        self._wake.set()

    def stop(self, drain_timeout_s: float) -> bool:
        """Drain, say ``offline``, disconnect. Returns whether the outbox was fully delivered.

        Waits up to ``drain_timeout_s`` for every row to be acknowledged by the broker (not
        waiting at all when the broker refused us: nothing can drain). Rows not delivered stay in
        the outbox for the next start.
        """
        if self._thread is None:
            return self._outbox.stats().depth == 0
        deadline = time.monotonic() + drain_timeout_s
        drained = False
        with self._cond:
            while True:
                if self._outbox.stats().depth == 0:
                    drained = True
                    break
                remaining = deadline - time.monotonic()
                if remaining <= 0 or (self._last_fatal and not self._connected):
                    break
                self._wake.set()
                self._cond.wait(min(remaining, 0.5))
        self._stopping.set()
        self._wake.set()
        self._session_over.set()
        self._thread.join(timeout=_CONNACK_TIMEOUT_S + 5.0)
        if self._thread.is_alive():
            logger.warning("publisher thread did not finish within its stop timeout")
        self._thread = None
        if not drained:
            logger.warning(
                "stopped with windows not yet delivered; they stay in the outbox for the next start"
            )
        return drained

    # ------------------------------------------------------------------ supervisor
    def _run(self) -> None:
        order = protocols(self._config.protocol)
        index = 0
        delay = self._reconnect_min_s
        while not self._stopping.is_set():
            try:
                outcome = self._session(order[index], can_fall_back=index + 1 < len(order))
            except AnoncamError as exc:  # e.g. the CA file vanished, the outbox failed
                logger.error("publisher: %s; fix: %s", exc, exc.hint)
                outcome = "failed"
            except Exception:
                # This thread is the only way counts leave the device: a bug here must not end
                # it silently. Log it with its traceback and start a new session.
                logger.exception("publisher session failed unexpectedly; reconnecting")
                outcome = "failed"
            if outcome == "stopped" or self._stopping.is_set():
                break
            if outcome == "protocol":
                index += 1
                logger.warning(
                    "broker %s:%s does not speak MQTT 5; using MQTT 3.1.1 (set mqtt.protocol = "
                    '"3.1.1" to skip this attempt; broker-side rejections of single messages '
                    "cannot be seen with 3.1.1)",
                    self._config.host,
                    self._config.port,
                )
                continue
            if outcome == "lost":
                delay = self._reconnect_min_s
                wait = delay
            elif outcome == "fatal":
                wait = max(delay, self._fatal_retry_s)
            else:
                wait = delay
                delay = min(delay * 2, self._reconnect_max_s)
            self._stopping.wait(wait)

    def _session(self, protocol: MQTTProtocolVersion, *, can_fall_back: bool) -> str:
        """One connection, from CONNECT to its end. Returns how it ended:
        ``stopped``, ``lost`` (was connected), ``failed`` (transient), ``fatal``, ``protocol``."""
        client = build_client(
            self._config,
            client_id=self._client_id,
            protocol=protocol,
            password=self._password,
            max_inflight=self._max_inflight,
        )
        # The broker publishes the will unchanged, long after it was written: the moment the
        # device went away is unknown here, so the will's "since" is null (the status schema
        # says: use the time the message arrived), never the connect time.
        client.will_set(self.status_topic, self._will_payload(), qos=1, retain=True)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        if self._config.homeassistant.enabled:
            client.message_callback_add(self._ha_status_topic(), self._on_ha_status)
        with self._lock:
            self._client = client
            self._protocol = protocol
            self._connack = None
            self._connected = False
            self._session_over.clear()
            self._by_mid.clear()
            self._then.clear()
            self._early.clear()
            self._inflight_seqs.clear()
        logger.debug(
            "connecting to %s:%s (MQTT %s)",
            self._config.host,
            self._config.port,
            _protocol_name(protocol),
        )
        try:
            client.connect(self._config.host, self._config.port, self._config.keepalive_s)
        except OSError as exc:  # ssl.SSLError is an OSError too
            return self._failed(socket_failure(self._config, exc))
        client.loop_start()
        try:
            return self._connected_session(client, protocol, can_fall_back=can_fall_back)
        finally:
            self._close(client)

    def _connected_session(
        self, client: mqtt.Client, protocol: MQTTProtocolVersion, *, can_fall_back: bool
    ) -> str:
        deadline = time.monotonic() + _CONNACK_TIMEOUT_S
        while not self._session_over.wait(0.2):
            if self._stopping.is_set() or time.monotonic() > deadline:
                break
        with self._lock:
            connack = self._connack
            connected = self._connected
        if not connected:
            if self._stopping.is_set():
                return "stopped"
            if connack is None:
                return self._failed(
                    ConnectFailure(
                        BrokerError(
                            f"MQTT broker {self._config.host}:{self._config.port} closed the "
                            "connection or sent no CONNACK",
                            hint="check that the port is an MQTT listener and whether it "
                            "expects TLS",
                        ),
                        fatal=False,
                    )
                )
            if can_fall_back and is_protocol_refusal(connack):
                return "protocol"
            return self._failed(connack_failure(self._config, connack))

        self._session_up(client, protocol)
        self._serve(client)
        stopping = self._stopping.is_set()
        if stopping and self.connected:
            self._say_offline(client)
        return "stopped" if stopping else "lost"

    def _failed(self, failure: ConnectFailure) -> str:
        err = failure.error
        with self._lock:
            repeated = self._last_error is not None and self._last_error.message == err.message
        # Log before publishing the state: whoever wait_connected() wakes can rely on the log.
        if failure.fatal:
            # Loud every time (at most every fatal_retry_s): this needs a human.
            logger.error("%s; fix: %s", err.message, err.hint)
        elif not repeated:
            logger.warning("%s (retrying in the background; fix: %s)", err.message, err.hint)
        else:
            logger.debug("still failing: %s", err.message)
        with self._cond:
            self._last_error = err
            self._last_fatal = failure.fatal
            self._failed_attempts += 1
            self._cond.notify_all()
        return "fatal" if failure.fatal else "failed"

    def _session_up(self, client: mqtt.Client, protocol: MQTTProtocolVersion) -> None:
        with self._cond:
            had_error = self._recovered
            self._since = time.time()
            # Due in every session: publishes discovery when enabled, clears a stale one if not.
            self._ha_due = True
            self._cond.notify_all()
        logger.info(
            "connected to MQTT broker %s:%s (MQTT %s)%s",
            self._config.host,
            self._config.port,
            _protocol_name(protocol),
            " after connection problems" if had_error else "",
        )
        self._publish_tracked(
            client,
            self.status_topic,
            self._status_payload("online", since=self._since),
            retain=True,
        )
        if self._config.homeassistant.enabled:
            client.subscribe(self._ha_status_topic(), qos=1)

    def _serve(self, client: mqtt.Client) -> None:
        """While connected: drain the outbox, send health, answer Home Assistant."""
        next_health = time.monotonic()
        while not self._stopping.is_set():
            self._wake.clear()
            with self._lock:
                if not self._connected:
                    return
                ha_due, self._ha_due = self._ha_due, False
            try:
                if ha_due:
                    self._discovery(client)
                self._drain(client)
                now = time.monotonic()
                if now >= next_health:
                    next_health = now + self._config.health_interval_s
                    self._publish_health(client)
            except StorageError as exc:
                # Keep the connection (status stays online); try the outbox again shortly.
                logger.error("publisher: %s; fix: %s", exc, exc.hint)
                with self._lock:
                    self._paused_until = time.monotonic() + _STORAGE_PAUSE_S
                now = time.monotonic()
            timeout = min(next_health - now, self._poll_s)
            with self._lock:
                if self._paused_until > now:
                    # look again the moment a pause ends (a held window is due), not at the
                    # next poll: with 0x10 holds that poll was up to 2 s of extra latency
                    timeout = min(timeout, self._paused_until - now)
            self._wake.wait(max(0.0, timeout))

    def _close(self, client: mqtt.Client) -> None:
        # A normal DISCONNECT makes the broker discard the Last Will; on a dead or refused
        # connection it just stops paho's loop.
        client.disconnect()
        client.loop_stop()
        with self._cond:
            self._connected = False
            self._client = None
            self._by_mid.clear()
            self._then.clear()
            self._early.clear()
            self._inflight_seqs.clear()
            self._cond.notify_all()

    def _say_offline(self, client: mqtt.Client) -> None:
        info = client.publish(
            self.status_topic, self._status_payload("offline"), qos=1, retain=True
        )
        try:
            info.wait_for_publish(timeout=3.0)
        except (RuntimeError, ValueError) as exc:
            logger.warning("could not publish offline status on %s: %s", self.status_topic, exc)

    # ------------------------------------------------------------------ outbox drain
    def _drain(self, client: mqtt.Client) -> None:
        with self._lock:
            if time.monotonic() < self._paused_until:
                return
            room = self._max_inflight - len(self._inflight_seqs)
            if self._unsubscribed_pause:
                # Nobody subscribed last time: offer the oldest window alone, and the rest once
                # a subscriber took it, so they still arrive in order.
                room = 1 - len(self._inflight_seqs)
            if room <= 0 or not self._connected:
                return
            rows = self._outbox.pending(limit=room + len(self._inflight_seqs))
            todo = [r for r in rows if r.seq not in self._inflight_seqs][:room]
            self._inflight_seqs.update(r.seq for r in todo)
        for i, row in enumerate(todo):
            info = client.publish(self._row_topic(row), row.payload, qos=1)
            if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                # Connection gone: this and the rest go again on the next session.
                with self._lock:
                    self._inflight_seqs.difference_update(r.seq for r in todo[i:])
                logger.debug(
                    "publish of seq %d not sent (%s); will resend",
                    row.seq,
                    mqtt.error_string(info.rc),
                )
                return
            self._track(info.mid, row.seq)

    def _row_topic(self, row: OutboxRow) -> str:
        """The topic of the ids the window carries (a backlog from before a rename keeps its
        own); the configured ids when the payload does not name valid ones."""
        try:
            body = json.loads(row.payload)
            return contract.topic(self._config.prefix, body["site"], body["device"], row.kind)
        except (ValueError, KeyError, TypeError) as exc:
            logger.warning(
                "window seq %d does not name a valid site and device (%s); sending it on this "
                "device's topic",
                row.seq,
                exc,
            )
            return contract.topic(self._config.prefix, self._site, self._device, row.kind)

    def _publish_tracked(
        self,
        client: mqtt.Client,
        topic: str,
        payload: bytes,
        *,
        retain: bool,
        then: Callable[[], None] | None = None,
    ) -> None:
        info = client.publish(topic, payload, qos=1, retain=retain)
        if info.rc == MQTTErrorCode.MQTT_ERR_SUCCESS:
            self._track(info.mid, None, then)

    def _track(self, mid: int, seq: int | None, then: Callable[[], None] | None = None) -> None:
        # publish() may return after paho's thread already handled the PUBACK; match it up here.
        with self._lock:
            early = self._early.pop(mid, None)
            if early is None:
                self._by_mid[mid] = seq
                if then is not None:
                    self._then[mid] = then
                return
            self._settle(seq, early, then)

    def _settle(
        self, seq: int | None, reason: ReasonCode, then: Callable[[], None] | None = None
    ) -> None:
        """The broker answered a QoS 1 publish. Called with _lock held."""
        if seq is None:
            if reason.is_failure:
                logger.warning("broker rejected a status/discovery message: %s", reason)
            elif then is not None:
                then()
            return
        self._inflight_seqs.discard(seq)
        if reason.is_failure:
            topic = contract.topic(self._config.prefix, self._site, self._device, "counts")
            self._last_error = BrokerError(
                f"broker rejected window seq {seq} on {topic}: {reason}",
                hint="check the broker ACL lets this device's user publish on its topics "
                f"({self._config.prefix}/{self._site}/{self._device}/#)",
            )
            self._paused_until = time.monotonic() + _REJECT_PAUSE_S
            logger.error(
                "%s; kept in the outbox, retrying in %.0f s; fix: %s",
                self._last_error.message,
                _REJECT_PAUSE_S,
                self._last_error.hint,
            )
            return
        if reason.value == _NO_MATCHING_SUBSCRIBERS and self._config.keep_until_subscribed:
            self._hold_unsubscribed(seq)
            return
        if self._unsubscribed_pause:
            logger.info("a subscriber took window seq %d; the held windows follow", seq)
            self._unsubscribed_pause = 0.0
        self._outbox.ack(seq)
        self._cond.notify_all()

    def _hold_unsubscribed(self, seq: int) -> None:
        """The broker accepted window ``seq`` but nobody subscribes to it (PUBACK 0x10): it
        would be dropped, so it stays in the outbox and is offered again later. This is what
        keeps windows through a broker restart, when a Mosquitto 2.0 forgets shared
        subscriptions until their subscribers come back. Called with _lock held."""
        now = time.monotonic()
        if now < self._paused_until:
            return  # the rest of a burst that was in flight when the first 0x10 came back
        first = self._unsubscribed_pause == 0.0
        if first:
            self._unsubscribed_since = now
        self._unsubscribed_pause = unsubscribed_pause(now - self._unsubscribed_since)
        self._paused_until = now + self._unsubscribed_pause
        log = logger.warning if first else logger.debug
        log(
            "the broker has no subscriber for window seq %d on %s; it and the windows after it "
            "stay in the outbox, offered again in %.1f s (mqtt.keep_until_subscribed)",
            seq,
            contract.topic(self._config.prefix, self._site, self._device, "counts"),
            self._unsubscribed_pause,
        )

    # ------------------------------------------------------------------ paho callbacks
    # They run on paho's network thread. An exception escaping one would kill that thread and
    # silently stall delivery on a device nobody watches, so each logs and carries on.
    def _on_connect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.ConnectFlags,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        with self._cond:
            if client is not self._client:
                return
            self._connack = reason
            self._connected = not reason.is_failure
            if self._connected:
                # Cleared here, not in the supervisor thread, so that whoever wait_connected()
                # wakes sees a consistent state.
                self._recovered = self._last_error is not None
                self._last_error = None
                self._last_fatal = False
            self._cond.notify_all()
        self._session_over.set()
        self._wake.set()

    def _on_disconnect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.DisconnectFlags,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        with self._cond:
            if client is not self._client:
                return
            was_connected = self._connected
            self._connected = False
            if was_connected and not self._stopping.is_set():
                self._last_error = BrokerError(
                    f"lost connection to MQTT broker {self._config.host}:{self._config.port}: "
                    f"{reason}",
                    hint="windows wait in the outbox; check the broker and the network",
                )
                self._last_fatal = False
            self._cond.notify_all()
        if was_connected and not self._stopping.is_set():
            logger.warning(
                "lost connection to MQTT broker %s:%s (%s); reconnecting",
                self._config.host,
                self._config.port,
                reason,
            )
        self._session_over.set()
        self._wake.set()

    def _on_publish(
        self,
        client: mqtt.Client,
        userdata: Any,
        mid: int,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        try:
            with self._lock:
                if client is not self._client:
                    return
                if mid in self._by_mid:
                    self._settle(self._by_mid.pop(mid), reason, self._then.pop(mid, None))
                else:
                    self._early[mid] = reason
        except Exception:
            logger.exception("acknowledging message %d failed; the window will be sent again", mid)
        self._wake.set()

    def _on_ha_status(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        if message.payload.strip() == b"online":
            with self._lock:
                self._ha_due = True
            self._wake.set()

    # ------------------------------------------------------------------ payloads
    def _status_payload(self, state: str, *, since: float | None = None) -> bytes:
        body = {
            "schema": STATUS_SCHEMA,
            "state": state,
            "version": self._version,
            "since": contract.utc_iso(int(since or time.time())),
        }
        return json.dumps(body, separators=(",", ":")).encode()

    def _will_payload(self) -> bytes:
        body = {
            "schema": STATUS_SCHEMA,
            "state": "offline",
            "version": self._version,
            "since": None,
        }
        return json.dumps(body, separators=(",", ":")).encode()

    def _health_payload(self) -> bytes:
        try:
            figures = dict(self._health())
        except Exception:
            # A broken probe must not stop counts from flowing; report without its figures.
            logger.exception("health callback failed; publishing outbox figures only")
            figures = {
                "fps": None,
                "detector_latency_ms": None,
                "dropped_frames": 0,
                "cpu_temp_c": None,
                "throttling": None,
                "camera": "unknown",
            }
        with self._lock:
            stats = self._outbox.stats()
        now = time.time()
        body: dict[str, Any] = {
            "schema": contract.HEALTH_SCHEMA,
            "time": contract.utc_iso(int(now)),
            **figures,
            "outbox_depth": stats.depth,
            "oldest_unsent_age_s": None
            if stats.oldest_created_s is None
            else round(max(0.0, now - stats.oldest_created_s), 1),
            "merged_total": stats.merged_total,
            "outbox_bytes": stats.db_bytes,
        }
        return json.dumps(body, separators=(",", ":")).encode()

    def _publish_health(self, client: mqtt.Client) -> None:
        client.publish(self.health_topic, self._health_payload(), qos=0)

    # ------------------------------------------------------------------ Home Assistant
    def _ha_status_topic(self) -> str:
        return f"{self._config.homeassistant.prefix}/status"

    def _discovery(self, client: mqtt.Client) -> None:
        """Publish discovery (when enabled) and clear the one left under another topic or
        from when discovery was on (the outbox remembers which topic holds ours)."""
        left = self._outbox.note(_HA_NOTE)
        topic: str | None = None
        if self._config.homeassistant.enabled:
            topic, body = homeassistant_discovery(
                self._config, site=self._site, device=self._device, version=self._version
            )
        if left is not None and left != topic:
            self._publish_tracked(
                client, left, b"", retain=True, then=lambda: self._forget_discovery(left)
            )
            logger.info("cleared the retained Home Assistant discovery on %s", left)
        if topic is not None:
            # Remembered before it is sent: a discovery we may have left must be clearable.
            if left != topic:
                self._outbox.set_note(_HA_NOTE, topic)
            self._publish_tracked(client, topic, json.dumps(body).encode(), retain=True)
            logger.info("published Home Assistant discovery on %s", topic)

    def _forget_discovery(self, topic: str) -> None:
        # Runs on paho's thread once the broker acknowledged the empty retained message.
        if self._outbox.note(_HA_NOTE) == topic:
            self._outbox.set_note(_HA_NOTE, None)


# Per-window counts are amounts over the window, not readings: HA's recorder sums a "total"
# sensor each time its last_reset changes (every window has its own start), and force_update
# makes HA record a window equal to the previous one instead of dropping it as no change.
_WINDOW_TOTALS = {
    "entries": ("Entries", "mdi:account-arrow-right"),
    "exits": ("Exits", "mdi:account-arrow-left"),
    "visitors": ("Visitors", "mdi:account-group"),
}
# Renders the text None for a window with no frames (occupancy null): HA's MQTT sensor makes
# "None" unknown, while an empty string is ignored and would leave the last value on screen.
OCCUPANCY_TEMPLATE = "{{ value_json.occupancy.last if value_json.occupancy is not none else None }}"


def homeassistant_discovery(
    config: MqttConfig, *, site: str, device: str, version: str
) -> tuple[str, dict[str, Any]]:
    """Device-based discovery (Home Assistant >= 2024.11): one retained message for 4 sensors.

    The sensors read the counts topic; availability follows the status topic's ``state``.
    Entries, exits and visitors are ``state_class: total`` with ``last_reset`` on the window's
    start and ``force_update``, so HA's long-term statistics add up every window; occupancy is
    a ``measurement`` (people inside at the window's last frame), unknown when nothing was seen.
    """
    node = "_".join([config.prefix.replace("/", "_"), site, device])
    counts = contract.topic(config.prefix, site, device, "counts")
    status = contract.topic(config.prefix, site, device, "status")
    components: dict[str, dict[str, Any]] = {
        f"{node}_{key}": {
            "platform": "sensor",
            "name": name,
            "unique_id": f"{node}_{key}",
            "value_template": f"{{{{ value_json.{key} }}}}",
            "state_class": "total",
            "last_reset_value_template": "{{ value_json.start }}",
            "force_update": True,
            "unit_of_measurement": "people",
            "icon": icon,
        }
        for key, (name, icon) in _WINDOW_TOTALS.items()
    }
    components[f"{node}_occupancy"] = {
        "platform": "sensor",
        "name": "Occupancy",
        "unique_id": f"{node}_occupancy",
        "value_template": OCCUPANCY_TEMPLATE,
        "state_class": "measurement",
        "force_update": True,
        "unit_of_measurement": "people",
        "icon": "mdi:account-multiple",
    }
    body: dict[str, Any] = {
        "device": {
            "identifiers": [node],
            "name": f"anoncam {site} {device}",
            "manufacturer": "anoncam",
            "model": "anoncam camera",
            "sw_version": version,
        },
        "origin": {"name": "anoncam", "sw_version": version},
        "availability": [{"topic": status, "value_template": "{{ value_json.state }}"}],
        "state_topic": counts,
        "qos": 1,
        "components": components,
    }
    return f"{config.homeassistant.prefix}/device/{node}/config", body
