"""``anoncam subscribe``: follow the count windows a fleet publishes, check and store them."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

HELP = """\
Follow the anonymous count windows published by anoncam devices.

Subscribes to {prefix}/+/+/counts and {prefix}/+/+/status. Every window is checked against the
JSON Schema with strict JSON (an invalid one, one with a per-person field, or one over 16 KiB
or 8 levels deep is reported and skipped; the subscriber goes on), repeats of
(site, device, stream, seq) are dropped (delivery is at least once) and jumps in seq are flagged
as GAP (windows lost; a row with 'merged' accounts for the windows it absorbed). One line per
window; DUP marks a repeat, LATE a window that fills an earlier gap, CONFLICT a repeated key
with different content (both are kept: the database's table window_conflicts).

Stores (--sqlite, --postgres) commit in batches, and each window is acknowledged to the broker
only after its commit: a subscriber killed at any moment loses nothing. The session is
persistent (MQTT 5 session expiry, --session-expiry, default one day) under a fixed client id
(--client-id, default anoncam-sub-HOST or anoncam-sub-HOST-GROUP), so the broker queues the
windows published while the subscriber is down and delivers them when it is back.

--share GROUP joins an MQTT 5 shared subscription ($share/GROUP/...): several subscribers in one
group split the windows between them, each window going to one member; give each member its
own --client-id when several run on one host.

exit codes: 0 ok (or --count windows received), 1 broker refused / unreachable, --timeout
reached before --count, or a store failed; 2 bad arguments.

examples:
  anoncam subscribe --mqtt-host broker.lan
  anoncam subscribe --mqtt-host broker.lan --username bi --password-file ~/.mqtt-pass \\
      --tls-ca ca.crt --mqtt-port 8883 --sqlite counts.db
  anoncam subscribe --mqtt-host 127.0.0.1 --count 10 --timeout 120 --json
  anoncam subscribe --mqtt-host broker.lan --share fleet --client-id sub-1 \\
      --postgres postgresql://anoncam@db.lan/counts
"""

HEADER = (
    f"{'SITE':<16} {'DEVICE':<14} {'SEQ':>8} {'START':<20} "
    f"{'IN':>4} {'OUT':>4} {'VIS':>4} {'OCC':>4}  NOTE"
)


def register(sub: Any) -> None:
    p = sub.add_parser(
        "subscribe",
        help="follow, check and store count windows from MQTT",
        description=HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--config",
        type=Path,
        default=None,
        help="take broker settings from this device config's [mqtt] section; flags override",
    )
    p.add_argument("--mqtt-host", default=None, help="broker host (default: localhost)")
    p.add_argument("--mqtt-port", type=int, default=None, help="broker port (default: 1883)")
    p.add_argument("--prefix", default=None, help="topic prefix (default: anoncam)")
    p.add_argument(
        "--topic",
        action="append",
        default=None,
        metavar="FILTER",
        help="topic filter for windows, repeatable (default: PREFIX/+/+/counts)",
    )
    p.add_argument(
        "--share",
        default=None,
        metavar="GROUP",
        help="join shared subscription group GROUP (MQTT 5 $share) to split a fleet",
    )
    p.add_argument("--username", default=None, help="MQTT user name")
    p.add_argument(
        "--password-file", type=Path, default=None, help="file holding the MQTT password"
    )
    p.add_argument("--tls-ca", type=Path, default=None, help="CA certificate: connect with TLS")
    p.add_argument(
        "--tls-cert", type=Path, default=None, help="client certificate (with --tls-key)"
    )
    p.add_argument("--tls-key", type=Path, default=None, help="client private key")
    p.add_argument(
        "--protocol",
        choices=["auto", "5", "3.1.1"],
        default=None,
        help="MQTT version (default: auto, 5 then 3.1.1)",
    )
    p.add_argument(
        "--csv", type=Path, default=None, help="append accepted windows to this CSV file"
    )
    p.add_argument(
        "--sqlite",
        type=Path,
        default=None,
        help="insert accepted windows into table 'windows' of this SQLite file",
    )
    p.add_argument(
        "--postgres",
        default=None,
        metavar="DSN",
        help="store windows in PostgreSQL (tables created on first use; a TimescaleDB "
        "hypertable when the extension is available), e.g. postgresql://user@host/db",
    )
    p.add_argument(
        "--client-id",
        default=None,
        help="MQTT client id, kept across restarts so the broker keeps the session "
        "(default: anoncam-sub-HOST, with -GROUP under --share)",
    )
    p.add_argument(
        "--session-expiry",
        type=int,
        default=None,
        metavar="SECONDS",
        help="how long the broker keeps this subscriber's session and queued windows after a "
        "disconnect (MQTT 5; default 86400; 0: a clean session, nothing queued)",
    )
    p.add_argument(
        "--count", type=int, default=None, metavar="N", help="exit 0 after N distinct windows"
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=None,
        metavar="SECONDS",
        help="stop after this long; exit 1 if --count was not reached",
    )
    p.add_argument(
        "--json",
        action="store_true",
        help="print each accepted window as one JSON object per line instead of the table",
    )
    p.set_defaults(func=run)


def _mqtt_config(args: argparse.Namespace) -> Any:
    from pydantic import ValidationError

    from firmware.config import settings as cfg
    from firmware.errors import UsageError

    base: dict[str, Any] = {}
    if args.config is not None:
        base = cfg.load(args.config).mqtt.model_dump(exclude_none=True)
    flags: dict[str, Any] = {
        "host": args.mqtt_host,
        "port": args.mqtt_port,
        "prefix": args.prefix,
        "username": args.username,
        "password_file": args.password_file,
        "protocol": args.protocol,
    }
    overrides = {k: v for k, v in flags.items() if v is not None}
    tls = {
        k: v
        for k, v in {
            "ca_file": args.tls_ca,
            "cert_file": args.tls_cert,
            "key_file": args.tls_key,
        }.items()
        if v is not None
    }
    if tls:
        overrides["tls"] = tls
    try:
        return cfg.MqttConfig.model_validate(cfg.merge(base, overrides))
    except ValidationError as err:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in err.errors()
        )
        raise UsageError(
            f"bad broker settings: {problems}",
            hint="fix the flags (see 'anoncam subscribe --help')",
        ) from None


def run(args: argparse.Namespace) -> int:
    from firmware.errors import UsageError
    from firmware.mqtt.subscribe.client import SESSION_EXPIRY_S, Received, Subscriber
    from firmware.mqtt.subscribe.intake import printable
    from firmware.mqtt.subscribe.sinks import CsvSink, SqliteStore, Store

    if args.count is not None and args.count < 1:
        raise UsageError("--count must be at least 1")
    if args.timeout is not None and args.timeout <= 0:
        raise UsageError("--timeout must be positive")
    if args.share is not None and (not args.share or any(c in args.share for c in "/+#")):
        raise UsageError(f"--share {args.share!r}: a group name cannot be empty or contain / + #")
    if args.session_expiry is not None and not 0 <= args.session_expiry <= 2**32 - 1:
        raise UsageError("--session-expiry must be between 0 and 4294967295 seconds")
    if args.client_id is not None and not args.client_id.strip():
        raise UsageError("--client-id cannot be empty")
    config = _mqtt_config(args)

    def on_window(r: Received) -> None:
        if args.json:
            # json.dumps escapes every control character, so nothing from the network reaches
            # the terminal raw. A conflict is printed too, marked, since both copies are kept.
            if r.verdict.accepted:
                print(json.dumps(r.window.body, separators=(",", ":")), flush=True)
            elif r.verdict.kind == "conflict":
                body = {**r.window.body, "conflict": True}
                print(json.dumps(body, separators=(",", ":")), flush=True)
            return
        print(row(r), flush=True)

    def on_status(site: str, device: str, body: dict[str, Any]) -> None:
        if not args.json:
            # Every field comes from the network: escape control characters (terminal escapes).
            print(
                printable(
                    f"STATUS {site}/{device} {body['state']} since {body['since']} "
                    f"(version {body['version']})"
                ),
                flush=True,
            )

    stores: list[Store] = []
    csv = None
    try:
        if args.sqlite is not None:
            stores.append(SqliteStore(args.sqlite))
        if args.postgres is not None:
            from firmware.mqtt.subscribe.postgres import PostgresStore

            stores.append(PostgresStore(args.postgres))
        if args.csv is not None:
            csv = CsvSink(args.csv)
    except BaseException:
        for store in stores:
            store.close()
        raise
    subscriber = Subscriber(
        config,
        topics=args.topic,
        share=args.share,
        stores=stores,
        csv=csv,
        on_window=on_window,
        on_status=on_status,
        client_id=args.client_id,
        session_expiry_s=SESSION_EXPIRY_S if args.session_expiry is None else args.session_expiry,
    )
    started = time.monotonic()
    try:
        subscriber.connect()
        print(
            f"anoncam subscribe: subscribed to {', '.join(subscriber.filters)} on "
            f"{config.host}:{config.port} as {subscriber.client_id}"
            + ("" if args.count else " (Ctrl-C to stop)"),
            file=sys.stderr,
            flush=True,
        )
        if not args.json:
            print(HEADER, flush=True)
        reached = subscriber.wait(count=args.count, timeout=args.timeout)
    except KeyboardInterrupt:
        _summary(subscriber)
        return 130
    finally:
        subscriber.close()
    _summary(subscriber)
    if not reached:
        print(
            f"anoncam subscribe: timeout: {subscriber.ledger.accepted} of {args.count} window(s) "
            f"after {time.monotonic() - started:.0f} s",
            file=sys.stderr,
        )
        print(
            "  fix: check that devices are online (their status topic) and publishing to "
            f"{config.prefix}/SITE/DEVICE/counts, or raise --timeout",
            file=sys.stderr,
        )
        return 1
    return 0


def row(r: Any) -> str:
    """One line of the live table for a received window, with DUP / LATE / GAP / CONFLICT
    markers; control characters are escaped (every value came from the network)."""
    from firmware.mqtt.subscribe.intake import printable

    w = r.window.body
    occ = (w.get("occupancy") or {}).get("last")
    notes = []
    if r.verdict.kind == "dup":
        notes.append("DUP")
    elif r.verdict.kind == "conflict":
        notes.append("CONFLICT (same seq, other content: kept apart)")
    elif r.verdict.kind == "late":
        notes.append("LATE")
    if r.verdict.missing:
        notes.append(f"GAP ({r.verdict.missing} missing)")
    if w.get("merged"):
        notes.append(f"merged {w['merged']}")
    return printable(
        f"{w['site']:<16} {w['device']:<14} {w['seq']:>8} {w['start']:<20} {w['entries']:>4} "
        f"{w['exits']:>4} {w['visitors']:>4} {'-' if occ is None else occ:>4}  "
        f"{' '.join(notes)}"
    ).rstrip()


def _summary(subscriber: Any) -> None:
    ledger = subscriber.ledger
    print(
        f"anoncam subscribe: {ledger.accepted} window(s), {ledger.duplicates} duplicate(s), "
        f"{ledger.gaps} gap(s) ({ledger.missing} missing), {subscriber.invalid} invalid, "
        f"{ledger.conflicts} conflict(s), {subscriber.errors} error(s)",
        file=sys.stderr,
    )
