"""Detector and ``anoncam blur`` benchmark against ``deface``, on one clip, in one run.

    scripts/bench                               # full run: 300 frames, 3 rounds, deface, int8
    scripts/bench --quick                       # CI smoke: 45 frames, 1 round, < 30 s
    scripts/bench --workdir ~/bench             # keep the clip and deface's venv for next time
    python -m tests.benchmarks.bench_blur --deface-venv DIR --no-int8

    scripts/bench --clip vtest --frames 300     # real footage (OpenCV's vtest.avi, Debian)
    scripts/bench --clip shop.mp4               # any clip
    scripts/bench --clip vtest --head-to-head   # the whole clip: defaults against deface only

What it prints (figures, not pass/fail; exit 0 when every run worked, 1 when one failed,
2 for bad usage or a missing model):

- the clip: by default a synthetic scene of real face photos at 640x480, rendered once to
  H.264, and its ground truth (faces at least half in view); ``--clip vtest`` or a file: a clip
  we did not draw, whose reference faces are what fp32 at full size finds in each frame;
- the bare detector: CenterFace called on frames already decoded in memory, at full size and
  at ``--detect-size 320x256``, with 1 and 2 threads (fp32, and int8 unless ``--no-int8``);
- end to end: ``anoncam blur`` and ``deface`` as subprocesses on the same file, wall clock
  including start-up, the fps each tool prints, CPU seconds and peak resident memory;
- coverage: a second run of each with solid fill, checking that the inner half of every truth
  face turned dark in every frame (as ``tests/integration/test_blur_cli.py`` does);
- detector recall (IoU >= 0.3 with a truth face) for fp32 and int8, and the target line;
- a per-stage profile of ``anoncam blur`` (decode, detect, hold, cover, look-back, encode),
  for its default model and fp32 (``tests/benchmarks/stage_profile.py``).

The machines this runs on are shared and noisy, so nothing is compared across runs: every
configuration is measured in the same rounds, interleaved (the bare detector switches
configuration every few frames), and medians are reported with the range over rounds.

``deface`` is installed from PyPI into a throwaway venv under the work directory
(``deface onnx onnxruntime``: deface picks its onnxruntime backend only when ``onnx`` is
importable too, and falls back to OpenCV's DNN otherwise). Both backends are timed, and the
target's ratio is taken against the faster one; both are timed with ``--scale 320x240`` too,
deface's fastest setting, which the stretch target (2x) compares against, with its coverage.
That install is the only network use.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from tests.benchmarks.stage_profile import STAGES, StageProfile

# The clip: SyntheticScene(640, 480, 15, 20, seed=11, max_in_view=3, mean_gap_s=0.5).
CLIP_SIZE = (640, 480)
CLIP_FPS = 15.0
CLIP_SECONDS = 20.0
CLIP_SEED = 11
CLIP_LANES = 3
CLIP_GAP_S = 0.5
QUICK_FRAMES = 45  # the first people are in view from frame 10
FAST_SIZE = (320, 256)
CHUNK = 25  # frames per turn when the bare detector configurations take turns
IOU_MATCH = 0.3
MIN_VISIBLE = 0.5
THRESHOLD = 0.2
TARGET_RATIO = 3.0
STRETCH_RATIO = 2.0
#: deface's fastest setting as the issue names it: detection at 320x240
DEFACE_FAST_SCALE = "320x240"
DEFACE_PACKAGES = ("deface", "onnx", "onnxruntime")


class BenchError(Exception):
    """A run failed; the message says which and shows its error output."""


# -- small helpers ------------------------------------------------------------------------------
def log(text: str) -> None:
    """Progress goes to stderr so that stdout is the report alone."""
    print(f"[bench] {text}", file=sys.stderr, flush=True)


def med(values: Sequence[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


def spread(values: Sequence[float], digits: int = 1) -> str:
    """``median [min-max]`` (just the median for one value)."""
    if not values:
        return "-"
    m = f"{med(values):.{digits}f}"
    if len(values) == 1:
        return m
    return f"{m} [{min(values):.{digits}f}-{max(values):.{digits}f}]"


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], indent: str = "  ") -> str:
    widths = [max(len(str(c)) for c in col) for col in zip(headers, *rows, strict=True)]
    lines = []
    for r, row in enumerate([headers, *rows]):
        cells = [
            str(c).ljust(w) if i == 0 else str(c).rjust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append(indent + "  ".join(cells).rstrip())
        if r == 0:
            lines.append(indent + "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def size_label(size: tuple[int, int] | None, frame: tuple[int, int]) -> str:
    if size is None:
        return f"{frame[0]}x{frame[1]}"
    return f"{size[0]}x{size[1]}"


# -- subprocesses with their own resource usage -------------------------------------------------
@dataclass
class RunResult:
    label: str
    cmd: list[str]
    wall_s: float
    returncode: int
    stdout: str
    stderr: str
    max_rss_mb: float
    cpu_s: float


def _peak_rss_mb(pid: int) -> float | None:
    """The process's peak resident size so far (VmHWM), or None once it has gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    m = re.search(r"^VmHWM:\s+(\d+) kB", status, re.MULTILINE)
    return int(m.group(1)) / 1024.0 if m else None


