"""``anoncam blur`` against hostile and broken input: each test is a regression from issue 12
(or issue 8's typed settings), run with the real model, real files and real PyAV media."""

from __future__ import annotations

import signal
import struct
import subprocess
import sys
import time
import zlib
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from firmware.cli import main
from firmware.sources.synthetic.scene import SyntheticScene, write_video
from tests.support.faces import DATA
from tests.unit.test_outbox import read_only

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A short real video (H.264 in MP4): 2 s at 10 fps, small, with faces walking in."""
    path = tmp_path_factory.mktemp("clip") / "clip.mp4"
    write_video(SyntheticScene(320, 240, fps=10, duration_s=2, seed=3, mean_gap_s=0.2), path)
    return path


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "11"])
@pytest.mark.parametrize("kind", ["image", "video"])
def test_hold_must_be_a_finite_number_in_range(
    tmp_path: Path, clip: Path, capsys: pytest.CaptureFixture[str], value: str, kind: str
) -> None:
    """Regression (issue 12 item 16, issue 8 item 5): `--hold nan` / `inf` gave a traceback on a
    video and was silently accepted for an image; `--hold 11` passed although a config file
    refuses hold_s > 10, because blur re-checked the flags by hand. Now the flags go through
    the config types: exit 2 naming the flag, nothing written."""
    src = clip if kind == "video" else DATA / "astronaut.png"
    out = tmp_path / f"out{src.suffix}"
    code = main(["blur", str(src), "-o", str(out), f"--hold={value}"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "--hold" in err and "Traceback" not in err
    assert not out.exists()


@pytest.mark.parametrize(
    ("flag", "value"),
    [("--threads", "65"), ("--threads", "0"), ("--threshold", "1.5"), ("--mask-scale", "0.5")],
)
def test_blur_flags_get_the_config_bounds(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], flag: str, value: str
) -> None:
    """Regression (issue 8 item 5): `--threads 65` passed the hand-written check (>= 1 only)
    though the config allows at most 64; every flag now has exactly the config's bounds."""
    out = tmp_path / "a.png"
    code = main(["blur", str(DATA / "astronaut.png"), "-o", str(out), flag, value])
    err = capsys.readouterr().err
    assert code == 2 and flag in err, err
    assert not out.exists()


def test_a_folder_is_named_as_a_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Regression (issue 12 item 17): a folder as INPUT said `no such file` and a folder as
    `--model` said `model file not found`, both wrong and no help; each now says it is a
    folder and what to pass instead (exit 2)."""
    photos = tmp_path / "photos"
    photos.mkdir()
    assert main(["blur", str(photos), "-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert f"{photos}: is a folder" in err and f"{photos}/*.jpg" in err, err
    code = main(
        ["blur", str(DATA / "astronaut.png"), "-o", str(tmp_path / "a.png"), "--model", str(photos)]
    )
    err = capsys.readouterr().err
    assert code == 2 and f"{photos}: is a folder" in err and ".onnx" in err, err
    assert not (tmp_path / "a.png").exists()


@pytest.mark.parametrize("kind", ["image", "video"])
def test_an_unwritable_output_folder_is_refused_before_work(
    tmp_path: Path, clip: Path, capsys: pytest.CaptureFixture[str], kind: str
) -> None:
    """Regression (issue 12 item 13): a read-only output folder gave an OSError traceback from
    cleanup (video: exit 1 after decoding); now the folder is probed before any input is
    decoded: exit 2 naming it, nothing left behind."""
    src = clip if kind == "video" else DATA / "astronaut.png"
    folder = tmp_path / "out"
    folder.mkdir()
    with read_only(folder):
        code = main(["blur", str(src), "-o", str(folder / f"anon{src.suffix}")])
    err = capsys.readouterr().err
    assert code == 2, err
    assert f"{folder}: cannot write" in err and "Traceback" not in err, err
    assert list(folder.iterdir()) == []


def test_a_missing_output_folder_is_found_before_work(
    tmp_path: Path, clip: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Regression (issue 12 item 13): `-o missing/out.mp4` was found only when the writer opened,
    after decoding had started, and exited 1 with a disk-space hint; now exit 2, naming the
    folder and `mkdir -p`, before any work."""
    folder = tmp_path / "missing"
    code = main(["blur", str(clip), "-o", str(folder / "out.mp4")])
    err = capsys.readouterr().err
    assert code == 2 and f"{folder}: the output folder does not exist" in err, err
    assert "mkdir -p" in err and not folder.exists()


def _fast_start(src: Path, dst: Path) -> None:
    """Remux ``src`` with its index (moov) in front, as phones and web exports write MP4."""
    with av.open(str(src)) as inp, av.open(str(dst), "w", options={"movflags": "faststart"}) as out:
        stream = out.add_stream_from_template(inp.streams.video[0])
        for packet in inp.demux(inp.streams.video[0]):
            if packet.dts is not None:
                packet.stream = stream
                out.mux(packet)


