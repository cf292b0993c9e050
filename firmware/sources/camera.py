"""The Raspberry Pi camera through picamera2: a full-size stream to anonymize and show, and a
low-resolution stream of the same instant for the detector.

picamera2 is imported inside :class:`Picamera2Source`, never at module import: it exists only on
Raspberry Pi OS (from apt), and importing it talks to libcamera.

Hardware facts that shape this module:
- ``"RGB888"`` in picamera2 is BGR in memory (libcamera names formats by their big-endian word),
  which is exactly our frame format, so the main stream needs no conversion.
- On a Pi 4 and older the ISP's second output must be YUV420; we convert it to BGR in numpy.
- The lores stream's Y'CbCr encoding follows the camera's colour space. We ask for ``Sycc``
  (full-range BT.601, as JPEG) when libcamera is importable: older picamera2 releases force it
  for RGB main streams anyway, newer ones would pick Rec709 (limited range) at 1280x720 and
  Smpte170m below, so pinning it gives one known conversion on every release. If the camera
  reports a Y'CbCr encoding after configuration, that is what we use.
- The frame rate is set with ``FrameDurationLimits`` (microseconds): every picamera2 release
  knows that libcamera control, while the ``FrameRate`` shorthand is newer.
- Buffers go back to the camera when ``captured_request()`` exits, so arrays are copied out
  inside the ``with`` block.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from firmware.config.settings import SourceConfig
from firmware.errors import SourceError
from firmware.frames import Frame, Image
from firmware.media.yuv import Matrix, i420_to_bgr
from firmware.sources.base import SourceBase

logger = logging.getLogger(__name__)

NOT_IMPORTABLE = "picamera2 is not importable"
APT_HINT = (
    "on Raspberry Pi OS run 'sudo apt install python3-picamera2' and create the venv with "
    "--system-site-packages"
)
NUMPY_HINT = (
    "the venv has a numpy that the apt-installed picamera2/simplejpeg were not built for "
    "(numpy 2 vs the system's 1.x): run 'pip install \"numpy<2\"' in the venv, or remove the "
    "venv's numpy so the system one is used"
)
NO_CAMERA = "no camera found"
NO_CAMERA_HINT = (
    "check the ribbon cable (contacts facing the right way, latch closed) and that the camera "
    "is enabled (raspi-config / camera_auto_detect=1 in config.txt); 'rpicam-hello --list-cameras' "
    "should list it"
)
# A gap between sensor timestamps above this many frame intervals means frames were lost.
_DROP_GAP = 1.5


def _import_picamera2() -> Any:
    try:
        from picamera2 import Picamera2  # type: ignore[import-not-found, unused-ignore]
    except ImportError as exc:
        raise SourceError(f"{NOT_IMPORTABLE}: {exc}", hint=APT_HINT) from None
    except ValueError as exc:  # "numpy.dtype size changed, may indicate binary incompatibility"
        raise SourceError(f"{NOT_IMPORTABLE}: {exc}", hint=NUMPY_HINT) from None
    return Picamera2


def _sycc_colour_space() -> Any | None:
    """libcamera's full-range BT.601 colour space, or None where libcamera is absent."""
    try:
        import libcamera  # type: ignore[import-not-found, unused-ignore]
    except ImportError:
        return None
    return libcamera.ColorSpace.Sycc()


def ycbcr_of(colour_space: Any) -> tuple[Matrix, bool] | None:
    """``(matrix, full_range)`` of a libcamera colour space, or None if it has no Y'CbCr encoding.

    Reads the ``ycbcrEncoding`` and ``range`` fields (``YcbcrEncoding.Rec709``,
    ``Range.Limited``) and falls back to the preset name in its text (``'Sycc'``).
    """
    if colour_space is None:
        return None
    encoding = getattr(colour_space, "ycbcrEncoding", None)
    value_range = getattr(colour_space, "range", None)
    if encoding is not None and value_range is not None:
        enc = str(encoding)
        full = "full" in str(value_range).lower()
        for key, matrix in (("709", "bt709"), ("2020", "bt2020"), ("601", "bt601")):
            if key in enc:
                return matrix, full  # type: ignore[return-value]
    text = str(colour_space)
    presets: tuple[tuple[str, tuple[Matrix, bool]], ...] = (
        ("Sycc", ("bt601", True)),
        ("Jpeg", ("bt601", True)),
        ("Smpte170m", ("bt601", False)),
        ("Rec709", ("bt709", False)),
        ("Rec2020", ("bt2020", False)),
    )
    for name, result in presets:
        if name in text:
            return result
    return None