def run_measured(label: str, cmd: list[str], workdir: Path) -> RunResult:
    """Run ``cmd``: wall clock from spawn to exit, CPU time from this child's own rusage
    (``wait4``), peak memory from its ``VmHWM``, read every 10 ms while it runs.

    Not ``ru_maxrss``: the child is forked from this process, which holds the decoded clip, and
    the kernel carries the pre-exec peak over into ``ru_maxrss``. Popen returns only after the
    exec, so every VmHWM read is of the tool itself (its main process; deface's ffmpeg child
    is not included).
    """
    out_path, err_path = workdir / "run.stdout", workdir / "run.stderr"
    peak = 0.0
    with out_path.open("wb") as out, err_path.open("wb") as err:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, stdin=subprocess.DEVNULL)
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            peak = max(peak, _peak_rss_mb(proc.pid) or 0.0)
            time.sleep(0.01)
        wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    result = RunResult(
        label=label,
        cmd=cmd,
        wall_s=wall,
        returncode=proc.returncode,
        stdout=out_path.read_text(errors="replace"),
        stderr=err_path.read_text(errors="replace"),
        max_rss_mb=peak,
        cpu_s=usage.ru_utime + usage.ru_stime,
    )
    if result.returncode != 0:
        tail = "\n".join((result.stderr or result.stdout).strip().splitlines()[-8:])
        raise BenchError(
            f"{label} failed with exit code {result.returncode}:\n  {' '.join(cmd)}\n{tail}"
        )
    return result


# -- the clip and its ground truth --------------------------------------------------------------
@dataclass
class Clip:
    path: Path
    description: str
    codec: str
    size: tuple[int, int]
    frames: list[NDArray[np.uint8]]
    truth: list[NDArray[np.float32]]
    truth_kind: str  # "truth" (drawn, known) or "reference" (fp32 full-size detections)

    @property
    def faces(self) -> int:
        return sum(len(t) for t in self.truth)


def make_clip(workdir: Path, frames: int | None) -> Clip:
    from firmware.sources.synthetic.scene import SyntheticScene, write_video
    from firmware.sources.video import VideoFileSource

    scene = SyntheticScene(
        *CLIP_SIZE,
        CLIP_FPS,
        CLIP_SECONDS,
        seed=CLIP_SEED,
        max_in_view=CLIP_LANES,
        mean_gap_s=CLIP_GAP_S,
    )
    n = scene.frame_count if frames is None else min(frames, scene.frame_count)
    path = workdir / f"clip-{n}.mp4"
    codec = write_video(scene, path, max_frames=n)
    # Benchmark on what the tools read: the decoded file, not the rendered frames.
    with VideoFileSource(path) as src:
        decoded = [f.image for f in src.frames()]
    truth = [scene.truth(i, min_visible=MIN_VISIBLE) for i in range(len(decoded))]
    return Clip(path, scene.describe(), codec, scene.size, decoded, truth, "truth")


def vtest_clip() -> Path:
    """OpenCV's ``vtest.avi`` (real pedestrians from an elevated camera, Debian's opencv-doc),
    fetched and checked as the real-footage counting benchmark does."""
    from tests.benchmarks.bench_counting_real import TRUTH, fetch_clip

    return fetch_clip(json.loads(TRUTH.read_text())["sha256"])


def external_clip(workdir: Path, source: Path, frames: int | None, model: Path | None) -> Clip:
    """A clip we did not draw. Its faces are not annotated, so the reference is what the fp32
    model at full size finds in each frame (threshold 0.2: the detector's default before the
    int8 model): coverage then asks whether a faster default leaves any of those uncovered.
    With ``frames``, the first N frames are re-encoded (H.264, crf 16) so both tools read the
    same short file."""
    from firmware.detect.centerface import CenterFace
    from firmware.sources.video import VideoFileSource

    if not source.is_file():
        raise BenchError(f"{source}: no such clip; give a video file, 'vtest' or 'synthetic'")
    with VideoFileSource(source) as src:
        decoded = [f.image for f in itertools.islice(src.frames(), frames)]
        fps, codec = src.rate, src.codec_name
    if not decoded:
        raise BenchError(f"{source}: no frames decoded")
    h, w = decoded[0].shape[:2]
    path = source
    if frames is not None:
        from firmware.media.video_writer import write_video

        path = workdir / f"{source.stem}-{len(decoded)}.mp4"
        codec, _ = write_video(decoded, path, fps=fps, size=(w, h), crf=16)
        with VideoFileSource(path) as src:
            decoded = [f.image for f in src.frames()]
    log(f"reference faces: fp32 CenterFace at full size on {len(decoded)} frames")
    ref = CenterFace(model, threshold=THRESHOLD, threads=2, check_hash=model is None)
    truth = [ref(img).boxes.astype(np.float32) for img in decoded]
    return Clip(path, f"{source.name}, not drawn by us", codec, (w, h), decoded, truth, "reference")


