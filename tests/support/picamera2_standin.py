"""A small, honest stand-in for picamera2's ``Picamera2`` (the Pi camera cannot be reached in CI).

It implements the calls :class:`firmware.sources.camera.Picamera2Source` makes, with
the behaviour of the real thing where it matters:

- ``global_camera_info()`` lists the cameras; constructing one when the list is empty raises
  ``IndexError`` as picamera2 does;
- like a Pi 4, the lores stream must be YUV420, and YUV420 rows are padded to a stride (a
  multiple of 64 bytes here), so consumers must honour ``camera_config["lores"]["stride"]``;
- ``RGB888`` main frames are BGR in memory;
- the colour space defaults as current picamera2 does for video (Rec709 limited at 1280x720 and
  above, Smpte170m below) and the YUV bytes are encoded with it;
- buffers are recycled when ``captured_request()`` exits: the stand-in scribbles over them, so a
  consumer that kept a view instead of a copy sees garbage;
- ``SensorTimestamp`` (ns) and ``FrameDuration`` (us) metadata; sensor frames listed in ``drop``
  are never delivered, leaving a gap in the timestamps as a real drop does.

The picture is a known pattern (:func:`pattern`), constant over 2x2 blocks so that 4:2:0 chroma
subsampling loses nothing and a conversion can be checked to rounding error.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
from numpy.typing import NDArray

from firmware.media.yuv import Matrix, bgr_to_i420


@dataclass(frozen=True)
class ColorSpace:
    """The fields of ``libcamera.ColorSpace`` a consumer reads, spelled as libcamera prints them."""

    name: str
    ycbcrEncoding: str  # noqa: N815 - libcamera's attribute name
    range: str

    def __str__(self) -> str:
        return f"<libcamera.ColorSpace '{self.name}'>"


SYCC = ColorSpace("Sycc", "YcbcrEncoding.Rec601", "Range.Full")
SMPTE170M = ColorSpace("Smpte170m", "YcbcrEncoding.Rec601", "Range.Limited")
REC709 = ColorSpace("Rec709", "YcbcrEncoding.Rec709", "Range.Limited")
SRGB = ColorSpace("Srgb", "YcbcrEncoding.None", "Range.Full")

_ENCODING: dict[str, tuple[Matrix, bool]] = {
    "Sycc": ("bt601", True),
    "Smpte170m": ("bt601", False),
    "Rec709": ("bt709", False),
}


def pattern(width: int, height: int, n: int) -> NDArray[np.uint8]:
    """Frame ``n`` of the test picture: colour gradients plus a bar that moves with ``n``.

    Defined on a half-resolution grid and repeated 2x2, so YUV 4:2:0 represents it exactly.
    """
    h2, w2 = height // 2, width // 2
    yy, xx = np.mgrid[:h2, :w2]
    img = np.empty((h2, w2, 3), np.uint8)
    img[..., 0] = (xx * 255) // max(1, w2 - 1)  # blue grows to the right
    img[..., 1] = (yy * 255) // max(1, h2 - 1)  # green grows downwards
    img[..., 2] = ((xx + yy + 8 * n) * 3) % 256  # red stripes that move
    bar = (xx // 4 + n) % 16 == 0
    img[bar] = (30, 200, 240)
    return np.ascontiguousarray(img.repeat(2, axis=0).repeat(2, axis=1))


class _Request:
    def __init__(self, main: NDArray[np.uint8], lores: NDArray[np.uint8], metadata: dict[str, Any]):
        self._arrays = {"main": main, "lores": lores}
        self._metadata = metadata
        self.released = False

    def make_array(self, name: str) -> NDArray[np.uint8]:
        if self.released:
            raise RuntimeError("request already released")
        if name not in self._arrays:
            raise RuntimeError(f"Stream {name!r} is not defined")
        return self._arrays[name]  # a view of the camera's buffer, not a copy

    def get_metadata(self) -> dict[str, Any]:
        return dict(self._metadata)

    def _release(self) -> None:
        for buf in self._arrays.values():
            buf.fill(0xA5)  # the buffer goes back to the camera and is overwritten
        self.released = True


class Picamera2:
    """Stand-in camera. Subclass it with :func:`standin` to change the class-level options."""

    cameras: ClassVar[list[dict[str, Any]]] = [
        {"Model": "imx708", "Location": 2, "Rotation": 180, "Id": "/base/standin", "Num": 0}
    ]
    colour_space_override: ClassVar[ColorSpace | None] = None  # what configure settles on
    report_main_colour_space: ClassVar[bool] = False  # report sRGB (an RGB main) as headline
    drop: ClassVar[frozenset[int]] = frozenset()  # sensor frame numbers never delivered
    frame_duration_us: ClassVar[int | None] = None  # default: from the requested frame rate
    fail_after: ClassVar[int | None] = None  # raise like a camera timeout after this many frames
    refuse_lores_larger_than_main: ClassVar[bool] = True
    start_ns: ClassVar[int] = 5_000_000_000

    @classmethod
    def global_camera_info(cls) -> list[dict[str, Any]]:
        return [dict(c) for c in cls.cameras]

    def __init__(self, camera_num: int = 0) -> None:
        cameras = self.global_camera_info()
        _ = cameras[camera_num]  # IndexError with no camera, as picamera2
        self.camera_config: dict[str, Any] | None = None
        self.started = False
        self.closed = False
        self.delivered = 0
        self._sensor_frame = 0

    def create_video_configuration(
        self,
        main: dict[str, Any] | None = None,
        lores: dict[str, Any] | None = None,
        raw: dict[str, Any] | None = None,
        transform: Any = None,
        colour_space: Any = None,
        buffer_count: int = 6,
        controls: dict[str, Any] | None = None,
        display: str | None = "main",
        encode: str | None = "main",
        queue: bool = True,
    ) -> dict[str, Any]:
        main = {"format": "XBGR8888", "size": (1280, 720)} | dict(main or {})
        if colour_space is None:
            big = main["size"][0] >= 1280 and main["size"][1] >= 720
            colour_space = REC709 if big else SMPTE170M
        return {
            "use_case": "video",
            "colour_space": colour_space,
            "buffer_count": buffer_count,
            "main": main,
            "lores": None if lores is None else {"format": "YUV420"} | dict(lores),
            "raw": raw,
            "controls": dict(controls or {}),
        }

    def configure(self, config: dict[str, Any]) -> None:
        if self.started:
            raise RuntimeError("Camera must be stopped before configuring")
        config = copy.deepcopy(config)
        main, lores = config["main"], config["lores"]
        mw, mh = main["size"]
        main["stride"] = mw * 3
        if lores is not None:
            lw, lh = lores["size"]
            if lores["format"] not in ("YUV420", "YVU420"):
                raise RuntimeError("lores stream must be YUV420 on this platform")
            if self.refuse_lores_larger_than_main and (lw > mw or lh > mh):
                raise RuntimeError("lores stream dimensions may not exceed main stream")
            lores["stride"] = -(-lw // 64) * 64
        if self.colour_space_override is not None:
            config["colour_space"] = self.colour_space_override
        self._lores_colour = config["colour_space"]
        if self.report_main_colour_space:
            config["colour_space"] = SRGB
        self.camera_config = config

    def start(self) -> None:
        if self.camera_config is None:
            raise RuntimeError("Camera has not been configured")
        self.started = True

    def stop(self) -> None:
        self.started = False

    def close(self) -> None:
        self.started = False
        self.closed = True

    def _interval_us(self) -> int:
        if self.frame_duration_us is not None:
            return self.frame_duration_us
        assert self.camera_config is not None
        limits = self.camera_config["controls"].get("FrameDurationLimits", (66_666, 66_666))
        return int(limits[0])

    @contextmanager
    def captured_request(self, flush: Any = None) -> Iterator[_Request]:
        if not self.started or self.camera_config is None:
            raise RuntimeError("Camera is not running")
        if self.fail_after is not None and self.delivered >= self.fail_after:
            raise RuntimeError("Camera frontend has timed out!")
        while self._sensor_frame in self.drop:
            self._sensor_frame += 1
        n = self._sensor_frame
        self._sensor_frame += 1
        main_cfg, lores_cfg = self.camera_config["main"], self.camera_config["lores"]
        mw, mh = main_cfg["size"]
        lw, lh = lores_cfg["size"]
        main = pattern(mw, mh, n)
        matrix, full = _ENCODING[self._lores_colour.name]
        lores = bgr_to_i420(
            pattern(lw, lh, n), stride=lores_cfg["stride"], matrix=matrix, full_range=full
        )
        if lores_cfg["format"] == "YVU420":
            raise NotImplementedError("the stand-in only encodes YUV420")
        interval = self._interval_us()
        metadata = {
            "SensorTimestamp": self.start_ns + n * interval * 1000,
            "FrameDuration": interval,
            "ExposureTime": min(interval, 20_000),
        }
        request = _Request(main, lores, metadata)
        try:
            yield request
        finally:
            request._release()
            self.delivered += 1


def standin(**options: Any) -> type[Picamera2]:
    """A ``Picamera2`` stand-in class with the given class-level options (see the class)."""
    return type("Picamera2Standin", (Picamera2,), dict(options))