class Picamera2Source(SourceBase):
    """Frames from the Pi camera: ``Frame.image`` from the main stream (BGR), ``Frame.lores``
    from the low-resolution stream (converted to BGR), ``t_ns`` the sensor timestamp.

    ``camera_factory`` builds the camera object (default: ``picamera2.Picamera2``). If it has a
    ``global_camera_info`` attribute, as the class does, an empty list means no camera. Tests
    pass a stand-in with the same calls.

    ``dropped`` counts frames inferred lost from gaps in the sensor timestamps (more than 1.5
    frame durations; the frame duration is the camera's own, so long exposures in the dark do
    not count as drops).
    """

    def __init__(
        self, config: SourceConfig, camera_factory: Callable[[], Any] | None = None
    ) -> None:
        factory = camera_factory if camera_factory is not None else _import_picamera2()
        self._model = "camera"
        info = getattr(factory, "global_camera_info", None)
        if callable(info):
            cameras = list(info())
            if not cameras:
                raise SourceError(NO_CAMERA, hint=NO_CAMERA_HINT)
            first = cameras[0]
            if isinstance(first, dict):
                self._model = str(first.get("Model", "camera"))
        try:
            self._cam: Any = factory()
        except (IndexError, RuntimeError) as exc:
            # picamera2 raises IndexError ("list index out of range") or RuntimeError when the
            # camera list is empty or the camera is held by another process.
            raise SourceError(
                f"{NO_CAMERA} ({type(exc).__name__}: {exc})",
                hint=NO_CAMERA_HINT
                + "; also check that no other program (rpicam-*, another anoncam) holds it",
            ) from None
        self._fps = float(config.fps)
        self._dropped = 0
        self._closed = False
        try:
            self._configure(config)
            self._cam.start()
        except (RuntimeError, ValueError, OSError, KeyError, TypeError) as exc:
            self.close()
            raise SourceError(
                f"the camera refused the configuration {config.width}x{config.height} + lores "
                f"{config.lores_width}x{config.lores_height} YUV420 at {config.fps:g} fps: {exc}",
                hint="use sizes the sensor supports (even numbers; lores no larger than main) and "
                "a frame rate it can reach; 'rpicam-hello --list-cameras' lists its modes",
            ) from None
        logger.info("camera started: %s", self.describe())

    def _configure(self, config: SourceConfig) -> None:
        frame_us = round(1_000_000 / config.fps)
        kwargs: dict[str, Any] = {}
        requested = _sycc_colour_space()
        if requested is not None:
            kwargs["colour_space"] = requested
        cam_config = self._cam.create_video_configuration(
            main={"size": (config.width, config.height), "format": "RGB888"},
            lores={"size": (config.lores_width, config.lores_height), "format": "YUV420"},
            controls={"FrameDurationLimits": (frame_us, frame_us)},
            **kwargs,
        )
        self._cam.configure(cam_config)
        # picamera2 may align sizes (lores width to 32 or 64 pixels): use what it settled on.
        actual = self._cam.camera_config
        self._size = (int(actual["main"]["size"][0]), int(actual["main"]["size"][1]))
        lores = actual["lores"]
        self._lores_size = (int(lores["size"][0]), int(lores["size"][1]))
        stride = lores.get("stride")
        self._lores_stride = int(stride) if stride else None
        self._lores_yvu = str(lores.get("format", "YUV420")) == "YVU420"
        found = ycbcr_of(actual.get("colour_space")) or ycbcr_of(requested)
        if found is None:
            # No Y'CbCr encoding reported or requested: picamera2's own default for video.
            big = self._size[0] >= 1280 and self._size[1] >= 720
            default: tuple[Matrix, bool] = ("bt709", False) if big else ("bt601", False)
            logger.warning(
                "camera did not report the lores colour encoding; assuming %s limited range",
                default[0],
            )
            found = default
        self._matrix, self._full_range = found

    @property
    def size(self) -> tuple[int, int]:
        return self._size

    @property
    def lores_size(self) -> tuple[int, int]:
        return self._lores_size

    @property
    def colour_encoding(self) -> tuple[Matrix, bool]:
        """``(matrix, full_range)`` used to convert the lores stream."""
        return self._matrix, self._full_range

    @property
    def fps(self) -> float:
        return self._fps

    @property
    def live(self) -> bool:
        return True

    @property
    def dropped(self) -> int:
        return self._dropped

    def describe(self) -> str:
        w, h = self._size
        lw, lh = self._lores_size
        rng = "full" if self._full_range else "limited"
        return (
            f"Pi camera {self._model} {w}x{h} @ {self._fps:g} fps, "
            f"lores {lw}x{lh} YUV420 ({self._matrix} {rng} range)"
        )

    def _capture(self) -> tuple[Image, Image, int | None, float | None]:
        """One request: copies of main (BGR) and lores (BGR), sensor timestamp, frame duration."""
        with self._cam.captured_request() as request:
            main = request.make_array("main")
            lores_yuv = request.make_array("lores")
            metadata = request.get_metadata()
            # Copy before the buffer goes back to the camera on leaving the block.
            main = np.array(main, dtype=np.uint8, copy=True, order="C")
            lw, lh = self._lores_size
            lores = i420_to_bgr(
                np.asarray(lores_yuv),
                lw,
                lh,
                stride=self._lores_stride,
                matrix=self._matrix,
                full_range=self._full_range,
                v_first=self._lores_yvu,
            )
        ts = metadata.get("SensorTimestamp")
        duration_us = metadata.get("FrameDuration")
        return (
            main,
            lores,
            int(ts) if ts is not None else None,
            float(duration_us) * 1000.0 if duration_us else None,
        )

    def frames(self) -> Iterator[Frame]:
        index = 0
        last_ts: int | None = None
        nominal_ns = 1e9 / self._fps
        while not self._closed:
            try:
                main, lores, ts, duration_ns = self._capture()
            except (RuntimeError, OSError, TimeoutError, ValueError) as exc:
                if self._closed:
                    return
                raise SourceError(
                    f"the camera stopped delivering frames after {index} frames: {exc}",
                    hint="check the ribbon cable and the power supply (vcgencmd get_throttled); "
                    "'dmesg | grep -i -e unicam -e rp1-cfe' shows camera errors",
                ) from None
            w, h = self._size
            if main.shape != (h, w, 3):
                raise SourceError(
                    f"the camera's main stream delivered {main.shape}, expected ({h}, {w}, 3)",
                    hint="the main stream must be RGB888; check the camera configuration",
                )
            if ts is None:
                ts = time.monotonic_ns()
            if last_ts is not None:
                interval = duration_ns or nominal_ns
                gap = ts - last_ts
                if gap > _DROP_GAP * interval:
                    lost = max(1, round(gap / interval) - 1)
                    self._dropped += lost
                    logger.debug("camera: %d frame(s) lost before frame %d", lost, index)
                ts = max(ts, last_ts + 1)
            last_ts = ts
            yield Frame(main, ts, index, lores=lores)
            index += 1

    def close(self) -> None:
        """Stop and release the camera; safe to call twice."""
        if self._closed:
            return
        self._closed = True
        cam = getattr(self, "_cam", None)
        if cam is None:
            return
        for step in ("stop", "close"):
            try:
                getattr(cam, step)()
            except (RuntimeError, OSError) as exc:
                # Nothing left to do about it; the process releases the camera when it exits.
                logger.warning("camera %s failed: %s", step, exc)
