"""Counting on real footage against hand-annotated truth: person counting and face counting.

The clip is ``vtest.avi`` from Debian's ``opencv-doc`` (real pedestrians filmed from an
elevated corner, in both directions, in groups, some walking away from the camera, one far
away). It is not committed: ``--fetch`` downloads the package with ``apt-get download`` (Debian's
mirror, the only place it comes from) into ``~/.cache/anoncam/footage`` and checks its SHA-256.
The truth was annotated by hand for two lines in ``tests/data/footage``: x = 0.25
(``vtest_crossings.json``, 14 crossings) and x = 0.75 (``vtest_crossings_x75.json``, 33); each
file says how.

For each mode it prints true and counted entries and exits, the crossings matched one-to-one
within +-1 s, the misses and false counts, and the pipeline's frames per second with the
person and face detectors' milliseconds per call. A script that prints figures, not a test.

    python -m tests.benchmarks.bench_counting_real --fetch
    python -m tests.benchmarks.bench_counting_real --mode people --people-size 448x256
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from firmware.config.settings import Config
from firmware.count import LineCounter
from firmware.detect import nanodet
from firmware.detect.centerface import CenterFace
from firmware.fsutil import sha256_file
from firmware.sources.synthetic.people import Crossing
from firmware.sources.video import VideoFileSource
from tests.benchmarks.bench_counting import RecordingCounter, pair, run_counted

FOOTAGE = Path(__file__).resolve().parents[1] / "data" / "footage"
TRUTH = FOOTAGE / "vtest_crossings.json"
#: Every annotated line on the clip: x = 0.25 (14 crossings) and x = 0.75 (33 crossings).
TRUTHS = (TRUTH, FOOTAGE / "vtest_crossings_x75.json")
CACHE = Path.home() / ".cache" / "anoncam" / "footage"
CLIP_IN_DEB = "usr/share/doc/opencv-doc/examples/data/vtest.avi"


def fetch_clip(sha256: str) -> Path:
    """``vtest.avi`` in the cache, downloaded from Debian's ``opencv-doc`` if missing."""
    clip = CACHE / "vtest.avi"
    if clip.is_file() and sha256_file(clip) == sha256:
        return clip
    CACHE.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="anoncam-footage-") as tmp:
        try:
            download = ["apt-get", "download", "opencv-doc"]
            if subprocess.run(download, cwd=tmp, check=False).returncode != 0:
                # a machine whose package lists were never fetched (or are stale) knows no
                # opencv-doc yet: read the lists once and try again
                subprocess.run(["apt-get", "update", "-qq"], check=False)
                subprocess.run(download, cwd=tmp, check=True)
            deb = next(Path(tmp).glob("opencv-doc_*.deb"))
            subprocess.run(["dpkg-deb", "-x", str(deb), str(Path(tmp) / "x")], check=True)
        except (OSError, subprocess.CalledProcessError) as exc:
            raise SystemExit(
                f"cannot fetch opencv-doc with apt ({exc}); fix: run on Debian with its "
                f"mirror reachable, or pass --clip with a copy of {CLIP_IN_DEB}"
            ) from exc
        (Path(tmp) / "x" / CLIP_IN_DEB).replace(clip)
    if sha256_file(clip) != sha256:
        raise SystemExit(f"{clip}: SHA-256 differs from {TRUTH}'s; the package changed")
    return clip


def truth_crossings(truth: dict[str, Any]) -> list[Crossing]:
    """The annotation's true crossings."""
    return [Crossing(float(t), d) for t, d in truth["crossings"]]


