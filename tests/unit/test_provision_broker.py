"""Broker files: Mosquitto's exact hash format, private secrets, idempotent re-runs, rotation."""

from __future__ import annotations

import stat
import subprocess
from pathlib import Path

import pytest

from firmware.cli import main
from firmware.errors import UsageError
from provisioning import broker, mosquitto
from provisioning.inventory.loader import load as load_inventory
from tests.unit.test_provision_support import write_fleet


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def test_hash_matches_mosquitto_passwd_format(tmp_path: Path) -> None:
    """Our verifier accepts what the real mosquitto_passwd writes, and our hashes have its shape."""
    pw = tmp_path / "pw"
    pw.touch()
    subprocess.run(["mosquitto_passwd", "-b", str(pw), "cam", "s3cret-Pa55"], check=True)
    real = mosquitto.parse_passwd(pw.read_text())["cam"]
    assert mosquitto.verify_password("s3cret-Pa55", real)
    assert not mosquitto.verify_password("wrong", real)
    ours = mosquitto.hash_password("s3cret-Pa55")
    assert ours.split("$")[1:3] == real.split("$")[1:3] == ["7", "101"]
    assert (
        [len(x) for x in ours.split("$")[3:]] == [len(x) for x in real.split("$")[3:]] == [16, 88]
    )
    # Same salt, same password: byte-identical to mosquitto_passwd's output.
    import base64

    salt = base64.b64decode(real.split("$")[3])
    assert mosquitto.hash_password("s3cret-Pa55", salt=salt) == real


def test_broker_files_private_and_idempotent(tmp_path: Path) -> None:
    """Secrets 0600 in a 0700 store; a re-run rewrites nothing and rotates nothing."""
    inv = load_inventory(write_fleet(tmp_path / "fleet"))
    out = tmp_path / "broker"
    first = broker.write_broker(inv, out)
    assert sorted(first.created) == ["dashboard", "store-042/door-1", "store-042/door-2"]
    assert _mode(out / "passwd") == 0o600
    assert _mode(inv.secrets_dir) == 0o700
    secret_files = [p for p in inv.secrets_dir.rglob("mqtt-password")]
    assert len(secret_files) == 3 and all(_mode(p) == 0o600 for p in secret_files)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    passwords = {p: p.read_bytes() for p in secret_files}
    second = broker.write_broker(inv, out)
    assert second.written == [] and second.created == [] and second.rotated == []
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert {p: p.read_bytes() for p in secret_files} == passwords
    hashes = mosquitto.parse_passwd((out / "passwd").read_text())
    for acc in mosquitto.accounts(inv):
        secret = broker.account_password(inv, acc).value
        assert mosquitto.verify_password(secret, hashes[acc.username])
    assert not any(
        secret.decode().strip() in "".join(before[n].decode() for n in before)
        for secret in passwords.values()
    )


def test_loose_secret_permissions_are_tightened(tmp_path: Path) -> None:
    inv = load_inventory(write_fleet(tmp_path / "fleet"))
    broker.write_broker(inv, tmp_path / "broker")
    secret = next(inv.secrets_dir.rglob("mqtt-password"))
    secret.chmod(0o644)
    broker.write_broker(inv, tmp_path / "broker")
    assert _mode(secret) == 0o600


def test_rotate_one_device_only(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_fleet(tmp_path / "fleet")
    out = tmp_path / "broker"
    assert main(["provision", "broker", "--inventory", str(path), "-o", str(out)]) == 0
    inv = load_inventory(path)
    old = {a.username: broker.account_password(inv, a).value for a in mosquitto.accounts(inv)}
    assert (
        main(
            [
                "provision",
                "broker",
                "--inventory",
                str(path),
                "-o",
                str(out),
                "--rotate",
                "store-042/door-2",
            ]
        )
        == 0
    )
    new = {a.username: broker.account_password(inv, a).value for a in mosquitto.accounts(inv)}
    assert new["store-042.door-2"] != old["store-042.door-2"]
    assert {k: v for k, v in new.items() if k != "store-042.door-2"} == {
        k: v for k, v in old.items() if k != "store-042.door-2"
    }
    assert "rotated password of store-042/door-2" in capsys.readouterr().out
    assert (
        main(["provision", "broker", "--inventory", str(path), "-o", str(out), "--rotate-all"]) == 0
    )
    newest = {a.username: broker.account_password(inv, a).value for a in mosquitto.accounts(inv)}
    assert all(newest[k] != new[k] for k in new)


def test_rotate_unknown_account_writes_nothing(tmp_path: Path) -> None:
    inv = load_inventory(write_fleet(tmp_path / "fleet"))
    with pytest.raises(UsageError, match="not in the inventory"):
        broker.write_broker(inv, tmp_path / "broker", rotate=["store-042/door-9"])
    assert not (tmp_path / "broker").exists() and not inv.secrets_dir.exists()


def test_acl_least_privilege(tmp_path: Path) -> None:
    """Cameras write only their own subtree and read only their own diagnostics probe;
    subscribers only read; HA adds exactly two topics."""
    inv = load_inventory(write_fleet(tmp_path / "fleet", homeassistant=True))
    acl = mosquitto.render_acl(inv)
    blocks = {b.splitlines()[1]: b.splitlines()[2:] for b in acl.split("\n\n")[1:] if b.strip()}
    assert blocks["user store-042.door-1"] == [
        "topic write anoncam/store-042/door-1/#",
        "topic write homeassistant/device/anoncam_store-042_door-1/config",
        "topic read anoncam/store-042/door-1/diagnostics",
        "topic read homeassistant/status",
    ]
    assert blocks["user dashboard"] == ["topic read anoncam/#"]
    conf = mosquitto.render_conf(inv, install_dir="/etc/mosquitto/anoncam", client_ca=False)
    assert "allow_anonymous false" in conf and "acl_file /etc/mosquitto/anoncam/acl" in conf


def test_ha_node_id_matches_the_publisher(tmp_path: Path) -> None:
    """The ACL's discovery topic must be the one firmware's publisher actually uses."""
    from firmware.config.settings import MqttConfig
    from firmware.mqtt.publish import homeassistant_discovery

    cfg = MqttConfig.model_validate({"homeassistant": {"enabled": True}})
    topic, _ = homeassistant_discovery(cfg, site="store-042", device="door-1", version="0")
    node = mosquitto.ha_node_id("anoncam", "store-042", "door-1")
    assert topic == f"homeassistant/device/{node}/config"


def test_client_certificates_signed_by_fleet_ca(tmp_path: Path) -> None:
    x509 = pytest.importorskip("cryptography.x509")
    inv = load_inventory(write_fleet(tmp_path / "fleet", tls=True, client_certificates=True))
    out = tmp_path / "broker"
    broker.write_broker(inv, out)
    ca = x509.load_pem_x509_certificate((out / "fleet-ca.crt").read_bytes())
    folder = inv.secrets_dir / "devices" / "store-042" / "door-1"
    cert = x509.load_pem_x509_certificate((folder / "mqtt-client.crt").read_bytes())
    cert.verify_directly_issued_by(ca)
    assert cert.subject.rfc4514_string() == "CN=store-042.door-1"
    assert _mode(folder / "mqtt-client.key") == 0o600
    assert _mode(inv.secrets_dir / "ca" / "fleet-ca.key") == 0o600
    again = broker.write_broker(inv, out)
    assert again.written == []  # certificates are reused, not re-issued
    assert "require_certificate true" in (out / "mosquitto.conf").read_text()
