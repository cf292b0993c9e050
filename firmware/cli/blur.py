"""``anoncam blur INPUT... -o OUTPUT``."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from firmware.cli import args as argtypes
from firmware.cli.progress import ProgressLine

if TYPE_CHECKING:
    from firmware.config.settings import AnonymizerConfig, DetectorConfig

HELP = """\
Anonymize faces in images (JPEG, PNG) and videos (MP4, MKV, AVI, MOV).

Each output keeps the input's resolution, frame count and frame times; a video's display
rotation is applied, so it plays upright. Metadata (EXIF, GPS, container tags) is never
copied; audio is dropped unless --keep-audio. A face the detector misses for a moment stays
covered (--hold), and a frame whose detection fails is masked entirely. Outputs are written
atomically: a failed or stopped (Ctrl-C, SIGTERM) input leaves no file. Pictures above 25
megapixels are refused.

examples:
  anoncam blur shop.mp4 -o shop-anon.mp4
  anoncam blur photos/*.jpg -o anonymized/
  anoncam blur door.mkv -o out.mkv --mode blur --detect-size 640x360
"""


def register(sub: Any) -> None:
    p = sub.add_parser(
        "blur",
        help="anonymize faces in image and video files",
        description=HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("inputs", nargs="+", type=Path, metavar="INPUT", help="image or video files")
    p.add_argument(
        "-o",
        "--output",
        type=Path,
        required=True,
        help="output file (one input) or directory (several inputs; created if missing)",
    )
    p.add_argument(
        "--mode",
        choices=["mosaic", "blur", "solid"],
        default="mosaic",
        help="how faces are covered (default: mosaic)",
    )
    p.add_argument(
        "--shape",
        choices=["ellipse", "box"],
        default="box",
        help="mask shape (default: box; ellipse hides less of the scene)",
    )
    p.add_argument(
        "--threshold",
        type=float,
        default=None,
        help="face score threshold; lower masks more (default: 0.2 for fp32, 0.15 for the "
        "int8 model, which scores the smallest faces lower; recall first)",
    )
    p.add_argument(
        "--mask-scale",
        type=float,
        default=1.6,
        help="mask size relative to the face box (default: 1.6)",
    )
    p.add_argument(
        "--detect-size",
        type=argtypes.size,
        default=None,
        metavar="WxH",
        help="detect on a copy scaled to fit WxH: faster, misses small faces (default: full size)",
    )
    p.add_argument(
        "--hold",
        type=float,
        default=0.5,
        metavar="SECONDS",
        help="keep covering a face this long after it was last detected (default: 0.5)",
    )
    p.add_argument("--threads", type=int, default=2, help="detector threads (default: 2)")
    p.add_argument(
        "--parallel",
        choices=("frames", "layers"),
        default="frames",
        help="how a video uses the --threads: 'frames' detects that many frames at once, one "
        "thread each, which keeps the cores busy beside decoding and encoding; 'layers' "
        "detects one frame at a time on all of them, as the camera service does, and as "
        "photos always are (default: frames; a photo in a batch with videos gets one thread)",
    )
    p.add_argument(
        "--keep-audio", action="store_true", help="copy the audio track (default: dropped)"
    )
    p.add_argument(
        "--model",
        type=Path,
        default=None,
        help="ONNX model (default: the int8 CenterFace when 'anoncam models quantize' made one "
        "and this CPU has int8 dot-product instructions, else the fetched fp32 one; the line "
        "'face model:' says which and why)",
    )
    p.set_defaults(func=run)


#: The flag behind each settings field, so a bad value is reported as the user typed it.
_FLAGS = {
    "model": "--model",
    "threshold": "--threshold",
    "detect_width": "--detect-size",
    "detect_height": "--detect-size",
    "threads": "--threads",
    "mode": "--mode",
    "shape": "--shape",
    "mask_scale": "--mask-scale",
    "hold_s": "--hold",
}


def settings(args: argparse.Namespace) -> tuple[DetectorConfig, AnonymizerConfig]:
    """The detector and anonymizer settings the flags ask for, validated by the config types
    (the bounds a config file gets, in one place); UsageError naming each bad flag."""
    from pydantic import ValidationError

    from firmware.config.settings import AnonymizerConfig, DetectorConfig
    from firmware.errors import UsageError

    width, height = args.detect_size if args.detect_size else (None, None)
    detector: dict[str, object] = {
        "model": args.model,
        "detect_width": width,
        "detect_height": height,
        "threads": args.threads,
    }
    if args.threshold is not None:  # else the config's default (fp32's; see _run for int8)
        detector["threshold"] = args.threshold
    anonymizer = {
        "mode": args.mode,
        "shape": args.shape,
        "mask_scale": args.mask_scale,
        "hold_s": args.hold,
    }
    problems: list[str] = []
    try:
        d = DetectorConfig.model_validate(detector)
    except ValidationError as err:
        problems += [_problem(e) for e in err.errors()]
    try:
        a = AnonymizerConfig.model_validate(anonymizer)
    except ValidationError as err:
        problems += [_problem(e) for e in err.errors()]
    if problems:
        raise UsageError(
            "; ".join(problems), hint="see 'anoncam blur --help' for each option's range"
        )
    return d, a


def _problem(error: Any) -> str:
    field = str(error["loc"][0]) if error["loc"] else ""
    value = error.get("input")
    return f"{_FLAGS.get(field, field)} {value!r}: {error['msg'].removeprefix('Value error, ')}"


def _terminate(_signum: int, _frame: FrameType | None) -> None:
    # SIGTERM (systemd, kill, a CI timeout) unwinds like Ctrl-C: the writers' context managers
    # delete their hidden partial files, where the default action left them on disk.
    raise KeyboardInterrupt


def run(args: argparse.Namespace) -> int:
    if threading.current_thread() is not threading.main_thread():
        return _run(args)  # signal handlers can only be set from the main thread
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        return _run(args)
    finally:
        signal.signal(signal.SIGTERM, previous)


def _run(args: argparse.Namespace) -> int:
    from firmware.anonymize.stage import stage_from_settings
    from firmware.errors import AnoncamError
    from firmware.jobs.blur import blur_file, kind_of, plan, prepare_output

    detector, anonymizer = settings(args)
    pairs = plan(args.inputs, args.output)
    prepare_output(args.output, pairs)
    if args.model is None:
        from firmware.models.preferred import choose_face_model

        choice = choose_face_model()
        update: dict[str, object] = {"model": choice.path}
        if args.threshold is None:
            update["threshold"] = choice.threshold
        detector = detector.model_copy(update=update)
        print(
            f"face model: {'int8' if choice.int8 else 'fp32'} ({choice.reason}), "
            f"threshold {detector.threshold:g}",
            file=sys.stderr,
        )
    # A file job waits for a slow frame rather than masking it whole: nothing is live here.
    # Several frames at once only pays for a video; a photo keeps all threads on itself.
    videos = any(kind_of(src) == "video" for src, _ in pairs)
    frames_at_once = detector.threads if args.parallel == "frames" and videos else 1
    if frames_at_once > 1:  # one onnxruntime session, run on that many frames at once
        detector = detector.model_copy(update={"threads": 1})
    stage = stage_from_settings(detector, anonymizer, deadline=False)
    worst = 0
    for src, dst in pairs:
        bar = ProgressLine(src.name)
        try:
            result = blur_file(
                stage,
                src,
                dst,
                keep_audio=args.keep_audio,
                progress=bar,
                frames_at_once=frames_at_once,
            )
        except AnoncamError as exc:
            bar.close()
            print(f"anoncam: error: {exc}", file=sys.stderr)
            if exc.hint:
                print(f"  fix: {exc.hint}", file=sys.stderr)
            worst = max(worst, exc.exit_code)
            continue
        bar.close()
        note = f", {result.failed_frames} frame(s) fully masked" if result.failed_frames else ""
        print(
            f"{src} -> {dst}: {result.frames} frame(s), {result.faces} face detection(s), "
            f"{result.fps:.1f} fps{note}"
        )
    return worst
