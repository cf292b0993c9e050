"""``anoncam support-bundle -o FILE.tar.gz``: everything support needs, nothing secret."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

HELP = """\
Write one .tar.gz for support: the full diagnosis (as 'anoncam diagnose --json'), software
versions, the effective config with every secret redacted, the service's last 500 journal lines,
and outbox statistics. Password, token and key files are never read or included; no image is
included unless you ask for one with --with-snapshot (one anonymized frame, as
'anoncam snapshot'). The file is written with mode 0600.

exit status: 0 written, 1 could not be written (or the snapshot asked for failed; the bundle
is still written without it), 2 invalid config or command line

example:
  sudo anoncam support-bundle -o /tmp/support-$(hostname).tar.gz
"""


def register(sub: Any) -> None:
    p = sub.add_parser(
        "support-bundle",
        help="write a .tar.gz for support (no secrets, no images)",
        description=HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "-o",
        "--output",
        type=Path,
        required=True,
        metavar="FILE.tar.gz",
        help="where to write the bundle",
    )
    p.add_argument(
        "--config",
        type=Path,
        default=None,
        metavar="FILE",
        help="device config (default: /etc/anoncam/config.toml if it exists, "
        "else built-in defaults)",
    )
    p.add_argument(
        "--with-snapshot", action="store_true", help="include one anonymized frame (snapshot.jpg)"
    )
    p.set_defaults(func=_support_bundle)


def _support_bundle(args: argparse.Namespace) -> int:
    from firmware.diagnostics import Context, Host, diagnose, resolve_config
    from firmware.errors import OutputError
    from firmware.jobs.support_bundle import build_bundle

    folder = args.output.parent if str(args.output.parent) else Path(".")
    if not folder.is_dir():  # before the diagnosis, which takes seconds
        raise OutputError(
            f"{args.output}: folder {folder} does not exist",
            hint="create it or pass another -o path",
        )
    choice = resolve_config(args.config)
    host = Host()
    print(
        "running the diagnosis (camera, model, MQTT, clock, power, storage, service)...",
        file=sys.stderr,
    )
    report = diagnose(Context(choice.config, host, choice.path))
    result = build_bundle(
        args.output,
        config=choice.config,
        config_path=choice.path,
        report=report.to_dict(),
        host=host,
        with_snapshot=args.with_snapshot,
    )
    counts = report.counts()
    print(
        f"wrote {result.path} ({result.path.stat().st_size} bytes, mode 0600): "
        f"{len(result.members)} files; diagnosis {counts['FAIL']} FAIL, {counts['WARN']} WARN"
    )
    if result.snapshot_error is not None:
        print(
            f"anoncam: error: --with-snapshot: {result.snapshot_error}; "
            "the bundle was written without an image",
            file=sys.stderr,
        )
        return 1
    return 0
