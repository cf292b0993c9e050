"""The ``anoncam`` command. It owns all terminal output; library code only logs.

Each subcommand lives in its own module with ``register(subparsers)``, which adds a parser whose
``func`` default takes the parsed arguments and returns an exit code:
0 ok, 1 runtime failure, 2 bad config, usage or input.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from firmware import __version__
from firmware.errors import AnoncamError

# Subcommand modules, mounted in this order in --help. provisioning's are mounted from its own
# package: the one place firmware knows about provisioning.
_COMMANDS = (
    "firmware.cli.demo",
    "firmware.cli.blur",
    "firmware.cli.run",
    "firmware.cli.subscribe",
    "firmware.cli.report",
    "firmware.cli.models",
    "firmware.cli.config",
    "firmware.cli.diagnose",
    "firmware.cli.snapshot",
    "firmware.cli.support_bundle",
    "provisioning.cli",
)

logger = logging.getLogger("anoncam")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="anoncam",
        description=(
            "Privacy-first store camera: anonymizes faces in real time and publishes only "
            "anonymous counts (entries, exits, occupancy, dwell) over MQTT."
        ),
        epilog="Exit codes: 0 ok, 1 runtime failure, 2 bad config, usage or input. "
        "Run 'anoncam COMMAND --help' for each command.",
    )
    parser.add_argument("--version", action="version", version=f"anoncam {__version__}")
    parser.add_argument(
        "-v", "--verbose", action="count", default=0, help="more log output (-v info, -vv debug)"
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _COMMANDS:
        # No try/except: a subcommand whose module fails to import must fail loudly, not vanish
        # from --help (the test suite imports every module and runs every command's --help).
        importlib.import_module(name).register(sub)
    return parser


def _setup_logging(verbose: int, quiet: bool, default: int) -> None:
    # Commands print their own results; library INFO logs are for -v, except for long-running
    # commands (run, demo) whose log is their output.
    level = (
        logging.WARNING
        if quiet
        else default
        if verbose == 0
        else (logging.INFO if verbose == 1 else logging.DEBUG)
    )
    logging.basicConfig(
        level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    _setup_logging(args.verbose, args.quiet, getattr(args, "default_log_level", logging.WARNING))
    try:
        code: int = args.func(args)
    except AnoncamError as exc:
        print(f"anoncam: error: {exc}", file=sys.stderr)
        if exc.hint:
            print(f"  fix: {exc.hint}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("anoncam: interrupted", file=sys.stderr)
        return 130
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
