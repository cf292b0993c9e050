"""Writing video with PyAV: H.264 (or MPEG-4 Part 2), atomically, nothing copied from inputs.

Frames go to a hidden temporary file next to the target; only a complete, closed file is
renamed into place, so a failed or interrupted run never leaves a half-written output (and a
previous file of the same name survives a failed run). No metadata, chapters or audio are
copied from anywhere unless an audio stream is explicitly handed over (``--keep-audio``).
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterable
from fractions import Fraction
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import av
import numpy as np

from firmware.errors import OutputError, UsageError
from firmware.frames import Frame, Image, check_image

logger = logging.getLogger(__name__)

VIDEO_SUFFIXES = frozenset({".mp4", ".m4v", ".mov", ".mkv", ".avi"})
# AVI players expect MPEG-4 Part 2; everything else gets H.264, which plays everywhere.
_PREFERRED = {".avi": "mpeg4"}


def pick_codec(preferred: str | None = None) -> str:
    """``preferred`` if this PyAV build has it, else libx264, else mpeg4.

    PyPI wheels of PyAV ship libx264; a distribution's FFmpeg may not (licensing), and every
    FFmpeg has the native ``mpeg4`` encoder.
    """
    available = av.codecs_available
    for name in (preferred, "libx264", "mpeg4"):
        if name and name in available:
            return name
    raise OutputError(
        "no usable video encoder in this PyAV build (neither libx264 nor mpeg4)",
        hint="install PyAV from PyPI: pip install av",
    )


def as_rate(fps: float | Fraction) -> Fraction:
    """A frame rate as an exact fraction; 29.97 becomes 30000/1001, 15.0 becomes 15."""
    if isinstance(fps, Fraction):
        return fps
    return Fraction(fps).limit_denominator(1001)


def _error_text(exc: BaseException) -> str:
    text = getattr(exc, "strerror", None)
    return str(text) if text else str(exc)


def temp_path_for(target: Path) -> Path:
    return target.with_name(f".{target.name}.partial{target.suffix}")


X264_PARAMS = "me=dia:subme=1:partitions=i8x8,i4x4"
"""x264 settings on top of "veryfast": superfast's diamond motion search, sub-pixel refinement
1 and intra partitions only, while keeping veryfast's macroblock tree and 10-frame look-ahead
(superfast drops both, which doubles the file at the same CRF). On 150 frames of vtest.avi at
768x576, CRF 20: 2.9 instead of 4.9 CPU ms a frame, the file 10 % larger (1279 KiB, not 1161),
luma PSNR 30.39 dB against 30.40. ``anoncam blur`` spends the saved CPU on detection."""


class VideoWriter:
    """Encode BGR frames into ``path`` at exactly ``fps``, container chosen by the suffix.

    ``crf`` (libx264): 18 is visually lossless, 23 is x264's default; lower is bigger.
    ``preset``: x264 speed/size trade-off; "veryfast" keeps spare CPU for detection.
    ``x264_params``: options on top of the preset (x264's ``--x264-params`` syntax); the
    default, :data:`X264_PARAMS`, takes the cheaper motion search of "superfast" and keeps
    "veryfast"'s macroblock tree (see there).
    Odd sizes: H.264 switches to 4:4:4 chroma so the resolution stays exact; MPEG-4 needs even
    sides and is padded by one pixel (repeating the edge).
    Use as a context manager: a clean exit finalizes and renames the file into place; an
    exception deletes it. ``audio_template`` (an input audio stream) is remuxed unchanged.
    """

    def __init__(
        self,
        path: Path | str,
        *,
        fps: float | Fraction,
        size: tuple[int, int],
        codec: str | None = None,
        crf: int = 20,
        preset: str = "veryfast",
        x264_params: str | None = X264_PARAMS,
        audio_template: Any | None = None,
        time_base: Fraction | None = None,
    ) -> None:
        self.path = Path(path)
        suffix = self.path.suffix.lower()
        if suffix not in VIDEO_SUFFIXES:
            raise UsageError(
                f"{self.path}: unsupported video container {suffix or '(none)'!r}",
                hint=f"use one of {', '.join(sorted(VIDEO_SUFFIXES))}",
            )
        self.tmp = temp_path_for(self.path)
        self.rate = as_rate(fps)
        self.codec = pick_codec(codec or _PREFERRED.get(suffix))
        self.size = size
        w, h = size
        odd = bool(w % 2 or h % 2)
        pix_fmt = "yuv444p" if odd and self.codec == "libx264" else "yuv420p"
        self._pad = (h % 2, w % 2) if pix_fmt == "yuv420p" else (0, 0)
        self.frames_written = 0
        self._last_pts = -1
        # A finer time base (the input's) keeps a variable frame rate's timestamps; the
        # default 1/fps puts every frame on a constant grid. MPEG-4 Part 2 allows at most
        # 65535 ticks a second, so it keeps the grid.
        fine = time_base is not None and (self.codec != "mpeg4" or time_base.denominator < 65536)
        self._time_base = time_base if fine and time_base is not None else Fraction(1) / self.rate
        self._closed = False
        try:
            self._container: Any = av.open(str(self.tmp), mode="w")
        except (av.FFmpegError, OSError) as exc:
            raise OutputError(
                f"{self.path}: cannot create video: {_error_text(exc)}",
                hint="check that the folder exists and is writable",
            ) from None
        options: dict[str, str] = {}
        if self.codec == "libx264":
            options = {"crf": str(crf), "preset": preset}
            if x264_params:
                options["x264-params"] = x264_params
        elif self.codec == "mpeg4":
            # The native encoder defaults to 200 kbit/s, far too blocky; pin the quantizer low.
            options = {"qmin": "2", "qmax": "4"}
        try:
            stream: Any = self._container.add_stream(self.codec, rate=self.rate, options=options)
            stream.width = w + self._pad[1]
            stream.height = h + self._pad[0]
            stream.pix_fmt = pix_fmt
            stream.codec_context.time_base = self._time_base
            self._stream: Any = stream
            self._audio: Any = (
                self._container.add_stream_from_template(audio_template) if audio_template else None
            )
        except (av.FFmpegError, ValueError) as exc:
            self.abort()
            raise OutputError(
                f"{self.path}: cannot set up the {self.codec} encoder: {_error_text(exc)}",
                hint="use a .mp4 or .mkv file name",
            ) from None
        logger.info("writing %s with %s (%s) at %s fps", self.path, self.codec, pix_fmt, self.rate)

    def write(self, image: Image | Frame, t_ns: int | None = None) -> None:
        """Append one frame. ``t_ns`` (default: the frame's own, else index / fps) sets its time."""
        if isinstance(image, Frame):
            t_ns = image.t_ns if t_ns is None else t_ns
            image = image.image
        check_image(image)
        w, h = self.size
        if image.shape[1] != w or image.shape[0] != h:
            raise OutputError(
                f"{self.path}: frame {self.frames_written} is {image.shape[1]}x{image.shape[0]}, "
                f"the video is {w}x{h}",
                hint="all frames of one video must have the same size",
            )
        if any(self._pad):
            image = np.pad(image, ((0, self._pad[0]), (0, self._pad[1]), (0, 0)), mode="edge")
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="bgr24")
        pts = self.frames_written
        if t_ns is not None:
            pts = round(Fraction(t_ns, 1_000_000_000) / self._time_base)
        pts = max(pts, self._last_pts + 1)  # encoders reject non-increasing timestamps
        frame.pts = self._last_pts = pts
        frame.time_base = self._time_base
        self._mux(self._stream.encode(frame))
        self.frames_written += 1

    def write_audio_packet(self, packet: Any) -> None:
        if self._audio is None:
            return
        packet.stream = self._audio
        self._mux([packet])

    def _mux(self, packets: Iterable[Any]) -> None:
        try:
            for packet in packets:
                self._container.mux(packet)
        except (av.FFmpegError, OSError) as exc:
            raise OutputError(
                f"{self.path}: writing failed after {self.frames_written} frames: "
                f"{_error_text(exc)}",
                hint="check free disk space and permissions",
            ) from None

    def commit(self) -> None:
        """Flush the encoder, close the file and move it into place."""
        if self._closed:
            return
        if self.frames_written == 0:
            self.abort()
            raise OutputError(
                f"{self.path}: no frames to write", hint="the input had no video frames"
            )
        self._mux(self._stream.encode(None))
        self._container.close()
        self._closed = True
        try:
            os.replace(self.tmp, self.path)
        except OSError as exc:
            self.tmp.unlink(missing_ok=True)
            raise OutputError(
                f"{self.path}: cannot move the finished video into place ({exc})",
                hint="check permissions of the output folder",
            ) from None
        logger.info("wrote %s (%d frames)", self.path, self.frames_written)

    def abort(self) -> None:
        """Discard the partial file."""
        if not self._closed and getattr(self, "_container", None) is not None:
            try:
                self._container.close()
            except (av.FFmpegError, OSError) as exc:  # a broken muxer may fail to close
                logger.debug("closing aborted output: %s", exc)
        self._closed = True
        # A read-only folder refuses even unlinking a file that is not there (EROFS): that
        # must not replace the error that brought us here.
        with contextlib.suppress(OSError):
            self.tmp.unlink(missing_ok=True)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            try:
                self.commit()
            except BaseException:
                self.abort()
                raise
        else:
            self.abort()


def write_video(
    frames: Iterable[Frame | Image],
    path: Path | str,
    *,
    fps: float | Fraction,
    size: tuple[int, int],
    codec: str | None = None,
    crf: int = 20,
    preset: str = "veryfast",
) -> tuple[str, int]:
    """Encode all ``frames`` into ``path``; returns ``(codec used, frames written)``."""
    with VideoWriter(path, fps=fps, size=size, codec=codec, crf=crf, preset=preset) as writer:
        for item in frames:
            writer.write(item)
    return writer.codec, writer.frames_written
