"""Broker authentication, TLS and protocol negotiation, against a real Mosquitto.

Credentials come from ``mosquitto_passwd``, certificates from the ``openssl`` command line (a test
CA, a server certificate for 127.0.0.1/localhost and one for the wrong name).
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest

from firmware.config.settings import MqttConfig, TlsConfig
from firmware.errors import BrokerError, ConfigError
from firmware.mqtt.connect import read_password
from firmware.mqtt.publish import Publisher
from firmware.mqtt.subscribe.client import Subscriber
from firmware.outbox import Outbox
from tests.integration.test_publish import DEVICE, REPO, SITE, Recorder, fill, health
from tests.support.mosquitto import Broker, free_port, make_broker

pytestmark = pytest.mark.integration

USER, PASSWORD = "door-1", "s3cret-pass"
WRONG = "WrOnG-pw-4711"


@pytest.fixture
def outbox(tmp_path: Path) -> Iterator[Outbox]:
    box = Outbox(tmp_path / "outbox.db")
    yield box
    box.close()


def _wait_until(cond: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.05)
    return cond()


def publisher(config: MqttConfig, outbox: Outbox, **kw: Any) -> Publisher:
    return Publisher(
        config, site=SITE, device=DEVICE, outbox=outbox, health=health, version="0.1.0-test", **kw
    )


# --------------------------------------------------------------------------- authentication
@pytest.fixture
def auth_broker(tmp_path: Path) -> Iterator[Broker]:
    passwd = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"
    pwfile = tmp_path / "passwd"
    subprocess.run(
        [passwd, "-b", "-c", str(pwfile), USER, PASSWORD], check=True, capture_output=True
    )
    pwfile.chmod(0o600)
    broker = make_broker(tmp_path / "auth", f"password_file {pwfile}", anonymous=False)
    broker.start()
    yield broker
    broker.stop()


def _password_file(tmp_path: Path, secret: str) -> Path:
    path = tmp_path / "mqtt-password"
    path.write_text(secret + "\n")  # as 'echo secret > file' writes it
    return path


def test_right_password_delivers(auth_broker: Broker, outbox: Outbox, tmp_path: Path) -> None:
    """User and password file accepted by the broker: windows flow."""
    config = MqttConfig(
        host=auth_broker.host,
        port=auth_broker.port,
        username=USER,
        password_file=_password_file(tmp_path, PASSWORD),
    )
    rec = Recorder(
        auth_broker, ["anoncam/+/+/counts"], configure=lambda c: c.username_pw_set(USER, PASSWORD)
    )
    pub = publisher(config, outbox)
    assert pub.start(wait_connected_s=5)
    fill(outbox, 3)
    pub.wake()
    assert rec.wait(lambda r: r.seqs() == [1, 2, 3], 5)
    assert pub.stop(5)
    rec.close()


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
def test_wrong_password_fails_fast_and_loud(
    auth_broker: Broker,
    outbox: Outbox,
    tmp_path: Path,
    protocol: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A refused password raises BrokerError from start() within a second or two, names the user
    and the fix, is logged as an ERROR, and is not retried in a silent tight loop."""
    config = MqttConfig(
        host=auth_broker.host,
        port=auth_broker.port,
        username=USER,
        password_file=_password_file(tmp_path, WRONG),
        protocol=protocol,
    )
    fill(outbox, 1)
    pub = publisher(config, outbox)
    # A refusal raises (a timeout would return False): the wait is only a bound.
    with (
        caplog.at_level(logging.ERROR, logger="firmware.mqtt.publish"),
        pytest.raises(BrokerError) as err,
    ):
        pub.start(wait_connected_s=60)
    message = str(err.value)
    assert USER in message
    assert "Not authorized" in message or "Bad user name or password" in message
    assert "mqtt.username" in err.value.hint and "password" in err.value.hint
    assert WRONG not in caplog.text and WRONG not in message
    assert any(
        r.levelno == logging.ERROR and "mqtt.username" in r.getMessage() for r in caplog.records
    )
    assert not pub.connected and pub.last_error is not None
    # No retry loop hammering the broker: after a refusal the next attempt waits fatal_retry_s
    # (60 s by default), so waiting for a second failure within 5 s must time out.
    assert not _wait_until(lambda: pub.failed_attempts > 1, 5.0)
    assert pub.failed_attempts == 1
    with pytest.raises(BrokerError):
        pub.wait_connected(0.1)
    # Nothing can drain: stop says so (and does not wait for the refused broker).
    assert pub.stop(drain_timeout_s=10) is False