# -- the bare detector --------------------------------------------------------------------------
@dataclass
class DetConfig:
    model: str  # "fp32" or "int8"
    path: Path | None
    check_hash: bool
    size: tuple[int, int] | None
    threads: int
    fps: list[float] = field(default_factory=list)
    cpu_ms: list[float] = field(default_factory=list)
    detections: list[NDArray[np.float32]] = field(default_factory=list)
    detector: Any = None


def bench_detectors(configs: list[DetConfig], clip: Clip, rounds: int) -> None:
    """Each round, the configurations take turns every ``CHUNK`` frames, so a burst of load
    from another process hits them alike. The first round's boxes are kept for recall."""
    from firmware.detect.centerface import CenterFace
    from firmware.models.preferred import INT8_THRESHOLD

    for c in configs:
        c.detector = CenterFace(
            c.path,
            threshold=INT8_THRESHOLD if c.model == "int8" else THRESHOLD,
            detect_size=c.size,
            threads=c.threads,
            check_hash=c.check_hash,
        )
    frames = clip.frames
    for r in range(rounds):
        wall = {id(c): 0.0 for c in configs}
        cpu = {id(c): 0.0 for c in configs}
        for lo in range(0, len(frames), CHUNK):
            chunk = frames[lo : lo + CHUNK]
            for c in configs:
                t0, p0 = time.perf_counter(), time.process_time()
                found = [c.detector(img) for img in chunk]
                wall[id(c)] += time.perf_counter() - t0
                cpu[id(c)] += time.process_time() - p0
                if r == 0:
                    c.detections.extend(d.array.copy() for d in found)
        for c in configs:
            c.fps.append(len(frames) / wall[id(c)])
            c.cpu_ms.append(cpu[id(c)] * 1e3 / len(frames))
        log(f"bare detector round {r + 1}/{rounds} done")
    for c in configs:
        c.detector = None  # free the sessions before the subprocess runs


@dataclass
class Recall:
    matched: int
    total: int
    unmatched_detections: int
    mean_iou: float

    @property
    def percent(self) -> float:
        return 100.0 * self.matched / self.total if self.total else float("nan")


def recall(detections: list[NDArray[np.float32]], truth: list[NDArray[np.float32]]) -> Recall:
    """A truth face counts as found when some detection overlaps it with IoU >= 0.3.
    Unmatched detections include faces less than half in view, which are not in the truth."""
    from firmware.boxes import iou_matrix

    matched = total = extra = 0
    ious: list[float] = []
    for dets, tr in zip(detections, truth, strict=True):
        total += len(tr)
        if len(dets) == 0:
            continue
        if len(tr) == 0:
            extra += len(dets)
            continue
        m = iou_matrix(tr, dets[:, :4])
        best = m.max(axis=1)
        matched += int((best >= IOU_MATCH).sum())
        ious.extend(best[best >= IOU_MATCH].tolist())
        extra += int((m.max(axis=0) < IOU_MATCH).sum())
    return Recall(matched, total, extra, float(np.mean(ious)) if ious else float("nan"))


# -- coverage of an output video ----------------------------------------------------------------
@dataclass
class Coverage:
    frames: int
    checked: int
    uncovered: int
    leak_frames: int


def coverage(video: Path, truth: list[NDArray[np.float32]]) -> Coverage:
    """A truth face is covered when >= 95 % of the inner half of its box is dark (< 40 in every
    channel) in the solid-fill output, as in tests/integration/test_blur_cli.py."""
    from firmware.sources.video import VideoFileSource

    checked = uncovered = frames = 0
    leak_frames: set[int] = set()
    with VideoFileSource(video) as src:
        for f in src.frames():
            frames += 1
            if f.index >= len(truth):
                continue
            h, w = f.image.shape[:2]
            for x1, y1, x2, y2 in truth[f.index]:
                cx, cy, hw, hh = (x1 + x2) / 2, (y1 + y2) / 2, (x2 - x1) / 4, (y2 - y1) / 4
                core = f.image[
                    int(max(cy - hh, 0)) : int(min(cy + hh, h)),
                    int(max(cx - hw, 0)) : int(min(cx + hw, w)),
                ]
                if core.size == 0:
                    continue
                checked += 1
                if (core.max(axis=2) < 40).mean() < 0.95:
                    uncovered += 1
                    leak_frames.add(f.index)
    return Coverage(frames, checked, uncovered, len(leak_frames))


# -- the tools ----------------------------------------------------------------------------------
@dataclass
class Tool:
    label: str
    kind: str  # "anoncam" or "deface"
    command: Callable[[Path, Path, bool], list[str]]  # (clip, output, solid) -> argv
    size: tuple[int, int] | None = None  # anoncam's detection size and threads, to compare
    threads: int = 2  # with the bare detector
    model: str = "fp32"  # which bare detector configuration it runs ("fp32" or "int8")
    runs: list[RunResult] = field(default_factory=list)
    reported_fps: list[float] = field(default_factory=list)
    solid: Coverage | None = None

    def wall_fps(self, frames: int) -> list[float]:
        return [frames / r.wall_s for r in self.runs]


