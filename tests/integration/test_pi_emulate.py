"""The device side on an emulated Raspberry Pi: ``scripts/pi-emulate chroot`` installs a card's
payload with its real ``install.sh`` in a Debian Bookworm arm64 rootfs under qemu-user, offline,
then runs anoncam there against a real Mosquitto on loopback. This test reads its JSON summary.

On a brand-new machine the first run builds the rootfs (about 5-10 minutes, cached in
``ANONCAM_PI_CACHE``, default /var/cache/anoncam-pi-emulate); afterwards a run takes about 3-4
minutes. It needs root (chroot, mounts, binfmt_misc); without it, it is skipped, saying so, or
fails when ``ANONCAM_PI_EMULATE=required`` (as ``.ci/run`` sets it).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[2]


def run_pi_emulate(
    subcommand: str, tmp_path_factory: pytest.TempPathFactory, why_root: str, timeout: float
) -> dict[str, Any]:
    """``scripts/pi-emulate SUBCOMMAND --json FILE`` as root; its summary, with exit and stderr."""
    if os.geteuid() != 0:
        if os.environ.get("ANONCAM_PI_EMULATE") == "required":  # .ci/run: never skip silently
            pytest.fail(why_root)
        pytest.skip(why_root)
    out = tmp_path_factory.mktemp(f"pi-{subcommand}") / "summary.json"
    env = dict(os.environ, ANONCAM_PYTHON=sys.executable)
    proc = subprocess.run(
        [str(REPO / "scripts" / "pi-emulate"), subcommand, "--json", str(out)],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
    )
    assert out.is_file(), f"no summary (exit {proc.returncode}):\n{proc.stderr[-4000:]}"
    data: dict[str, Any] = json.loads(out.read_text())
    data["_exit"], data["_stderr"] = proc.returncode, proc.stderr
    print(proc.stderr[-3000:])  # the timings, shown with -s or on failure
    return data


@pytest.fixture(scope="module")
def summary(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    why = "scripts/pi-emulate needs root (chroot, mounts, binfmt_misc): run the tests as root"
    return run_pi_emulate("chroot", tmp_path_factory, why, timeout=1800)


def test_every_check_of_the_emulated_device_passed(summary: dict[str, Any]) -> None:
    assert summary["schema"] == "anoncam/pi-emulate/1"
    failed = {k: summary["checks"][k] for k in summary["failed"]}
    assert summary["ok"] and summary["_exit"] == 0, failed or summary["_stderr"][-3000:]
    expected = {
        "install",
        "secrets off the boot partition",
        "bundle off the boot partition",
        "modes under /etc/anoncam",
        "unit installed and enabled",
        "imports",
        "venv uses the system numpy 1.24",
        "anoncam installed in the venv",
        "models verify centerface",
        "models verify nanodet",
        "diagnose --json validates",
        "diagnose: model and MQTT to the host broker OK",
        "anoncam run exits 0",
        "every message schema-valid",
        "counts windows received",
        "status online",
    }
    assert expected <= set(summary["checks"]), expected - set(summary["checks"])


def test_the_device_runs_bookworms_python_and_numpy_on_arm64(summary: dict[str, Any]) -> None:
    device = summary["device"]
    numpy_version, numpy_file = device["numpy"]
    assert numpy_version.startswith("1.24.") and numpy_file.startswith("/usr/lib/python3/")
    assert device["venv_numpy"] == []
    assert any("/opt/anoncam/venv/lib/python3.11/" in p for p in device["venv_site"])
    assert summary["bundle"]["pythons"] == ["3.11"]
    assert summary["bundle"]["platform"] == "linux_aarch64"
    machines = {c["name"]: c for c in summary["diagnose"]["checks"]}
    assert machines["model.file"]["status"] == "OK"


def test_the_counts_arrived_from_the_emulated_device(summary: dict[str, Any]) -> None:
    received = summary["received"]
    assert received["windows"] >= 1 and received["seqs"] == list(range(1, received["windows"] + 1))
    assert received["frames_processed"] == summary["clip"]["frames"]  # every frame, none dropped
    assert received["statuses"][0] == "online"
