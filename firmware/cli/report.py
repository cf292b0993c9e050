"""``anoncam report``: an HTML page with foot-traffic charts from the stored windows."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

HELP = """\
Write one self-contained HTML file (charts embedded, opens offline) from the windows that
'anoncam subscribe --sqlite/--postgres' stored: entries and exits per hour and per day,
occupancy over the day, and gaps (no window: camera off or outage) shown as gaps, not zeros.

exit codes: 0 ok, 1 the database or the output failed, 2 bad arguments or input.

examples:
  anoncam report --sqlite counts.db -o report.html
  anoncam report --postgres postgresql://bi@db.lan/counts --site store-042 -o store-042.html
"""


def register(sub: Any) -> None:
    p = sub.add_parser(
        "report",
        help="HTML charts of entries, exits and occupancy from stored windows",
        description=HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--sqlite", type=Path, default=None, help="SQLite file of anoncam subscribe")
    src.add_argument("--postgres", default=None, metavar="DSN", help="PostgreSQL database")
    p.add_argument("--site", default=None, help="only this site")
    p.add_argument("--device", default=None, help="only this device")
    p.add_argument("-o", "--output", type=Path, required=True, help="HTML file to write")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from firmware.jobs.report import write_report

    n = write_report(
        args.output, sqlite=args.sqlite, postgres=args.postgres, site=args.site, device=args.device
    )
    print(f"anoncam report: {n} window(s) -> {args.output}", file=sys.stderr)
    return 0