@pytest.mark.parametrize("container", ["mkv", "faststart.mp4"])
def test_a_cut_video_names_the_input_and_says_what_happened(
    tmp_path: Path, container: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Regression (issue 12 item 18): a Matroska file cut in half decoded to no frames without
    an error, and the writer then blamed the *output* ('out.mkv: no frames to write', exit 1); a
    cut fast-start MP4 said 'frames 0..-1 were read'. Both now name the input, say that no
    frame could be read, and exit 2."""
    scene = SyntheticScene(320, 240, fps=10, duration_s=2, seed=3, mean_gap_s=0.2)
    whole = tmp_path / "whole.mkv"
    write_video(scene, whole)
    if container != "mkv":
        plain = tmp_path / "plain.mp4"
        write_video(scene, plain)
        whole = tmp_path / "whole.mp4"
        _fast_start(plain, whole)
        assert b"moov" in whole.read_bytes()[:64]  # the index really is in front
    src = tmp_path / f"cut{whole.suffix}"
    data = whole.read_bytes()
    src.write_bytes(data[: len(data) // 2])
    out = tmp_path / "out" / f"anon{src.suffix}"
    out.parent.mkdir()
    code = main(["blur", str(src), "-o", str(out)])
    err = capsys.readouterr().err
    assert code == 2, err
    assert f"{src}:" in err and str(out) not in err, err
    assert "no frame could be" in err and "0..-1" not in err, err
    assert list(out.parent.iterdir()) == []


def _constant_png(path: Path, width: int, height: int) -> None:
    """A real PNG of one grey, written row by row through zlib: a huge picture that is small
    on disk, made without ever holding its pixels (what an attacker would upload)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    squeeze = zlib.compressobj(9)
    row = b"\x00" + b"\x5a" * (3 * width)  # filter byte 0, then RGB
    idat = b"".join(squeeze.compress(row) for _ in range(height)) + squeeze.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
    )


def test_a_huge_image_is_refused_from_its_header(tmp_path: Path) -> None:
    """Regression (issue 12 item 7): a 12000x9000 picture (a few hundred KB on disk) took
    21 GB and minutes in `anoncam blur`, exit 0; a Pi would be killed. Its size is now read
    from the header and refused (exit 2, naming the file and the limit) before any decoding:
    the whole run stays below the 324 MB one decoded copy of its pixels would take."""
    src = tmp_path / "huge.png"
    _constant_png(src, 12000, 9000)
    assert src.stat().st_size < 1_000_000
    out = tmp_path / "anon.png"
    # The child reports its own peak resident size as it exits: VmHWM, which starts afresh at
    # exec (ru_maxrss would carry over this test process's size through the fork).
    report = (
        "import sys\n"
        "from firmware.cli import main\n"
        "code = main(sys.argv[1:])\n"
        "status = open('/proc/self/status').read().split('VmHWM:')[1]\n"
        "print(status.split()[0])\n"
        "sys.exit(code)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", report, "blur", str(src), "-o", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2, proc.stderr
    assert f"{src}: 12000x9000" in proc.stderr and "25 megapixels" in proc.stderr, proc.stderr
    assert not out.exists()
    peak_kb = int(proc.stdout.split()[-1])
    assert peak_kb < 12000 * 9000 * 3 // 1024, f"peak {peak_kb} KB"


def test_the_header_reader_agrees_with_the_decoder(tmp_path: Path) -> None:
    """The size the limit is checked on is the size FFmpeg decodes: every bundled photo (JPEG
    and PNG), our own JPEG and PNG encoder's output at odd sizes."""
    from firmware.media.header import image_size
    from firmware.media.image import encode_image, read_image

    paths = sorted(DATA.glob("*.jpg")) + sorted(DATA.glob("*.png"))
    for suffix in (".jpg", ".png"):
        p = tmp_path / f"odd{suffix}"
        p.write_bytes(encode_image(np.zeros((37, 53, 3), np.uint8), suffix))
        paths.append(p)
    assert len(paths) > 10
    for p in paths:
        with av.open(str(p)) as c:
            stream = c.streams.video[0]
            assert image_size(p) == (stream.width, stream.height), p
    assert read_image(tmp_path / "odd.jpg").shape == (37, 53, 3)


def _null_model(path: Path) -> None:
    """A real ONNX file with CenterFace's input and four outputs (at 1/4 size) that finds
    nothing: zero-weight convolutions. What a wrong or tampered 'derived' model looks like."""
    import onnx
    from onnx import TensorProto, helper

    from firmware.models.manifest import spec

    s = spec("centerface")
    nodes, weights, outputs = [], [], []
    for name, channels in zip(s.outputs, (1, 2, 2, 10), strict=True):
        w = helper.make_tensor(
            f"w{name}", TensorProto.FLOAT, [channels, 3, 4, 4], [0.0] * 48 * channels
        )
        weights.append(w)
        nodes.append(helper.make_node("Conv", [s.input, f"w{name}"], [name], strides=[4, 4]))
        outputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, None))
    graph = helper.make_graph(
        nodes,
        "null",
        [helper.make_tensor_value_info(s.input, TensorProto.FLOAT, [1, 3, "h", "w"])],
        outputs,
        initializer=weights,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(path))


