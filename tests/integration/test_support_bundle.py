"""``anoncam support-bundle``: no secret and no image in it unless asked, written atomically.

Known secret strings are planted where a careless bundle would pick them up: in the MQTT
password file, a preview token file, a TLS key file, a comment of the config file, and in the
names of those files. The bundle is built for real (real broker with that password, real host
checks), every member is extracted and searched for every secret.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path

import jsonschema
import pytest

from firmware.config.settings import Config
from firmware.device.recorded import RecordedRunner
from firmware.diagnostics import Context, Host, diagnose
from firmware.diagnostics.report import load_schema
from firmware.errors import OutputError
from firmware.jobs.support_bundle import REDACTED, build_bundle, is_secret_key
from tests.support.mosquitto import Broker, make_broker

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
USER = "door-1"
PASSWORD = "PW-SECRET-4f1a9c2e"
TOKEN = "TOKEN-SECRET-77aa01"
KEY = "KEY-SECRET-b0b5eed5"
COMMENT = "COMMENT-SECRET-9bd3"
PATH_WORD = "PATHSECRET-e1e1"  # part of the password file's name: the path is redacted too
SECRETS = (PASSWORD, TOKEN, KEY, COMMENT, PATH_WORD)
IMAGE_MAGIC = (b"\xff\xd8\xff", b"\x89PNG", b"GIF8", b"RIFF")


@pytest.fixture
def auth_broker(tmp_path: Path) -> Iterator[Broker]:
    passwd = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"
    pwfile = tmp_path / "broker-passwd"
    subprocess.run(
        [passwd, "-b", "-c", str(pwfile), USER, PASSWORD], check=True, capture_output=True
    )
    broker = make_broker(tmp_path / "broker", f"password_file {pwfile}", anonymous=False)
    broker.start()
    yield broker
    broker.stop()


def planted_config(tmp_path: Path, broker: Broker, *, source: str = "") -> Path:
    secrets_dir = tmp_path / "credentials"
    secrets_dir.mkdir()
    pw = secrets_dir / f"mqtt-password-{PATH_WORD}"
    pw.write_text(PASSWORD + "\n")
    pw.chmod(0o600)
    token = secrets_dir / "preview-token"
    token.write_text(TOKEN + "\n")
    token.chmod(0o640)
    key = secrets_dir / "client.key"
    key.write_text(f"-----BEGIN PRIVATE KEY-----\n{KEY}\n-----END PRIVATE KEY-----\n")
    source = source or '[source]\nkind = "synthetic"\nwidth = 320\nheight = 240\n'
    cfg = tmp_path / "config.toml"
    cfg.write_text(
        f"# the old broker password was {COMMENT}; do not reuse it\n"
        f'site = "store-042"\ndevice = "door-1"\nstate_dir = "{tmp_path / "state"}"\n'
        f"{source}"
        f'[mqtt]\nhost = "{broker.host}"\nport = {broker.port}\nusername = "{USER}"\n'
        f'password_file = "{pw}"\n'
        f'[preview]\ntoken_file = "{token}"\n'
    )
    return cfg


def members(bundle: Path) -> dict[str, bytes]:
    with tarfile.open(bundle, "r:gz") as tar:
        out = {}
        for info in tar.getmembers():
            assert info.isfile(), info.name
            f = tar.extractfile(info)
            assert f is not None
            out[info.name.split("/", 1)[1]] = f.read()
        tops = {info.name.split("/", 1)[0] for info in tar.getmembers()}
    assert len(tops) == 1 and next(iter(tops)).startswith("anoncam-support-")
    return out


def bundle_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "firmware", "-q", "support-bundle", *args],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=REPO,
        check=False,
    )


def test_bundle_contains_no_secret_and_no_image(auth_broker: Broker, tmp_path: Path) -> None:
    """The CLI's bundle: every expected member, the diagnosis valid against its schema (and it
    did authenticate with the planted password), secret keys redacted, and none of the planted
    strings in any member, not even in diagnose details or file names. No image of any kind."""
    cfg = planted_config(tmp_path, auth_broker)
    out = tmp_path / "out" / "support.tar.gz"
    out.parent.mkdir()
    result = bundle_cli("-o", str(out), "--config", str(cfg))
    assert result.returncode == 0, result.stderr
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert [p.name for p in out.parent.iterdir()] == ["support.tar.gz"]  # no temp file left

    files = members(out)
    assert set(files) >= {
        "README.txt",
        "manifest.json",
        "diagnose.json",
        "versions.json",
        "config.json",
        "outbox.json",
    }
    for name, data in files.items():
        for secret in SECRETS:
            assert secret.encode() not in data, f"{secret} leaked into {name}"
        assert not name.lower().endswith((".jpg", ".jpeg", ".png", ".gif", ".webp"))
        assert not data.startswith(IMAGE_MAGIC), name

    diagnosis = json.loads(files["diagnose.json"])
    jsonschema.validate(diagnosis, load_schema())
    by_name = {c["name"]: c for c in diagnosis["checks"]}
    assert by_name["mqtt.auth"]["status"] == "OK"  # the planted password was really used

    config = json.loads(files["config.json"])
    assert config["effective"]["mqtt"]["password_file"] == REDACTED
    assert config["effective"]["preview"]["token_file"] == REDACTED
    assert config["effective"]["mqtt"]["username"] == USER
    assert config["effective"]["mqtt"]["keepalive_s"] == 60  # 'keepalive' is not 'key'
    assert config["secret_files"]["mqtt.password_file"] == {
        "set": True,
        "exists": True,
        "mode": "0600",
        "readable_by_others": False,
    }
    assert config["secret_files"]["preview.token_file"]["readable_by_others"] is True

    versions = json.loads(files["versions.json"])
    for package in ("numpy", "onnxruntime", "av", "paho-mqtt"):
        assert versions["packages"][package]
    assert versions["python"] == sys.version.split()[0] and versions["os"]

    manifest = json.loads(files["manifest.json"])
    assert manifest["snapshot"] == {"asked": False, "included": False, "error": None}
    assert "snapshot.jpg" not in manifest["members"]
    outbox = json.loads(files["outbox.json"])
    assert outbox["exists"] is False and "payload" not in json.dumps(outbox)


def test_tls_key_file_is_never_included(auth_broker: Broker, tmp_path: Path) -> None:
    """key_file is redacted and its file is not copied, even when TLS is configured."""
    cfg_path = planted_config(tmp_path, auth_broker)
    key = tmp_path / "credentials" / "client.key"
    text = cfg_path.read_text().replace(
        "[preview]",
        f'[mqtt.tls]\nca_file = "{tmp_path / "ca.crt"}"\n'
        f'cert_file = "{tmp_path / "client.crt"}"\nkey_file = "{key}"\n[preview]',
    )
    cfg_path.write_text(text)
    from firmware.config.settings import load

    config = load(cfg_path)
    out = tmp_path / "b.tar.gz"
    report = {"version": "x", "host": {}, "generated": "2026-01-01T00:00:00Z", "checks": []}
    build_bundle(out, config=config, config_path=cfg_path, report=report)
    files = members(out)
    doc = json.loads(files["config.json"])
    assert doc["effective"]["mqtt"]["tls"]["key_file"] == REDACTED
    assert doc["effective"]["mqtt"]["tls"]["ca_file"].endswith("ca.crt")  # public: kept
    for data in files.values():
        assert KEY.encode() not in data and b"PRIVATE KEY" not in data


def test_journal_lines_are_scrubbed(tmp_path: Path) -> None:
    """Defence in depth: should the service ever log a secret-looking assignment or the
    password file's path, the bundle's journal copy has them replaced."""
    pw = tmp_path / f"pw-{PATH_WORD}"
    journal = (
        "Oct 17 14:10:02 cam anoncam[1]: INFO x: connecting with password=hunter2-XYZ\n"
        f"Oct 17 14:10:03 cam anoncam[1]: ERROR y: cannot read {pw}\n"
        "Oct 17 14:10:04 cam anoncam[1]: INFO z: 12 windows sent\n"
    )
    runner = RecordedRunner(
        {
            ("journalctl", "-u", "anoncam", "-n", "500", "--no-pager"): (0, journal, ""),
        }
    )
    host = Host(REPO / "tests" / "data" / "hosts" / "x86" / "root", runner)
    config = Config.model_validate(
        {"mqtt": {"username": "u", "password_file": str(pw)}, "state_dir": str(tmp_path)}
    )
    out = tmp_path / "j.tar.gz"
    report = {"version": "x", "host": {}, "generated": "2026-01-01T00:00:00Z", "checks": []}
    build_bundle(out, config=config, config_path=None, report=report, host=host)
    text = members(out)["journal.txt"].decode()
    assert "hunter2-XYZ" not in text and PATH_WORD not in text
    assert f"password={REDACTED}" in text and "12 windows sent" in text


def test_no_journal_off_systemd_is_noted(tmp_path: Path) -> None:
    """Off systemd there is no journal: the bundle is still written and says why."""
    host = Host(REPO / "tests" / "data" / "hosts" / "x86" / "root", RecordedRunner({}))
    out = tmp_path / "n.tar.gz"
    config = Config.model_validate({"state_dir": str(tmp_path)})
    report = diagnose(Context(config, host), only={"power"}).to_dict()
    build_bundle(out, config=config, config_path=None, report=report, host=host)
    files = members(out)
    assert "journal.txt" not in files
    assert "journalctl not installed" in json.loads(files["manifest.json"])["journal"]


def test_with_snapshot_includes_one_anonymized_frame(tmp_path: Path) -> None:
    """--with-snapshot adds snapshot.jpg, and it is anonymized: the raw frame holds a face the
    real detector finds; in the bundle's JPEG the detector finds none there (P2)."""
    from firmware.detect.centerface import CenterFace
    from firmware.media.image import decode_jpeg
    from tests.integration.test_snapshot import face_frame, folder_config, overlapping

    detector = CenterFace()
    frame, box = face_frame()
    assert max(overlapping(detector, frame, box), default=0.0) >= 0.5  # the face is there
    config = folder_config(
        tmp_path, state_dir=str(tmp_path / "state"), mqtt={"host": "127.0.0.1", "port": 9}
    )
    out = tmp_path / "s.tar.gz"
    report = {"version": "x", "host": {}, "generated": "2026-01-01T00:00:00Z", "checks": []}
    result = build_bundle(out, config=config, config_path=None, report=report, with_snapshot=True)
    assert result.snapshot_included and result.snapshot_error is None
    files = members(out)
    jpeg = files["snapshot.jpg"]
    assert jpeg.startswith(b"\xff\xd8\xff")
    assert overlapping(detector, decode_jpeg(jpeg), box) == []
    manifest = json.loads(files["manifest.json"])
    assert manifest["snapshot"]["included"] is True
    assert manifest["members"]["snapshot.jpg"]["bytes"] == len(jpeg)


