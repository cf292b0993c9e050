"""Where ``anoncam blur``'s time goes, by stage, on one clip: milliseconds per frame.

The job itself overlaps decoding (a read-ahead thread) and encoding (a write-behind thread)
with detection; here every stage runs in turn in one thread, so each one's cost is measured
alone, with the same classes and settings the job uses (``stage_from_settings``, ``Lookahead``,
``VideoWriter``). Wall and CPU time are both given: onnxruntime's threads make the detector's
CPU time larger than its wall time, and x264's own threads do the same for the encoder.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

STAGES = ("decode", "detect", "hold", "cover", "look-back", "encode")


@dataclass
class StageProfile:
    label: str
    frames: int = 0
    wall_ms: dict[str, float] = field(default_factory=lambda: dict.fromkeys(STAGES, 0.0))
    cpu_ms: dict[str, float] = field(default_factory=lambda: dict.fromkeys(STAGES, 0.0))

    def per_frame(self, kind: str = "wall") -> dict[str, float]:
        src = self.wall_ms if kind == "wall" else self.cpu_ms
        return {k: v / max(self.frames, 1) for k, v in src.items()}

    @property
    def total_wall_ms(self) -> float:
        return sum(self.per_frame().values())


class _Clock:
    def __init__(self, profile: StageProfile) -> None:
        self.p = profile
        self.t = time.perf_counter()
        self.c = time.process_time()

    def lap(self, stage: str) -> None:
        t, c = time.perf_counter(), time.process_time()
        self.p.wall_ms[stage] += (t - self.t) * 1e3
        self.p.cpu_ms[stage] += (c - self.c) * 1e3
        self.t, self.c = t, c


def profile_blur(
    clip: Path,
    output: Path,
    *,
    label: str,
    model: Path | None,
    threshold: float | None = None,
    detect_size: tuple[int, int] | None = None,
    threads: int = 2,
    max_frames: int | None = None,
) -> StageProfile:
    """Run ``anoncam blur``'s stages on ``clip`` one after another, timing each."""
    from firmware.anonymize.backfill import Lookahead, delay_frames
    from firmware.anonymize.stage import Anonymized, stage_from_settings
    from firmware.config.settings import AnonymizerConfig, DetectorConfig
    from firmware.media.video_writer import VideoWriter
    from firmware.sources.video import VideoFileSource

    width, height = detect_size if detect_size else (None, None)
    settings: dict[str, object] = {
        "model": model,
        "threads": threads,
        "detect_width": width,
        "detect_height": height,
    }
    if threshold is not None:
        settings["threshold"] = threshold
    detector = DetectorConfig.model_validate(settings)
    stage = stage_from_settings(detector, AnonymizerConfig(), deadline=False)
    profile = StageProfile(label)
    with VideoFileSource(clip, upright=True) as source:
        lookahead = Lookahead(stage.anonymizer, delay_frames(stage.hold.hold_s, source.fps))
        with VideoWriter(output, fps=source.rate, size=source.size) as out:
            frames = source.frames()
            clock = _Clock(profile)
            while max_frames is None or profile.frames < max_frames:
                frame = next(frames, None)
                if frame is None:
                    break
                clock.lap("decode")
                dets = stage.detect(frame)
                clock.lap("detect")
                boxes = stage.hold.update(dets.boxes, frame.t_ns)
                clock.lap("hold")
                # as the stage does: a covered copy, or a plain copy when nothing is covered
                if len(boxes):
                    image = stage.anonymizer.apply(frame.image, boxes)
                else:
                    image = frame.image.copy()
                clock.lap("cover")
                result = Anonymized(frame.t_ns, frame.index, image, dets, False, 0.0, boxes)
                ready = lookahead.push(result)
                clock.lap("look-back")
                for r in ready:
                    out.write(r.image, r.t_ns)
                clock.lap("encode")
                profile.frames += 1
            clock = _Clock(profile)
            for r in lookahead.flush():
                out.write(r.image, r.t_ns)
        clock.lap("encode")  # the encoder's delayed frames are flushed when the writer closes
    return profile