def anoncam_tool(
    label: str,
    extra: list[str],
    model: Path | None,
    size: tuple[int, int] | None,
    threads: int,
    model_kind: str = "fp32",
) -> Tool:
    def command(clip: Path, out: Path, solid: bool) -> list[str]:
        cmd = [sys.executable, "-m", "firmware", "blur", str(clip), "-o", str(out), *extra]
        if model is not None:
            cmd += ["--model", str(model)]
        return cmd + (["--mode", "solid"] if solid else [])

    return Tool(label, "anoncam", command, size, threads, model_kind)


def deface_tool(label: str, deface: Path, backend: str, scale: str | None = None) -> Tool:
    """deface on the clip with ``backend``; ``scale`` (WxH) is its ``--scale``, the
    detection size: its fastest setting, which the stretch target compares against."""

    def command(clip: Path, out: Path, solid: bool) -> list[str]:
        cmd = [str(deface), str(clip), "-o", str(out), "--backend", backend]
        if scale is not None:
            cmd += ["--scale", scale]
        return cmd + (["--replacewith", "solid"] if solid else [])

    return Tool(label, "deface", command, size=_wxh(scale) if scale else None)


def _wxh(text: str) -> tuple[int, int]:
    w, h = text.split("x")
    return int(w), int(h)


_ANONCAM_FPS = re.compile(r"(\d+) frame\(s\).*?([\d.]+) fps")
_TQDM_RATE = re.compile(r"([\d.]+)(it/s|s/it)")


def reported_fps(tool: Tool, run: RunResult) -> float:
    if tool.kind == "anoncam":
        m = _ANONCAM_FPS.search(run.stdout)
        return float(m.group(2)) if m else float("nan")
    rates = _TQDM_RATE.findall(run.stderr)  # tqdm's last update is the whole run's mean rate
    if not rates:
        return float("nan")
    value, unit = rates[-1]
    return float(value) if unit == "it/s" else 1.0 / float(value)


@dataclass
class DefaceEnv:
    venv: Path
    exe: Path
    version: str
    backends: list[str]
    installed_now: bool
    install_s: float


