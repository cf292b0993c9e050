"""``anoncam diagnose``: one command that tells a field tech what is wrong and how to fix it."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

HELP = """\
Check this camera end to end and print one line per check: OK, WARN, FAIL or SKIP, with the
fix under every line that is not OK.

  camera   picamera2 imports, a camera is listed, frames arrive at source.fps
           (with source.kind "file" or "synthetic": the source opens and decodes)
  model    the face model is present and matches the manifest; one timed inference
  mqtt     mqtt.host resolves, TCP connects, TLS and days to certificate expiry,
           the broker accepts the credentials, publish + receive round trip on
           {prefix}/{site}/{device}/diagnostics
  clock    synchronized (timedatectl / chrony) and the offset
  power    vcgencmd get_throttled bit by bit, SoC temperature
  storage  free space in state_dir, read-only or failing card, outbox backlog
  service  config, systemd state and restarts, recent errors in the journal

Run it as root (sudo) on a device: vcgencmd, the journal and the state directory need it.

exit status: 0 nothing FAILed (WARNs allowed), 1 at least one FAIL,
             2 the config is invalid or the command line is wrong

examples:
  anoncam diagnose
  anoncam diagnose --only mqtt,clock --timeout 10
  anoncam diagnose --json > diagnose.json
"""


def register(sub: Any) -> None:
    p = sub.add_parser(
        "diagnose",
        help="check camera, model, MQTT, clock, power, storage, service",
        description=HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--config",
        type=Path,
        default=None,
        metavar="FILE",
        help="device config (default: /etc/anoncam/config.toml if it exists, "
        "else built-in defaults, with a WARN)",
    )
    p.add_argument(
        "--only",
        default=None,
        metavar="CHECK[,CHECK]",
        help="run only these families (camera, model, mqtt, clock, power, storage, "
        "service) or items (e.g. power.throttling)",
    )
    p.add_argument(
        "--timeout",
        type=_seconds,
        default=5.0,
        metavar="S",
        help="limit for each network step (DNS, TCP, TLS, MQTT) in seconds (default 5)",
    )
    p.add_argument(
        "--json",
        action="store_true",
        help="print JSON (schema: firmware/schemas/diagnose.schema.json) instead of a table",
    )
    p.set_defaults(func=_diagnose)


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0.1 <= value <= 300:
        raise argparse.ArgumentTypeError(f"{text!r}: must be between 0.1 and 300 seconds")
    return value


def _diagnose(args: argparse.Namespace) -> int:
    from firmware.diagnostics import Context, Host, diagnose, exit_code, parse_only, resolve_config
    from firmware.diagnostics.report import render_json, render_table

    only = parse_only(args.only)  # UsageError (exit 2) before anything runs
    choice = resolve_config(args.config)  # ConfigError (exit 2) lists every problem
    ctx = Context(
        config=choice.config, host=Host(), config_path=choice.path, timeout_s=args.timeout
    )
    report = diagnose(ctx, only)
    sys.stdout.write(render_json(report) if args.json else render_table(report))
    sys.stdout.flush()
    return exit_code(report.checks)
