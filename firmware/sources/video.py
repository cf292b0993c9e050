"""A video file as a frame source, decoded with PyAV.

Timestamps are media time from the first frame (``pts * time_base``), so windows computed on a
file do not depend on how fast it was processed. A file that breaks part way raises
:class:`InputError` naming the frame where it broke, after the frames before it were yielded:
the caller decides what to do with the partial result.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any

import av

from firmware.errors import InputError
from firmware.frames import Frame
from firmware.media.avio import error_text, frame_to_bgr, open_input
from firmware.sources.base import SourceBase

logger = logging.getLogger(__name__)

_NS = 1_000_000_000
_DURATION_TAG = re.compile(r"^(\d+):(\d{2}):(\d{2}(?:\.\d+)?)$")
# A file whose last frame ends this much before its header's duration was cut short. Generous,
# because headers round and variable-rate files drift; a genuinely truncated file misses far more.
_TRUNCATION_SLACK_S = 1.0
_TRUNCATION_SLACK_FRACTION = 0.05


def _parse_duration_tag(text: str | None) -> float | None:
    """Matroska's per-track ``DURATION`` tag (``00:00:04.000000000``) in seconds."""
    if not text:
        return None
    m = _DURATION_TAG.match(text.strip())
    if not m:
        return None
    return int(m.group(1)) * 3600 + int(m.group(2)) * 60 + float(m.group(3))


def _read_so_far(frames: int) -> str:
    return f"frames 0..{frames - 1} were read" if frames else "no frame could be read"


