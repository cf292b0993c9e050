"""``anoncam diagnose`` MQTT checks against a real Mosquitto: up, down, wrong password, ACL,
TLS with certificates about to expire or expired (made here with the openssl command line).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import jsonschema
import pytest

from firmware.config.settings import Config
from firmware.diagnostics import Context, Host, Status
from firmware.diagnostics import mqtt as mqtt_checks
from firmware.diagnostics.base import Check
from firmware.diagnostics.report import load_schema
from tests.support.mosquitto import Broker, make_broker

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
USER, PASSWORD = "door-1", "right-pw-1234"
TIMEOUT = 3.0


def config(broker: Broker, tmp_path: Path, **mqtt: object) -> Config:
    data: dict[str, object] = {"host": broker.host, "port": broker.port}
    data.update(mqtt)
    return Config.model_validate(
        {
            "site": "store-042",
            "device": "door-1",
            "state_dir": str(tmp_path / "state"),
            "mqtt": data,
        }
    )


def run(cfg: Config, timeout: float = TIMEOUT) -> dict[str, Check]:
    checks = mqtt_checks.run(Context(cfg, Host(), timeout_s=timeout))
    assert [c.name for c in checks] == list(mqtt_checks.NAMES)
    return {c.name: c for c in checks}


def password_file(tmp_path: Path, secret: str) -> Path:
    path = tmp_path / "mqtt-password"
    path.write_text(secret + "\n")
    path.chmod(0o600)
    return path


@pytest.fixture
def auth_broker(tmp_path: Path) -> Iterator[Broker]:
    passwd = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"
    pwfile = tmp_path / "passwd"
    subprocess.run(
        [passwd, "-b", "-c", str(pwfile), USER, PASSWORD], check=True, capture_output=True
    )
    broker = make_broker(tmp_path / "auth", f"password_file {pwfile}", anonymous=False)
    broker.start()
    yield broker
    broker.stop()


def test_broker_up_all_ok_with_round_trip_latency(mosquitto: Broker, tmp_path: Path) -> None:
    """A reachable anonymous broker: every step OK, the round trip measured in ms on the
    device's own diagnostics topic; TLS not configured is a SKIP on loopback."""
    checks = run(config(mosquitto, tmp_path))
    assert checks["mqtt.dns"].status == Status.OK
    assert checks["mqtt.tcp"].status == Status.OK and checks["mqtt.tcp"].figures["ms"] >= 0
    assert checks["mqtt.tls"].status == Status.SKIP
    assert checks["mqtt.auth"].status == Status.OK and "MQTT 5" in checks["mqtt.auth"].detail
    trip = checks["mqtt.roundtrip"]
    assert trip.status == Status.OK, trip.detail
    assert trip.figures["topic"] == "anoncam/store-042/door-1/diagnostics"
    assert 0 < trip.figures["latency_ms"] < TIMEOUT * 1000


def test_broker_down_fails_with_the_fix(mosquitto: Broker, tmp_path: Path) -> None:
    """Broker stopped: TCP FAILs with 'connection refused' and the fix; later steps are SKIPped
    with the reason instead of piling up more FAILs."""
    cfg = config(mosquitto, tmp_path)
    mosquitto.stop()
    checks = run(cfg)
    tcp = checks["mqtt.tcp"]
    assert tcp.status == Status.FAIL and "connection refused" in tcp.detail
    assert "is the broker running" in tcp.hint
    for name in ("mqtt.tls", "mqtt.auth", "mqtt.roundtrip"):
        assert checks[name].status == Status.SKIP and "no TCP connection" in checks[name].detail


def test_unresolvable_host_fails_at_dns(tmp_path: Path) -> None:
    cfg = Config.model_validate({"mqtt": {"host": "no-such-broker.invalid", "port": 1883}})
    checks = mqtt_checks.run(Context(cfg, Host(), timeout_s=TIMEOUT))
    assert checks[0].name == "mqtt.dns" and checks[0].status == Status.FAIL
    assert "no-such-broker.invalid" in checks[0].detail and "DNS" in checks[0].hint


def test_wrong_password_fails_not_authorized(auth_broker: Broker, tmp_path: Path) -> None:
    """A password file made by mosquitto_passwd, and the wrong password in the device's file:
    FAIL 'Not authorized' naming the user, with the fix; the round trip is not attempted."""
    cfg = config(
        auth_broker, tmp_path, username=USER, password_file=str(password_file(tmp_path, "WrOnG"))
    )
    checks = run(cfg)
    auth = checks["mqtt.auth"]
    assert auth.status == Status.FAIL
    assert "not authorized" in auth.detail.lower() and repr(USER) in auth.detail
    assert "password" in auth.hint and "ACL" in auth.hint
    assert "WrOnG" not in json.dumps(auth.to_dict())
    assert checks["mqtt.roundtrip"].status == Status.SKIP


