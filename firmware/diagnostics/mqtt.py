"""MQTT: name resolution, TCP, TLS and certificate expiry, authentication, a round trip.

Each step is its own line so a field tech sees where it breaks; a step that cannot run because
an earlier one failed is SKIPped with the reason. The steps use the device's own config, its
password file and TLS files, through :mod:`firmware.mqtt.connect`, the same code the publisher
uses, so "diagnose says OK" means "the publisher can connect".

The round trip publishes a small probe (a random nonce and the time, nothing else) with QoS 1 on
the device's own ``{prefix}/{site}/{device}/diagnostics`` topic and waits for it to come back.
A broker ACL that lets the device write but not read that topic is normal for a locked-down
fleet: that is a WARN, not a FAIL. The probe connects with its own random client id so it never
takes over the running service's session (a broker drops the older of two clients with the same
id).
"""

from __future__ import annotations

import ipaddress
import json
import secrets
import socket
import ssl
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from paho.mqtt.enums import MQTTProtocolVersion
from paho.mqtt.reasoncodes import ReasonCode

from firmware.config.settings import Config
from firmware.diagnostics.base import Check, Context, fail, ok, skip, warn
from firmware.errors import ConfigError
from firmware.mqtt.connect import (
    build_client,
    connack_failure,
    is_protocol_refusal,
    protocols,
    read_password,
    socket_failure,
    tls_context,
)

NAMES = ("mqtt.dns", "mqtt.tcp", "mqtt.tls", "mqtt.auth", "mqtt.roundtrip")

#: Below this many days to the broker certificate's expiry: WARN (renew it before devices stop).
CERT_WARN_DAYS = 30


def diagnostics_topic(config: Config) -> str:
    return f"{config.mqtt.prefix}/{config.site}/{config.device}/diagnostics"


# -- X.509 notAfter, read from DER ------------------------------------------------------------
# The stdlib gives the parsed certificate only when verification succeeded; an expired or
# untrusted certificate's dates are exactly what a field tech needs, so read them from the DER
# bytes, which ssl returns either way. Only the fixed prefix of TBSCertificate is walked.


def _tlv(data: bytes, pos: int) -> tuple[int, int, int]:
    """(tag, content start, content end) of the DER element at ``pos``."""
    if pos + 2 > len(data):
        raise ValueError("truncated DER")
    tag = data[pos]
    length = data[pos + 1]
    start = pos + 2
    if length & 0x80:
        count = length & 0x7F
        if count == 0 or count > 4 or start + count > len(data):
            raise ValueError("bad DER length")
        length = int.from_bytes(data[start : start + count], "big")
        start += count
    end = start + length
    if end > len(data):
        raise ValueError("truncated DER")
    return tag, start, end


def _der_time(tag: int, raw: bytes) -> datetime:
    text = raw.decode("ascii")
    if tag == 0x17:  # UTCTime YYMMDDHHMMSSZ; RFC 5280: YY >= 50 is 19YY
        year = int(text[:2])
        text = f"{1900 + year if year >= 50 else 2000 + year}{text[2:]}"
    elif tag != 0x18:  # GeneralizedTime YYYYMMDDHHMMSSZ
        raise ValueError(f"unexpected time tag {tag:#x}")
    return datetime.strptime(text, "%Y%m%d%H%M%SZ").replace(tzinfo=UTC)


def cert_not_after(der: bytes) -> datetime:
    """The ``notAfter`` of a DER certificate. Raises ValueError on anything unexpected."""
    _, cert_start, _ = _tlv(der, 0)  # Certificate
    _, pos, _ = _tlv(der, cert_start)  # TBSCertificate
    tag, _, end = _tlv(der, pos)
    if tag == 0xA0:  # [0] version, present in v3 certificates
        pos = end
    for _ in range(3):  # serialNumber, signature AlgorithmIdentifier, issuer
        _, _, pos = _tlv(der, pos)
    _, validity, _ = _tlv(der, pos)
    _, _, after_not_before = _tlv(der, validity)
    tag, start, end = _tlv(der, after_not_before)
    return _der_time(tag, der[start:end])


# -- the steps -------------------------------------------------------------------------------


