"""Build a paho-mqtt client from :class:`MqttConfig`, and explain why a connection failed.

Shared by the publisher (on the device) and ``anoncam subscribe`` (on the consumer's side), so
both read secrets, set up TLS and word broker refusals the same way.

Failures come in two kinds, and callers treat them differently:

* *fatal*: retrying will not help until a human changes something (wrong password, user not
  allowed, broker certificate not trusted). Reported once, loudly, with the fix.
* *transient*: broker down, restarting or unreachable. Retried with backoff; the broker may come
  up later.
"""

from __future__ import annotations

import errno
import logging
import os
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.reasoncodes import ReasonCode

from firmware.config.settings import MqttConfig, TlsConfig
from firmware.errors import BrokerError, ConfigError

logger = logging.getLogger(__name__)

#: systemd ``LoadCredential=mqtt-password:/path`` puts the secret in ``$CREDENTIALS_DIRECTORY``.
CREDENTIAL_NAME = "mqtt-password"

#: Where a provisioned camera keeps the credential the unit loads (provisioning's layout uses
#: this): read directly when no systemd credential is there, e.g. ``sudo anoncam diagnose``.
INSTALLED_CREDENTIALS = Path("/etc/anoncam/credentials")

# CONNACK reason codes (MQTT 5 numbering; paho maps 3.1.1 return codes onto them).
_UNSUPPORTED_PROTOCOL = 0x84
_AUTH_REFUSALS = frozenset(
    {
        0x85,  # client identifier not valid
        0x86,  # bad user name or password
        0x87,  # not authorized
        0x8A,  # banned
        0x8C,  # bad authentication method
    }
)


@dataclass(frozen=True)
class ConnectFailure:
    """Why one connection attempt failed. ``fatal``: retrying cannot help until a human acts."""

    error: BrokerError
    fatal: bool


def read_password(
    config: MqttConfig,
    *,
    environ: Mapping[str, str] | None = None,
    installed: Path = INSTALLED_CREDENTIALS,
) -> str | None:
    """The MQTT password, or None for no password.

    ``mqtt.password_file`` wins when set; otherwise, when a user name is set, a systemd credential
    named ``mqtt-password`` (``LoadCredential=``) is used if present, else the installed one the
    unit loads it from (``installed``/mqtt-password, readable by root and the service user), so a
    field tech's ``sudo anoncam diagnose`` tests the camera's real login. One trailing newline is
    stripped, since ``echo secret > file`` adds one. The password is never logged.
    """
    env = os.environ if environ is None else environ
    if config.password_file is not None:
        path = Path(config.password_file)
        if config.username is None:
            raise ConfigError(
                f"mqtt.password_file is set ({path}) but mqtt.username is not",
                hint="set mqtt.username to the user the password belongs to",
            )
        return _read_secret(path, field="mqtt.password_file")
    if config.username is not None:
        cred_dir = env.get("CREDENTIALS_DIRECTORY")
        if cred_dir:
            path = Path(cred_dir) / CREDENTIAL_NAME
            if path.is_file():
                return _read_secret(path, field=f"systemd credential {CREDENTIAL_NAME}")
        fallback = installed / CREDENTIAL_NAME
        if os.access(fallback, os.R_OK) and fallback.is_file():
            return _read_secret(fallback, field=f"installed credential {fallback}")
    return None


def _read_secret(path: Path, *, field: str) -> str:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            f"{field}: {path} does not exist",
            hint=f"create the file holding the MQTT password, or fix the path in {field}",
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ConfigError(
            f"{field}: cannot read {path}: {reason}",
            hint="the file must be readable by the anoncam user (chmod 600, owned by that user)",
        ) from None
    secret = text.removesuffix("\n").removesuffix("\r")
    if not secret:
        raise ConfigError(f"{field}: {path} is empty", hint="write the MQTT password into the file")
    return secret


class _ClosingSSLSocket(ssl.SSLSocket):
    """Closes itself when the TLS handshake fails.

    paho leaves the socket of a failed handshake open for the garbage collector; with a retry
    every minute against a broker whose certificate we reject, that is a stream of unclosed
    sockets (and ResourceWarnings) on a device that runs for months.
    """

    def do_handshake(self, block: bool = False) -> None:
        try:
            super().do_handshake(block)
        except BaseException:
            self.close()
            raise


def tls_context(tls: TlsConfig) -> ssl.SSLContext:
    """An SSL context that verifies the broker; a bad file is a ConfigError naming its field."""
    ca = _existing(tls.ca_file, "mqtt.tls.ca_file")
    cert = _existing(tls.cert_file, "mqtt.tls.cert_file")
    key = _existing(tls.key_file, "mqtt.tls.key_file")
    if key is not None and cert is None:
        raise ConfigError(
            "mqtt.tls.key_file is set but mqtt.tls.cert_file is not",
            hint="set both for a client certificate, or neither",
        )
    try:
        context = ssl.create_default_context(cafile=str(ca) if ca else None)
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError(
            f"mqtt.tls.ca_file: {ca} is not a PEM CA certificate ({exc})",
            hint="point mqtt.tls.ca_file at the PEM CA certificate that signed the broker's",
        ) from None
    if cert is not None:
        try:
            context.load_cert_chain(str(cert), str(key) if key else None)
        except (ssl.SSLError, OSError) as exc:
            raise ConfigError(
                f"mqtt.tls.cert_file / mqtt.tls.key_file: cannot load {cert} ({exc})",
                hint="both must be PEM, the key must match the certificate and not be encrypted",
            ) from None
    context.check_hostname = True
    context.verify_mode = ssl.CERT_REQUIRED
    context.sslsocket_class = _ClosingSSLSocket
    return context


