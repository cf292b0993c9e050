"""First-boot files in the two formats Raspberry Pi OS understands, and which one an image wants.

- ``firstrun.sh`` (Bookworm, and the first Trixie images of 2025-10-01): a script on the boot
  partition started once by ``systemd.run=`` in ``cmdline.txt``, the mechanism Raspberry Pi
  Imager calls ``init_format: systemd``. We point it at ``/boot/firmware/firstrun.sh`` directly;
  Bookworm's initramfs only rewrites Imager's old ``/boot/firstrun.sh`` path.
- cloud-init (later Trixie images, Imager's ``cloudinit-rpi``): ``user-data``, ``meta-data`` and
  ``network-config`` on the boot partition, read by cloud-init's NoCloud source at first boot.

Detection: Raspberry Pi OS images that run cloud-init ship those three files (commented out) on
their boot partition; images that do not, have none of them. So: any of ``user-data``,
``meta-data``, ``network-config`` present means cloud-init, otherwise firstrun.sh. The installer
can override this (``--first-boot``). Writing both would run the install twice, so we write one.

Both formats end in the same ``anoncam/install.sh``; they differ only in how the admin login and
Wi-Fi are set up (each with the tools its OS release expects).
"""

from __future__ import annotations

import hashlib
import json
import shlex
from dataclasses import dataclass
from enum import StrEnum
from importlib import resources

from firmware.errors import InputError
from provisioning import layout
from provisioning.bootfs import BootPartition

CLOUD_INIT_FILES = ("user-data", "meta-data", "network-config")
#: Groups Raspberry Pi Imager gives the first user, for parity.
ADMIN_GROUPS = (
    "users,adm,dialout,audio,netdev,video,plugdev,cdrom,games,input,gpio,spi,i2c,render,sudo"
)
FIRSTRUN_PARAMS = (
    f"systemd.run={layout.BOOT_MOUNT}/firstrun.sh",
    "systemd.run_success_action=reboot",
    "systemd.unit=kernel-command-line.target",
)


class Format(StrEnum):
    FIRSTRUN = "firstrun"
    CLOUD_INIT = "cloud-init"


@dataclass(frozen=True)
class Detection:
    format: Format
    reason: str


def detect(boot: BootPartition) -> Detection:
    found = [name for name in CLOUD_INIT_FILES if boot.exists(name)]
    if found:
        return Detection(
            Format.CLOUD_INIT, f"the image ships {', '.join(found)} (cloud-init, Trixie)"
        )
    return Detection(
        Format.FIRSTRUN, "no cloud-init files on the boot partition (firstrun.sh, Bookworm)"
    )


@dataclass(frozen=True)
class Admin:
    user: str
    keys: tuple[str, ...]


@dataclass(frozen=True)
class Wifi:
    ssid: str
    psk: str  # 64 hex digits (the WPA key derived from the passphrase), never the passphrase
    country: str
    hidden: bool


def wpa_psk(ssid: str, passphrase: str) -> str:
    """The 256-bit WPA key for a passphrase (as wpa_passphrase computes it): the card never
    holds the passphrase itself. A 64-hex key is passed through."""
    if len(passphrase) == 64 and all(c in "0123456789abcdefABCDEF" for c in passphrase):
        return passphrase.lower()
    return hashlib.pbkdf2_hmac("sha1", passphrase.encode(), ssid.encode(), 4096, 32).hex()


def template(name: str) -> str:
    return resources.files("provisioning").joinpath(f"templates/{name}").read_text("utf-8")


def fill(text: str, values: dict[str, str]) -> str:
    for key, value in values.items():
        text = text.replace(f"@@{key}@@", value)
    if "@@" in text:
        start = text.index("@@")
        raise AssertionError(f"unfilled template placeholder near {text[start : start + 40]!r}")
    return text


def common_values() -> dict[str, str]:
    return {
        "BOOT_MOUNT": layout.BOOT_MOUNT,
        "PAYLOAD_DIR": layout.PAYLOAD_DIR,
        "FIRSTBOOT_LOG": layout.FIRSTBOOT_LOG,
    }


