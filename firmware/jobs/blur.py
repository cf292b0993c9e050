"""``anoncam blur``: anonymize faces in image and video files.

Each output has the input's resolution, frame count and frame rate; nothing of the input's
metadata is copied (EXIF, GPS, container tags), nor its audio unless asked. Outputs are written
atomically: a failed input leaves no file behind.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import av

from firmware.anonymize.ahead import detect_ahead
from firmware.anonymize.backfill import Lookahead, delay_frames
from firmware.anonymize.stage import Anonymized, AnonymizingStage
from firmware.errors import InputError, UsageError
from firmware.media.image import IMAGE_SUFFIXES, check_size
from firmware.media.video_writer import VIDEO_SUFFIXES, VideoWriter
from firmware.media.workers import WriteBehind, read_ahead

logger = logging.getLogger(__name__)

Progress = Callable[[int, int], None]
"""Called as ``progress(frames_done, frames_total)``; total is 0 when unknown."""


@dataclass(frozen=True, slots=True)
class BlurResult:
    source: Path
    output: Path
    frames: int
    faces: int
    failed_frames: int
    seconds: float

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0


def kind_of(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix in IMAGE_SUFFIXES:
        return "image"
    if suffix in VIDEO_SUFFIXES:
        return "video"
    raise InputError(
        f"{path}: unsupported file type {suffix or '(none)'!r}",
        hint=f"give images ({', '.join(sorted(IMAGE_SUFFIXES))}) or videos "
        f"({', '.join(sorted(VIDEO_SUFFIXES))})",
    )


def plan(inputs: list[Path], output: Path) -> list[tuple[Path, Path]]:
    """Pair each input with its output path. Several inputs need ``output`` to be a directory."""
    if not inputs:
        raise UsageError("no input given", hint="anoncam blur INPUT... -o OUTPUT")
    for p in inputs:
        if p.is_dir():
            raise InputError(
                f"{p}: is a folder; anoncam blur takes files",
                hint=f"pass the files inside it, e.g. {p}/*.jpg {p}/*.mp4",
            )
        if not p.is_file():
            raise InputError(f"{p}: no such file", hint="check the path")
        kind_of(p)
    to_dir = len(inputs) > 1 or output.is_dir() or output.suffix == ""
    if not to_dir:
        if kind_of(output) != kind_of(inputs[0]):
            raise UsageError(
                f"{output}: output type does not match input {inputs[0]}",
                hint="give a video output for a video input and an image for an image",
            )
        if output.resolve() == inputs[0].resolve():
            raise UsageError(
                f"{output}: output would overwrite the input", hint="choose another output path"
            )
        return [(inputs[0], output)]
    pairs = [(p, output / p.name) for p in inputs]
    names = [o.name for _, o in pairs]
    if len(set(names)) != len(names):
        raise UsageError(
            "two inputs have the same file name and would write the same output",
            hint="blur them in separate runs or rename one",
        )
    for src, dst in pairs:
        if dst.resolve() == src.resolve():
            raise UsageError(
                f"{dst}: output would overwrite the input", hint="choose another output directory"
            )
    return pairs


def prepare_output(output: Path, pairs: list[tuple[Path, Path]]) -> None:
    """Create the output folder when ``output`` names one, and prove every output folder can
    take a file, before any input is decoded: a typo or a read-only card is found in a second,
    not after minutes of work. UsageError (exit 2) naming the folder."""
    if len(pairs) > 1 or output.suffix == "":
        try:
            output.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UsageError(
                f"{output}: cannot create the output folder ({exc.strerror})",
                hint="choose an output folder on a writable disk",
            ) from None
    for folder in sorted({dst.parent for _, dst in pairs}):
        if not folder.is_dir():
            raise UsageError(
                f"{folder}: the output folder does not exist",
                hint=f"create it first (mkdir -p {folder}) or choose another output path",
            )
        try:
            # a real file, not os.access: root passes access() on an immutable folder
            with tempfile.NamedTemporaryFile(dir=folder, prefix=".anoncam-probe-"):
                pass
        except OSError as exc:
            raise UsageError(
                f"{folder}: cannot write to the output folder ({exc.strerror})",
                hint="choose a writable folder (check its permissions, and that the disk is not "
                "mounted read-only)",
            ) from None


def blur_image(stage: AnonymizingStage, src: Path, dst: Path) -> BlurResult:
    from firmware.frames import Frame
    from firmware.media.image import read_image, write_image

    start = time.perf_counter()
    image = read_image(src)
    stage.hold.reset()  # unrelated images must not share remembered faces
    result = stage.process(Frame(image=image, t_ns=0, index=0))
    write_image(dst, result.image)
    return BlurResult(
        src, dst, 1, len(result.detections), int(result.failed), time.perf_counter() - start
    )


def _audio_template(
    src: Path,
) -> tuple[av.container.InputContainer, av.audio.stream.AudioStream] | None:
    container = av.open(str(src))
    if not container.streams.audio:
        container.close()
        return None
    return container, container.streams.audio[0]


def _write_timed(out: VideoWriter, result: Anonymized) -> None:
    # each frame keeps its own time: a variable frame rate stays variable
    out.write(result.image, result.t_ns)


def blur_video(
    stage: AnonymizingStage,
    src: Path,
    dst: Path,
    *,
    keep_audio: bool = False,
    progress: Progress | None = None,
    frames_at_once: int = 1,
) -> BlurResult:
    """``frames_at_once``: detect that many frames at the same time (:mod:`~firmware.anonymize.
    ahead`); 1 detects each frame in turn."""
    from firmware.sources.video import VideoFileSource

    start = time.perf_counter()
    stage.hold.reset()
    faces = failed = 0
    # upright: a phone video's display rotation is applied to the pixels, so the detector sees
    # faces the right way up and the output plays as the input did
    with VideoFileSource(src, upright=True) as source:
        check_size(src, *source.size)  # the probe decoded one frame; refuse before the rest
        total = source.frame_count
        audio = _audio_template(src) if keep_audio else None
        try:
            w, h = source.size
            with (
                VideoWriter(
                    dst,
                    fps=source.rate,
                    size=(w, h),
                    audio_template=audio[1] if audio else None,
                    time_base=source.time_base,
                ) as out,
                WriteBehind(partial(_write_timed, out)) as encoder,
            ):
                # hold back as many frames as the mask hold lasts, to mask faces walking in
                lookahead = Lookahead(stage.anonymizer, delay_frames(stage.hold.hold_s, source.fps))
                # Decode ahead and encode behind while the detector works on this frame. Both
                # generators are closed here, also on Ctrl-C or SIGTERM: a traceback keeps an
                # abandoned generator alive, and its decoder and detector threads would go on
                # reading the container that this function closes (a segfault at exit, seen
                # when SIGTERM came during the first frame).
                with (
                    closing(read_ahead(source.frames())) as decoded,
                    closing(detect_ahead(stage, decoded, frames_at_once)) as detections,
                ):
                    for done, (frame, detected) in enumerate(detections, start=1):
                        result = stage.finish(frame, detected)
                        for ready in lookahead.push(result):
                            encoder.submit(ready)
                        faces += len(result.detections)
                        failed += int(result.failed)
                        if progress is not None:
                            progress(done, total)
                for ready in lookahead.flush():
                    encoder.submit(ready)
                encoder.close()
                if audio is not None:
                    for packet in audio[0].demux(audio[1]):
                        if packet.dts is not None:
                            out.write_audio_packet(packet)
                frames = out.frames_written
        finally:
            if audio is not None:
                audio[0].close()
    if failed:
        logger.warning(
            "%s: detection failed on %d frame(s); those frames were masked entirely", src, failed
        )
    return BlurResult(src, dst, frames, faces, failed, time.perf_counter() - start)


def blur_file(
    stage: AnonymizingStage,
    src: Path,
    dst: Path,
    *,
    keep_audio: bool = False,
    progress: Progress | None = None,
    frames_at_once: int = 1,
) -> BlurResult:
    if kind_of(src) == "image":
        return blur_image(stage, src, dst)
    return blur_video(
        stage, src, dst, keep_audio=keep_audio, progress=progress, frames_at_once=frames_at_once
    )