def test_right_password_ok(auth_broker: Broker, tmp_path: Path) -> None:
    cfg = config(
        auth_broker, tmp_path, username=USER, password_file=str(password_file(tmp_path, PASSWORD))
    )
    checks = run(cfg)
    assert checks["mqtt.auth"].status == Status.OK
    assert f"user {USER!r}" in checks["mqtt.auth"].detail
    assert checks["mqtt.roundtrip"].status == Status.OK


def test_missing_password_file_fails_naming_the_field(auth_broker: Broker, tmp_path: Path) -> None:
    cfg = config(auth_broker, tmp_path, username=USER, password_file=str(tmp_path / "absent"))
    auth = run(cfg)["mqtt.auth"]
    assert auth.status == Status.FAIL and "mqtt.password_file" in auth.detail


def test_acl_forbidding_read_is_a_warning(tmp_path: Path) -> None:
    """The device may write its topics but not read them (a locked-down fleet ACL): the round
    trip cannot be measured, which is a WARN saying so, not a FAIL."""
    passwd = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"
    pwfile = tmp_path / "passwd"
    subprocess.run(
        [passwd, "-b", "-c", str(pwfile), USER, PASSWORD], check=True, capture_output=True
    )
    acl = tmp_path / "acl"
    acl.write_text(f"user {USER}\ntopic write anoncam/#\n")
    broker = make_broker(
        tmp_path / "acl-broker", f"password_file {pwfile}\nacl_file {acl}", anonymous=False
    )
    broker.start()
    try:
        cfg = config(
            broker, tmp_path, username=USER, password_file=str(password_file(tmp_path, PASSWORD))
        )
        # Mosquitto 2.0 grants the SUBACK and silently withholds the message: the check waits
        # out its timeout, so keep it short here.
        checks = run(cfg, timeout=1.0)
    finally:
        broker.stop()
    assert checks["mqtt.auth"].status == Status.OK
    trip = checks["mqtt.roundtrip"]
    assert trip.status == Status.WARN, trip.detail
    assert "ACL" in trip.detail and "ACL" in trip.hint
    assert trip.figures["puback_ms"] >= 0


def test_password_over_plain_tcp_to_a_remote_broker_warns() -> None:
    cfg = Config.model_validate({"mqtt": {"host": "192.0.2.10", "username": "u"}})
    check = mqtt_checks.check_tls(Context(cfg, Host()))
    assert check.status == Status.WARN and "clear text" in check.detail


# ------------------------------------------------------------------------------------ TLS
@dataclass(frozen=True)
class Pki:
    directory: Path
    ca: Path

    def server(self, name: str, not_before: datetime, not_after: datetime) -> tuple[Path, Path]:
        """A server certificate for 127.0.0.1/localhost, signed by the CA, with these dates."""
        d = self.directory
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
            "/CN=localhost",
            cwd=d,
        )
        _openssl(
            "ca",
            "-batch",
            "-config",
            "ca.cnf",
            "-in",
            f"{name}.csr",
            "-out",
            f"{name}.crt",
            "-notext",
            "-startdate",
            not_before.strftime("%Y%m%d%H%M%SZ"),
            "-enddate",
            not_after.strftime("%Y%m%d%H%M%SZ"),
            cwd=d,
        )
        return d / f"{name}.crt", d / f"{name}.key"


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


_CA_CNF = """\
[ca]
default_ca = test_ca
[test_ca]
dir = .
database = index.txt
new_certs_dir = .
certificate = ca.crt
private_key = ca.key
serial = serial
default_md = sha256
policy = any
unique_subject = no
x509_extensions = server
[any]
commonName = supplied
[server]
subjectAltName = DNS:localhost,IP:127.0.0.1
basicConstraints = CA:FALSE
keyUsage = digitalSignature
extendedKeyUsage = serverAuth
"""


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    if shutil.which("openssl") is None:
        pytest.fail("the openssl command makes the test certificates: apt-get install openssl")
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
        "3650",
        "-subj",
        "/CN=anoncam diagnose test CA",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
        cwd=d,
    )
    (d / "ca.cnf").write_text(_CA_CNF)
    (d / "index.txt").write_text("")
    (d / "serial").write_text("1000\n")
    return Pki(d, d / "ca.crt")


def tls_run(
    pki: Pki, tmp_path: Path, name: str, not_before: datetime, not_after: datetime
) -> dict[str, Check]:
    cert, key = pki.server(name, not_before, not_after)
    broker = make_broker(tmp_path / name, f"certfile {cert}\nkeyfile {key}")
    broker.start()
    try:
        return run(config(broker, tmp_path, tls={"ca_file": str(pki.ca)}))
    finally:
        broker.stop()