def render_firstrun(admin: Admin, wifi: Wifi | None) -> str:
    values = {
        **common_values(),
        "ADMIN_USER": shlex.quote(admin.user),
        "SSH_KEYS": "\n".join(f"    {shlex.quote(k.strip())}" for k in admin.keys),
        "WIFI_SSID": shlex.quote(wifi.ssid) if wifi else "''",
        "WIFI_PSK": shlex.quote(wifi.psk) if wifi else "''",
        "WIFI_COUNTRY": shlex.quote(wifi.country) if wifi else "''",
        "WIFI_HIDDEN": "1" if wifi and wifi.hidden else "0",
    }
    return fill(template("firstrun.sh"), values)


def split_cmdline(text: str) -> tuple[str, str]:
    """(the one command line, its line ending); InputError if the file is not one line."""
    lines = text.splitlines()
    if len([line for line in lines if line.strip()]) != 1 or not lines[0].strip():
        raise InputError(
            f"cmdline.txt must be a single line, found {len(lines)} line(s)",
            hint="the firmware reads only the first line: restore the image's original cmdline.txt",
        )
    ending = text[len(lines[0]) :]
    return lines[0], ending


def add_firstrun(cmdline: str, *, wifi_country: str | None) -> str:
    """Append our systemd.run parameters (replacing any earlier ones); the result is one line."""
    line, ending = split_cmdline(cmdline)
    words = [
        w
        for w in line.split()
        if not w.startswith(
            ("systemd.run=", "systemd.run_success_action=", "systemd.run_failure_action=")
        )
        and w != "systemd.unit=kernel-command-line.target"
        and not (wifi_country and w.startswith("cfg80211.ieee80211_regdom="))
    ]
    if wifi_country:
        words.append(f"cfg80211.ieee80211_regdom={wifi_country}")
    words.extend(FIRSTRUN_PARAMS)
    return " ".join(words) + (ending if ending else "\n")


def _q(value: str) -> str:
    """A YAML scalar: JSON strings are valid YAML double-quoted strings."""
    return json.dumps(value, ensure_ascii=False)


def render_user_data(admin: Admin, *, hostname: str, timezone: str, label: str) -> str:
    install = f"{layout.BOOT_MOUNT}/{layout.PAYLOAD_DIR}/install.sh"
    lines = [
        "#cloud-config",
        f"# anoncam first boot for {label}, written by 'anoncam provision image'.",
        "# cloud-init sets the host name, time zone and the admin login (SSH key only), then",
        "# runs the anoncam install from the boot partition and starts the service.",
        f"hostname: {_q(hostname)}",
        "manage_etc_hosts: true",
        f"timezone: {_q(timezone)}",
        "enable_ssh: true",
        "ssh_pwauth: false",
        "users:",
        f"  - name: {_q(admin.user)}",
        f"    groups: {_q(ADMIN_GROUPS)}",
        "    shell: /bin/bash",
        "    lock_passwd: true",
        '    sudo: "ALL=(ALL) NOPASSWD:ALL"',
        "    ssh_authorized_keys:",
        *[f"      - {_q(k.strip())}" for k in admin.keys],
        "runcmd:",
        f"  - [env, ANONCAM_START_NOW=1, bash, {_q(install)}]",
    ]
    return "\n".join(lines) + "\n"


def render_meta_data(*, hostname: str, instance: str) -> str:
    # A new instance-id makes cloud-init treat the card as a new machine, even if the image
    # (or this card) booted before.
    return f"instance-id: {_q(instance)}\nlocal-hostname: {_q(hostname)}\n"


def render_network_config(wifi: Wifi | None) -> str:
    lines = [
        "# anoncam: written by 'anoncam provision image' (netplan v2 for cloud-init).",
        "network:",
        "  version: 2",
        "  ethernets:",
        "    eth0:",
        "      dhcp4: true",
        "      optional: true",
    ]
    if wifi is not None:
        lines += [
            "  wifis:",
            "    wlan0:",
            "      dhcp4: true",
            "      optional: true",
            f"      regulatory-domain: {_q(wifi.country)}",
            "      access-points:",
            f"        {_q(wifi.ssid)}:",
            f"          password: {_q(wifi.psk)}",
        ]
        if wifi.hidden:
            lines.append("          hidden: true")
    return "\n".join(lines) + "\n"
