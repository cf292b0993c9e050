"""``anoncam snapshot`` and JPEG encoding: real model, real sources, real files.

The privacy checks feed a real face (scikit-image's astronaut photo, or the synthetic scene's
faces) and run the real CenterFace again on the decoded JPEG: no face may be found where the
face was. Each check first proves the face is detectable in the raw frame, so it cannot pass
by accident.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from numpy.typing import NDArray

from firmware.anonymize.cover import Anonymizer
from firmware.boxes import iou_matrix
from firmware.cli import main
from firmware.config.settings import Config, CounterConfig, from_dict
from firmware.detect.centerface import CenterFace
from firmware.frames import Frame
from firmware.jobs.overlay import LINE_COLOR, draw_counter
from firmware.jobs.snapshot import capture, render, take_snapshot
from firmware.media.image import decode_jpeg, encode_jpeg, jpeg_qscale, write_image
from tests.support.faces import FACES, load_bgr

pytestmark = pytest.mark.integration

W, H = 960, 540
FACE_AT = (560, 150)  # where the astronaut's head crop is pasted
CROP = (120, 0, 360, 260)  # x1, y1, x2, y2 of the crop in astronaut.png


@pytest.fixture(scope="module")
def detector() -> CenterFace:
    return CenterFace()


def face_frame() -> tuple[NDArray[np.uint8], NDArray[np.float32]]:
    """A frame of gravel with the astronaut's head pasted on it, and the face box in it."""
    gravel = load_bgr("gravel.png")
    reps = (H // gravel.shape[0] + 1, W // gravel.shape[1] + 1, 1)
    frame = np.ascontiguousarray(np.tile(gravel, reps)[:H, :W])
    astro = load_bgr("astronaut.png")
    x1, y1, x2, y2 = CROP
    ox, oy = FACE_AT
    frame[oy : oy + y2 - y1, ox : ox + x2 - x1] = astro[y1:y2, x1:x2]
    fx1, fy1, fx2, fy2 = FACES["astronaut.png"][0]
    box = np.array([[fx1 - x1 + ox, fy1 - y1 + oy, fx2 - x1 + ox, fy2 - y1 + oy]], np.float32)
    return frame, box


def folder_config(tmp_path: Path, **overrides: object) -> Config:
    folder = tmp_path / "frames"
    folder.mkdir()
    frame, _ = face_frame()
    write_image(folder / "frame-0001.png", frame)
    data = {
        "source": {"kind": "file", "path": str(folder)},
        "counter": {"line": [0.1, 0.8, 0.9, 0.8], "inside": [0.5, 1.0]},
    }
    data.update(overrides)
    return from_dict(data)


def overlapping(
    detector: CenterFace, image: NDArray[np.uint8], boxes: NDArray[np.float32]
) -> list[float]:
    """IoU of every detection in ``image`` that overlaps one of ``boxes`` at all."""
    dets = detector(image)
    if len(dets) == 0 or len(boxes) == 0:
        return []
    iou = iou_matrix(boxes, dets.boxes).max(axis=0)
    return [float(v) for v in iou if v > 0]


def test_the_composited_face_is_detectable_in_the_raw_frame(detector: CenterFace) -> None:
    """Precondition for the privacy checks below: the raw frame shows a face CenterFace finds."""
    frame, box = face_frame()
    assert max(overlapping(detector, frame, box), default=0.0) >= 0.5


def test_snapshot_of_a_real_face_shows_no_face(tmp_path: Path, detector: CenterFace) -> None:
    """P2: the written JPEG, decoded and searched by the real detector, has no face where the
    astronaut's face was; the counting line is drawn where configured."""
    config = folder_config(tmp_path)
    snap = capture(config, frames=3)
    assert (snap.width, snap.height, snap.failed) == (W, H, False)
    assert snap.faces >= 1
    image = decode_jpeg(snap.jpeg)
    _, box = face_frame()
    assert overlapping(detector, image, box) == []
    line_pixel = image[int(0.8 * H), int(0.3 * W)].astype(int)
    assert np.abs(line_pixel - np.array(LINE_COLOR)).max() < 40


def test_snapshot_of_the_synthetic_scene_hides_every_face(
    tmp_path: Path, detector: CenterFace
) -> None:
    """P2 on the synthetic scene's real face photos: at a frame where faces are fully in view
    (raw detection finds them), the snapshot has none of them."""
    from firmware.sources.synthetic.scene import SyntheticScene

    config = from_dict({"source": {"kind": "synthetic", "duration_s": 10}})  # 1280x720, the default
    scene = SyntheticScene(config.source.width, config.source.height, config.source.fps, 10)
    index = next(i for i in range(150) if len(scene.truth(i, min_visible=1.0)) >= 1)
    truth = scene.truth(index, min_visible=1.0)
    assert max(overlapping(detector, scene.render(index), truth), default=0.0) >= 0.4
    data = take_snapshot(config, frames=index + 1)
    assert overlapping(detector, decode_jpeg(data), truth) == []


def test_a_failing_detector_gives_the_fully_masked_frame(
    tmp_path: Path, detector: CenterFace
) -> None:
    """Fail closed: with a detection timeout no model run can meet, the snapshot is the whole
    frame masked (plus the drawn line), and it still shows no face."""
    config = folder_config(tmp_path, detector={"timeout_s": 1e-6})
    snap = capture(config, frames=2)
    assert snap.failed
    frame, box = face_frame()
    expected = draw_counter(Anonymizer().mask_all(frame), config.counter)
    got = decode_jpeg(snap.jpeg)
    assert np.abs(got.astype(int) - expected.astype(int)).mean() < 4
    assert overlapping(detector, got, box) == []


def test_render_accepts_only_anonymized_results() -> None:
    """Privacy guard: a raw Frame cannot be rendered into a JPEG by mistake."""
    frame, _ = face_frame()
    with pytest.raises(TypeError, match="Anonymized"):
        render(Frame(frame, 0, 0), CounterConfig())  # type: ignore[arg-type]


def test_cli_writes_the_snapshot_atomically(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = folder_config(tmp_path).source.path
    out = tmp_path / "aim.jpg"
    assert main(["snapshot", "-o", str(out), "--source", str(folder), "--frames", "2"]) == 0
    assert out.read_bytes()[:2] == b"\xff\xd8"
    assert decode_jpeg(out.read_bytes()).shape == (H, W, 3)
    assert "face(s) covered" in capsys.readouterr().out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["aim.jpg", "frames"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["-o", "aim.png", "--source", "synthetic"], "a snapshot is a JPEG file"),
        (["-o", "aim.jpg", "--source", "/nonexistent/video.mp4"], "no such file or folder"),
        (["-o", "aim.jpg", "--config", "/nonexistent/anoncam.toml"], "config file not found"),
    ],
)
def test_cli_usage_errors_exit_2_and_write_nothing(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    message: str,
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["snapshot", *argv]) == 2
    assert message in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def _markers(data: bytes) -> list[int]:
    """JPEG marker codes up to the start of scan (each segment skipped by its length)."""
    assert data[:2] == b"\xff\xd8"
    out, i = [], 2
    while i < len(data):
        assert data[i] == 0xFF
        code = data[i + 1]
        out.append(code)
        if code == 0xDA:  # start of scan: entropy-coded data follows
            break
        i += 2 + int.from_bytes(data[i + 2 : i + 4], "big")
    return out


