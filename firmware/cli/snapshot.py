"""``anoncam snapshot -o FILE.jpg``: one anonymized frame with the counting line, for aiming."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

HELP = """\
Write one anonymized frame as a JPEG with the counting line (amber), the entry arrow and the
inside point (green) and any zones drawn on it, to check the camera's aim and the line.

The frame is never unanonymized: it goes through the same detector and masks as the service,
after a few warm-up frames so that a face missed for a moment stays covered; if detection fails
the whole frame is masked. The file is written atomically and carries no metadata.

--source overrides the config's source: a video file or image folder, 'synthetic' (a demo
scene) or 'picamera2' (the Pi camera). Stop the service first when using the Pi camera: only
one program can hold it.

examples:
  anoncam snapshot -o aim.jpg --config /etc/anoncam/anoncam.toml
  anoncam snapshot -o demo.jpg --source synthetic --frames 30
  anoncam snapshot -o door.jpg --source recording.mp4
"""


def positive(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: must be at least 1")
    return v


def quality(text: str) -> int:
    v = positive(text)
    if v > 100:
        raise argparse.ArgumentTypeError(f"{text!r}: JPEG quality is 1..100")
    return v


def register(sub: Any) -> None:
    p = sub.add_parser(
        "snapshot",
        help="write one anonymized frame with the counting line drawn",
        description=HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "-o",
        "--output",
        type=Path,
        required=True,
        metavar="FILE.jpg",
        help="JPEG file to write (replaced atomically if it exists)",
    )
    p.add_argument(
        "--config",
        type=Path,
        default=None,
        metavar="FILE",
        help="device config (default: built-in defaults, i.e. the synthetic scene)",
    )
    p.add_argument(
        "--source",
        default=None,
        metavar="PATH|synthetic|picamera2",
        help="frame source instead of the config's [source]",
    )
    p.add_argument(
        "--frames",
        type=positive,
        default=5,
        metavar="N",
        help="frames to run through the detector; the last is written (default: 5)",
    )
    p.add_argument("--quality", type=quality, default=90, help="JPEG quality 1..100 (default: 90)")
    p.set_defaults(func=run)


def config_for(config_path: Path | None, source: str | None) -> Any:
    """The config to use: the file (or defaults) with ``--source`` applied and re-validated."""
    from firmware.config.settings import from_dict, load, merge
    from firmware.errors import InputError

    config = load(config_path) if config_path is not None else from_dict({}, origin="defaults")
    if source is None:
        return config
    if source in ("synthetic", "picamera2"):
        override: dict[str, Any] = {"kind": source, "path": None}
    else:
        path = Path(source)
        if not path.exists():
            raise InputError(
                f"{path}: no such file or folder",
                hint="give a video file, an image folder, 'synthetic' or 'picamera2'",
            )
        override = {"kind": "file", "path": str(path)}
    data = merge(config.model_dump(mode="json"), {"source": override})
    return from_dict(data, origin=str(config_path) if config_path else "--source")


def run(args: argparse.Namespace) -> int:
    from firmware.errors import UsageError
    from firmware.jobs.snapshot import JPEG_SUFFIXES, capture, write_atomic

    if args.output.suffix.lower() not in JPEG_SUFFIXES:
        raise UsageError(
            f"{args.output}: a snapshot is a JPEG file", hint="name the output FILE.jpg"
        )
    config = config_for(args.config, args.source)
    snap = capture(config, frames=args.frames, quality=args.quality)
    write_atomic(args.output, snap.jpeg)
    note = "; detection FAILED, the whole frame is masked" if snap.failed else ""
    print(
        f"{args.output}: {snap.width}x{snap.height}, {len(snap.jpeg)} bytes, "
        f"{snap.faces} face(s) covered after {snap.frames} frame(s){note}"
    )
    return 1 if snap.failed else 0