class VideoFileSource(SourceBase):
    """Frames of the first video stream of ``path``.

    Properties read from the header: ``size``, ``fps`` (float) and ``rate`` (the exact average
    rate as a Fraction, e.g. 30000/1001), ``time_base``, ``frame_count`` (exact when the
    container indexes frames, an estimate from the duration otherwise, 0 if unknown),
    ``codec_name``, ``has_audio``. ``frames()`` may be called again to read the file from the
    start. ``upright`` applies the display rotation (a phone video's display matrix) to the
    pixels, and ``size`` is then the rotated size; off, frames are as stored.
    """

    def __init__(self, path: Path | str, *, upright: bool = False) -> None:
        self.path = Path(path)
        self._container: Any = None
        self._upright = upright
        probe = open_input(self.path, "video")
        try:
            if not probe.streams.video:
                raise InputError(
                    f"{self.path}: not a readable video (it has no video stream)",
                    hint="pass a file with a video track (mp4, mkv, mov, avi)",
                )
            stream = probe.streams.video[0]
            ctx = stream.codec_context
            self._size = (int(ctx.width), int(ctx.height))
            if self._size[0] <= 0 or self._size[1] <= 0:
                raise InputError(
                    f"{self.path}: not a readable video (no frame size in its header)",
                    hint="the file is damaged; re-copy or re-encode it",
                )
            rate = stream.average_rate or getattr(stream, "guessed_rate", None) or stream.base_rate
            if not rate or rate <= 0:
                rate = Fraction(25)
                logger.warning("%s: no frame rate in the header; assuming 25 fps", self.path)
            self._rate = Fraction(rate)
            self._time_base = (
                Fraction(stream.time_base) if stream.time_base else Fraction(1) / self._rate
            )
            self._codec_name = str(ctx.name)
            self._has_audio = bool(probe.streams.audio)
            self._expected_s = self._header_duration(probe, stream)
            frames = int(stream.frames or 0)
            if frames <= 0 and self._expected_s:
                frames = round(self._expected_s * float(self._rate))
            self._frame_count = frames
            self._indexed_frames = int(stream.frames or 0)
            self.rotation = self._first_rotation(probe, stream) if upright else 0
            if self.rotation % 180:
                self._size = (self._size[1], self._size[0])
        finally:
            probe.close()

    def _first_rotation(self, container: Any, stream: Any) -> int:
        """The display rotation in degrees (0, 90, 180, 270), from the first frame's side data:
        PyAV reads the display matrix per frame, not from the stream header."""
        try:
            frame = next(container.decode(stream), None)
        except av.FFmpegError:
            return 0  # frames() reports the broken file with its frame number
        if frame is None:
            return 0
        return round(float(getattr(frame, "rotation", 0) or 0) / 90.0) % 4 * 90

    def _header_duration(self, container: Any, stream: Any) -> float | None:
        """The video track's duration from the header, in seconds, when the file states one."""
        if stream.duration:
            return float(stream.duration * stream.time_base)
        tagged = _parse_duration_tag(stream.metadata.get("DURATION"))
        if tagged:
            return tagged
        # The container's duration covers all streams; only trust it for a video-only file.
        if container.duration and len(container.streams) == 1:
            return float(container.duration) / av.time_base
        return None

    @property
    def size(self) -> tuple[int, int]:
        return self._size

    @property
    def fps(self) -> float:
        return float(self._rate)

    @property
    def rate(self) -> Fraction:
        return self._rate

    @property
    def time_base(self) -> Fraction:
        return self._time_base

    @property
    def frame_count(self) -> int:
        return self._frame_count

    @property
    def codec_name(self) -> str:
        return self._codec_name

    @property
    def has_audio(self) -> bool:
        return self._has_audio

    def describe(self) -> str:
        w, h = self._size
        return f"video file {self.path} ({w}x{h}, {self.fps:.3g} fps, {self._codec_name})"

    def frames(self) -> Iterator[Frame]:
        self.close()  # a second call reads from the start again
        container = open_input(self.path, "video")
        self._container = container
        try:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"  # frame + slice threads: several times faster on 4 cores
            decoded = container.decode(stream)
            index = 0
            first_pts: int | None = None
            last_ns = -1
            step_ns = _NS / float(self._rate)
            while True:
                try:
                    frame = next(decoded)
                except StopIteration:
                    break
                except av.FFmpegError as exc:
                    raise InputError(
                        f"{self.path}: the video breaks at frame {index} ({error_text(exc)}); "
                        "the file is truncated or corrupt",
                        hint=f"{_read_so_far(index)}; re-copy or re-encode the file",
                    ) from None
                if frame.pts is not None:
                    if first_pts is None:
                        first_pts = int(frame.pts)
                    t_ns = int((int(frame.pts) - first_pts) * self._time_base * _NS)
                else:
                    t_ns = round(index * step_ns)
                # Broken or missing timestamps must not run time backwards downstream.
                t_ns = max(t_ns, last_ns + 1)
                last_ns = t_ns
                yield Frame(frame_to_bgr(frame, apply_rotation=self._upright), t_ns, index)
                index += 1
            self._check_complete(index, last_ns)
        finally:
            container.close()
            if self._container is container:
                self._container = None

    def _check_complete(self, frames: int, last_ns: int) -> None:
        """Raise if the file ended well before its header says it should (a silent truncation).

        Matroska and some MP4 cuts end without a decoding error, so compare with the header.
        """
        if self._indexed_frames > 0:
            missing = self._indexed_frames - frames
            if missing > max(2, round(self._indexed_frames * _TRUNCATION_SLACK_FRACTION)):
                raise InputError(
                    f"{self.path}: the video breaks at frame {frames}: its index lists "
                    f"{self._indexed_frames} frames; the file is truncated",
                    hint=f"{_read_so_far(frames)}; re-copy or re-encode the file",
                )
            return
        if frames == 0:
            # A Matroska file cut inside its first cluster ends without a decoding error and
            # without a frame; left to the writer it became "no frames to write" about the output.
            raise InputError(
                f"{self.path}: no frame could be decoded; the file is truncated, damaged "
                "or has an empty video track",
                hint="re-copy or re-encode the file",
            )
        if not self._expected_s:
            return
        got_s = last_ns / _NS + 1.0 / float(self._rate)
        slack = max(_TRUNCATION_SLACK_S, self._expected_s * _TRUNCATION_SLACK_FRACTION)
        if got_s < self._expected_s - slack:
            raise InputError(
                f"{self.path}: the video breaks at frame {frames} ({got_s:.1f} s of the "
                f"{self._expected_s:.1f} s its header states); the file is truncated",
                hint=f"{_read_so_far(frames)}; re-copy or re-encode the file",
            )

    def close(self) -> None:
        if self._container is not None:
            self._container.close()
            self._container = None
