"""The offline bundle resolves for the Pi: every dependency of anoncam, for both Raspberry Pi OS
releases, from the bundle alone, with numpy kept on the system's major version."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from firmware.cli import main
from provisioning import bundle as bundle_mod

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="session")
def pi_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Built once per session through the CLI (about 150 MB; pip's cache makes re-runs quick)."""
    dest = tmp_path_factory.mktemp("pi-bundle") / "bundle"
    assert main(["provision", "bundle", "-o", str(dest), "--python", "3.11", "3.13"]) == 0
    return dest


def _clean_pip_env() -> dict[str, str]:
    # Only the bundle: no index, find-links or constraints from this machine's pip settings.
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env["PIP_CONFIG_FILE"] = os.devnull
    return env


@pytest.mark.parametrize(("python", "numpy_major"), [("3.11", 1), ("3.13", 2)])
def test_bundle_resolves_for_the_pi(
    pi_bundle: Path, tmp_path: Path, python: str, numpy_major: int
) -> None:
    target = bundle_mod.PI_TARGETS[python]
    report = tmp_path / "report.json"
    # The bundle's own pip, as on the device (this venv's older pip checks Requires-Python
    # against the running interpreter even with --python-version).
    pip = str(next((pi_bundle / "wheels").glob("pip-*.whl")) / "pip")
    cmd = [
        sys.executable,
        pip,
        "install",
        "--dry-run",
        "--no-index",
        "--ignore-installed",
        "--find-links",
        str(pi_bundle / "wheels"),
        "-c",
        str(pi_bundle / f"constraints-{target.tag}.txt"),
        "--only-binary",
        ":all:",
        "--python-version",
        python,
        "--implementation",
        "cp",
        "--target",
        str(tmp_path / "x"),
        "--report",
        str(report),
    ]
    for plat in target.platforms():
        cmd += ["--platform", plat]
    proc = subprocess.run([*cmd, "anoncam"], capture_output=True, text=True, env=_clean_pip_env())
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    installs = {i["metadata"]["name"].lower(): i for i in json.loads(report.read_text())["install"]}
    assert {"anoncam", "onnxruntime", "av", "paho-mqtt", "pydantic", "numpy"} <= set(installs)
    assert int(installs["numpy"]["metadata"]["version"].split(".")[0]) == numpy_major
    for item in installs.values():
        name = item["download_info"]["url"].rsplit("/", 1)[-1]
        assert name.endswith("any.whl") or "aarch64" in name, name


def test_bundle_manifest_and_model(pi_bundle: Path) -> None:
    manifest = bundle_mod.check_bundle(pi_bundle)
    from firmware.models.manifest import spec

    assert manifest["files"]["models/centerface-opt.onnx"]["sha256"] == spec().sha256
    assert manifest["pythons"] == ["3.11", "3.13"] and manifest["platform"] == "linux_aarch64"
    assert any(f.startswith("wheels/pip-") for f in manifest["files"])
    assert (pi_bundle / "constraints-cp311.txt").read_text().strip().endswith("numpy<2")
