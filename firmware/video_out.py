"""Writing anonymized video with PyAV, atomically.

Frames go to a hidden temporary file next to the target; only a complete, closed file is
renamed into place, so a failed or interrupted run never leaves a half-written output (and a
previous file of the same name survives a failed run). Nothing is copied from the input's
container: no metadata, no chapters, no audio unless explicitly asked for.
"""

from __future__ import annotations

import logging
import os
from fractions import Fraction
from pathlib import Path
from types import TracebackType
from typing import Any

import av

from firmware.errors import OutputError, UsageError
from firmware.frames import Image

logger = logging.getLogger(__name__)

# Container -> (codec, pixel format). H.264 plays everywhere; AVI keeps MPEG-4 Part 2, which
# every AVI player handles.
_CODECS: dict[str, tuple[str, str]] = {
    ".mp4": ("libx264", "yuv420p"),
    ".m4v": ("libx264", "yuv420p"),
    ".mov": ("libx264", "yuv420p"),
    ".mkv": ("libx264", "yuv420p"),
    ".avi": ("mpeg4", "yuv420p"),
}
VIDEO_SUFFIXES = frozenset(_CODECS)


def temp_path_for(target: Path) -> Path:
    return target.with_name(f".{target.name}.partial{target.suffix}")


class VideoWriter:
    """Encode BGR frames to ``path`` at exactly ``rate`` frames per second.

    Use as a context manager: on a clean exit the file is finalized and renamed into place; on
    an exception it is deleted. ``audio_from`` (an open input container's audio stream) is
    remuxed unchanged when given.
    """

    def __init__(
        self,
        path: Path,
        width: int,
        height: int,
        rate: Fraction,
        *,
        crf: int = 20,
        audio_template: Any | None = None,
    ) -> None:
        suffix = path.suffix.lower()
        if suffix not in _CODECS:
            raise UsageError(
                f"{path}: unsupported video container {suffix!r}",
                hint=f"use one of {', '.join(sorted(VIDEO_SUFFIXES))}",
            )
        self.path = path
        self.tmp = temp_path_for(path)
        codec, pix_fmt = _CODECS[suffix]
        if pix_fmt == "yuv420p" and (width % 2 or height % 2):
            # 4:2:0 needs even sides; 4:4:4 keeps the exact resolution (H.264 High 4:4:4).
            if codec != "libx264":
                raise UsageError(f"{path}: odd frame size {width}x{height} cannot be written as {suffix}",
                                 hint="write .mp4 or .mkv instead")
            pix_fmt = "yuv444p"
        try:
            self._container = av.open(str(self.tmp), mode="w")
        except OSError as exc:
            raise OutputError(f"{path}: cannot create output ({exc.strerror})",
                              hint="check that the directory exists and is writable") from None
        self.rate = rate
        self._stream = self._container.add_stream(codec, rate=rate)
        self._stream.width = width
        self._stream.height = height
        self._stream.pix_fmt = pix_fmt
        self._stream.time_base = Fraction(1, 1) / rate if rate else Fraction(1, 25)
        if codec == "libx264":
            self._stream.options = {"crf": str(crf), "preset": "veryfast"}
        else:
            self._stream.bit_rate = 8_000_000
        self._audio = (
            self._container.add_stream_from_template(audio_template) if audio_template else None
        )
        self.frames = 0
        self._closed = False

    def write(self, image: Image) -> None:
        frame = av.VideoFrame.from_ndarray(image, format="bgr24")
        frame.pts = self.frames
        frame.time_base = self._stream.time_base
        self._encode(frame)
        self.frames += 1

    def write_audio_packet(self, packet: Any) -> None:
        if self._audio is None:
            return
        packet.stream = self._audio
        self._mux(packet)

    def _encode(self, frame: av.VideoFrame | None) -> None:
        try:
            for packet in self._stream.encode(frame):
                self._container.mux(packet)
        except OSError as exc:
            raise OutputError(f"{self.path}: write failed ({exc.strerror})",
                              hint="free disk space or choose another output directory") from None

    def _mux(self, packet: Any) -> None:
        try:
            self._container.mux(packet)
        except OSError as exc:
            raise OutputError(f"{self.path}: write failed ({exc.strerror})",
                              hint="free disk space or choose another output directory") from None

    def commit(self) -> None:
        """Flush the encoder, close the file and move it into place."""
        if self._closed:
            return
        self._encode(None)
        self._container.close()
        self._closed = True
        os.replace(self.tmp, self.path)
        logger.info("wrote %s (%d frames)", self.path, self.frames)

    def abort(self) -> None:
        if not self._closed:
            try:
                self._container.close()
            except Exception as exc:  # closing a broken muxer may fail in many ways; the file goes anyway
                logger.debug("closing aborted output: %s", exc)
            self._closed = True
        self.tmp.unlink(missing_ok=True)

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is None:
            try:
                self.commit()
            except BaseException:
                self.abort()
                raise
        else:
            self.abort()