def ensure_deface(workdir: Path, given: Path | None) -> DefaceEnv:
    installed_now, install_s = False, 0.0
    if given is not None:
        venv = given
        if not (venv / "bin" / "deface").is_file():
            raise BenchError(
                f"{venv}: no bin/deface in it; give a venv with deface installed "
                f"(pip install {' '.join(DEFACE_PACKAGES)}) or leave out "
                "--deface-venv"
            )
    else:
        venv = workdir / "deface-venv"
        if not (venv / "bin" / "deface").is_file():
            log(f"installing {' '.join(DEFACE_PACKAGES)} from PyPI into {venv} (throwaway)")
            t0 = time.perf_counter()
            for cmd in (
                [sys.executable, "-m", "venv", str(venv)],
                [
                    str(venv / "bin" / "python"),
                    "-m",
                    "pip",
                    "install",
                    "-q",
                    "--disable-pip-version-check",
                    *DEFACE_PACKAGES,
                ],
            ):
                proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
                if proc.returncode != 0:
                    raise BenchError(
                        f"installing deface failed: {' '.join(cmd)}\n{proc.stderr.strip()[-800:]}"
                    )
            installed_now, install_s = True, time.perf_counter() - t0
    python = venv / "bin" / "python"
    probe = subprocess.run(
        [
            str(python),
            "-c",
            "import importlib.metadata as m, importlib.util as u\n"
            "print(m.version('deface'))\n"
            "print(int(bool(u.find_spec('onnx') and u.find_spec('onnxruntime'))))",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if probe.returncode != 0:
        raise BenchError(f"{python}: cannot import deface's metadata: {probe.stderr.strip()}")
    version, has_ort = probe.stdout.split()
    backends = (["onnxrt"] if has_ort == "1" else []) + ["opencv"]
    return DefaceEnv(venv, venv / "bin" / "deface", version, backends, installed_now, install_s)


# -- int8 ---------------------------------------------------------------------------------------
def int8_model(workdir: Path, given: Path | None, fp32: Path | None) -> tuple[Path, str]:
    """The int8 model to compare and a line saying where it came from."""
    from firmware.fsutil import sha256_file

    if given is not None:
        return given, f"{given} (given), sha256 {sha256_file(given)}"
    from firmware.models.quantize import default_int8_path, quantize
    from firmware.models.verify import sidecar_path

    installed = default_int8_path()
    if fp32 is None and installed.is_file() and sidecar_path(installed).is_file():
        return installed, f"{installed} (installed by setup), sha256 {sha256_file(installed)}"

    log("quantizing the model to int8 (built-in calibration set)")
    q = quantize(workdir / "centerface-int8.onnx", source=fp32)
    return q.path, (
        f"{q.path}, {q.size} bytes, sha256 {q.sha256}; quantized here in "
        f"{q.seconds:.1f} s (QDQ, per-channel, MinMax) on {q.calibration_inputs} "
        "calibration inputs: scikit-image pictures no test uses + LFW faces, "
        "at 640x480 and 320x256"
    )


# -- the report ---------------------------------------------------------------------------------
def machine_line() -> str:
    cpu, flags = platform.processor() or platform.machine(), ""
    try:
        info = Path("/proc/cpuinfo").read_text()
        cpu = re.search(r"model name\s*:\s*(.+)", info).group(1).strip()  # type: ignore[union-attr]
        flags = re.search(r"flags\s*:\s*(.+)", info).group(1)  # type: ignore[union-attr]
    except (OSError, AttributeError):
        pass
    isa = ",".join(f for f in ("avx2", "avx512f", "avx512_vnni", "avx_vnni") if f in flags.split())
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{cpu}, {cpus} CPUs usable ({isa or 'no AVX2'})"


def load_average() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def versions() -> str:
    import av
    import onnxruntime

    return (
        f"Python {platform.python_version()}, onnxruntime {onnxruntime.__version__}, "
        f"numpy {np.__version__}, PyAV {av.__version__}"
    )


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="scripts/bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help=f"{QUICK_FRAMES} frames, 1 round, no deface unless --deface-venv, no int8 "
        "unless --int8 (for CI; under 30 s)",
    )
    p.add_argument(
        "--workdir",
        type=Path,
        default=None,
        metavar="DIR",
        help="keep the clip, outputs and deface's venv here (default: a temporary "
        "folder, deleted at the end)",
    )
    p.add_argument(
        "--deface-venv",
        type=Path,
        default=None,
        metavar="DIR",
        help="an existing venv with deface installed (default: install one)",
    )
    p.add_argument("--no-deface", action="store_true", help="skip deface")
    p.add_argument(
        "--int8",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="compare an int8 model (default: on, off with --quick)",
    )
    p.add_argument(
        "--int8-model",
        type=Path,
        default=None,
        metavar="FILE",
        help="the int8 model to compare (default: quantize one into the workdir)",
    )
    p.add_argument(
        "--model",
        type=Path,
        default=None,
        metavar="FILE",
        help="fp32 model (default: the fetched one; anoncam blur checks its hash)",
    )
    p.add_argument(
        "--rounds",
        type=int,
        default=None,
        metavar="N",
        help="interleaved rounds of timing (default: 3, 1 with --quick)",
    )
    p.add_argument(
        "--frames",
        type=int,
        default=None,
        metavar="N",
        help=f"use the first N frames of the clip (default: all 300, {QUICK_FRAMES} with --quick)",
    )
    p.add_argument(
        "--clip",
        default="synthetic",
        metavar="synthetic|vtest|FILE",
        help="the clip: 'synthetic' (default; drawn faces with known truth), 'vtest' (real "
        "pedestrians, OpenCV's vtest.avi from Debian's opencv-doc, fetched once into "
        "~/.cache/anoncam/footage) or any video FILE; clips we did not draw have no truth, so "
        "coverage and recall are against what fp32 at full size finds",
    )
    p.add_argument(
        "--no-profile", action="store_true", help="skip the per-stage profile of anoncam blur"
    )
    p.add_argument(
        "--head-to-head",
        action="store_true",
        help="time only anoncam blur's defaults against deface (each backend, and at its "
        "fastest --scale), with the bare detector at full size and two threads: a long clip "
        "in a fraction of the time",
    )
    p.add_argument(
        "--json", type=Path, default=None, metavar="FILE", help="also write the figures as JSON"
    )
    args = p.parse_args(argv)
    if args.rounds is not None and args.rounds < 1:
        p.error("--rounds must be at least 1")
    if args.frames is not None and args.frames < 1:
        p.error("--frames must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    from firmware.errors import AnoncamError

    temp = args.workdir is None
    workdir = Path(tempfile.mkdtemp(prefix="anoncam-bench-")) if temp else args.workdir
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        return _bench(args, workdir.resolve())
    except BenchError as exc:
        print(f"bench: error: {exc}", file=sys.stderr)
        return 1
    except AnoncamError as exc:
        print(f"bench: error: {exc}", file=sys.stderr)
        if exc.hint:
            print(f"  fix: {exc.hint}", file=sys.stderr)
        return exc.exit_code
    finally:
        if temp:
            shutil.rmtree(workdir, ignore_errors=True)


def _bench(args: argparse.Namespace, workdir: Path) -> int:
    from firmware.models.verify import verify

    quick = args.quick
    rounds = args.rounds or (1 if quick else 3)
    frames = args.frames or (QUICK_FRAMES if quick else None)
    use_int8 = args.int8 if args.int8 is not None else not quick
    use_deface = not args.no_deface and (not quick or args.deface_venv is not None)
    started = time.perf_counter()
    load_before = load_average()

    fp32 = verify(args.model, check_hash=args.model is None)
    deface = ensure_deface(workdir, args.deface_venv) if use_deface else None
    int8_path, int8_note = (
        int8_model(workdir, args.int8_model, args.model) if use_int8 else (None, "")
    )

    if args.clip == "synthetic":
        log("rendering the clip")
        clip = make_clip(workdir, frames)
    else:
        source = vtest_clip() if args.clip == "vtest" else Path(args.clip)
        clip = external_clip(workdir, source, frames, args.model)
    n = len(clip.frames)
    full = clip.size

    # 1. bare detector, interleaved
    models: list[tuple[str, Path | None, bool]] = [("fp32", args.model, args.model is None)]
    if int8_path is not None:
        models.append(("int8", int8_path, False))
    grid = (
        [(None, 2)] if args.head_to_head else [(None, 1), (None, 2), (FAST_SIZE, 1), (FAST_SIZE, 2)]
    )
    configs = [
        DetConfig(name, path, check, size, threads)
        for name, path, check in models
        for size, threads in grid
    ]
    log(f"bare detector: {len(configs)} configurations x {n} frames x {rounds} round(s)")
    bench_detectors(configs, clip, rounds)

    # 2. end to end, interleaved rounds
    fast = ["--detect-size", f"{FAST_SIZE[0]}x{FAST_SIZE[1]}"]
    from firmware.models.preferred import choose_face_model

    choice = choose_face_model() if args.model is None else None
    default_model = "int8" if choice is not None and choice.int8 else "fp32"
    tools = [
        anoncam_tool(
            f"anoncam blur (defaults: {default_model})", [], args.model, None, 2, default_model
        ),
        anoncam_tool(
            "anoncam blur --parallel layers",
            ["--parallel", "layers"],
            args.model,
            None,
            2,
            default_model,
        ),
        anoncam_tool(
            "anoncam blur --threads 1", ["--threads", "1"], args.model, None, 1, default_model
        ),
        anoncam_tool(
            f"anoncam blur {' '.join(fast)}", fast, args.model, FAST_SIZE, 2, default_model
        ),
        anoncam_tool(
            f"anoncam blur {' '.join(fast)} --threads 1",
            [*fast, "--threads", "1"],
            args.model,
            FAST_SIZE,
            1,
            default_model,
        ),
    ]
    if args.head_to_head:
        del tools[1:]
    elif default_model == "int8":
        tools.insert(1, anoncam_tool("anoncam blur --model fp32", [], fp32.path, None, 2))
    if deface is not None:
        for backend in deface.backends:
            label = (
                f"deface (defaults: {backend} backend)"
                if backend == deface.backends[0]
                else f"deface --backend {backend}"
            )
            tools.append(deface_tool(label, deface.exe, backend))
        for backend in deface.backends:  # the stretch target's setting, as the issue names it
            label = f"deface --backend {backend} --scale {DEFACE_FAST_SCALE}"
            tools.append(deface_tool(label, deface.exe, backend, DEFACE_FAST_SCALE))
    outdir = workdir / "out"
    outdir.mkdir(exist_ok=True)
    for r in range(rounds):
        for i, tool in enumerate(tools):
            log(f"round {r + 1}/{rounds}: {tool.label}")
            run = run_measured(
                tool.label, tool.command(clip.path, outdir / f"t{i}.mp4", False), workdir
            )
            tool.runs.append(run)
            tool.reported_fps.append(reported_fps(tool, run))
    # 3. coverage: one solid-fill run per tool
    for i, tool in enumerate(tools):
        log(f"coverage: {tool.label} with solid fill")
        out = outdir / f"solid{i}.mp4"
        run_measured(tool.label + " (solid)", tool.command(clip.path, out, True), workdir)
        tool.solid = coverage(out, clip.truth)
    # 4. where the time goes: each stage alone, for the default model and fp32
    profiles: list[StageProfile] = []
    if not args.no_profile:
        from tests.benchmarks.stage_profile import profile_blur

        # (label, model, threshold): the defaults as anoncam blur resolves them
        variants: list[tuple[str, Path | None, float | None]] = [
            (
                f"defaults ({default_model})",
                choice.path if choice is not None else args.model,
                choice.threshold if choice is not None else None,
            )
        ]
        if default_model == "int8" and not args.head_to_head:
            variants.append(("--model fp32", fp32.path, None))
        for label, model, threshold in variants:
            log(f"per-stage profile: {label}")
            profiles.append(
                profile_blur(
                    clip.path, outdir / "profile.mp4", label=label, model=model, threshold=threshold
                )
            )

    # -- report -----------------------------------------------------------------------------
    def find_det(model: str, size: tuple[int, int] | None, threads: int) -> DetConfig | None:
        return next(
            (c for c in configs if c.model == model and c.size == size and c.threads == threads),
            None,
        )

    def det(model: str, size: tuple[int, int] | None, threads: int) -> DetConfig:
        found = find_det(model, size, threads)
        assert found is not None, (model, size, threads)
        return found

    def sz(size: tuple[int, int] | None) -> str:
        return size_label(size, full)

    # the target compares against deface at full size (the faster backend); the stretch
    # target against deface's fastest run of all, --scale included
    deface_tools = [t for t in tools if t.kind == "deface" and t.size is None]
    best_deface = max(deface_tools, key=lambda t: med(t.wall_fps(n)), default=None)
    fastest_deface = max(
        (t for t in tools if t.kind == "deface"), key=lambda t: med(t.wall_fps(n)), default=None
    )
    report: list[str] = []
    say = report.append
    say(f"anoncam benchmark, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC{' (--quick)' if quick else ''}")
    say(f"machine: {machine_line()}; load average {load_before} at start")
    say(
        f"software: {versions()}"
        + (f"; deface {deface.version} in {deface.venv}" if deface else "")
    )
    say(
        f"clip: {clip.description} -> {clip.path.name}, {n} frames "
        f"{full[0]}x{full[1]} ({clip.codec}); "
        + (
            f"{clip.faces} truth faces at least half in view"
            if clip.truth_kind == "truth"
            else f"no truth: {clip.faces} reference faces (fp32 at full size, threshold "
            f"{THRESHOLD}) stand in for it"
        )
        + f", in {sum(len(t) > 0 for t in clip.truth)} frames"
    )
    say(f"model: fp32 {fp32.path} (sha256 {fp32.sha256[:16]}...)")
    say(f"timing: {rounds} interleaved round(s); figures are median [min-max] over rounds")
    say("")
    say(
        "bare detector (CenterFace on frames decoded in memory, threshold 0.2 for fp32 and 0.15 "
        "for int8, as anoncam blur's defaults; the detect size includes the downscale)"
    )
    rows = []
    for c in configs:
        ref = det("fp32", c.size, c.threads)
        rows.append(
            [
                c.model,
                sz(c.size),
                str(c.threads),
                spread(c.fps),
                f"{1e3 / med(c.fps):.1f}",
                f"{med(c.cpu_ms):.1f}",
                "1.00" if c is ref else f"{med(c.fps) / med(ref.fps):.2f}",
            ]
        )
    say(table(["model", "input", "threads", "fps", "ms/frame", "CPU ms/frame", "vs fp32"], rows))
    say("  (CPU ms/frame with 2 threads includes onnxruntime's spin-waiting)")
    say("")
    say(
        "end to end (subprocess on the clip file: wall clock includes start-up and model load; "
        "'reported' is the fps the tool prints)"
    )
    rows = []
    for t in tools:
        wall = t.wall_fps(n)
        ratio = (
            f"{med(wall) / med(best_deface.wall_fps(n)):.2f}x" if best_deface is not None else "-"
        )
        bare = find_det(t.model, t.size, t.threads) if t.kind == "anoncam" else None
        vs_bare = f"{med(t.reported_fps) / med(bare.fps):.0%}" if bare is not None else "-"
        rows.append(
            [
                t.label,
                spread([r.wall_s for r in t.runs]),
                spread(wall),
                spread(t.reported_fps),
                f"{max(r.max_rss_mb for r in t.runs):.0f}",
                f"{med([r.cpu_s for r in t.runs]):.1f}",
                ratio,
                vs_bare,
            ]
        )
    say(
        table(
            [
                "run",
                "wall s",
                "fps (wall)",
                "fps (reported)",
                "peak RSS MB",
                "CPU s",
                "vs deface",
                "vs bare det.",
            ],
            rows,
        )
    )
    if best_deface is not None:
        say(f"  'vs deface': wall-clock fps over the faster deface backend ({best_deface.label})")
    else:
        say("  deface not run (--quick without --deface-venv, or --no-deface)")
    say(
        "  'vs bare det.': the reported fps over the bare detector's (same model, "
        "input size and threads); the design target is >= 90 %"
    )
    say("")
    if profiles:
        say(
            "per-stage profile of anoncam blur (each stage alone, in turn, in one thread; "
            "ms per frame, wall / CPU; the job overlaps decode and encode with detection)"
        )
        rows = []
        for prof in profiles:
            wall, cpu = prof.per_frame(), prof.per_frame("cpu")
            rows.append(
                [prof.label]
                + [f"{wall[k]:.1f} / {cpu[k]:.1f}" for k in STAGES]
                + [f"{prof.total_wall_ms:.1f}"]
            )
        say(table(["blur", *STAGES, "sum (wall)"], rows))
        say("")
    say(
        f"coverage (a second run with solid fill; a {clip.truth_kind} face "
        + ("at least half in view " if clip.truth_kind == "truth" else "")
        + "is uncovered when under 95 % of the inner half of its box is dark)"
    )
    rows = []
    for t in tools:
        cov = t.solid
        assert cov is not None
        rows.append(
            [
                t.label,
                f"{cov.frames}/{n}",
                str(cov.checked),
                str(cov.uncovered),
                str(cov.leak_frames),
            ]
        )
    say(
        table(
            ["run (with solid fill)", "frames", "faces checked", "uncovered", "frames with a leak"],
            rows,
        )
    )
    say("")
    say(
        f"detector recall over the clip ({clip.truth_kind} faces, found "
        f"when IoU >= {IOU_MATCH} with a detection; threshold {THRESHOLD} fp32, 0.15 int8; fps "
        "with 2 threads)"
    )
    rows = []
    recalls: dict[tuple[str, str], Recall] = {}
    for c in configs:
        if c.threads != 2:
            continue
        rc = recall(c.detections, clip.truth)
        recalls[(c.model, sz(c.size))] = rc
        rows.append(
            [
                c.model,
                sz(c.size),
                spread(c.fps),
                f"{rc.matched}/{rc.total}",
                f"{rc.percent:.1f} %",
                f"{rc.mean_iou:.2f}",
                str(rc.unmatched_detections),
            ]
        )
    say(table(["model", "input", "fps", "found", "recall", "mean IoU", "unmatched dets"], rows))
    say("  (unmatched detections include faces less than half in view, which the truth omits)")
    if int8_path is not None:
        say(f"int8 model: {int8_note}")
        int8_configs = [c for c in configs if c.model == "int8"]
        speed = [med(c.fps) / med(det("fp32", c.size, c.threads).fps) for c in int8_configs]
        lost = [
            recalls[("fp32", sz(c.size))].matched - recalls[("int8", sz(c.size))].matched
            for c in int8_configs
            if c.threads == 2
        ]
        faster = (
            "faster"
            if min(speed) > 1.05
            else "not faster"
            if max(speed) < 0.95
            else "mixed or about equal"
        )
        kept = (
            "keeps recall"
            if max(lost) <= 0
            else f"LOSES recall ({max(lost)} truth face(s) fewer found than fp32)"
        )
        say(
            f"int8 verdict: {kept}; {faster} on this machine (int8/fp32 fps "
            f"{min(speed):.2f}-{max(speed):.2f}x over the sizes and thread counts measured)."
        )
    if choice is not None:
        say(f"anoncam blur's default model here: {default_model} ({choice.reason})")
    say("")
    say(
        f"target: anoncam blur at least {TARGET_RATIO:.0f}x deface's frame rate at "
        f"{full[0]}x{full[1]} with no face left uncovered"
    )
    verdicts: dict[str, Any] = {}
    for t in tools:
        if t.kind != "anoncam":
            continue
        cov = t.solid
        assert cov is not None
        if best_deface is None:
            say(f"  {t.label}: deface not measured; {cov.uncovered} face(s) uncovered")
            verdicts[t.label] = None
            continue
        times = med(t.wall_fps(n)) / med(best_deface.wall_fps(n))
        met = times >= TARGET_RATIO and cov.uncovered == 0
        verdicts[t.label] = met
        say(
            f"  {t.label}: {times:.2f}x the faster deface, {cov.uncovered} face(s) uncovered "
            f"-> {'MET' if met else 'NOT MET'}"
        )
    if fastest_deface is not None and fastest_deface.solid is not None:
        fast = fastest_deface
        assert fast.solid is not None
        say(
            f"stretch: at least {STRETCH_RATIO:.0f}x deface's fastest run ({fast.label}, "
            f"{med(fast.wall_fps(n)):.1f} fps, {fast.solid.uncovered} face(s) uncovered)"
        )
        for t in tools:
            if t.kind != "anoncam" or t.solid is None:
                continue
            times = med(t.wall_fps(n)) / med(fast.wall_fps(n))
            met = times >= STRETCH_RATIO and t.solid.uncovered == 0
            say(
                f"  {t.label}: {times:.2f}x, {t.solid.uncovered} face(s) uncovered -> "
                f"{'MET' if met else 'NOT MET'}"
            )
    took = time.perf_counter() - started
    say(f"load average {load_average()} at the end; bench took {took:.0f} s")
    if deface is not None and deface.installed_now:
        say(f"(deface and its venv were installed from PyPI in {deface.install_s:.0f} s)")
    print("\n".join(report), flush=True)

    if args.json is not None:
        data = {
            "quick": quick,
            "rounds": rounds,
            "frames": n,
            "clip": str(clip.path),
            "truth_kind": clip.truth_kind,
            "truth_faces": clip.faces,
            "profile": [
                {"label": p.label, "wall_ms": p.per_frame(), "cpu_ms": p.per_frame("cpu")}
                for p in profiles
            ],
            "detector": [
                {
                    "model": c.model,
                    "input": sz(c.size),
                    "threads": c.threads,
                    "fps": c.fps,
                    "cpu_ms": c.cpu_ms,
                }
                for c in configs
            ],
            "recall": {f"{m}@{s}": vars(rc) for (m, s), rc in recalls.items()},
            "runs": [
                {
                    "label": t.label,
                    "kind": t.kind,
                    "wall_s": [r.wall_s for r in t.runs],
                    "fps_wall": t.wall_fps(n),
                    "fps_reported": t.reported_fps,
                    "max_rss_mb": [r.max_rss_mb for r in t.runs],
                    "cpu_s": [r.cpu_s for r in t.runs],
                    "coverage": vars(t.solid) if t.solid else None,
                }
                for t in tools
            ],
            "target_met": verdicts,
            "int8_model": str(int8_path) if int8_path else None,
        }
        args.json.write_text(json.dumps(data, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