def _resolve(host: str, port: int, timeout: float) -> list[Any]:
    """getaddrinfo with a deadline (it has none of its own; a dead resolver blocks ~30 s)."""
    box: dict[str, Any] = {}

    def work() -> None:
        try:
            box["infos"] = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as exc:
            box["error"] = exc

    thread = threading.Thread(target=work, name="diagnose-dns", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise TimeoutError(f"no answer within {timeout:g} s")
    if "error" in box:
        raise box["error"]
    infos: list[Any] = box["infos"]
    return infos


def check_dns(ctx: Context) -> tuple[Check, list[Any]]:
    name = "mqtt.dns"
    host, port = ctx.config.mqtt.host, ctx.config.mqtt.port
    try:
        ipaddress.ip_address(host)
        literal = True
    except ValueError:
        literal = False
    t0 = time.perf_counter()
    try:
        infos = _resolve(host, port, ctx.timeout_s)
    except (OSError, TimeoutError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        return fail(
            name,
            f"cannot resolve mqtt.host {host!r}: {reason}",
            "check mqtt.host for typos and the device's DNS ('resolvectl status' or "
            "/etc/resolv.conf); an IP address avoids DNS altogether",
            host=host,
        ), []
    ms = (time.perf_counter() - t0) * 1000.0
    addresses = sorted({str(info[4][0]) for info in infos})
    if literal:
        return ok(
            name, f"{host} is an address: nothing to resolve", host=host, addresses=addresses
        ), infos
    return ok(
        name,
        f"{host} -> {', '.join(addresses)} in {ms:.0f} ms",
        host=host,
        addresses=addresses,
        ms=round(ms, 1),
    ), infos


def check_tcp(ctx: Context, infos: list[Any]) -> Check:
    name = "mqtt.tcp"
    cfg = ctx.config.mqtt
    last_error: OSError | None = None
    for family, kind, proto, _canon, sockaddr in infos[:3]:
        sock = socket.socket(family, kind, proto)
        sock.settimeout(ctx.timeout_s)
        try:
            t0 = time.perf_counter()
            sock.connect(sockaddr)
            ms = (time.perf_counter() - t0) * 1000.0
        except OSError as exc:
            last_error = exc
            continue
        finally:
            sock.close()
        return ok(
            name,
            f"connected to {sockaddr[0]} port {cfg.port} in {ms:.2f} ms",
            address=str(sockaddr[0]),
            port=cfg.port,
            ms=round(ms, 2),
        )
    if last_error is None:  # getaddrinfo returned nothing usable
        last_error = OSError(f"no address for {cfg.host}")
    failure = socket_failure(cfg, last_error).error
    return fail(name, failure.message, failure.hint, port=cfg.port)


@dataclass
class _TlsResult:
    version: str | None = None
    ms: float | None = None
    der: bytes | None = None
    verify_error: ssl.SSLCertVerificationError | None = None


def _handshake(ctx: Context, context: ssl.SSLContext) -> _TlsResult:
    cfg = ctx.config.mqtt
    result = _TlsResult()
    server_name = cfg.host if context.check_hostname else None
    with socket.create_connection((cfg.host, cfg.port), timeout=ctx.timeout_s) as raw:
        t0 = time.perf_counter()
        with context.wrap_socket(raw, server_hostname=server_name) as tls:
            result.ms = (time.perf_counter() - t0) * 1000.0
            result.version = tls.version()
            result.der = tls.getpeercert(binary_form=True)
    return result


def _unverified_certificate(ctx: Context) -> bytes | None:
    """The server's certificate without verifying it, to report its dates after a failure."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        return _handshake(ctx, context).der
    except (OSError, ssl.SSLError):
        return None


def check_tls(ctx: Context) -> Check:
    name = "mqtt.tls"
    cfg = ctx.config.mqtt
    if cfg.tls is None:
        if cfg.username is not None and not _is_loopback(cfg.host):
            return warn(
                name,
                f"no TLS: the MQTT password for {cfg.username!r} crosses the network in clear text",
                "add an [mqtt.tls] section with the broker's "
                "CA (ca_file) and use the broker's TLS port (usually 8883)",
                tls=False,
            )
        return skip(name, "not configured: plain MQTT over TCP", tls=False)
    try:
        context = tls_context(cfg.tls)
    except ConfigError as exc:
        return fail(name, exc.message, exc.hint, tls=True)
    if not cfg.tls.verify_hostname:
        context.check_hostname = False
    try:
        result = _handshake(ctx, context)
    except ssl.SSLCertVerificationError as exc:
        result = _TlsResult(verify_error=exc, der=_unverified_certificate(ctx))
    except (ssl.SSLError, OSError) as exc:
        failure = socket_failure(cfg, exc).error
        return fail(name, failure.message, failure.hint, tls=True)
    figures: dict[str, Any] = {
        "tls": True,
        "version": result.version,
        "handshake_ms": None if result.ms is None else round(result.ms, 1),
    }
    expiry = ""
    days: float | None = None
    if result.der:
        try:
            not_after = cert_not_after(result.der)
        except ValueError:
            not_after = None
        if not_after is not None:
            days = (not_after - datetime.now(UTC)).total_seconds() / 86400.0
            figures["not_after"] = not_after.strftime("%Y-%m-%dT%H:%M:%SZ")
            figures["days_left"] = round(days, 1)
            expiry = (
                f"certificate expired {-days:.0f} day(s) ago ({not_after:%Y-%m-%d})"
                if days < 0
                else f"certificate expires in {days:.0f} day(s) ({not_after:%Y-%m-%d})"
            )
    renew = (
        "renew the broker's certificate (and restart the broker); devices refuse an expired "
        "certificate and stop publishing"
    )
    if result.verify_error is not None:
        failure = socket_failure(cfg, result.verify_error).error
        detail = failure.message + (f"; {expiry}" if expiry else "")
        return fail(
            name, detail, renew if days is not None and days < 0 else failure.hint, **figures
        )
    if days is not None and days < 0:
        return fail(name, expiry, renew, **figures)
    if days is not None and days < CERT_WARN_DAYS:
        return warn(
            name,
            f"{result.version} handshake OK, but {expiry}",
            f"{renew}; warned from {CERT_WARN_DAYS} days before",
            **figures,
        )
    hand = f"{result.version} handshake in {result.ms:.0f} ms" if result.ms is not None else "OK"
    return ok(name, f"{hand}; {expiry or 'certificate dates unreadable'}", **figures)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass
class _Probe:
    """Collects paho's callbacks (they run on paho's network thread)."""

    nonce: str
    connack: ReasonCode | None = None
    closed_early: bool = False
    suback: ReasonCode | None = None
    puback: ReasonCode | None = None
    received_at: float | None = None
    connected: threading.Event = field(default_factory=threading.Event)
    subscribed: threading.Event = field(default_factory=threading.Event)
    published: threading.Event = field(default_factory=threading.Event)
    received: threading.Event = field(default_factory=threading.Event)

    def on_connect(self, _c: Any, _u: Any, _f: Any, reason: ReasonCode, _p: Any) -> None:
        self.connack = reason
        self.connected.set()

    def on_disconnect(self, _c: Any, _u: Any, _f: Any, _reason: Any, _p: Any) -> None:
        if not self.connected.is_set():
            self.closed_early = True
            self.connected.set()

    def on_subscribe(self, _c: Any, _u: Any, _mid: int, reasons: list[ReasonCode], _p: Any) -> None:
        self.suback = reasons[0] if reasons else None
        self.subscribed.set()

    def on_publish(self, _c: Any, _u: Any, _mid: int, reason: ReasonCode, _p: Any) -> None:
        self.puback = reason
        self.published.set()

    def on_message(self, _c: Any, _u: Any, message: Any) -> None:
        if self.nonce.encode() in message.payload:
            self.received_at = time.perf_counter()
            self.received.set()


def _protocol_name(p: MQTTProtocolVersion) -> str:
    return "5" if p == MQTTProtocolVersion.MQTTv5 else "3.1.1"


def check_session(ctx: Context) -> list[Check]:
    """mqtt.auth and mqtt.roundtrip, over one real MQTT connection."""
    cfg = ctx.config.mqtt
    user = f"user {cfg.username!r}" if cfg.username else "anonymous"
    try:
        password = read_password(cfg)
    except ConfigError as exc:
        return [
            fail("mqtt.auth", exc.message, exc.hint, user=cfg.username),
            skip("mqtt.roundtrip", "not tried: not connected"),
        ]
    candidates = protocols(cfg.protocol)
    for i, protocol in enumerate(candidates):
        probe = _Probe(nonce=secrets.token_hex(8))
        client_id = f"anoncam-diagnose-{secrets.token_hex(4)}"
        try:
            client = build_client(cfg, client_id=client_id, protocol=protocol, password=password)
        except ConfigError as exc:
            return [
                fail("mqtt.auth", exc.message, exc.hint, user=cfg.username),
                skip("mqtt.roundtrip", "not tried: not connected"),
            ]
        client.connect_timeout = ctx.timeout_s
        client.on_connect = probe.on_connect
        client.on_disconnect = probe.on_disconnect
        client.on_subscribe = probe.on_subscribe
        client.on_publish = probe.on_publish
        client.on_message = probe.on_message
        t0 = time.perf_counter()
        try:
            client.connect(cfg.host, cfg.port, keepalive=cfg.keepalive_s)
        except OSError as exc:  # ssl.SSLError is an OSError
            failure = socket_failure(cfg, exc).error
            return [
                fail("mqtt.auth", failure.message, failure.hint, user=cfg.username),
                skip("mqtt.roundtrip", "not tried: not connected"),
            ]
        client.loop_start()
        try:
            if not probe.connected.wait(ctx.timeout_s) or probe.connack is None:
                why = (
                    "the broker closed the connection without answering"
                    if probe.closed_early
                    else f"no CONNACK within {ctx.timeout_s:g} s"
                )
                return [
                    fail(
                        "mqtt.auth",
                        f"MQTT broker {cfg.host}:{cfg.port}: {why}",
                        "check that mqtt.port is an MQTT listener (TLS or not, as "
                        "configured) and see the broker's log",
                        user=cfg.username,
                    ),
                    skip("mqtt.roundtrip", "not tried: not connected"),
                ]
            connect_ms = (time.perf_counter() - t0) * 1000.0
            reason = probe.connack
            if reason.is_failure:
                if is_protocol_refusal(reason) and i + 1 < len(candidates):
                    continue  # a 3.1.1-only broker: try the next version, as the publisher does
                failure = connack_failure(cfg, reason).error
                return [
                    fail(
                        "mqtt.auth",
                        failure.message,
                        failure.hint,
                        user=cfg.username,
                        reason=str(reason),
                        reason_code=reason.value,
                    ),
                    skip("mqtt.roundtrip", "not tried: the broker refused the connection"),
                ]
            auth = ok(
                "mqtt.auth",
                f"connected as {user} (MQTT {_protocol_name(protocol)}) in {connect_ms:.0f} ms",
                user=cfg.username,
                protocol=_protocol_name(protocol),
                ms=round(connect_ms, 1),
            )
            return [auth, _round_trip(ctx, client, probe)]
        finally:
            client.disconnect()
            client.loop_stop()
    raise AssertionError("unreachable: protocols() is never empty")  # pragma: no cover


def _round_trip(ctx: Context, client: Any, probe: _Probe) -> Check:
    name = "mqtt.roundtrip"
    topic = diagnostics_topic(ctx.config)
    timeout = ctx.timeout_s
    acl_hint = (
        f"counts are unaffected; to measure the round trip, let this device's user read "
        f"{topic} (Mosquitto ACL: 'topic read {topic}' under its 'user' line)"
    )
    client.subscribe(topic, qos=1)
    if not probe.subscribed.wait(timeout) or probe.suback is None:
        return warn(
            name,
            f"no SUBACK for {topic} within {timeout:g} s",
            "the broker is slow or overloaded; see its log",
            topic=topic,
        )
    read_denied = probe.suback.is_failure
    payload = json.dumps(
        {
            "schema": "anoncam/diagnostics/1",
            "probe": probe.nonce,
            "time": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
    ).encode()
    t0 = time.perf_counter()
    client.publish(topic, payload, qos=1)
    if not probe.published.wait(timeout) or probe.puback is None:
        return warn(
            name,
            f"no PUBACK for a QoS 1 message on {topic} within {timeout:g} s",
            "the broker is slow or overloaded; see its log",
            topic=topic,
        )
    puback_ms = (time.perf_counter() - t0) * 1000.0
    if probe.puback.is_failure:
        subtree = topic.rsplit("/", 1)[0] + "/#"
        return warn(
            name,
            f"the broker refused publishing on {topic}: {probe.puback}",
            f"the device publishes its counts under {subtree}: check that the broker "
            "ACL lets this device's user write there",
            topic=topic,
            puback_ms=round(puback_ms, 1),
        )
    if read_denied:
        return warn(
            name,
            f"published on {topic} (PUBACK in {puback_ms:.0f} ms), but the broker "
            f"ACL forbids reading it ({probe.suback}): round trip not measured",
            acl_hint,
            topic=topic,
            puback_ms=round(puback_ms, 1),
            read_denied=True,
        )
    if not probe.received.wait(timeout) or probe.received_at is None:
        return warn(
            name,
            f"published on {topic} (PUBACK in {puback_ms:.0f} ms) but it did not "
            f"come back within {timeout:g} s: the broker ACL may forbid reading it",
            acl_hint,
            topic=topic,
            puback_ms=round(puback_ms, 1),
        )
    latency = (probe.received_at - t0) * 1000.0
    return ok(
        name,
        f"publish and receive on {topic} in {latency:.1f} ms",
        topic=topic,
        latency_ms=round(latency, 2),
        puback_ms=round(puback_ms, 2),
    )


def run(ctx: Context) -> list[Check]:
    dns, infos = check_dns(ctx)
    if dns.status == "FAIL":
        return [dns] + [skip(n, "not tried: mqtt.host does not resolve") for n in NAMES[1:]]
    tcp = check_tcp(ctx, infos)
    if tcp.status == "FAIL":
        return [dns, tcp] + [skip(n, "not tried: no TCP connection") for n in NAMES[2:]]
    tls = check_tls(ctx)
    if tls.status == "FAIL":
        return [dns, tcp, tls] + [skip(n, "not tried: TLS failed") for n in NAMES[3:]]
    return [dns, tcp, tls, *check_session(ctx)]
