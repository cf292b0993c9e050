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
# path = "/srv/door.mp4"      # with kind = "file": a video file or an image folder
width = 1280                  # main stream (anonymized output)
height = 720
fps = 15.0
lores_width = 640             # detection stream; smaller is faster, misses distant faces
lores_height = 360            # keep the main stream's aspect ratio
duration_s = 60.0             # with kind = "synthetic": length of the demo scene
bodies = false                # with kind = "synthetic": whole walking bodies (pair with
                              # [people] enabled = true); false: heads on torsos

[detector]
# model = "/var/lib/anoncam/models/centerface-opt.onnx"  # default: the fetched CenterFace
# detect_width = 320          # with detect_height: detect at this size (faster, misses small
# detect_height = 256         # faces); default: the detection stream's size
threshold = 0.2               # low on purpose: a false mask is cheap, a missed face leaks
threads = 2
timeout_s = 2.0               # slower detection fails closed (whole frame masked)

[people]
enabled = true                # count bodies (any side) with the person detector; off: face tracks
# model = "/var/lib/anoncam/models/nanodet.onnx"  # default: the model from 'anoncam models fetch'
threshold = 0.45              # lower finds distant people and more false ones
detect_width = 576            # multiples of 32; keep the stream's aspect ratio; people
detect_height = 320           # are counted from about 20 px tall at this size
every_n_frames = 2            # detect on one frame in N; the tracker predicts between
threads = 2
head_masking = true           # also cover the head of every person box; keep on

[anonymizer]
mode = "mosaic"               # shuffled cells; or "blur" or "solid"
shape = "box"                 # or "ellipse" (rounder, hides less of the scene)
mask_scale = 1.6
hold_s = 0.5                  # keep covering a face this long after the detector lost it

[tracker]
min_hits = 3
max_age_s = 1.0
iou_threshold = 0.2

[counter]
anchor = "bottom"             # point of a person box tested: "bottom" (feet) or "centre"
line = [0.0, 0.5, 1.0, 0.5]   # x1, y1, x2, y2, normalized 0..1
inside = [0.5, 1.0]           # a point on the store side of the line
hysteresis = 0.02
# [[counter.zones]]           # optional occupancy zones, each published under "zones"
# name = "till"
# polygon = [[0.6, 0.6], [0.9, 0.6], [0.9, 0.9], [0.6, 0.9]]

[windows]
seconds = 60
suppress_below = 0            # report counts below this as 0 (P5); 0 turns it off

[mqtt]
host = "broker.example.net"   # example value
port = 8883
prefix = "anoncam"
username = "store-042-door-1" # example value
# password_file = "/etc/anoncam/mqtt-password"  # or systemd LoadCredential=mqtt-password
protocol = "auto"             # "auto" tries MQTT 5 (sees broker rejections), then 3.1.1
keepalive_s = 60              # the broker publishes the Last Will after 1.5x this silence
health_interval_s = 60.0      # seconds between health messages
keep_until_subscribed = true  # MQTT 5: a window nobody subscribes to stays on the device

[mqtt.tls]                    # TLS; without ca_file the system's CAs verify the broker
# ca_file = "/etc/anoncam/ca.crt"  # the CA that signed the broker's; check/run refuse a missing one
# cert_file = "/etc/anoncam/client.crt"  # client certificate, when the broker asks for one
# key_file = "/etc/anoncam/client.key"
verify_hostname = true

[mqtt.homeassistant]
enabled = false               # Home Assistant discovery; turning it off removes the sensors
prefix = "homeassistant"

[outbox]
max_rows = 100000
min_free_mb = 50

[preview]
enabled = false
bind = "127.0.0.1"
port = 8080
# token_file = "/etc/anoncam/preview-token"  # required when bind is not loopback
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
    from firmware.runtime import preflight

    cfg = load(args.file)
    # the same checks 'anoncam run' makes before it starts: OK here means run accepts it
    preflight.check(cfg, origin=str(args.file))
    print(
        f"OK {args.file}: site {cfg.site!r}, device {cfg.device!r}, source {cfg.source.kind}, "
        f"broker {cfg.mqtt.host}:{cfg.mqtt.port}"
    )
    return 0


def _example(args: argparse.Namespace) -> int:
    print(EXAMPLE, end="")
    return 0
