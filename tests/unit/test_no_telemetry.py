"""P1: onnxruntime's telemetry (1DS, on by default on Linux since 1.29) stays off.

It would create a persistent device id and an event store under
~/.cache/Microsoft/DeveloperTools/.onnxruntime and upload events; nothing but counts may leave.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.parametrize("opt_out", [True, False])
def test_detector_leaves_no_telemetry_store(tmp_path: Path, opt_out: bool) -> None:
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "ORT_DISABLE_TELEMETRY"}
    env.update(HOME=str(home), XDG_CACHE_HOME=str(home / ".cache"))
    prelude = "" if opt_out else "import onnxruntime\n"  # importing ORT before firmware: no opt-out
    code = prelude + (
        "import numpy as np\n"
        "from firmware.detect.centerface import CenterFace\n"
        "CenterFace()(np.zeros((64, 64, 3), np.uint8))\n"
    )
    subprocess.run([sys.executable, "-c", code], env=env, check=True, timeout=120)
    store = home / ".cache" / "Microsoft"
    if opt_out:
        assert not store.exists(), f"onnxruntime wrote {sorted(p.name for p in store.rglob('*'))}"
    else:
        # proves the check can fail: without the opt-out onnxruntime creates its store
        if not store.exists():
            pytest.skip("this onnxruntime build has no telemetry")
