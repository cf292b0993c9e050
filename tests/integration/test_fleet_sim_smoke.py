"""``scripts/fleet-sim`` runs in CI at a small size (the 1000-device run is the benchmark):
real Mosquitto with the provisioned passwd/ACL, real PostgreSQL, the broker restarted, a
subscriber SIGKILLed and the database restarted mid-run, and the table holds exactly the
windows published. The broker restart is the case that lost windows before the devices kept
what nobody subscribed to (Mosquitto 2.0 does not keep shared subscriptions across a restart)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.integration.test_publish import REPO

pytestmark = pytest.mark.integration


def test_fleet_sim_small_with_faults(tmp_path: Path) -> None:
    """A fault-injected small fleet: 0 lost, 0 duplicated, figures reported."""
    figures = tmp_path / "fleet.json"
    result = subprocess.run(
        [
            "bash",
            "scripts/fleet-sim",
            "--devices",
            "12",
            "--window",
            "2",
            "--duration",
            "12",
            "--subscribers",
            "2",
            "--processes",
            "1",
            "--faults",
            "broker,subscriber,db",
            "--json",
            str(figures),
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    got = json.loads(figures.read_text())
    assert got["published"] >= 12 * 2 and got["stored"] == got["published"]
    assert got["lost"] == got["duplicated"] == got["conflicts"] == 0
    assert len(got["faults"]) == 3
    # every stored window is in exactly one phase: the steady state or one fault's span
    phases = {ph["phase"]: ph["windows"] for ph in got["phases"]}
    assert len(phases) == 4 and sum(phases.values()) == got["stored"], phases
    assert phases["broker restart"] > 0, phases  # the broker fault met a burst
    assert "p99" in result.stdout