def test_a_derived_model_that_finds_no_face_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Regression (issue 12 item 12): a four-output ONNX that detects nothing, next to a
    self-written `.sha256` sidecar, skipped the manifest check and `blur` wrote the photo
    unanonymized with exit 0. A derived model must now find the faces in the reference
    portraits at load, or it is refused: exit 2, no output."""
    from firmware.fsutil import sha256_file
    from firmware.models.verify import write_sidecar_hash

    model = tmp_path / "centerface-fast.onnx"
    _null_model(model)
    write_sidecar_hash(model, sha256_file(model))
    out = tmp_path / "anon.png"
    code = main(["blur", str(DATA / "astronaut.png"), "-o", str(out), "--model", str(model)])
    err = capsys.readouterr().err
    assert code == 2, err
    assert f"{model}: refused" in err and "astronaut.png" in err, err
    assert not out.exists()


def _pattern(i: int) -> np.ndarray:
    """A face-free frame with a bright block in the top-left corner: its place shows the
    orientation, its brightness changes per frame so frames can be told apart."""
    img = np.full((120, 160, 3), 40, np.uint8)
    img[:30, :40] = 200 + i % 50
    return img


def test_a_rotated_video_stays_upright(tmp_path: Path) -> None:
    """Regression (issue 12 item 20): a phone video's display rotation was dropped, so the
    output played sideways (and the detector saw the faces sideways). The rotation is now
    applied to the pixels: the output, with no rotation of its own, looks like the input as a
    player shows it."""
    from firmware.media.avio import frame_to_bgr

    src = tmp_path / "phone.mp4"
    with av.open(str(src), "w") as out:
        stream = out.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = 160, 120, "yuv420p"
        stream.set_display_rotation(90)
        for i in range(5):
            frame = av.VideoFrame.from_ndarray(_pattern(i), format="bgr24")
            frame.pts = i
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    with av.open(str(src)) as inp:
        shown = frame_to_bgr(next(inp.decode(video=0)), apply_rotation=True)
    assert shown.shape == (160, 120, 3)  # what a player shows: portrait
    dst = tmp_path / "anon.mp4"
    assert main(["blur", str(src), "-o", str(dst), "--hold", "0"]) == 0
    with av.open(str(dst)) as res:
        first = next(res.decode(video=0))
        assert (first.rotation or 0) == 0
        image = frame_to_bgr(first)
    assert image.shape == shown.shape
    assert float(np.abs(image.astype(int) - shown.astype(int)).mean()) < 4


def _times(path: Path) -> list[Fraction]:
    with av.open(str(path)) as c:
        stream = c.streams.video[0]
        pts = sorted(int(f.pts) for f in c.decode(stream))
        return [(p - pts[0]) * stream.time_base for p in pts]


def test_variable_frame_rate_timestamps_are_kept(tmp_path: Path) -> None:
    """Regression (issue 12 item 20): blur rewrote a variable frame rate video's timestamps
    as constant (frame n at n/fps), so pauses vanished and the clip got shorter."""
    from firmware.media.video_writer import VideoWriter

    src = tmp_path / "vfr.mp4"
    ticks = [0, 1, 2, 5, 6, 10, 11, 12, 20, 21]  # in 1/10 s: bursts and pauses
    with VideoWriter(src, fps=10, size=(160, 120)) as writer:
        for i, t in enumerate(ticks):
            writer.write(_pattern(i), t * 100_000_000)
    expected = [Fraction(t, 10) for t in ticks]
    assert _times(src) == expected  # the input really is variable
    dst = tmp_path / "anon.mp4"
    assert main(["blur", str(src), "-o", str(dst), "--hold", "0"]) == 0
    got = _times(dst)
    assert len(got) == len(expected)
    assert all(abs(g - e) < Fraction(1, 1000) for g, e in zip(got, expected, strict=True)), got


def test_sigterm_removes_the_partial_file(tmp_path: Path) -> None:
    """Regression (issue 12 item 20): SIGTERM (systemd, kill, a CI timeout) ended blur with its
    hidden `.anon.mp4.partial.mp4` left on disk; SIGINT cleaned up. Now both do, exit 130."""
    src = tmp_path / "long.mp4"
    write_video(SyntheticScene(320, 240, fps=10, duration_s=60, seed=2), src)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    dst = out_dir / "anon.mp4"
    proc = subprocess.Popen(
        [sys.executable, "-m", "firmware", "blur", str(src), "-o", str(dst)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        # wait on the observable state: the partial file exists once encoding has started
        deadline = time.monotonic() + 120
        partials: list[Path] = []
        while not partials and proc.poll() is None and time.monotonic() < deadline:
            partials = list(out_dir.glob(".*partial*"))
            time.sleep(0.02)
        assert partials, "blur never started writing"
        assert proc.poll() is None, "blur finished before it could be stopped; use a longer clip"
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err
    assert list(out_dir.iterdir()) == [], "a stopped run must leave nothing behind"
