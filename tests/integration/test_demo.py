"""The README's first command: scripts/demo runs the full pipeline and shows counts."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from firmware.sources.video import VideoFileSource

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def test_scripts_demo_end_to_end(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    proc = subprocess.run(
        [
            "bash",
            str(ROOT / "scripts" / "demo"),
            "--duration",
            "12",
            "--window",
            "5",
            "-o",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    text = proc.stdout
    assert "SEQ" in text and "demo-store" in text, text
    counted = next(line for line in text.splitlines() if line.startswith("counted:"))
    # "counted: E entries, X exits (scene truth: E entries, X exits)": counts match the truth
    got, truth = counted.split("(scene truth:")
    assert got.replace("counted:", "").strip().rstrip(",") == truth.strip(" )"), counted
    assert "received and validated" in text
    video = out / "anonymized.mp4"
    assert VideoFileSource(video).size == (1280, 720)
    assert sum(1 for _ in VideoFileSource(video).frames()) == 12 * 15


def test_demo_embedded_broker(tmp_path: Path) -> None:
    """Without Mosquitto the demo embeds a broker, so it runs on a fresh machine without root.
    (A subprocess: amqtt leaves asyncio transports for the garbage collector, which pytest's
    warnings-as-errors would blame on whichever test runs next.)"""
    import sys

    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "firmware",
            "demo",
            "--duration",
            "6",
            "--window",
            "5",
            "--broker",
            "embedded",
            "-o",
            str(tmp_path / "d"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "broker: embedded" in proc.stdout and "received and validated" in proc.stdout