def count_clip(
    clip: Path,
    truth: dict[str, Any],
    mode: str,
    people_size: tuple[int, int],
    every: int | None = None,
) -> tuple[list[Any], list[Crossing], list[Any], Any, float]:
    """Run the real frame loop over ``clip``: the counted events, the missed true crossings,
    the extra counts (matched one-to-one within 1 s), the loop's stats and its seconds.
    ``every``: the person detector's cadence (default: ``[people] every_n_frames``)."""
    people: dict[str, Any] = {
        "enabled": mode == "people",
        "detect_width": people_size[0],
        "detect_height": people_size[1],
    }
    if every is not None:
        people["every_n_frames"] = every
    config = Config.model_validate(
        {
            "people": people,
            "counter": {"line": truth["line"], "inside": truth["inside"]},
        }
    )
    source = VideoFileSource(clip)
    width, height = source.size
    counter = RecordingCounter(LineCounter(config.counter, width, height))
    person_detector = nanodet.from_config(config.people) if mode == "people" else None
    try:
        stats, elapsed, _rows = run_counted(
            source, config, CenterFace(), counter, fps=source.fps, person_detector=person_detector
        )
    finally:
        source.close()
    missed, extra = pair(counter.events, truth_crossings(truth), 1.0)
    return list(counter.events), list(missed), list(extra), stats, elapsed


def measure(
    clip: Path,
    truth: dict[str, Any],
    mode: str,
    people_size: tuple[int, int],
    every: int | None = None,
) -> str:
    """One run of the real frame loop over ``clip``; the report line for it."""
    events, missed, extra, stats, elapsed = count_clip(clip, truth, mode, people_size, every)
    crossings = truth_crossings(truth)
    matched = len(crossings) - len(missed)
    entries = sum(e.direction == "entry" for e in events)
    exits = len(events) - entries
    true_entries = sum(c.direction == "entry" for c in crossings)
    label = f"{mode} {people_size[0]}x{people_size[1]}" if mode == "people" else mode
    if mode == "people" and every is not None:
        label += f" 1/{every}"
    x = truth["line"][0]
    return (
        f"line x={x:<5g} {label:<16} true in/out {true_entries}/{len(crossings) - true_entries}  "
        f"counted {entries}/{exits}  matched {matched}/{len(crossings)} "
        f"({matched / (len(crossings) + len(extra)):.1%})  "
        f"missed {[(c.t_s, c.direction) for c in missed]}  "
        f"extra {[(round(e.t_s, 1), e.direction) for e in extra]}  "
        f"{stats.frames / elapsed:.1f} fps  person {stats.people_ms_ewma:.1f} ms  "
        f"face {stats.detect_ms_ewma:.1f} ms"
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--clip", type=Path, help="vtest.avi (default: the cache; see --fetch)")
    p.add_argument("--fetch", action="store_true", help="download the clip with apt if missing")
    p.add_argument("--mode", choices=("people", "faces", "both"), default="both")
    p.add_argument(
        "--every",
        type=int,
        default=None,
        metavar="N",
        help="run the person detector on one frame in N (default: the [people] default, 2)",
    )
    p.add_argument(
        "--truth",
        type=Path,
        action="append",
        default=None,
        metavar="JSON",
        help="an annotation to count against (repeatable; default: every line annotated on "
        f"the clip: {', '.join(t.name for t in TRUTHS)})",
    )
    p.add_argument(
        "--people-size",
        default="576x320",
        help="person detection size WxH (default: the [people] default; the clip is 4:3, so "
        "it is fitted into 427x320)",
    )
    args = p.parse_args(argv)
    truths = [json.loads(t.read_text()) for t in args.truth or TRUTHS]
    clip = args.clip or CACHE / "vtest.avi"
    if args.fetch and args.clip is None:
        clip = fetch_clip(truths[0]["sha256"])
    if not clip.is_file():
        print(f"no clip at {clip}; fix: rerun with --fetch (needs apt)", file=sys.stderr)
        return 2
    w, h = (int(v) for v in args.people_size.split("x"))
    if args.every is not None and args.every < 1:
        p.error("--every must be at least 1")
    modes = ("people", "faces") if args.mode == "both" else (args.mode,)
    for mode in modes:
        for truth in truths:
            print(measure(clip, truth, mode, (w, h), args.every), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
