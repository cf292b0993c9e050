"""The card's cmdline.txt as the emulated machine's kernel command line, and qemu's network.

Only what has no meaning on qemu's ``virt`` machine may change; the first-boot parameters that
``provision image`` writes must reach the kernel untouched, or the emulated first boot would
test something other than the card."""

from __future__ import annotations

from pathlib import Path

from provisioning import firstboot
from provisioning.emulate import CMDLINE
from provisioning.emulate_boot import GUEST_BROKER, kernel_cmdline, qemu_command


def test_pi_only_parameters_are_translated_and_the_rest_kept() -> None:
    card = firstboot.add_firstrun(CMDLINE.strip(), wifi_country=None)
    words = kernel_cmdline(card).split()
    assert "console=ttyAMA0,115200" in words
    assert not [w for w in words if w.startswith("console=tty1") or "serial0" in w]
    assert not [w for w in words if w.startswith("init=")]
    kept = [w for w in card.split() if not w.startswith(("console=", "init="))]
    assert [w for w in words if not w.startswith("console=")] == kept
    assert any(w.startswith("systemd.run=") for w in words)
    assert "root=PARTUUID=414e4f4e-02" in words


def test_root_can_be_overridden_for_a_kernel_without_partuuid_support() -> None:
    words = kernel_cmdline(CMDLINE, root="/dev/vda2").split()
    assert "root=/dev/vda2" in words
    assert not [w for w in words if w.startswith("root=PARTUUID")]


def test_the_guest_reaches_only_the_broker_and_ssh(tmp_path: Path) -> None:
    cmd = qemu_command(
        kernel=tmp_path / "k", initrd=tmp_path / "i", disk=tmp_path / "card.img",
        cmdline="x", serial_log=tmp_path / "s", broker_port=4242, ssh_port=2222,
    )  # fmt: skip
    net = cmd[cmd.index("-netdev") + 1].split(",")
    assert "restrict=on" in net
    fwd = [o for o in net if "fwd=" in o]
    assert fwd == [
        f"guestfwd=tcp:{GUEST_BROKER[0]}:{GUEST_BROKER[1]}-cmd:socat - TCP:127.0.0.1:4242",
        "hostfwd=tcp:127.0.0.1:2222-:22",
    ]
    assert "-no-reboot" in cmd
