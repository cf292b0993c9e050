"""``anoncam provision ...``: the installer's commands, mounted by firmware's CLI root.

    init DIR                                   write a commented inventory skeleton
    broker --inventory FILE -o DIR             Mosquitto passwd, acl and conf snippet
    bundle -o DIR [--python 3.11 3.13]         offline install bundle for the Pi
    image TARGET --inventory FILE --device ID  write a camera's first boot to an image or card
    verify TARGET --inventory FILE --device ID read a written card back and check it

Exit codes: 0 ok, 1 a runtime failure (or a card that does not verify), 2 bad inventory,
usage or input. Errors are raised as firmware.errors exceptions; the CLI root prints them.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from provisioning.inventory.loader import load as load_inventory

EPILOG = (
    "From an inventory to a card: 'provision init DIR', edit DIR/inventory.toml, "
    "'provision broker', 'provision bundle', then 'provision image' and 'provision verify' "
    "for each camera. Exit codes: 0 ok, 1 runtime failure, 2 bad inventory, usage or input."
)


def _out(text: str) -> None:
    print(text, flush=True)


def _progress(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _init(args: argparse.Namespace) -> int:
    from provisioning import skeleton

    path = skeleton.write_skeleton(Path(args.dir))
    _out(f"wrote {path}")
    _out("next: edit it (your SSH public key, broker, sites, devices), then run")
    _out(f"  anoncam provision broker --inventory {path} -o {Path(args.dir) / 'broker'}")
    return 0


def _broker(args: argparse.Namespace) -> int:
    from provisioning import broker

    inv = load_inventory(args.inventory)
    result = broker.write_broker(
        inv, Path(args.output), rotate=args.rotate or (), rotate_all=args.rotate_all
    )
    for p in result.written:
        _out(f"wrote     {p}")
    for p in result.unchanged:
        _out(f"unchanged {p}")
    for label in result.created:
        _out(f"new password for {label} (in {result.secrets_dir})")
    for label in result.rotated:
        _out(
            f"rotated password of {label}: write that camera's card again, or update its "
            "/etc/anoncam/credentials/mqtt-password"
        )
    if result.written:
        _out("install the files on the broker host as mosquitto.conf says, then reload Mosquitto")
    return 0


def _bundle(args: argparse.Namespace) -> int:
    from provisioning import bundle

    bundle.build_bundle(
        Path(args.output),
        args.python,
        anoncam_wheel=Path(args.wheel) if args.wheel else None,
        model=Path(args.model) if args.model else None,
        progress=_progress,
    )
    _out(f"bundle ready: {args.output}")
    return 0


def _image(args: argparse.Namespace) -> int:
    from provisioning import card

    inv = load_inventory(args.inventory)
    bundle_dir = Path(args.bundle) if args.bundle else inv.base_dir / "bundle"
    result = card.write_card(
        Path(args.target),
        inv,
        args.device,
        bundle_dir,
        first_boot=args.first_boot,
        progress=_progress,
    )
    _out(
        f"wrote {args.device} to {result.target}: "
        f"first boot via {result.format.value} ({result.reason})"
    )
    _out(f"  files: {', '.join(result.files)}")
    if result.new_secret:
        _out(
            "  this camera got a new MQTT password: run 'anoncam provision broker' again and "
            "reload Mosquitto before it boots"
        )
    _out(
        f"check it with: anoncam provision verify {args.target} --inventory {args.inventory} "
        f"--device {args.device}"
    )
    return 0


def _verify(args: argparse.Namespace) -> int:
    from provisioning import card

    inv = load_inventory(args.inventory)
    checks = card.verify_card(Path(args.target), inv, args.device, progress=_progress)
    width = max(len(c.name) for c in checks)
    for c in checks:
        mark = "ok  " if c.ok else "FAIL"
        _out(f"{mark} {c.name.ljust(width)}  {c.detail}".rstrip())
    failed = [c for c in checks if not c.ok]
    if failed:
        _out(f"{len(failed)} check(s) failed: write the card again with 'anoncam provision image'")
        return 1
    _out(f"all {len(checks)} checks passed")
    return 0


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "provision",
        help="installer tools: inventory, broker accounts, offline bundle, writing cards",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        epilog=EPILOG,
    )
    sub = parser.add_subparsers(dest="provision_command", metavar="SUBCOMMAND", required=True)

    p = sub.add_parser("init", help="write a commented inventory skeleton into DIR")
    p.add_argument("dir", metavar="DIR")
    p.set_defaults(func=_init)

    p = sub.add_parser(
        "broker",
        help="write Mosquitto passwd, acl and a mosquitto.conf snippet",
        description="Generates missing passwords (kept in fleet.secrets_dir, 0600) and writes "
        "the broker files. Re-running changes nothing unless the inventory changed or you rotate.",
    )
    p.add_argument("--inventory", required=True, metavar="FILE")
    p.add_argument("-o", "--output", required=True, metavar="DIR")
    rot = p.add_mutually_exclusive_group()
    rot.add_argument(
        "--rotate",
        action="append",
        metavar="DEVICE",
        help="new password for this camera (SITE/DEVICE) or subscriber; repeatable",
    )
    rot.add_argument("--rotate-all", action="store_true", help="new passwords for every account")
    p.set_defaults(func=_broker)

    p = sub.add_parser(
        "bundle",
        help="collect the offline install bundle (wheels for the Pi, the model)",
        description="Downloads anoncam's dependencies for Raspberry Pi OS (linux aarch64) from "
        "PyPI with 'pip download', builds the anoncam wheel and adds the verified model.",
    )
    p.add_argument("-o", "--output", required=True, metavar="DIR")
    p.add_argument(
        "--python",
        nargs="+",
        default=["3.11", "3.13"],
        metavar="X.Y",
        help="CPython versions: 3.11 (Bookworm), 3.13 (Trixie); default both",
    )
    p.add_argument("--wheel", metavar="FILE", help="use this anoncam wheel instead of building one")
    p.add_argument(
        "--model", metavar="FILE", help="use this fetched model (verified) instead of the default"
    )
    p.set_defaults(func=_bundle)

    for name, func, text in (
        ("image", _image, "write a camera's config, credentials, bundle and first boot to a card"),
        ("verify", _verify, "read a written card back and check every file"),
    ):
        p = sub.add_parser(
            name,
            help=text,
            description=f"{text[0].upper()}{text[1:]}. TARGET is a flashed Raspberry Pi OS image "
            "file (written with mtools, no root needed) or the mounted boot partition.",
        )
        p.add_argument("target", metavar="TARGET")
        p.add_argument("--inventory", required=True, metavar="FILE")
        p.add_argument(
            "--device", required=True, metavar="ID", help="SITE/DEVICE, or DEVICE if unique"
        )
        if name == "image":
            p.add_argument(
                "--bundle",
                metavar="DIR",
                help="offline bundle (default: bundle/ next to the inventory)",
            )
            p.add_argument(
                "--first-boot",
                choices=["auto", "firstrun", "cloud-init"],
                default="auto",
                help="first-boot format; auto detects it from the image",
            )
        p.set_defaults(func=func)
