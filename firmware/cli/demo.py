"""``anoncam demo``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from firmware.cli.progress import ProgressLine

HELP = """\
Run the whole pipeline on a synthetic store entrance built from real face photos (bundled in
scikit-image): faces are anonymized, people are tracked and counted as they cross the line,
windows are published over MQTT and shown here as a subscriber receives them. Needs no camera
and no configuration. The anonymized video is written to --output.

The broker is Mosquitto when installed (started on a free loopback port, stopped afterwards),
else an embedded one (amqtt, from the 'demo' extra); --mqtt-host uses an existing broker.
"""


def register(sub: Any) -> None:
    p = sub.add_parser(
        "demo",
        help="run the full pipeline on a synthetic scene of real faces",
        description=HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "-o",
        "--output",
        type=Path,
        default=Path("anoncam-demo"),
        help="folder for the anonymized video and the demo's state (default: ./anoncam-demo)",
    )
    p.add_argument(
        "--duration",
        type=float,
        default=40.0,
        metavar="SECONDS",
        help="length of the scene (default: 40)",
    )
    p.add_argument(
        "--window",
        type=int,
        default=10,
        metavar="SECONDS",
        help="counts window length (default: 10, so several windows show up)",
    )
    p.add_argument("--mqtt-host", default=None, help="use this broker instead of starting one")
    p.add_argument(
        "--mqtt-port", type=int, default=1883, help="port of --mqtt-host (default: 1883)"
    )
    p.add_argument(
        "--broker",
        choices=["auto", "mosquitto", "embedded"],
        default="auto",
        help="which broker to start when no --mqtt-host is given (default: auto)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from firmware.cli.subscribe import HEADER, row
    from firmware.errors import UsageError
    from firmware.jobs.demo import run_demo

    if args.duration <= 0 or args.window < 1:
        raise UsageError("--duration must be positive and --window at least 1")
    bar = ProgressLine("demo")
    header_shown = False

    def on_window(r: Any) -> None:
        nonlocal header_shown
        if not header_shown:
            bar.close()
            print(HEADER, flush=True)
            header_shown = True
        print(row(r), flush=True)

    print(
        f"anoncam demo: a {args.duration:g} s synthetic scene of real faces, "
        f"{args.window} s windows",
        file=sys.stderr,
    )
    result = run_demo(
        args.output,
        duration_s=args.duration,
        window_s=args.window,
        mqtt_host=args.mqtt_host,
        mqtt_port=args.mqtt_port,
        broker=args.broker,
        on_window=on_window,
        on_progress=None if header_shown else bar,
    )
    bar.close()
    print(f"\nbroker: {result.broker}")
    print(
        f"counted: {result.entries} entries, {result.exits} exits "
        f"(scene truth: {result.true_entries} entries, {result.true_exits} exits)"
    )
    print(
        f"windows: {result.windows_published} published, {result.windows_received} received "
        f"and validated against the anoncam/counts/1 schema"
    )
    print(
        f"anonymized video: {result.video.resolve()} ({result.frames} frames, "
        f"{result.seconds:.0f} s)"
    )
    if result.windows_received < result.windows_published:
        print("anoncam demo: some windows did not arrive at the subscriber", file=sys.stderr)
        return 1
    return 0