def test_jpeg_has_no_metadata_and_round_trips() -> None:
    """No APPn (EXIF, JFIF, XMP) and no COM segment: only tables, frame header and scan."""
    frame, _ = face_frame()
    data = encode_jpeg(frame, 90)
    markers = _markers(data)
    assert not [m for m in markers if 0xE0 <= m <= 0xEF or m == 0xFE], [hex(m) for m in markers]
    assert data.endswith(b"\xff\xd9")
    back = decode_jpeg(data)
    assert back.shape == frame.shape
    assert np.abs(back.astype(int) - frame.astype(int)).mean() < 6


def test_jpeg_quality_trades_size() -> None:
    frame, _ = face_frame()
    sizes = [len(encode_jpeg(frame, q)) for q in (30, 60, 95)]
    assert sizes[0] < sizes[1] < sizes[2]
    assert (jpeg_qscale(100), jpeg_qscale(1)) == (1, 31)
    with pytest.raises(ValueError):
        jpeg_qscale(0)


def test_only_reviewed_code_encodes_jpegs() -> None:
    """Structural guard for P2: encode_jpeg is called only where the argument is an anonymized
    image (the preview hub's cached frame, the snapshot's rendered result). A new call site must
    be reviewed and added here."""
    import ast

    root = Path(__file__).resolve().parents[2] / "firmware"
    sites = set()
    for path in root.rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef):
                for call in ast.walk(node):
                    if (
                        isinstance(call, ast.Call)
                        and getattr(call.func, "id", getattr(call.func, "attr", None))
                        == "encode_jpeg"
                    ):
                        sites.add(f"{path.relative_to(root)}:{node.name}")
    assert sites == {"preview/hub.py:_encoded", "jobs/snapshot.py:render"}


def test_scripts_snapshot_runs(tmp_path: Path) -> None:
    """The field-tech wrapper runs the same command (so the script cannot rot)."""
    import subprocess

    out = tmp_path / "aim.jpg"
    script = Path(__file__).resolve().parents[2] / "scripts" / "snapshot"
    proc = subprocess.run(
        [str(script), "-o", str(out), "--source", "synthetic", "--frames", "3"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert out.read_bytes()[:2] == b"\xff\xd8"
