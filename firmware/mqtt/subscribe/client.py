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

import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import MQTTProtocolVersion
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from firmware import contract
from firmware.config.settings import MqttConfig
from firmware.errors import BrokerError, OutputError
from firmware.mqtt.connect import (
    build_client,
    connack_failure,
    is_protocol_refusal,
    protocols,
    read_password,
    socket_failure,
)
from firmware.mqtt.subscribe.ledger import Verdict, WindowLedger
from firmware.mqtt.subscribe.sinks import Sink

logger = logging.getLogger(__name__)


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
