"""Finding the boot partition in an image, and the first-boot text transforms."""

from __future__ import annotations

import hashlib
import lzma
import subprocess
from pathlib import Path

import pytest

from firmware.errors import InputError
from provisioning import firstboot
from provisioning.bootfs import DirectoryBoot
from provisioning.partitions import find_boot_partition
from tests.unit.test_provision_support import CMDLINE, MTOOLS_ENV, make_disk_image


def test_bare_fat_filesystem_is_its_own_boot_partition(tmp_path: Path) -> None:
    """A dd of just the boot partition (no table) is accepted at offset 0."""
    image = tmp_path / "boot.vfat"
    subprocess.run(
        ["mkfs.vfat", "-C", "-F", "32", "-s", "1", str(image), "40000"],
        check=True,
        capture_output=True,
        env=MTOOLS_ENV,
    )
    part = find_boot_partition(image)
    assert (part.offset, part.scheme) == (0, "none")


def test_compressed_image_is_refused_with_the_fix(tmp_path: Path) -> None:
    image = tmp_path / "raspios.img.xz"
    image.write_bytes(lzma.compress(b"\0" * 4096))
    with pytest.raises(InputError) as info:
        find_boot_partition(image)
    assert "xz" in info.value.message and "xz -dk" in info.value.hint


def test_no_fat_partition(tmp_path: Path) -> None:
    image = tmp_path / "linux-only.img"
    with image.open("wb") as f:
        f.truncate(8 * 1024 * 1024)
    subprocess.run(
        ["sfdisk", "-q", str(image)], input=b"label: dos\nstart=2048, type=83\n", check=True
    )
    with pytest.raises(InputError, match="no FAT boot partition"):
        find_boot_partition(image)


def test_truncated_image(tmp_path: Path) -> None:
    """Regression guard: a partial download must be refused before mtools writes past its end."""
    image = tmp_path / "disk.img"
    make_disk_image(image)
    with image.open("r+b") as f:
        f.truncate(20 * 1024 * 1024)
    with pytest.raises(InputError, match="truncated"):
        find_boot_partition(image)


def test_cmdline_gets_firstrun_once_and_stays_one_line() -> None:
    once = firstboot.add_firstrun(CMDLINE, wifi_country="DE")
    twice = firstboot.add_firstrun(once, wifi_country="DE")
    assert once == twice
    assert once.count("\n") == 1 and once.endswith("\n")
    words = once.split()
    for p in firstboot.FIRSTRUN_PARAMS:
        assert words.count(p) == 1
    assert words.count("cfg80211.ieee80211_regdom=DE") == 1
    assert once.startswith(CMDLINE.strip())


def test_cmdline_without_newline_keeps_none() -> None:
    out = firstboot.add_firstrun(CMDLINE.strip(), wifi_country=None)
    assert out.count("\n") == 1  # one line, ended, as the firmware expects


def test_multi_line_cmdline_is_refused() -> None:
    with pytest.raises(InputError, match="single line"):
        firstboot.add_firstrun(CMDLINE + "console=tty2\n", wifi_country=None)


def test_detect_format(tmp_path: Path) -> None:
    """cloud-init files on the boot partition mean Trixie's cloud-init; none means firstrun.sh."""
    boot = DirectoryBoot(tmp_path)
    (tmp_path / "cmdline.txt").write_text(CMDLINE)
    assert firstboot.detect(boot).format is firstboot.Format.FIRSTRUN
    (tmp_path / "meta-data").write_text("instance_id: rpios-image\n")
    assert firstboot.detect(boot).format is firstboot.Format.CLOUD_INIT


def test_wpa_psk_matches_wpa_passphrase() -> None:
    """The derived key is the IEEE 802.11i PBKDF2 (the well-known 'IEEE' / 'password' vector)."""
    assert firstboot.wpa_psk("IEEE", "password") == (
        "f42c6fc52df0ebef9ebb4b90b38a5f902e83fe1b135a70e23aed762e9710a12e"
    )
    key = hashlib.sha256(b"x").hexdigest()
    assert firstboot.wpa_psk("any", key.upper()) == key
