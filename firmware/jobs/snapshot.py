"""One anonymized frame with the counting geometry drawn on it, for aiming the camera.

The only image this module ever encodes is the ``image`` of an
:class:`~firmware.anonymize.stage.Anonymized` result: frames go from the source straight into the
anonymizing stage, and :func:`render` takes nothing else. The stage fails closed, so when
detection fails the snapshot is the fully masked frame; when the detector cannot even be built
(model missing) no snapshot is produced at all.

Warm-up: the snapshot is the last of ``frames`` frames, all run through the same stage, so the
mask hold has history: a face the detector misses in the last frame (motion blur, a turned
head) but saw in the frames before stays covered. More frames cost one detection each
(~30-100 ms on a Pi) and cover longer dropouts.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from firmware import fsutil
from firmware.anonymize.backfill import Lookahead, delay_frames
from firmware.anonymize.stage import Anonymized, AnonymizingStage, stage_from_config
from firmware.config.settings import Config, CounterConfig
from firmware.errors import SourceError, UsageError
from firmware.jobs.overlay import draw_counter
from firmware.media.image import encode_jpeg

logger = logging.getLogger(__name__)

DEFAULT_FRAMES = 5
DEFAULT_QUALITY = 90
JPEG_SUFFIXES = frozenset({".jpg", ".jpeg"})


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A rendered snapshot: the JPEG bytes and what went into them (no box of a person)."""

    jpeg: bytes
    width: int
    height: int
    faces: int
    failed: bool
    frames: int


def render(result: Anonymized, counter: CounterConfig, *, quality: int = DEFAULT_QUALITY) -> bytes:
    """JPEG of an anonymized result with the counting line, entry arrow, inside point and zones."""
    if not isinstance(result, Anonymized):  # privacy guard (P2): nothing else may be encoded here
        raise TypeError(f"render takes an Anonymized result, got {type(result).__name__}")
    return encode_jpeg(draw_counter(result.image, counter), quality)


def capture(
    config: Config,
    *,
    frames: int = DEFAULT_FRAMES,
    stage: AnonymizingStage | None = None,
    quality: int = DEFAULT_QUALITY,
) -> Snapshot:
    """Open ``config.source``, run ``frames`` frames through the stage, render the last one.

    A source that ends early gives the last frame it had. Raises :class:`SourceError` when the
    source yields no frame at all, and whatever opening the source or the model raises.
    """
    from firmware.sources import open_source

    if frames < 1:
        raise UsageError(f"frames must be at least 1, got {frames}", hint="use --frames 1 or more")
    stage = stage if stage is not None else stage_from_config(config)
    last: Anonymized | None = None
    count = 0
    with open_source(config.source) as source:
        # Read `delay` frames past the snapshot frame so a face walking in is masked too
        # (firmware.anonymize.backfill); a source that ends early releases what it has.
        delay = delay_frames(stage.hold.hold_s, source.fps)
        lookahead = Lookahead(stage.anonymizer, delay)
        for frame in source.frames():
            released = lookahead.push(stage.process(frame))
            count += 1
            if released:
                last = released[-1]
            if count >= frames + delay:
                break
        if last is None:
            flushed = lookahead.flush()
            last = flushed[min(frames, len(flushed)) - 1] if flushed else None
        described = source.describe()
    if last is None:
        raise SourceError(
            f"{described}: no frame arrived for the snapshot",
            hint="check the camera or the source path; 'anoncam diagnose' tests the camera",
        )
    if last.failed:
        logger.warning("detection failed on the snapshot frame; the whole frame is masked")
    jpeg = render(last, config.counter, quality=quality)
    return Snapshot(jpeg, last.width, last.height, len(last.detections), last.failed, count)


def take_snapshot(config: Config, *, frames: int = DEFAULT_FRAMES) -> bytes:
    """JPEG bytes of one anonymized frame with the counting line drawn (for the support bundle)."""
    return capture(config, frames=frames).jpeg


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file and a rename: never a partial JPEG."""
    if path.suffix.lower() not in JPEG_SUFFIXES:
        raise UsageError(f"{path}: a snapshot is a JPEG file", hint="name the output FILE.jpg")
    # 0644: a snapshot is meant to be copied off and viewed
    fsutil.write_atomic(path, data, mode=0o644)
    logger.info("wrote snapshot %s (%d bytes)", path, len(data))