def _existing(path: Path | None, field: str) -> Path | None:
    if path is None:
        return None
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{field}: {p} does not exist", hint=f"fix the path in {field}")
    if not os.access(p, os.R_OK):
        raise ConfigError(f"{field}: {p} is not readable", hint="let the anoncam user read it")
    return p


def protocols(choice: str) -> list[MQTTProtocolVersion]:
    """Protocol versions to try, in order, for ``mqtt.protocol``."""
    if choice == "5":
        return [MQTTProtocolVersion.MQTTv5]
    if choice == "3.1.1":
        return [MQTTProtocolVersion.MQTTv311]
    return [MQTTProtocolVersion.MQTTv5, MQTTProtocolVersion.MQTTv311]


def build_client(
    config: MqttConfig,
    *,
    client_id: str,
    protocol: MQTTProtocolVersion,
    password: str | None,
    max_inflight: int = 20,
    reconnect: bool = False,
    manual_ack: bool = False,
    persistent: bool = False,
) -> mqtt.Client:
    """A configured, unconnected client.

    ``reconnect``: let paho's loop reconnect by itself (subscribers). The publisher passes False
    and runs one client per session, so it decides what to resend and how long to back off.
    ``manual_ack``: paho sends PUBACK only when the caller calls ``client.ack(mid, qos)`` (a
    subscriber that acknowledges after its database committed). ``persistent``: an MQTT 3.1.1
    session the broker keeps while the client is away (MQTT 5 asks for it at connect time with
    ``clean_start=False`` and a session expiry instead; paho refuses ``clean_session`` there).
    """
    clean_session = None if protocol == mqtt.MQTTv5 or not persistent else False
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=protocol,
        reconnect_on_failure=reconnect,
        clean_session=clean_session,
        manual_ack=manual_ack,
    )
    client.max_inflight_messages_set(max_inflight)
    client.connect_timeout = 10.0
    if config.username is not None:
        client.username_pw_set(config.username, password)
    if config.tls is not None:
        client.tls_set_context(tls_context(config.tls))
        if not config.tls.verify_hostname:
            logger.warning(
                "mqtt.tls.verify_hostname = false: the broker's certificate name is not checked, "
                "so anyone with a certificate from this CA can pose as %s",
                config.host,
            )
            client.tls_insecure_set(True)
    return client


def is_protocol_refusal(reason: ReasonCode) -> bool:
    """True when the broker refused our MQTT version (a 3.1.1-only broker answering MQTT 5)."""
    return reason.is_failure and reason.value == _UNSUPPORTED_PROTOCOL


def connack_failure(config: MqttConfig, reason: ReasonCode) -> ConnectFailure:
    """Explain a refused CONNACK (``reason.is_failure``)."""
    where = f"MQTT broker {config.host}:{config.port}"
    if reason.value == _UNSUPPORTED_PROTOCOL:
        return ConnectFailure(
            BrokerError(
                f"{where} refused the connection: {reason} (mqtt.protocol = {config.protocol!r})",
                hint='set mqtt.protocol = "auto" or "3.1.1" for a broker without MQTT 5',
            ),
            fatal=True,
        )
    if reason.value in _AUTH_REFUSALS:
        user = f"user {config.username!r}" if config.username else "no user name (anonymous)"
        return ConnectFailure(
            BrokerError(
                f"{where} refused the connection: {reason} ({user})",
                hint=(
                    "check mqtt.username and the password file (mqtt.password_file, or the systemd "
                    f"credential '{CREDENTIAL_NAME}'), and that the broker's password file and ACL "
                    "contain this user; the broker log names the reason"
                ),
            ),
            fatal=True,
        )
    return ConnectFailure(
        BrokerError(
            f"{where} refused the connection: {reason}",
            hint="the broker is up but not accepting clients; see the broker's log",
        ),
        fatal=False,
    )


def socket_failure(config: MqttConfig, exc: OSError) -> ConnectFailure:
    """Explain an exception raised while opening the TCP/TLS connection."""
    where = f"MQTT broker {config.host}:{config.port}"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return ConnectFailure(
            BrokerError(
                f"TLS: the certificate of {where} was not accepted: "
                f"{exc.verify_message or exc.reason}",
                hint=(
                    "check that mqtt.tls.ca_file is the CA that signed the broker's certificate "
                    "and "
                    "that mqtt.host is a name (or address) listed in that certificate"
                ),
            ),
            fatal=True,
        )
    if isinstance(exc, ssl.SSLError):
        return ConnectFailure(
            BrokerError(
                f"TLS handshake with {where} failed: {exc.reason or exc}",
                hint="check that this port speaks TLS (8883 is usual) and the mqtt.tls settings",
            ),
            fatal=False,
        )
    if isinstance(exc, ConnectionRefusedError):
        return ConnectFailure(
            BrokerError(
                f"cannot connect to {where}: connection refused",
                hint="is the broker running and listening there? check mqtt.host and mqtt.port",
            ),
            fatal=False,
        )
    if isinstance(exc, TimeoutError) or exc.errno in (
        errno.ETIMEDOUT,
        errno.EHOSTUNREACH,
        errno.ENETUNREACH,
    ):
        reason = "timed out" if isinstance(exc, TimeoutError) else (exc.strerror or str(exc))
        return ConnectFailure(
            BrokerError(
                f"cannot reach {where}: {reason}",
                hint="check mqtt.host, the network and any firewall between device and broker",
            ),
            fatal=False,
        )
    return ConnectFailure(
        BrokerError(
            f"cannot connect to {where}: {exc.strerror or exc}",
            hint="check mqtt.host (name resolution), mqtt.port and the network",
        ),
        fatal=False,
    )
