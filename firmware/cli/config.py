"""``anoncam config check FILE`` and ``anoncam config example``."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

EXAMPLE = """\
# anoncam device configuration (TOML). Every key is optional; shown values are the defaults
# unless marked. Check a file with: anoncam config check FILE
site = "store-042"            # example value; lower-case letters, digits, '-' and '_'
device = "door-1"             # example value; unique within the site
state_dir = "/var/lib/anoncam"  # the outbox database lives here
log_level = "INFO"

[source]
kind = "picamera2"            # "picamera2", "file" (needs path) or "synthetic"
width = 1280                  # main stream (anonymized output)
height = 720
fps = 15.0
lores_width = 640             # detection stream; smaller is faster, misses distant faces
lores_height = 480

[detector]
threshold = 0.2               # low on purpose: a false mask is cheap, a missed face leaks
threads = 2
timeout_s = 2.0               # slower detection fails closed (whole frame masked)

[anonymizer]
mode = "mosaic"               # shuffled cells; or "blur" or "solid"
shape = "box"                 # or "ellipse" (rounder, hides less of the scene)
mask_scale = 1.6
hold_s = 0.5                  # keep covering a face this long after the detector lost it

[tracker]
min_hits = 3
max_age_s = 1.0

[counter]
line = [0.0, 0.5, 1.0, 0.5]   # x1, y1, x2, y2, normalized 0..1
inside = [0.5, 1.0]           # a point on the store side of the line
hysteresis = 0.02

[windows]
seconds = 60
suppress_below = 0            # report counts below this as 0 (P5); 0 turns it off

[mqtt]
host = "broker.example.net"   # example value
port = 8883
prefix = "anoncam"
username = "store-042-door-1" # example value
# password_file = "/etc/anoncam/mqtt-password"  # or systemd LoadCredential=mqtt-password

[mqtt.tls]
ca_file = "/etc/anoncam/ca.crt"  # example value
verify_hostname = true

[outbox]
max_rows = 100000
min_free_mb = 50

[preview]
enabled = false
bind = "127.0.0.1"
port = 8080
"""


def register(sub: Any) -> None:
    p = sub.add_parser(
        "config",
        help="check a config file or print an example",
        description="Validate device configuration files.",
    )
    csub = p.add_subparsers(dest="config_command", metavar="ACTION", required=True)
    c = csub.add_parser(
        "check", help="validate FILE; lists every problem with its dotted path (exit 2)"
    )
    c.add_argument("file", type=Path)
    c.set_defaults(func=_check)
    e = csub.add_parser("example", help="print a commented example config")
    e.set_defaults(func=_example)


def _check(args: argparse.Namespace) -> int:
    from firmware.config.settings import load

    cfg = load(args.file)
    print(
        f"OK {args.file}: site {cfg.site!r}, device {cfg.device!r}, source {cfg.source.kind}, "
        f"broker {cfg.mqtt.host}:{cfg.mqtt.port}"
    )
    return 0


def _example(args: argparse.Namespace) -> int:
    print(EXAMPLE, end="")
    return 0