def test_tls_certificate_expiring_in_10_days_warns_with_days(pki: Pki, tmp_path: Path) -> None:
    """The broker's certificate is valid but expires in 10 days: WARN with the day count and
    the date; MQTT over that TLS connection still works."""
    now = datetime.now(UTC)
    checks = tls_run(pki, tmp_path, "soon", now - timedelta(days=300), now + timedelta(days=10))
    tls = checks["mqtt.tls"]
    assert tls.status == Status.WARN, tls.detail
    assert "expires in 10 day(s)" in tls.detail
    assert tls.figures["days_left"] == pytest.approx(10, abs=0.1)
    assert tls.figures["not_after"] == (now + timedelta(days=10)).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert "renew" in tls.hint
    assert checks["mqtt.auth"].status == Status.OK
    assert checks["mqtt.roundtrip"].status == Status.OK


def test_tls_certificate_valid_for_a_year_is_ok(pki: Pki, tmp_path: Path) -> None:
    now = datetime.now(UTC)
    checks = tls_run(pki, tmp_path, "fine", now - timedelta(days=1), now + timedelta(days=365))
    tls = checks["mqtt.tls"]
    assert tls.status == Status.OK, tls.detail
    assert tls.figures["version"] in ("TLSv1.2", "TLSv1.3")
    assert "expires in 365 day(s)" in tls.detail


def test_tls_expired_certificate_fails_with_how_long_ago(pki: Pki, tmp_path: Path) -> None:
    """Expired: the handshake is refused; the dates are still read (from the DER) so the FAIL
    says how long ago, and the fix says to renew."""
    now = datetime.now(UTC)
    checks = tls_run(pki, tmp_path, "old", now - timedelta(days=400), now - timedelta(days=3))
    tls = checks["mqtt.tls"]
    assert tls.status == Status.FAIL
    assert "expired 3 day(s) ago" in tls.detail
    assert "renew" in tls.hint
    assert checks["mqtt.auth"].status == Status.SKIP


def test_tls_untrusted_ca_fails(pki: Pki, tmp_path: Path) -> None:
    """A CA file that did not sign the broker's certificate: FAIL with the ca_file fix."""
    now = datetime.now(UTC)
    cert, key = pki.server("untrusted", now - timedelta(days=1), now + timedelta(days=90))
    broker = make_broker(tmp_path / "u", f"certfile {cert}\nkeyfile {key}")
    broker.start()
    try:
        checks = run(config(broker, tmp_path, tls={"ca_file": str(cert)}))  # not the CA
    finally:
        broker.stop()
    tls = checks["mqtt.tls"]
    assert tls.status == Status.FAIL and "ca_file" in tls.hint
    assert tls.figures["days_left"] == pytest.approx(90, abs=0.1)


def test_der_not_after_matches_openssl(pki: Pki) -> None:
    """The DER reader agrees with openssl on notAfter, for a date past 2049 (GeneralizedTime)
    as well as a UTCTime."""
    for name, after in (
        ("utc", datetime(2031, 5, 6, 7, 8, 9, tzinfo=UTC)),
        ("gen", datetime(2051, 1, 2, 3, 4, 5, tzinfo=UTC)),
    ):
        cert, _ = pki.server(name, datetime(2024, 1, 1, tzinfo=UTC), after)
        der = subprocess.run(
            ["openssl", "x509", "-in", str(cert), "-outform", "DER"],
            capture_output=True,
            check=True,
        ).stdout
        assert mqtt_checks.cert_not_after(der) == after


# ------------------------------------------------------------------------------------ CLI
def _write_config(tmp_path: Path, broker: Broker) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(
        f'site = "store-042"\ndevice = "door-1"\nstate_dir = "{tmp_path / "state"}"\n'
        f'[source]\nkind = "synthetic"\nwidth = 320\nheight = 240\n'
        f'[mqtt]\nhost = "{broker.host}"\nport = {broker.port}\n'
    )
    return path


def test_cli_on_this_machine_against_a_real_broker(mosquitto: Broker, tmp_path: Path) -> None:
    """The command a field tech runs, on this machine's real host checks and a real broker:
    the table has every family, exit status 0 without FAILs; --json validates; after the broker
    is stopped the same command exits 1."""
    cfg = _write_config(tmp_path, mosquitto)
    cmd = [
        sys.executable,
        "-m",
        "firmware",
        "-q",
        "diagnose",
        "--config",
        str(cfg),
        "--timeout",
        "3",
        "--only",
        "camera,mqtt,clock,power,storage,service",
    ]
    table = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=REPO, check=False)
    for family in (
        "camera.source",
        "mqtt.roundtrip",
        "clock.sync",
        "power.temperature",
        "storage.outbox",
        "service.config",
    ):
        assert family in table.stdout
    assert "OK      mqtt.roundtrip" in table.stdout
    assert table.returncode == (1 if "FAIL  " in table.stdout else 0), table.stdout
    as_json = subprocess.run(
        [*cmd, "--json"], capture_output=True, text=True, timeout=120, cwd=REPO, check=False
    )
    data = json.loads(as_json.stdout)
    jsonschema.validate(data, load_schema())
    assert as_json.returncode == (1 if data["summary"]["FAIL"] else 0)
    mosquitto.stop()
    down = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=REPO, check=False)
    assert down.returncode == 1 and "FAIL    mqtt.tcp" in down.stdout