def test_missing_password_file_is_a_config_error(tmp_path: Path, outbox: Outbox) -> None:
    """A password_file that does not exist is a ConfigError naming the field and the path."""
    missing = tmp_path / "nope"
    config = MqttConfig(username=USER, password_file=missing)
    with pytest.raises(ConfigError) as err:
        publisher(config, outbox)
    assert "mqtt.password_file" in str(err.value) and str(missing) in str(err.value)


def test_systemd_credential_is_used(
    auth_broker: Broker, outbox: Outbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without password_file, a user name plus $CREDENTIALS_DIRECTORY/mqtt-password logs in."""
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "mqtt-password").write_text(PASSWORD + "\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    config = MqttConfig(host=auth_broker.host, port=auth_broker.port, username=USER)
    assert read_password(config) == PASSWORD
    pub = publisher(config, outbox)
    assert pub.start(wait_connected_s=5)
    assert pub.stop(2)


def test_subscribe_cli_reports_auth_failure(auth_broker: Broker, tmp_path: Path) -> None:
    """'anoncam subscribe' with a wrong password exits 1 with the reason and the fix."""
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "firmware",
            "subscribe",
            "--mqtt-host",
            auth_broker.host,
            "--mqtt-port",
            str(auth_broker.port),
            "--username",
            USER,
            "--password-file",
            str(_password_file(tmp_path, WRONG)),
            "--count",
            "1",
            "--timeout",
            "5",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=REPO,
    )
    assert result.returncode == 1, result.stderr
    assert "refused the connection" in result.stderr and "fix:" in result.stderr


def test_rejected_window_stays_in_outbox(tmp_path: Path, outbox: Outbox) -> None:
    """MQTT 5: the broker's ACL refuses the counts topic (PUBACK 'Not authorized'): the rows stay
    in the outbox, the reason is exposed, and the publisher pauses instead of hammering."""
    passwd = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"
    pwfile, acl = tmp_path / "passwd", tmp_path / "acl"
    subprocess.run(
        [passwd, "-b", "-c", str(pwfile), USER, PASSWORD], check=True, capture_output=True
    )
    acl.write_text(f"user {USER}\ntopic write anoncam/+/+/status\ntopic write anoncam/+/+/health\n")
    broker = make_broker(
        tmp_path / "acl-broker", f"password_file {pwfile}\nacl_file {acl}", anonymous=False
    )
    broker.start()
    try:
        config = MqttConfig(
            host=broker.host,
            port=broker.port,
            username=USER,
            password_file=_password_file(tmp_path, PASSWORD),
            protocol="5",
        )
        pub = publisher(config, outbox)
        assert pub.start(wait_connected_s=5)
        fill(outbox, 3)
        pub.wake()
        deadline = time.monotonic() + 5
        while pub.last_error is None and time.monotonic() < deadline:
            time.sleep(0.02)
        err = pub.last_error
        assert err is not None and "rejected window seq" in str(err)
        assert "Not authorized" in str(err) and "ACL" in err.hint
        time.sleep(0.5)
        assert outbox.stats().depth == 3 and pub.connected
        assert pub.stop(0.3) is False
    finally:
        broker.stop()


# --------------------------------------------------------------------------- TLS
@dataclass(frozen=True)
class Pki:
    ca: Path
    cert: Path  # for 127.0.0.1 and localhost
    key: Path
    wrong_cert: Path  # for wrong.example only
    wrong_key: Path


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def _server_cert(d: Path, name: str, san: str) -> tuple[Path, Path]:
    _openssl(
        "req",
        "-new",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        f"{name}.key",
        "-out",
        f"{name}.csr",
        "-subj",
        f"/CN={san.split(',')[0][4:]}",
        cwd=d,
    )
    (d / f"{name}.ext").write_text(
        f"subjectAltName={san}\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\n"
        "extendedKeyUsage=serverAuth\nauthorityKeyIdentifier=keyid\nsubjectKeyIdentifier=hash\n"
    )
    _openssl(
        "x509",
        "-req",
        "-in",
        f"{name}.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        f"{name}.crt",
        "-days",
        "2",
        "-sha256",
        "-extfile",
        f"{name}.ext",
        cwd=d,
    )
    return d / f"{name}.crt", d / f"{name}.key"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    if shutil.which("openssl") is None:
        pytest.fail(
            "the openssl command is needed to make test certificates: apt-get install openssl"
        )
    d = tmp_path_factory.mktemp("pki")
    _openssl(
        "req",
        "-x509",
        "-new",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        "2",
        "-subj",
        "/CN=anoncam test CA",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
        cwd=d,
    )
    cert, key = _server_cert(d, "server", "DNS:localhost,IP:127.0.0.1")
    wrong_cert, wrong_key = _server_cert(d, "wrong", "DNS:wrong.example")
    return Pki(d / "ca.crt", cert, key, wrong_cert, wrong_key)


def _tls_broker(directory: Path, pki: Pki, *, wrong: bool = False) -> Broker:
    cert, key = (pki.wrong_cert, pki.wrong_key) if wrong else (pki.cert, pki.key)
    return make_broker(directory, f"cafile {pki.ca}\ncertfile {cert}\nkeyfile {key}")


@pytest.fixture
def tls_broker(tmp_path: Path, pki: Pki) -> Iterator[Broker]:
    broker = _tls_broker(tmp_path / "tls", pki)
    broker.start()
    yield broker
    broker.stop()


def test_tls_with_ca_and_hostname_check(tls_broker: Broker, pki: Pki, outbox: Outbox) -> None:
    """TLS with our CA and hostname verification on: windows flow over the encrypted link."""
    config = MqttConfig(host="127.0.0.1", port=tls_broker.port, tls=TlsConfig(ca_file=pki.ca))

    def tls_client(c: mqtt.Client) -> None:
        c.tls_set(ca_certs=str(pki.ca))

    rec = Recorder(tls_broker, ["anoncam/+/+/counts"], configure=tls_client)
    pub = publisher(config, outbox)
    assert pub.start(wait_connected_s=5)
    fill(outbox, 2)
    pub.wake()
    assert rec.wait(lambda r: r.seqs() == [1, 2], 5)
    assert pub.stop(5)
    rec.close()


def test_tls_wrong_host_name_is_refused(
    tmp_path: Path, pki: Pki, outbox: Outbox, caplog: pytest.LogCaptureFixture
) -> None:
    """A broker certificate for another name fails verification with a clear, fatal BrokerError;
    with verify_hostname = false the same broker is accepted, with a WARNING."""
    broker = _tls_broker(tmp_path / "wrong", pki, wrong=True)
    broker.start()
    try:
        config = MqttConfig(host="127.0.0.1", port=broker.port, tls=TlsConfig(ca_file=pki.ca))
        pub = publisher(config, outbox)
        with pytest.raises(BrokerError) as err:
            pub.start(wait_connected_s=5)
        assert "certificate" in str(err.value) and "127.0.0.1" in str(err.value)
        assert "mqtt.tls.ca_file" in err.value.hint
        pub.stop(0.5)

        insecure = MqttConfig(
            host="127.0.0.1", port=broker.port, tls=TlsConfig(ca_file=pki.ca, verify_hostname=False)
        )
        with caplog.at_level(logging.WARNING, logger="firmware.mqtt.connect"):
            pub2 = publisher(insecure, outbox)
            assert pub2.start(wait_connected_s=5)
        assert any("verify_hostname = false" in r.getMessage() for r in caplog.records)
        assert pub2.stop(1)
    finally:
        broker.stop()


def test_tls_untrusted_ca_is_refused(tls_broker: Broker, tmp_path: Path, outbox: Outbox) -> None:
    """A CA that did not sign the broker's certificate: BrokerError naming the certificate."""
    other = tmp_path / "other"
    other.mkdir()
    _openssl(
        "req",
        "-x509",
        "-new",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        "2",
        "-subj",
        "/CN=other CA",
        cwd=other,
    )
    config = MqttConfig(
        host="127.0.0.1", port=tls_broker.port, tls=TlsConfig(ca_file=other / "ca.crt")
    )
    pub = publisher(config, outbox)
    with pytest.raises(BrokerError, match="certificate"):
        pub.start(wait_connected_s=5)
    pub.stop(0.1)


@pytest.mark.parametrize(
    ("tls", "field"),
    [
        (TlsConfig(ca_file=Path("/nonexistent/ca.crt")), "mqtt.tls.ca_file"),
        (
            TlsConfig(cert_file=Path("/nonexistent/c.crt"), key_file=Path("/nonexistent/c.key")),
            "mqtt.tls.cert_file",
        ),
    ],
)
def test_bad_tls_paths_are_config_errors(tls: TlsConfig, field: str, outbox: Outbox) -> None:
    """Certificate paths that do not exist fail at construction, naming the config field."""
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        publisher(MqttConfig(tls=tls), outbox)


def test_not_a_pem_ca_is_a_config_error(tmp_path: Path, outbox: Outbox) -> None:
    """A ca_file that is not a certificate is a ConfigError naming mqtt.tls.ca_file."""
    junk = tmp_path / "ca.crt"
    junk.write_text("not a certificate\n")
    with pytest.raises(ConfigError, match=r"mqtt\.tls\.ca_file"):
        publisher(MqttConfig(tls=TlsConfig(ca_file=junk)), outbox)


# --------------------------------------------------------------------------- protocol fallback
class Mqtt311OnlyProxy:
    """A TCP front for Mosquitto that behaves like a 3.1.1-only broker: it answers an MQTT 5
    CONNECT with the 3.1.1 'unacceptable protocol version' CONNACK and forwards everything else."""

    def __init__(self, upstream: Broker) -> None:
        self.upstream = upstream
        self.refused = 0
        self.port = free_port()
        self._server = socket.create_server(("127.0.0.1", self.port))
        self._server.settimeout(0.2)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._sockets: list[socket.socket] = []
        self._spawn(self._accept)

    def _spawn(self, target: Any, *args: Any) -> None:
        t = threading.Thread(target=target, args=args, daemon=True)
        self._threads.append(t)
        t.start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self._sockets.append(conn)
            self._spawn(self._serve, conn)

    def _serve(self, conn: socket.socket) -> None:
        head = conn.recv(64)  # CONNECT: 0x10, length, 0x00 0x04 "MQTT", protocol level
        level_at = 2 + 6 if head[1] < 0x80 else 3 + 6
        if len(head) > level_at and head[level_at] == 5:
            self.refused += 1
            conn.sendall(b"\x20\x02\x00\x01")
            conn.close()
            return
        up = socket.create_connection((self.upstream.host, self.upstream.port))
        self._sockets.append(up)
        up.sendall(head)
        self._spawn(self._pump, up, conn)
        self._pump(conn, up)

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                dst.sendall(data)
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self._stop.set()
        self._server.close()
        for s in self._sockets:
            s.close()
        for t in self._threads:
            t.join(2)


def test_auto_protocol_falls_back_to_311(
    mosquitto: Broker, outbox: Outbox, caplog: pytest.LogCaptureFixture
) -> None:
    """mqtt.protocol = auto against a 3.1.1-only broker: one refused MQTT 5 attempt, one WARNING,
    then MQTT 3.1.1 and delivery (the subscriber falls back too). With mqtt.protocol = "5" the
    refusal is fatal and explained."""
    proxy = Mqtt311OnlyProxy(mosquitto)
    try:
        rec = Recorder(mosquitto, ["anoncam/+/+/counts"])
        config = MqttConfig(host="127.0.0.1", port=proxy.port, protocol="auto")
        pub = publisher(config, outbox)
        with caplog.at_level(logging.WARNING, logger="firmware.mqtt.publish"):
            assert pub.start(wait_connected_s=5)
        assert pub.protocol == "3.1.1" and proxy.refused == 1
        assert sum("3.1.1" in r.getMessage() for r in caplog.records) == 1
        fill(outbox, 2)
        pub.wake()
        assert rec.wait(lambda r: r.seqs() == [1, 2], 5)
        assert pub.stop(5)
        rec.close()

        subscriber = Subscriber(config)  # the consumer side negotiates the same way
        subscriber.connect(5)
        subscriber.close()

        strict = publisher(MqttConfig(host="127.0.0.1", port=proxy.port, protocol="5"), outbox)
        with pytest.raises(BrokerError) as err:
            strict.start(wait_connected_s=5)
        assert "mqtt.protocol" in err.value.hint
        strict.stop(0.1)
    finally:
        proxy.close()


def test_tls_context_verifies_by_default(pki: Pki) -> None:
    """The context we build checks both the chain and the host name unless told otherwise."""
    from firmware.mqtt.connect import tls_context

    ctx = tls_context(TlsConfig(ca_file=pki.ca))
    assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname
