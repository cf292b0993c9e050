"""The Pi camera source, against the picamera2 stand-in, and the YUV420 conversion it relies on."""

from __future__ import annotations

import subprocess
import sys
import types
from pathlib import Path

import av
import numpy as np
import pytest

import tests.support.picamera2_standin as standin_module
from firmware.config.settings import SourceConfig
from firmware.errors import SourceError
from firmware.media.yuv import bgr_to_i420, i420_to_bgr
from firmware.sources import FrameSource, open_source
from firmware.sources.camera import Picamera2Source, ycbcr_of
from tests.support.picamera2_standin import REC709, SMPTE170M, SRGB, SYCC, pattern, standin

ROOT = Path(__file__).resolve().parents[2]


def _config(**kw: object) -> SourceConfig:
    base: dict[str, object] = {
        "kind": "picamera2",
        "width": 320,
        "height": 240,
        "fps": 15.0,
        "lores_width": 160,
        "lores_height": 120,
    }
    return SourceConfig.model_validate(base | kw)


def _blocks(seed: int, rows: int, cols: int, block: int = 8) -> np.ndarray:
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (rows, cols, 3), dtype=np.uint8)
    return np.ascontiguousarray(np.kron(small, np.ones((block, block, 1), np.uint8)))


@pytest.mark.parametrize(
    ("matrix", "full_range", "sws_colorspace", "sws_range"),
    [
        ("bt601", False, "ITU601", "MPEG"),
        ("bt709", False, "ITU709", "MPEG"),
        ("bt601", True, "ITU601", "JPEG"),
    ],
)
def test_i420_to_bgr_matches_libswscale(
    matrix: str, full_range: bool, sws_colorspace: str, sws_range: str
) -> None:
    """Our numpy conversion agrees with FFmpeg's libswscale (an independent implementation) to
    within 3 levels for each encoding and range; guards against swapped planes, a wrong matrix
    or a missed range expansion, each of which is off by tens of levels."""
    img = _blocks(1, 12, 16)
    h, w = img.shape[:2]
    flat = bgr_to_i420(img, matrix=matrix, full_range=full_range).reshape(-1)  # type: ignore[arg-type]
    mine = i420_to_bgr(flat, w, h, matrix=matrix, full_range=full_range)  # type: ignore[arg-type]
    frame = av.VideoFrame(w, h, "yuv420p")
    q = w * h // 4
    for plane, data in zip(
        frame.planes, (flat[: w * h], flat[w * h : w * h + q], flat[w * h + q :]), strict=True
    ):
        plane.update(data.tobytes())
    ref = frame.reformat(
        format="bgr24", src_colorspace=sws_colorspace, src_color_range=sws_range
    ).to_ndarray()
    assert np.abs(mine.astype(int) - ref.astype(int)).max() <= 3
    assert np.abs(mine.astype(int) - img.astype(int)).max() <= 2


