"""Helpers shared by the provisioning tests (a fleet on disk, disk images made with real tools),
and the tests that prove the helpers build what they claim."""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from provisioning import bundle as bundle_mod
from provisioning.partitions import find_boot_partition

CMDLINE = (
    "console=serial0,115200 console=tty1 root=PARTUUID=4e639091-02 rootfstype=ext4 "
    "fsck.repair=yes rootwait quiet splash plymouth.ignore-serial-consoles\n"
)
REPO = Path(__file__).resolve().parents[2]
MTOOLS_ENV = dict(os.environ, MTOOLS_SKIP_CHECK="1")


def ssh_key(comment: str = "tech@laptop", seed: int = 7) -> str:
    blob = b"\x00\x00\x00\x0bssh-ed25519\x00\x00\x00\x20" + bytes(
        (seed + i) % 256 for i in range(32)
    )
    return f"ssh-ed25519 {base64.b64encode(blob).decode()} {comment}"


def write_fleet(
    directory: Path,
    *,
    devices: list[tuple[str, str]] | None = None,
    homeassistant: bool = False,
    wifi: bool = False,
    ntp: list[str] | None = None,
    tls: bool = False,
    client_certificates: bool = False,
    port: int = 1883,
    subscribers: tuple[str, ...] = ("dashboard",),
) -> Path:
    """A valid inventory (plus its referenced files) in ``directory``; returns its path."""
    directory.mkdir(parents=True, exist_ok=True)
    devices = devices if devices is not None else [("store-042", "door-1"), ("store-042", "door-2")]
    sites = sorted({s for s, _ in devices} | {"store-042"})
    lines = [
        "[fleet]",
        'name = "test-fleet"',
        'timezone = "Europe/Berlin"',
        f"ntp_servers = {list(ntp or [])!r}".replace("'", '"'),
        'admin_user = "installer"',
        f'ssh_authorized_keys = ["{ssh_key()}"]',
    ]
    if wifi:
        (directory / "wifi.txt").write_text("correct horse battery\n")
        lines += [
            "[fleet.wifi]",
            'ssid = "store-cams"',
            'country = "DE"',
            'password_file = "wifi.txt"',
        ]
    lines += ["[broker]", 'host = "127.0.0.1"', f"port = {port}", f"tls = {str(tls).lower()}"]
    if tls:
        (directory / "broker-ca.crt").write_text(
            "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
        )
        lines.append('ca_file = "broker-ca.crt"')
    lines += [
        f"client_certificates = {str(client_certificates).lower()}",
        'prefix = "anoncam"',
        f"homeassistant = {str(homeassistant).lower()}",
    ]
    for s in sites:
        lines += ["[[sites]]", f'id = "{s}"']
    for s, d in devices:
        lines += [
            "[[devices]]",
            f'id = "{d}"',
            f'site = "{s}"',
            "[devices.source]",
            "width = 1280",
            "height = 720",
            "[devices.counter]",
            "line = [0.0, 0.5, 1.0, 0.5]",
            "inside = [0.5, 1.0]",
            "[devices.windows]",
            "seconds = 60",
        ]
    for name in subscribers:
        lines += ["[[subscribers]]", f'username = "{name}"']
    path = directory / "inventory.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def make_disk_image(
    path: Path,
    *,
    scheme: str = "mbr",
    boot_mib: int = 64,
    cloud_init: bool = False,
    cmdline: str = CMDLINE,
) -> int:
    """A Raspberry Pi OS-like disk: FAT32 boot partition (cmdline.txt, config.txt) and a Linux
    partition, made with sfdisk and mkfs.vfat, no root. Returns the boot partition's byte offset."""
    start, boot_sectors = 8192, boot_mib * 2048
    total_mib = boot_mib + 4 + 16
    with path.open("wb") as f:
        f.truncate(total_mib * 1024 * 1024)
    if scheme == "mbr":
        table = (
            f"label: dos\nstart={start}, size={boot_sectors}, type=c\n"
            f"start={start + boot_sectors}, type=83\n"
        )
    else:
        table = (
            f"label: gpt\nstart={start}, size={boot_sectors}, "
            "type=EBD0A0A2-B9E5-4433-87C0-68B6B72699C7\n"
            f"start={start + boot_sectors}, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4\n"
        )
    subprocess.run(["sfdisk", "-q", str(path)], input=table.encode(), check=True)
    # 512-byte clusters keep a small partition above FAT32's minimum cluster count.
    subprocess.run(
        [
            "mkfs.vfat",
            "-F",
            "32",
            "-s",
            "1",
            "-n",
            "BOOTFS",
            "--offset",
            str(start),
            str(path),
            str(boot_sectors // 2),
        ],
        check=True,
        capture_output=True,
    )
    files = {
        "cmdline.txt": cmdline,
        "config.txt": "arm_64bit=1\ncamera_auto_detect=1\n",
        "issue.txt": "Raspberry Pi reference 2025-05-13\n",
    }
    if cloud_init:
        files |= {
            "user-data": "#cloud-config\n# (commented out by the image)\n",
            "meta-data": "instance_id: rpios-image\n",
            "network-config": "# network:\n",
        }
    stage = path.parent / f"{path.name}.files"
    stage.mkdir()
    for name, text in files.items():
        (stage / name).write_text(text)
    offset = start * 512
    subprocess.run(
        ["mcopy", "-i", f"{path}@@{offset}", *[str(stage / n) for n in files], "::/"],
        check=True,
        env=MTOOLS_ENV,
    )
    shutil.rmtree(stage)
    return offset


def mread(image: Path, offset: int, rel: str) -> bytes | None:
    proc = subprocess.run(
        ["mcopy", "-n", "-i", f"{image}@@{offset}", f"::/{rel}", "-"],
        capture_output=True,
        env=MTOOLS_ENV,
        check=False,
    )
    return proc.stdout if proc.returncode == 0 else None


def small_bundle(dest: Path) -> Path:
    """A bundle with the real pip and anoncam wheels and the real model, but no dependency
    wheels: small enough for a 64 MB test boot partition, complete enough for verify."""
    wheels = dest / "wheels"
    wheels.mkdir(parents=True)
    anoncam = bundle_mod.build_wheel(wheels)
    (wheels / "pip-99.0-py3-none-any.whl").write_bytes(b"PK\x05\x06" + bytes(18))
    for tag, pin in (("cp311", "numpy<2"), ("cp313", "numpy>=2,<3")):
        (dest / f"constraints-{tag}.txt").write_text(pin + "\n")
    bundle_mod.bundle_model(dest / "models", model=None, progress=None)
    bundle_mod.seal(
        dest, pythons=["3.11", "3.13"], platform="linux_aarch64", model_file="centerface-opt.onnx"
    )
    assert anoncam.is_file()
    return dest


@pytest.mark.parametrize("scheme", ["mbr", "gpt"])
def test_disk_image_helper_makes_a_fat_boot_partition(tmp_path: Path, scheme: str) -> None:
    """The helper's image has a FAT boot partition that mtools reads and our parser finds."""
    image = tmp_path / "disk.img"
    offset = make_disk_image(image, scheme=scheme)
    part = find_boot_partition(image)
    assert (part.offset, part.scheme, part.number) == (offset, scheme, 1)
    assert mread(image, offset, "cmdline.txt") == CMDLINE.encode()