def test_failed_snapshot_still_writes_the_bundle_and_exits_1(
    auth_broker: Broker, tmp_path: Path
) -> None:
    """The camera (here: a source file) is broken, which is when support needs the bundle:
    it is written without an image, the manifest says why, and the exit status is 1."""
    cfg = planted_config(
        tmp_path,
        auth_broker,
        source=(f'[source]\nkind = "file"\npath = "{tmp_path / "missing.mp4"}"\n'),
    )
    out = tmp_path / "f.tar.gz"
    result = bundle_cli("-o", str(out), "--config", str(cfg), "--with-snapshot")
    assert result.returncode == 1
    assert "--with-snapshot" in result.stderr and "written without an image" in result.stderr
    files = members(out)
    assert "snapshot.jpg" not in files
    snap = json.loads(files["manifest.json"])["snapshot"]
    assert snap["asked"] is True and snap["included"] is False and "missing.mp4" in snap["error"]


def test_output_folder_missing_is_an_output_error(tmp_path: Path) -> None:
    config = Config.model_validate({"state_dir": str(tmp_path)})
    report = {"version": "x", "host": {}, "generated": "2026-01-01T00:00:00Z", "checks": []}
    with pytest.raises(OutputError, match="does not exist"):
        build_bundle(
            tmp_path / "no" / "b.tar.gz",
            config=config,
            config_path=None,
            report=report,
            host=Host(run=RecordedRunner({})),
        )
    result = bundle_cli("-o", str(tmp_path / "no" / "b.tar.gz"))
    assert result.returncode == 1 and "fix:" in result.stderr


def test_rewrite_replaces_the_old_bundle_atomically(tmp_path: Path) -> None:
    """A second bundle replaces the first in one rename; the old one is readable until then
    and no temporary file is left behind."""
    config = Config.model_validate({"state_dir": str(tmp_path / "state")})
    report = {"version": "x", "host": {}, "generated": "2026-01-01T00:00:00Z", "checks": []}
    out = tmp_path / "b.tar.gz"
    out.write_bytes(b"old")
    out.chmod(0o644)
    build_bundle(
        out, config=config, config_path=None, report=report, host=Host(run=RecordedRunner({}))
    )
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert "README.txt" in members(out)
    assert sorted(os.listdir(tmp_path)) == ["b.tar.gz"]


@pytest.mark.parametrize(
    ("key", "secret"),
    [
        ("password_file", True),
        ("password", True),
        ("token_file", True),
        ("key_file", True),
        ("api_key", True),
        ("client_secret", True),
        ("keepalive_s", False),
        ("ca_file", False),
        ("verify_hostname", False),
        ("username", False),
        ("monkey", False),
    ],
)
def test_secret_key_names(key: str, secret: bool) -> None:
    assert is_secret_key(key) is secret
