"""Video files written and read with PyAV for real: properties, colours, timestamps, and the
errors a damaged file gives. Also the synthetic scene as a real video, seen by the real model."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from firmware.boxes import iou_matrix
from firmware.config.settings import SourceConfig
from firmware.errors import InputError, OutputError
from firmware.media.video_writer import VideoWriter, pick_codec, write_video
from firmware.sources import FrameSource, open_source
from firmware.sources.synthetic.scene import SyntheticScene
from firmware.sources.synthetic.scene import write_video as write_scene
from firmware.sources.video import VideoFileSource

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def _clip(n: int, w: int = 160, h: int = 120) -> list[np.ndarray]:
    """Frames of moving noise (so a codec cannot shrink a cut file to nothing) with a
    pure-red top-left quarter."""
    rng = np.random.default_rng(0)
    frames = []
    for _ in range(n):
        img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        img[: h // 2, : w // 2] = (0, 0, 255)
        frames.append(img)
    return frames


def _write(path: Path, n: int = 30, fps: float | Fraction = 15, codec: str | None = None) -> str:
    frames = _clip(n)
    used, written = write_video(
        frames, path, fps=fps, size=(160, 120), codec=codec, preset="ultrafast"
    )
    assert written == n
    return used


def test_reads_back_what_was_written(tmp_path: Path) -> None:
    """Frame count, size, exact rate and media timestamps survive, and BGR order is right:
    a pure-red area reads back as about (0, 0, 255), not (255, 0, 0)."""
    path = tmp_path / "clip.mp4"
    used = _write(path, n=30, fps=15)
    with VideoFileSource(path) as src:
        assert isinstance(src, FrameSource)
        assert src.size == (160, 120)
        assert src.rate == Fraction(15) and src.fps == 15.0
        assert src.frame_count == 30
        assert src.codec_name == ("h264" if used == "libx264" else "mpeg4")
        assert not src.has_audio and not src.live and src.dropped == 0
        assert "clip.mp4" in src.describe()
        frames = list(src.frames())
    assert len(frames) == 30
    assert [f.index for f in frames] == list(range(30))
    red = frames[7].image[10:50, 10:70].reshape(-1, 3).mean(axis=0)
    assert red[2] > 235 and red[0] < 20 and red[1] < 20
    assert [f.t_ns for f in frames] == pytest.approx([i * 1e9 / 15 for i in range(30)], abs=1e5)


def test_ntsc_rate_is_kept_exactly(tmp_path: Path) -> None:
    path = tmp_path / "ntsc.mkv"
    _write(path, n=10, fps=Fraction(30000, 1001))
    src = VideoFileSource(path)
    assert src.rate == Fraction(30000, 1001)
    assert src.fps == pytest.approx(29.97, abs=0.01)


def test_mpeg4_fallback_codec_writes_a_readable_video(tmp_path: Path) -> None:
    assert pick_codec("no-such-codec") in ("libx264", "mpeg4")
    path = tmp_path / "clip.mkv"
    assert _write(path, n=12, codec="mpeg4") == "mpeg4"
    src = VideoFileSource(path)
    assert src.codec_name == "mpeg4"
    assert len(list(src.frames())) == 12


def test_frames_can_be_read_twice(tmp_path: Path) -> None:
    path = tmp_path / "clip.mp4"
    _write(path, n=8)
    src = VideoFileSource(path)
    first = [f.image for f in src.frames()]
    second = [f.image for f in src.frames()]
    assert len(first) == len(second) == 8
    assert all(np.array_equal(a, b) for a, b in zip(first, second, strict=True))


def test_odd_sizes_keep_their_resolution(tmp_path: Path) -> None:
    """H.264 in 4:4:4 keeps odd sizes exact (anoncam blur promises the input's resolution);
    MPEG-4 needs even sides and pads by one pixel."""
    img = np.full((61, 81, 3), 90, np.uint8)
    write_video([img] * 3, tmp_path / "odd.mp4", fps=10, size=(81, 61), preset="ultrafast")
    assert VideoFileSource(tmp_path / "odd.mp4").size == (81, 61)
    write_video([img] * 3, tmp_path / "odd.avi", fps=10, size=(81, 61))
    assert VideoFileSource(tmp_path / "odd.avi").size == (82, 62)


def test_writer_refuses_a_frame_of_another_size(tmp_path: Path) -> None:
    """A wrong-sized frame raises, and the failed video leaves no file (not even a partial one)."""
    with (
        pytest.raises(OutputError, match="frame 0 is 32x32, the video is 64x48"),
        VideoWriter(tmp_path / "a.mp4", fps=10, size=(64, 48)) as writer,
    ):
        writer.write(np.zeros((32, 32, 3), np.uint8))
    assert list(tmp_path.iterdir()) == []


def test_truncated_matroska_breaks_with_the_frame_index(tmp_path: Path) -> None:
    """A file cut in half (a copy interrupted, a card pulled) yields the frames before the cut,
    then InputError naming the file and the frame where it broke: the caller keeps or discards
    the partial output, and is never told a half video was whole."""
    path = tmp_path / "cut.mkv"
    _write(path, n=40)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    src = VideoFileSource(path)  # the header is intact
    got = 0
    with pytest.raises(InputError, match=r"cut\.mkv: the video breaks at frame (\d+)") as info:
        for _ in src.frames():
            got += 1
    assert 5 < got < 40
    assert f"frame {got}" in str(info.value)
    assert "truncated" in str(info.value)


def test_truncated_fast_start_mp4_breaks_with_the_frame_index(tmp_path: Path) -> None:
    path = tmp_path / "cut.mp4"
    _write(path, n=40)
    # Rewrite with the index at the front (as cameras and phones do), then cut it.
    import av

    with (
        av.open(str(path)) as src_c,
        av.open(str(tmp_path / "fast.mp4"), "w", options={"movflags": "+faststart"}) as out,
    ):
        stream_in = src_c.streams.video[0]
        stream_out = out.add_stream_from_template(stream_in)
        for packet in src_c.demux(stream_in):
            if packet.dts is None:
                continue
            packet.stream = stream_out
            out.mux(packet)
    data = (tmp_path / "fast.mp4").read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match=r"cut\.mp4: the video breaks at frame \d+"):
        for _ in VideoFileSource(path).frames():
            pass


def test_mp4_cut_before_its_index_is_not_a_readable_video(tmp_path: Path) -> None:
    """An ordinary mp4 keeps its index at the end: cut in half, nothing can be decoded."""
    path = tmp_path / "cut.mp4"
    _write(path, n=40)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match=r"cut\.mp4: not a readable video"):
        VideoFileSource(path)


def test_text_file_named_mp4_is_not_a_readable_video(tmp_path: Path) -> None:
    path = tmp_path / "notes.mp4"
    path.write_text("shopping list: milk, eggs\n" * 100)
    with pytest.raises(InputError, match=r"notes\.mp4: not a readable video") as info:
        VideoFileSource(path)
    assert info.value.exit_code == 2 and info.value.hint


def test_missing_file_and_folder_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"nope\.mp4: file not found"):
        VideoFileSource(tmp_path / "nope.mp4")
    with pytest.raises(InputError, match="file not found"):
        open_source(SourceConfig(kind="file", path=tmp_path / "nope.mp4"))


def test_open_source_picks_the_video_source(tmp_path: Path) -> None:
    path = tmp_path / "clip.mp4"
    _write(path, n=5)
    with open_source(SourceConfig(kind="file", path=path)) as src:
        assert isinstance(src, VideoFileSource)


def test_synthetic_scene_as_a_video_file(tmp_path: Path) -> None:
    """The demo and benchmarks run the scene through a real video: the file has every frame and
    decodes close to the rendered pixels (crf 18)."""
    scene = SyntheticScene(width=320, height=240, fps=10.0, duration_s=3.0, seed=4)
    path = tmp_path / "scene.mp4"
    used = write_scene(scene, path, preset="ultrafast")
    assert used in ("libx264", "mpeg4")
    src = VideoFileSource(path)
    frames = list(src.frames())
    assert len(frames) == scene.frame_count
    err = np.abs(frames[12].image.astype(int) - scene.render(12).astype(int))
    assert err.mean() < 4


def _model() -> Path:
    """The fetched model; its absence is a failure (scripts/setup fetches it, CI must have it)."""
    for candidate in (ROOT / "models" / "centerface-opt.onnx", ROOT / "models" / "centerface.onnx"):
        if candidate.is_file():
            return candidate
    pytest.fail("CenterFace model not fetched (run 'anoncam models fetch' or scripts/setup)")


def test_centerface_finds_the_synthetic_faces_in_the_video(tmp_path: Path) -> None:
    """The scene is only useful if a real detector sees its faces: after H.264 encoding and
    decoding, CenterFace finds at least 95 % of the truth faces that are at least half in view
    (IoU >= 0.3) and reports almost nothing else."""
    _model()
    from firmware.detect.centerface import CenterFace

    detector = CenterFace(threads=2)
    scene = SyntheticScene(width=640, height=360, fps=5.0, duration_s=16.0, seed=5)
    path = tmp_path / "scene.mp4"
    write_scene(scene, path, preset="ultrafast")
    found = total = extra = 0
    for frame in VideoFileSource(path).frames():
        truth = scene.truth(frame.index, min_visible=0.5)
        boxes = detector(frame.image).boxes
        if len(truth):
            best = iou_matrix(truth, boxes).max(axis=1) if len(boxes) else np.zeros(len(truth))
            found += int((best >= 0.3).sum())
            total += len(truth)
        everything = scene.truth(frame.index)
        if len(boxes):
            overlap = (
                iou_matrix(boxes, everything).max(axis=1)
                if len(everything)
                else np.zeros(len(boxes))
            )
            extra += int((overlap < 0.1).sum())
    assert total > 40
    assert found / total >= 0.95, f"recall {found}/{total}"
    assert extra <= 2
