"""`provision image` on disk images made with sfdisk + mkfs.vfat, read back with mtools, no root."""

from __future__ import annotations

import hashlib
import subprocess
import tomllib
from pathlib import Path

import pytest

from firmware.cli import main
from firmware.config.settings import from_dict
from provisioning import firstboot, layout, payload
from provisioning.credentials import SecretStore
from provisioning.inventory.loader import load as load_inventory
from tests.unit.test_provision_support import (
    CMDLINE,
    MTOOLS_ENV,
    make_disk_image,
    mread,
    small_bundle,
    ssh_key,
    write_fleet,
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return small_bundle(tmp_path_factory.mktemp("bundle") / "bundle")


def _read_tree(image: Path, offset: int, dest: Path) -> Path:
    dest.mkdir()
    subprocess.run(
        ["mcopy", "-s", "-n", "-i", f"{image}@@{offset}", "::/anoncam", str(dest)],
        check=True,
        env=MTOOLS_ENV,
    )
    return dest / "anoncam"


def _shellcheck(script: bytes, tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.write_bytes(script)
    proc = subprocess.run(["shellcheck", "-s", "bash", str(path)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout


def test_image_bookworm_firstrun(
    tmp_path: Path, bundle: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every file lands in the FAT partition; cmdline.txt stays one line; the scripts pass
    shellcheck; verify reads it all back; the password on the card is the one the broker gets."""
    inv_path = write_fleet(tmp_path / "fleet", wifi=True, ntp=["ntp.example.com"])
    image = tmp_path / "raspios-bookworm.img"
    offset = make_disk_image(image)
    assert (
        main(["provision", "broker", "--inventory", str(inv_path), "-o", str(tmp_path / "broker")])
        == 0
    )
    rc = main(
        [
            "provision",
            "image",
            str(image),
            "--inventory",
            str(inv_path),
            "--device",
            "store-042/door-1",
            "--bundle",
            str(bundle),
        ]
    )
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "first boot via firstrun" in out

    cmdline = mread(image, offset, "cmdline.txt")
    assert cmdline is not None
    assert cmdline.decode().count("\n") == 1
    assert cmdline.decode().startswith(CMDLINE.strip() + " ")
    assert "systemd.run=/boot/firmware/firstrun.sh" in cmdline.decode()
    assert "cfg80211.ieee80211_regdom=DE" in cmdline.decode()
    firstrun = mread(image, offset, "firstrun.sh")
    assert firstrun is not None
    _shellcheck(firstrun, tmp_path, "firstrun.sh")
    assert b"correct horse" not in firstrun  # the Wi-Fi passphrase itself never lands on the card
    assert firstboot.wpa_psk("store-cams", "correct horse battery").encode() in firstrun
    assert ssh_key().encode() in firstrun
    assert mread(image, offset, "user-data") is None  # one format only, or the install runs twice
    assert mread(image, offset, "config.txt") == b"arm_64bit=1\ncamera_auto_detect=1\n"  # untouched

    got = _read_tree(image, offset, tmp_path / "back")
    _shellcheck((got / "install.sh").read_bytes(), tmp_path, "install.sh")
    expected = {
        "install.sh",
        "settings.env",
        "config.toml",
        "anoncam.service",
        "timesyncd.conf",
        "credentials/mqtt-password",
        "SHA256SUMS",
        "bundle/manifest.json",
    }
    present = {p.relative_to(got).as_posix() for p in got.rglob("*") if p.is_file()}
    assert expected <= present
    sums = payload.parse_sums((got / "SHA256SUMS").read_text())
    assert set(sums) == present - {"SHA256SUMS"}
    for rel, digest in sums.items():
        assert hashlib.sha256((got / rel).read_bytes()).hexdigest() == digest, rel
    cfg = from_dict(tomllib.loads((got / "config.toml").read_text()))
    assert (cfg.site, cfg.device, cfg.mqtt.username) == ("store-042", "door-1", "store-042.door-1")
    inv = load_inventory(inv_path)
    password = SecretStore(inv.secrets_dir).existing_password(
        inv.secrets_dir / "devices/store-042/door-1"
    )
    assert (got / "credentials/mqtt-password").read_text().strip() == password
    assert password is not None and password not in (got / "config.toml").read_text()
    unit = (got / "anoncam.service").read_text()
    for line in (
        "Type=notify",
        "WatchdogSec=",
        "Restart=always",
        "ProtectSystem=strict",
        f"ReadWritePaths={layout.STATE_DIR}",
        "NoNewPrivileges=true",
        "PrivateTmp=true",
        "ProtectHome=true",
        "SupplementaryGroups=video",
        f"LoadCredential=mqtt-password:{layout.PASSWORD_PATH}",
        f"ExecStart={layout.VENV_DIR}/bin/anoncam run --config {layout.CONFIG_PATH}",
    ):
        assert line in unit, line
    assert "NTP=ntp.example.com" in (got / "timesyncd.conf").read_text()

    assert (
        main(
            [
                "provision",
                "verify",
                str(image),
                "--inventory",
                str(inv_path),
                "--device",
                "store-042/door-1",
            ]
        )
        == 0
    )
    assert "all " in capsys.readouterr().out


def test_rewriting_a_card_is_idempotent(tmp_path: Path, bundle: Path) -> None:
    """Writing the same card twice keeps cmdline.txt one line with our parameters once."""
    inv_path = write_fleet(tmp_path / "fleet")
    image = tmp_path / "disk.img"
    offset = make_disk_image(image)
    args = [
        "provision",
        "image",
        str(image),
        "--inventory",
        str(inv_path),
        "--device",
        "door-2",
        "--bundle",
        str(bundle),
    ]
    assert main(args) == 0
    first = mread(image, offset, "cmdline.txt")
    assert main(args) == 0
    assert mread(image, offset, "cmdline.txt") == first


def test_image_trixie_cloud_init(
    tmp_path: Path, bundle: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An image shipping cloud-init files gets user-data/meta-data/network-config, no firstrun."""
    inv_path = write_fleet(tmp_path / "fleet", wifi=True)
    image = tmp_path / "raspios-trixie.img"
    offset = make_disk_image(image, scheme="gpt", cloud_init=True)
    assert (
        main(
            [
                "provision",
                "image",
                str(image),
                "--inventory",
                str(inv_path),
                "--device",
                "door-1",
                "--bundle",
                str(bundle),
            ]
        )
        == 0
    )
    assert "first boot via cloud-init" in capsys.readouterr().out
    assert mread(image, offset, "cmdline.txt") == CMDLINE.encode()  # untouched
    assert mread(image, offset, "firstrun.sh") is None
    user_data = mread(image, offset, "user-data")
    assert user_data is not None and user_data.startswith(b"#cloud-config\n")
    assert b"/boot/firmware/anoncam/install.sh" in user_data
    assert (
        main(
            ["provision", "verify", str(image), "--inventory", str(inv_path), "--device", "door-1"]
        )
        == 0
    )
    yaml = pytest.importorskip("yaml")  # the structure, parsed as cloud-init will (PyYAML)
    doc = yaml.safe_load(user_data)
    assert doc["hostname"] == "store-042-door-1" and doc["timezone"] == "Europe/Berlin"
    assert doc["users"][0]["ssh_authorized_keys"] == [ssh_key()]
    assert doc["users"][0]["lock_passwd"] is True
    assert doc["runcmd"] == [
        ["env", "ANONCAM_START_NOW=1", "bash", "/boot/firmware/anoncam/install.sh"]
    ]
    meta = yaml.safe_load(mread(image, offset, "meta-data") or b"")
    assert meta["instance-id"].startswith("anoncam-store-042-door-1-")
    net = yaml.safe_load(mread(image, offset, "network-config") or b"")
    ap = net["network"]["wifis"]["wlan0"]["access-points"]["store-cams"]
    assert ap["password"] == firstboot.wpa_psk("store-cams", "correct horse battery")


def test_mounted_boot_partition_folder(tmp_path: Path, bundle: Path) -> None:
    inv_path = write_fleet(tmp_path / "fleet")
    boot = tmp_path / "bootfs"
    boot.mkdir()
    (boot / "cmdline.txt").write_text(CMDLINE)
    assert (
        main(
            [
                "provision",
                "image",
                str(boot),
                "--inventory",
                str(inv_path),
                "--device",
                "door-1",
                "--bundle",
                str(bundle),
                "--first-boot",
                "firstrun",
            ]
        )
        == 0
    )
    assert (boot / "anoncam" / "install.sh").is_file()
    assert (
        main(["provision", "verify", str(boot), "--inventory", str(inv_path), "--device", "door-1"])
        == 0
    )


def test_verify_catches_a_changed_file(
    tmp_path: Path, bundle: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Regression guard: a card whose config was altered (or half-copied) must not verify."""
    inv_path = write_fleet(tmp_path / "fleet")
    image = tmp_path / "disk.img"
    offset = make_disk_image(image)
    assert (
        main(
            [
                "provision",
                "image",
                str(image),
                "--inventory",
                str(inv_path),
                "--device",
                "door-1",
                "--bundle",
                str(bundle),
            ]
        )
        == 0
    )
    tampered = tmp_path / "config.toml"
    tampered.write_bytes(
        (mread(image, offset, "anoncam/config.toml") or b"").replace(b"door-1", b"door-2")
    )
    subprocess.run(
        ["mcopy", "-o", "-i", f"{image}@@{offset}", str(tampered), "::/anoncam/config.toml"],
        check=True,
        env=MTOOLS_ENV,
    )
    capsys.readouterr()
    assert (
        main(
            ["provision", "verify", str(image), "--inventory", str(inv_path), "--device", "door-1"]
        )
        == 1
    )
    out = capsys.readouterr().out
    assert "FAIL every file matches SHA256SUMS" in out and "config.toml" in out


def test_placeholder_key_and_full_partition_are_refused(
    tmp_path: Path, bundle: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The skeleton's placeholder key would lock the installer out: refuse it, write nothing.
    A bundle that does not fit is refused before any first-boot file is written."""
    fleet = tmp_path / "fleet"
    assert main(["provision", "init", str(fleet)]) == 0
    image = tmp_path / "disk.img"
    offset = make_disk_image(image)
    before = image.read_bytes()
    assert (
        main(
            [
                "provision",
                "image",
                str(image),
                "--inventory",
                str(fleet / "inventory.toml"),
                "--device",
                "door-1",
                "--bundle",
                str(bundle),
            ]
        )
        == 2
    )
    assert image.read_bytes() == before
    assert "placeholder" in capsys.readouterr().err
    small = tmp_path / "small.img"
    offset = make_disk_image(small, boot_mib=40)
    inv_path = write_fleet(tmp_path / "fleet2")
    big = tmp_path / "bigbundle"
    subprocess.run(["cp", "-a", str(bundle), str(big)], check=True)
    (big / "models" / "padding.bin").write_bytes(b"\0" * 40_000_000)
    from provisioning import bundle as bundle_mod

    bundle_mod.seal(
        big, pythons=["3.11"], platform="linux_aarch64", model_file="centerface-opt.onnx"
    )
    args = ["provision", "image", str(small), "--inventory", str(inv_path), "--device", "door-1"]
    assert main([*args, "--bundle", str(big)]) == 1
    assert "MB free" in capsys.readouterr().err
    assert mread(small, offset, "firstrun.sh") is None
    assert mread(small, offset, "cmdline.txt") == CMDLINE.encode()
    # A card written before keeps its complete, verified first boot after a refused re-write.
    assert main([*args, "--bundle", str(bundle)]) == 0
    assert main([*args, "--bundle", str(big)]) == 1
    verify = ["provision", "verify", str(small), "--inventory", str(inv_path), "--device", "door-1"]
    assert main(verify) == 0
