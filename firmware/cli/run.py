"""``anoncam run``: the camera service (also what systemd starts)."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

from firmware.cli import args as argtypes
from firmware.outbox import outbox_path

HELP = """\
Run the counting camera: anonymize faces, count entries, exits, occupancy and dwell, and publish
closed windows over MQTT. Flags override the config file.

A live camera runs until SIGTERM or Ctrl-C. A video file is processed as fast as possible; then
the last partial window is closed and the command waits (--drain-timeout) until the broker has
acknowledged every window. Windows survive broker outages and restarts in the outbox database
in --state-dir.

examples:
  anoncam run --config /etc/anoncam/config.toml
  anoncam run --source door.mp4 --mqtt-host localhost --state-dir /tmp/anoncam
  anoncam run --source synthetic --line 0,0.5,1,0.5 --inside 0.5,1 --window 10

exit codes: 0 every window acknowledged; 1 runtime failure or windows left undelivered;
2 bad config or usage.
"""


def register(sub: Any) -> None:
    p = sub.add_parser(
        "run",
        help="run the counting camera service",
        description=HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--config", type=Path, default=None, help="TOML config file (see 'anoncam config example')"
    )
    p.add_argument(
        "--source",
        default=None,
        metavar="PATH|picamera2|synthetic",
        help="frame source: a video file or image folder, the Pi camera, or the demo scene",
    )
    p.add_argument("--site", default=None, help="site id (MQTT topic level)")
    p.add_argument("--device", default=None, help="device id (MQTT topic level)")
    p.add_argument("--mqtt-host", default=None, help="broker host")
    p.add_argument("--mqtt-port", type=int, default=None, help="broker port")
    p.add_argument(
        "--line",
        type=argtypes.floats(4),
        default=None,
        metavar="X1,Y1,X2,Y2",
        help="counting line, normalized coordinates 0..1",
    )
    p.add_argument(
        "--inside",
        type=argtypes.floats(2),
        default=None,
        metavar="X,Y",
        help="a point on the store side of the line",
    )
    p.add_argument(
        "--window", type=int, default=None, metavar="SECONDS", help="counts window length"
    )
    p.add_argument("--state-dir", type=Path, default=None, help="where the outbox database lives")
    p.add_argument(
        "--drain-timeout",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="at the end, how long to wait for the broker to acknowledge every window "
        "(default: 30)",
    )
    p.add_argument("--preview", action="store_true", help="serve the anonymized preview page")
    p.set_defaults(func=run, default_log_level=logging.INFO)


def overrides(args: argparse.Namespace) -> dict[str, Any]:
    o: dict[str, Any] = {}
    if args.source is not None:
        if args.source in ("picamera2", "synthetic"):
            o["source"] = {"kind": args.source}
        else:
            o["source"] = {"kind": "file", "path": args.source}
    for flag, key in (("site", "site"), ("device", "device")):
        if getattr(args, flag) is not None:
            o[key] = getattr(args, flag)
    mqtt: dict[str, Any] = {}
    if args.mqtt_host is not None:
        mqtt["host"] = args.mqtt_host
    if args.mqtt_port is not None:
        mqtt["port"] = args.mqtt_port
    if mqtt:
        o["mqtt"] = mqtt
    counter: dict[str, Any] = {}
    if args.line is not None:
        counter["line"] = list(args.line)
    if args.inside is not None:
        counter["inside"] = list(args.inside)
    if counter:
        o["counter"] = counter
    if args.window is not None:
        o["windows"] = {"seconds": args.window}
    if args.state_dir is not None:
        o["state_dir"] = str(args.state_dir)
    if args.preview:
        o["preview"] = {"enabled": True}
    return o


def load_config(args: argparse.Namespace) -> Any:
    from firmware.config.settings import from_dict, merge, read_toml

    base: dict[str, Any] = {}
    origin = "command line"
    if args.config is not None:
        base = read_toml(args.config)
        origin = f"{args.config} with command-line overrides"
    return from_dict(merge(base, overrides(args)), origin=origin)


def run(args: argparse.Namespace) -> int:
    from firmware.errors import UsageError
    from firmware.runtime.service import Service

    if args.drain_timeout < 0:
        raise UsageError("--drain-timeout must be >= 0")
    config = load_config(args)
    result = Service(config, config_path=args.config, drain_timeout_s=args.drain_timeout).run()
    print(
        f"processed {result.frames} frames, closed {result.windows} window(s) in "
        f"{result.seconds:.1f} s",
        file=sys.stderr,
    )
    if not result.drained:
        print(
            f"anoncam: error: {result.undelivered} window(s) not acknowledged by the broker "
            f"{config.mqtt.host}:{config.mqtt.port} within {args.drain_timeout:g} s; they stay in "
            f"{outbox_path(config.state_dir)} and are sent at the next start",
            file=sys.stderr,
        )
        print(
            "  fix: check that the broker runs and is reachable ('anoncam diagnose'), "
            "or raise --drain-timeout",
            file=sys.stderr,
        )
        return 1
    return 0
