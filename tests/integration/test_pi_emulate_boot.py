"""A provisioned card boots on an emulated 64-bit ARM machine: ``scripts/pi-emulate boot``.

The card image (MBR, FAT32 boot partition, the Bookworm arm64 rootfs as ext4) gets its payload
from ``anoncam provision image``, then boots under ``qemu-system-aarch64 -M virt`` with the
card's own ``cmdline.txt``: ``systemd.run=`` starts ``firstrun.sh``, which installs offline and
reboots; after the reboot the ``anoncam`` unit runs under systemd and publishes to a Mosquitto
on the host, reachable only through qemu's user-network forward. Before that, the same card with
a bundle for Trixie's Python 3.13 must fail its first boot with a note on the boot partition and
in the journal, and boot into the install again once written with the right bundle, as the note
says. This test reads the summary.

About 15-20 minutes on 2 cores (full-system emulation, no KVM for ARM on x86). Needs root (the
rootfs tarball holds root-owned files, mkfs.ext4 -d keeps them); skipped without it, or fails
when ``ANONCAM_PI_EMULATE=required`` (as ``.ci/run`` sets it).
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.integration.test_pi_emulate import run_pi_emulate

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def summary(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    why = "scripts/pi-emulate boot needs root (the rootfs's owners, binfmt_misc)"
    return run_pi_emulate("boot", tmp_path_factory, why, timeout=3600)


def test_every_check_of_the_booted_device_passed(summary: dict[str, Any]) -> None:
    failed = {k: summary["checks"][k] for k in summary["failed"]}
    assert summary["ok"] and summary["_exit"] == 0, failed or summary["_stderr"][-3000:]
    expected = {
        "wrong Python: INSTALL-FAILED.txt on the boot partition names both and the fix",
        "wrong Python: the card still rebooted, first boot disarmed",
        "wrong Python: the failure is in the journal of the failed boot",
        "first boot ran firstrun.sh and rebooted",
        "no file on the boot partition holds the MQTT password",
        "install finished on first boot",
        "first boot disarmed (cmdline.txt, firstrun.sh)",
        "secrets and bundle off the boot partition",
        "second boot reaches an SSH login (admin key)",
        "systemctl show anoncam: active, Type=notify, watchdog, hardening",
        "venv uses the system numpy (Bookworm's 1.24)",
        "modes under /etc/anoncam (booted)",
        "diagnose --json validates (booted)",
        "diagnose: model and MQTT to the host broker OK (booted)",
        "counts arrive from the booted device",
        "watchdog restarts a stopped service",
        "counts resume after the restart",
        "every message schema-valid",
        "counts windows received",
        "status online",
    }
    assert expected <= set(summary["checks"]), expected - set(summary["checks"])


def test_the_kernel_ran_the_cards_own_first_boot_line(summary: dict[str, Any]) -> None:
    card, kernel = summary["card_cmdline"].split(), summary["first_boot_cmdline"].split()
    first_boot = [w for w in card if w.startswith("systemd.")]
    assert first_boot and all(w in kernel for w in first_boot)
    assert not any(w.startswith("systemd.run") for w in summary["cmdline_after_first_boot"].split())


def test_the_service_ran_under_systemd_with_its_watchdog(summary: dict[str, Any]) -> None:
    unit = summary["unit"]
    assert (unit["ActiveState"], unit["Type"], unit["WatchdogUSec"]) == ("active", "notify", "30s")
    assert any("watchdog timeout" in line.lower() for line in summary["watchdog_journal"])
    assert summary["uname_python"][:1] == ["aarch64"]


def test_a_card_with_the_wrong_bundle_says_what_to_do_and_recovers(summary: dict[str, Any]) -> None:
    note = "\n".join(summary["install_failed_note"])
    assert "FAILED" in note and "cp313" in note and "cp311" in note
    assert "anoncam provision bundle --python 3.11" in note
    # the same card, written again as the note says, then installed and counted
    assert summary["checks"]["install finished on first boot"]["ok"]
    assert summary["checks"]["counts arrive from the booted device"]["ok"]