def test_i420_pure_colours_and_stride_padding() -> None:
    """Known values: limited-range BT.601 red (Y=81, U=90, V=240) decodes to BGR (0, 0, 255),
    and padding bytes right of the width (stride 64 for width 10) are ignored."""
    w, h, stride = 10, 4, 64
    buf = np.zeros(h * stride * 3 // 2, np.uint8)
    buf[: h * stride].reshape(h, stride)[:, :w] = 81
    buf[: h * stride].reshape(h, stride)[:, w:] = 255  # padding must not leak in
    c = (h // 2) * (stride // 2)
    buf[h * stride : h * stride + c].reshape(h // 2, stride // 2)[:, : w // 2] = 90
    buf[h * stride + c :].reshape(h // 2, stride // 2)[:, : w // 2] = 240
    out = i420_to_bgr(buf.reshape(h * 3 // 2, stride), w, h)
    assert out.shape == (h, w, 3)
    assert np.abs(out.astype(int) - [0, 0, 255]).max() <= 2


def test_i420_rejects_short_buffer() -> None:
    with pytest.raises(ValueError, match="too small"):
        i420_to_bgr(np.zeros(100, np.uint8), 16, 16)


def test_frames_come_through_with_sensor_timestamps() -> None:
    """Main frames arrive exactly (RGB888 is BGR in memory), lores frames are the same picture
    converted from padded YUV420 (160 px wide, stride 192), and t_ns is the SensorTimestamp.
    The stand-in overwrites buffers when a request is released, so this also guards that the
    source copies arrays out before leaving ``captured_request()``."""
    cam_cls = standin()
    with Picamera2Source(_config(), camera_factory=cam_cls) as src:
        assert isinstance(src, FrameSource)
        assert src.size == (320, 240) and src.lores_size == (160, 120)
        assert src.live and src.fps == 15.0
        assert src.colour_encoding == ("bt601", False)  # Smpte170m below 1280x720
        frames = [f for _, f in zip(range(4), src.frames(), strict=False)]
        for n, f in enumerate(frames):
            assert f.index == n
            assert f.t_ns == cam_cls.start_ns + n * 66_667 * 1000
            assert np.array_equal(f.image, pattern(320, 240, n))
            assert f.lores is not None
            assert np.abs(f.lores.astype(int) - pattern(160, 120, n).astype(int)).max() <= 2
        assert src.dropped == 0
        assert "imx708" in src.describe()


@pytest.mark.parametrize(
    ("colour_space", "report_main", "expected"),
    [
        (SYCC, False, ("bt601", True)),
        (REC709, False, ("bt709", False)),
        (SMPTE170M, False, ("bt601", False)),
        # An RGB main stream reports sRGB (no Y'CbCr encoding): fall back to picamera2's default.
        (SMPTE170M, True, ("bt601", False)),
    ],
)
def test_lores_conversion_follows_the_camera_colour_space(
    colour_space: object, report_main: bool, expected: tuple[str, bool]
) -> None:
    """The lores frames are right whatever colour space the camera settles on; guards against a
    hard-coded matrix or range (off by up to ~20 levels on saturated colours)."""
    cam_cls = standin(colour_space_override=colour_space, report_main_colour_space=report_main)
    with Picamera2Source(_config(), camera_factory=cam_cls) as src:
        assert src.colour_encoding == expected
        f = next(src.frames())
        assert f.lores is not None
        assert np.abs(f.lores.astype(int) - pattern(160, 120, 0).astype(int)).max() <= 2


def test_ycbcr_of_reads_fields_and_preset_names() -> None:
    assert ycbcr_of(SYCC) == ("bt601", True)
    assert ycbcr_of(REC709) == ("bt709", False)
    assert ycbcr_of(SRGB) is None
    assert ycbcr_of("<libcamera.ColorSpace 'Rec709'>") == ("bt709", False)
    assert ycbcr_of(None) is None


def test_dropped_frames_are_inferred_from_timestamp_gaps() -> None:
    """Sensor frames 3 and 4 never arrive: the source counts 2 dropped frames, keeps delivered
    indices contiguous and passes the real (gapped) timestamps on."""
    cam_cls = standin(drop=frozenset({3, 4}))
    with Picamera2Source(_config(), camera_factory=cam_cls) as src:
        frames = [f for _, f in zip(range(6), src.frames(), strict=False)]
        assert [f.index for f in frames] == list(range(6))
        assert src.dropped == 2
        assert frames[3].t_ns - frames[2].t_ns == 3 * 66_667 * 1000
        assert np.array_equal(frames[3].image, pattern(320, 240, 5))


def test_long_frame_durations_are_not_drops() -> None:
    """In the dark the camera stretches frames beyond the requested rate (FrameDuration grows);
    that is not frame loss and must not count as such."""
    cam_cls = standin(frame_duration_us=200_000)  # 5 fps actual vs 15 requested
    with Picamera2Source(_config(), camera_factory=cam_cls) as src:
        for _, _f in zip(range(5), src.frames(), strict=False):
            pass
        assert src.dropped == 0


def test_no_camera_is_a_source_error_with_the_fix() -> None:
    with pytest.raises(SourceError, match="no camera found") as info:
        Picamera2Source(_config(), camera_factory=standin(cameras=[]))
    assert "raspi-config" in info.value.hint and "camera_auto_detect=1" in info.value.hint


def test_camera_constructor_failure_is_a_source_error() -> None:
    """picamera2 raises IndexError/RuntimeError itself (camera busy, list empty): mapped too."""

    def busy() -> object:
        raise RuntimeError("Failed to acquire camera: Device or resource busy")

    with pytest.raises(SourceError, match=r"no camera found.*busy"):
        Picamera2Source(_config(), camera_factory=busy)


def test_refused_configuration_closes_the_camera() -> None:
    """A lores stream larger than main is refused by the camera: SourceError, camera released."""
    made: list[standin_module.Picamera2] = []
    cam_cls = standin()

    def factory() -> standin_module.Picamera2:
        made.append(cam_cls())
        return made[-1]

    with pytest.raises(SourceError, match="refused the configuration"):
        Picamera2Source(_config(lores_width=640, lores_height=480), camera_factory=factory)
    assert made[0].closed


def test_camera_failure_mid_stream_is_a_source_error_and_close_releases() -> None:
    cam_cls = standin(fail_after=2)
    src = Picamera2Source(_config(), camera_factory=cam_cls)
    it = src.frames()
    next(it)
    next(it)
    with pytest.raises(SourceError, match="stopped delivering frames after 2 frames"):
        next(it)
    src.close()
    src.close()  # twice is fine
    cam = src._cam
    assert cam.closed and not cam.started


def test_open_source_without_picamera2_names_the_apt_package(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """On a machine without picamera2 (a None entry in sys.modules makes the import fail, as on
    any non-Pi machine), asking for the camera says how to install it on Raspberry Pi OS."""
    monkeypatch.setitem(sys.modules, "picamera2", None)
    with pytest.raises(SourceError, match="picamera2 is not importable") as info:
        open_source(SourceConfig(kind="picamera2"))
    assert "sudo apt install python3-picamera2" in info.value.hint
    assert "--system-site-packages" in info.value.hint


def test_open_source_imports_picamera2_lazily(monkeypatch: pytest.MonkeyPatch) -> None:
    """With a module named picamera2 importable (here the stand-in), open_source builds the
    camera source through the real lazy-import path."""
    module = types.ModuleType("picamera2")
    module.Picamera2 = standin()  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "picamera2", module)
    with open_source(_config()) as src:
        assert isinstance(src, Picamera2Source)
        assert next(src.frames()).image.shape == (240, 320, 3)


def test_importing_every_source_module_needs_no_picamera2() -> None:
    """Habit 1: importing firmware.sources and each of its modules imports neither picamera2
    nor libcamera, even where they are installed (a blocking import hook proves it)."""
    code = r"""
import importlib, pkgutil, sys

class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("picamera2", "libcamera"):
            raise ImportError("blocked: " + name)
        return None

sys.meta_path.insert(0, Block())
import firmware.sources as pkg
names = [m.name for m in pkgutil.iter_modules(pkg.__path__, "firmware.sources.")]
for name in names:
    importlib.import_module(name)
assert "firmware.sources.camera" in names, names
assert not any(m.split(".")[0] in ("picamera2", "libcamera") for m in sys.modules)
print("ok", len(names))
"""
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("ok")
