"""Where the camera service's time goes, stage by stage, with its default settings.

The real frame loop (``firmware.runtime.pipeline.run``) runs on a synthetic store scene of whole
walking bodies at the default main stream (1280x720, 15 fps), with the default detection stream
(a 640x360 copy, which the Pi's ISP makes for free, so it is made here before the timing) and
the default ``[people]`` and ``[detector]`` settings: NanoDet at 576x320 on one frame in two,
CenterFace fp32 on every frame, two onnxruntime threads each. Each stage is timed where the
loop calls it, in wall and in CPU time (CPU includes onnxruntime's worker threads):

- person detect: NanoDet on the detection stream (only on its frames)
- track + count: the tracker and the line counter
- face detect: CenterFace on the detection stream
- hold + cover: the mask hold and the covering of faces and heads
- windows: the window aggregator and its SQLite outbox
- other: the rest of the loop (head regions, bookkeeping)

**An estimate for a Raspberry Pi 4 and 5** scales this host's figures by one published
single-core figure: ``sysbench cpu --threads=1 --time=60 run`` (sysbench 1.0.20; Pi 4 1477.83,
Pi 5 2737.49 events/s, https://leoncode.co.uk/articles/raspberry-pi-benchmarks), measured here
too when sysbench is installed (``apt-get install sysbench``). That benchmark is scalar integer
work; the detectors are SIMD work, where this host's 512-bit AVX-512 has four times the lanes
of the Pi's 128-bit NEON. So the estimate is the most a Pi could do: it tells which settings
cannot fit, not which will. ``anoncam diagnose`` on the Pi measures the real detector cost.

    scripts/bench-pipeline                 # 20 s of scene (300 frames), about a minute
    scripts/bench-pipeline --seconds 4     # quick (what CI runs)
    scripts/bench-pipeline --json          # the figures as JSON
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from firmware.anonymize.stage import stage_from_config
from firmware.config.settings import Config
from firmware.count import LineCounter
from firmware.detect import nanodet
from firmware.frames import Frame
from firmware.media.resize import resize_bgr
from firmware.outbox import Outbox
from firmware.runtime.pipeline import LoopStats, PeopleStage, WallClock
from firmware.runtime.pipeline import run as run_loop
from firmware.sources.base import SourceBase
from firmware.sources.synthetic.scene import SyntheticScene
from firmware.track import Tracker
from firmware.windows import WindowAggregator
from tests.benchmarks.bench_counting import RecordingCounter

STAGES = ("person detect", "track + count", "face detect", "hold + cover", "windows")

#: Published single-thread ``sysbench cpu --threads=1 --time=60 run`` (sysbench 1.0.20,
#: 64-bit Raspberry Pi OS): https://leoncode.co.uk/articles/raspberry-pi-benchmarks
PI_SYSBENCH = {"Raspberry Pi 4": 1477.83, "Raspberry Pi 5": 2737.49}
SYSBENCH_SOURCE = "https://leoncode.co.uk/articles/raspberry-pi-benchmarks"
TARGET_FPS = 10.0

P = ParamSpec("P")
R = TypeVar("R")


@dataclass
class StageClock:
    """Wall and process-CPU milliseconds per stage, summed over the run."""

    wall_ms: dict[str, float] = field(default_factory=lambda: dict.fromkeys(STAGES, 0.0))
    cpu_ms: dict[str, float] = field(default_factory=lambda: dict.fromkeys(STAGES, 0.0))
    calls: dict[str, int] = field(default_factory=lambda: dict.fromkeys(STAGES, 0))

    def timed(self, stage: str, fn: Callable[P, R]) -> Callable[P, R]:
        def call(*args: P.args, **kwargs: P.kwargs) -> R:
            w, c = time.perf_counter(), time.process_time()
            try:
                return fn(*args, **kwargs)
            finally:
                self.wall_ms[stage] += (time.perf_counter() - w) * 1e3
                self.cpu_ms[stage] += (time.process_time() - c) * 1e3
                self.calls[stage] += 1

        return call


class RenderedScene(SourceBase):
    """A synthetic scene rendered before the timing, each frame with its detection stream."""

    def __init__(self, scene: SyntheticScene, lores: tuple[int, int]) -> None:
        self._fps = scene.fps
        self._size = scene.size
        self._frames: list[Frame] = []
        for i in range(scene.frame_count):
            image = scene.render(i)
            t_ns = round(i * 1e9 / scene.fps)
            small = resize_bgr(image, *lores)
            self._frames.append(Frame(image=image, t_ns=t_ns, index=i, lores=small))

    @property
    def size(self) -> tuple[int, int]:
        return self._size

    @property
    def fps(self) -> float:
        return self._fps

    def describe(self) -> str:
        return f"rendered synthetic scene {self._size[0]}x{self._size[1]}"

    def frames(self) -> Iterator[Frame]:
        yield from self._frames


@dataclass(frozen=True)
class Profile:
    frames: int
    seconds: float
    wall_ms: dict[str, float]
    cpu_ms: dict[str, float]
    person_calls: int
    crossings: int
    counted: int

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    @property
    def frame_ms(self) -> float:
        return self.seconds * 1e3 / max(self.frames, 1)


def profile(config: Config, seconds: float) -> Profile:
    """The loop as the service wires it from ``config`` (minus camera and MQTT), timed per stage."""
    src = config.source
    scene = SyntheticScene(
        src.width,
        src.height,
        fps=src.fps,
        duration_s=seconds,
        max_in_view=3,
        mean_gap_s=0.6,
        bodies=True,
    )
    source = RenderedScene(scene, (src.lores_width, src.lores_height))
    clock = StageClock()
    people_cfg = config.people
    tracker = Tracker(config.tracker)
    counter = RecordingCounter(LineCounter(config.counter, src.width, src.height))
    tracker.update = clock.timed("track + count", tracker.update)
    counter.update = clock.timed("track + count", counter.update)
    person = nanodet.from_config(people_cfg)
    people = PeopleStage(
        clock.timed("person detect", person),
        tracker,
        counter,
        every=people_cfg.every_n_frames,
        heads=people_cfg.head_masking,
    )
    stage = stage_from_config(config)  # the service's own builder (CenterFace, hold, cover)
    face = stage.detector
    stage.detector = clock.timed("face detect", face)
    stage.hold.update = clock.timed("hold + cover", stage.hold.update)
    stage.anonymizer.apply = clock.timed("hold + cover", stage.anonymizer.apply)
    with tempfile.TemporaryDirectory(prefix="anoncam-bench-") as tmp:
        outbox = Outbox(Path(tmp) / "outbox.sqlite3")
        try:
            aggregator = WindowAggregator(
                outbox, site="bench", device="pipeline", window_s=config.windows.seconds
            )
            aggregator.observe = clock.timed("windows", aggregator.observe)
            wall = WallClock(live=False, epoch_ns=0)
            # warm both sessions up outside the timing (the service does this at start-up);
            # these are the bare detectors, so the clock does not see them
            first = next(source.frames())
            person(first.lores if first.lores is not None else first.image)
            face(first.lores if first.lores is not None else first.image)
            w0, c0 = time.perf_counter(), time.process_time()
            stats = run_loop(
                source,
                stage,
                tracker,
                counter,
                aggregator,
                clock=wall,
                stop=threading.Event(),
                stats=LoopStats(),
                people=people,
            )
            elapsed = time.perf_counter() - w0
            cpu = (time.process_time() - c0) * 1e3
        finally:
            outbox.close()
    n = max(stats.frames, 1)
    wall_ms = {k: v / n for k, v in clock.wall_ms.items()}
    cpu_ms = {k: v / n for k, v in clock.cpu_ms.items()}
    wall_ms["other"] = max(0.0, elapsed * 1e3 / n - sum(wall_ms.values()))
    cpu_ms["other"] = max(0.0, cpu / n - sum(cpu_ms.values()))
    return Profile(
        stats.frames,
        elapsed,
        wall_ms,
        cpu_ms,
        clock.calls["person detect"],
        len(scene.crossings),
        len(counter.events),
    )


def host_sysbench(seconds: int) -> float | None:
    """This host's single-thread ``sysbench cpu`` events per second, or None without sysbench."""
    exe = shutil.which("sysbench")
    if exe is None:
        return None
    out = subprocess.run(
        [exe, "cpu", "--threads=1", f"--time={seconds}", "run"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for line in out.splitlines():
        if "events per second" in line:
            return float(line.split(":")[1])
    raise RuntimeError(f"sysbench printed no 'events per second' line:\n{out}")


def pi_estimates(p: Profile, host: float) -> list[dict[str, Any]]:
    """Per-frame milliseconds and fps on each Pi if every stage slowed by the sysbench ratio."""
    rows = []
    for name, pi in PI_SYSBENCH.items():
        slower = host / pi
        frame_ms = p.frame_ms * slower
        rows.append(
            {
                "board": name,
                "sysbench": pi,
                "slower": round(slower, 2),
                "face_ms": round(p.wall_ms["face detect"] * slower, 1),
                "person_ms_per_frame": round(p.wall_ms["person detect"] * slower, 1),
                "frame_ms": round(frame_ms, 1),
                "fps_at_most": round(1e3 / frame_ms, 1) if frame_ms > 0 else 0.0,
            }
        )
    return rows


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="scripts/bench-pipeline",
        description="Per-stage cost of the camera service's frame loop with its default "
        "settings (1280x720, both detectors), and an upper-bound estimate for a Pi 4 and 5.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Run it with nothing else busy; the load average is printed with the figures.",
    )
    p.add_argument("--seconds", type=float, default=20.0, help="scene length (default: 20)")
    p.add_argument(
        "--sysbench-seconds",
        type=int,
        default=20,
        help="how long to run sysbench for the Pi estimate; 0 skips it (default: 20)",
    )
    p.add_argument(
        "--config",
        type=Path,
        default=None,
        metavar="TOML",
        help="profile the loop as this config sets it (its source, [detector], [people], "
        "[anonymizer]; the scene stays synthetic); default: the built-in defaults",
    )
    p.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = p.parse_args(argv)
    if args.seconds <= 0:
        p.error("--seconds must be > 0")
    if args.sysbench_seconds < 0:
        p.error("--sysbench-seconds must be >= 0")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.config is not None:
        from firmware.config.settings import load
        from firmware.errors import AnoncamError

        try:
            config = load(args.config)
        except AnoncamError as exc:
            print(f"bench-pipeline: error: {exc}", file=sys.stderr)
            if exc.hint:
                print(f"  fix: {exc.hint}", file=sys.stderr)
            return 2
    else:
        config = Config()
    load_start = os.getloadavg()
    p = profile(config, args.seconds)
    host = host_sysbench(args.sysbench_seconds) if args.sysbench_seconds else None
    load_end = os.getloadavg()
    pis = pi_estimates(p, host) if host else []
    figures: dict[str, Any] = {
        "frames": p.frames,
        "size": f"{config.source.width}x{config.source.height}",
        "detection_stream": f"{config.source.lores_width}x{config.source.lores_height}",
        "fps": round(p.fps, 1),
        "frame_ms": round(p.frame_ms, 2),
        "wall_ms": {k: round(v, 2) for k, v in p.wall_ms.items()},
        "cpu_ms": {k: round(v, 2) for k, v in p.cpu_ms.items()},
        "person_calls": p.person_calls,
        "crossings": p.crossings,
        "counted": p.counted,
        "host_sysbench": host,
        "pi": pis,
        "load": [round(x, 2) for x in load_start + load_end],
    }
    if args.json:
        print(json.dumps(figures, indent=2))
        return 0
    s = config.source
    ppl = config.people
    print(
        f"camera service frame loop, {'defaults' if args.config is None else args.config}: "
        f"{s.width}x{s.height} at {s.fps:g} fps, detection "
        f"stream {s.lores_width}x{s.lores_height}; NanoDet {ppl.detect_width}x"
        f"{ppl.detect_height} on 1 frame in {ppl.every_n_frames} ({ppl.threads} threads), "
        f"CenterFace {config.detector.model or 'fp32'} every frame ({config.detector.threads} "
        "threads)"
    )
    print(
        f"{p.frames} frames of a synthetic scene of whole bodies (rendered before the timing); "
        f"counted {p.counted} of {p.crossings} true crossings"
    )
    print(f"  {'stage':<15} {'wall ms/frame':>14} {'CPU ms/frame':>13}")
    for k in (*STAGES, "other"):
        print(f"  {k:<15} {p.wall_ms[k]:>14.2f} {p.cpu_ms[k]:>13.2f}")
    print(
        f"  {'whole loop':<15} {p.frame_ms:>14.2f} {sum(p.cpu_ms.values()):>13.2f}"
        f"   -> {p.fps:.1f} fps (target >= {TARGET_FPS:g})"
    )
    if ppl.every_n_frames > 1 and p.person_calls:
        per_call = p.wall_ms["person detect"] * p.frames / p.person_calls
        print(f"  (person detect: {per_call:.1f} ms per call, on {p.person_calls} frames)")
    if host is None:
        print("Pi estimate skipped: no sysbench here (apt-get install sysbench) or 0 seconds")
    else:
        print(
            f"Pi estimate, upper bound: this host does {host:.0f} sysbench events/s on one "
            f"thread; published for the Pi ({SYSBENCH_SOURCE}):"
        )
        for row in pis:
            print(
                f"  {row['board']}: {row['sysbench']:.0f} events/s, {row['slower']:.2f}x slower "
                f"-> face {row['face_ms']:.0f} ms, person {row['person_ms_per_frame']:.0f} ms a "
                f"frame, whole loop {row['frame_ms']:.0f} ms: at most {row['fps_at_most']:.1f} fps"
            )
        print(
            "  (sysbench is scalar work; the detectors are SIMD work, where AVX-512 has 4x the "
            "lanes of NEON: expect a Pi to be slower than this)"
        )
    print(
        "load average {:.2f} {:.2f} {:.2f} at the start, {:.2f} {:.2f} {:.2f} at the end".format(
            *load_start, *load_end
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
