"""Where received windows are stored: CSV, SQLite (here) and PostgreSQL (:mod:`.postgres`).

The databases are *stores*: they decide, atomically and across restarts and across processes
sharing the load, whether a window is ``new``, a ``dup`` (same key, same content: a resend,
absorbed) or a ``conflict`` (same key, other content). Tables, identical in both databases:

* ``windows``: one row per ``(site, device, stream, seq)``, the flattened counts (columns below)
  plus ``payload`` (the window reduced to the fields the schema knows), its ``digest``
  (SHA-256), ``received_at`` (when the subscriber got it) and ``stored_at``;
* ``window_conflicts``: every distinct other content seen for a key already in ``windows``,
  keyed ``(site, device, stream, seq, digest)``, so nothing received is lost and a person can
  decide which one is right.

A store's :meth:`Store.store` commits a whole batch in one transaction and only then returns;
the subscriber acknowledges the MQTT messages after that. :class:`StoreUnavailableError` means "try
the same batch again later" (database restarting, locked, disk full); any other exception
means the batch holds a window the database refused, and the subscriber retries one by one.
"""

from __future__ import annotations

import csv
import logging
import sqlite3
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, Protocol

from firmware.errors import InputError, OutputError
from firmware.mqtt.subscribe.intake import Window

logger = logging.getLogger(__name__)

Outcome = Literal["new", "dup", "conflict"]

# Flattened columns, in table order; ``window_start``/``window_end`` because END is reserved in SQL.
COLUMNS = (
    "site",
    "device",
    "stream",
    "seq",
    "window_start",
    "window_end",
    "entries",
    "exits",
    "visitors",
    "occupancy_min",
    "occupancy_max",
    "occupancy_mean",
    "occupancy_last",
    "dwell_count",
    "dwell_p50",
    "dwell_p90",
    "frames_processed",
    "frames_dropped",
    "merged",
)
KEY = ("site", "device", "stream", "seq")
EXTRA = ("payload", "digest", "received_at")
REAL_COLUMNS = frozenset({"occupancy_mean", "dwell_p50", "dwell_p90"})
TEXT_COLUMNS = frozenset({"site", "device", "stream", "window_start", "window_end"})


class StoreUnavailableError(Exception):
    """The database cannot take writes right now; the same batch is retried later."""


def flatten(window: dict[str, Any]) -> dict[str, Any]:
    """One table row from a checked counts window (occupancy is null when nothing was seen)."""
    occ = window.get("occupancy") or {}
    dwell = window.get("dwell_s") or {}
    frames = window.get("frames") or {}
    return {
        "site": window["site"],
        "device": window["device"],
        "stream": window.get("stream", ""),
        "seq": window["seq"],
        "window_start": window["start"],
        "window_end": window["end"],
        "entries": window["entries"],
        "exits": window["exits"],
        "visitors": window["visitors"],
        "occupancy_min": occ.get("min"),
        "occupancy_max": occ.get("max"),
        "occupancy_mean": occ.get("mean"),
        "occupancy_last": occ.get("last"),
        "dwell_count": dwell.get("count"),
        "dwell_p50": dwell.get("p50"),
        "dwell_p90": dwell.get("p90"),
        "frames_processed": frames.get("processed"),
        "frames_dropped": frames.get("dropped"),
        "merged": window.get("merged", 1),
    }


def utc_now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


class Store(Protocol):
    """A database that de-duplicates; see the module docstring."""

    def store(self, batch: Sequence[Window], received_at: str) -> list[Outcome]: ...
    def close(self) -> None: ...


def dedupe_batch(batch: Sequence[Window]) -> tuple[list[Window], dict[int, int]]:
    """The distinct keys of ``batch`` (first occurrence wins) and, for each later index, the
    index of its first occurrence: two copies of one window can sit in one batch."""
    first: dict[tuple[str, str, str, int], int] = {}
    unique: list[Window] = []
    later: dict[int, int] = {}
    for i, w in enumerate(batch):
        if w.key in first:
            later[i] = first[w.key]
        else:
            first[w.key] = i
            unique.append(w)
    return unique, later


def missing_columns(found: set[str]) -> list[str]:
    return [c for c in (*COLUMNS, *EXTRA) if c not in found]


def incompatible(where: str, table: str, missing: list[str]) -> InputError:
    return InputError(
        f"{where}: table {table!r} exists but is not an anoncam windows table (missing columns: "
        f"{', '.join(missing)}; the key is (site, device, stream, seq) since the stream field)",
        hint=f"point the subscriber at another database, or rename the old table "
        f"(ALTER TABLE {table} RENAME TO {table}_old) and run again",
    )


class CsvSink:
    """Appends one row per stored window (and per conflict, marked in column ``conflict``);
    writes the header only into an empty file. Not a store: it keeps what the stores and the
    ledger accepted."""

    FIELDS = (*COLUMNS, "conflict")

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._file = path.open("a", newline="", encoding="utf-8")
        except OSError as exc:
            raise OutputError(
                f"--csv {path}: cannot open: {exc.strerror}", hint="choose a writable path"
            ) from None
        self._writer = csv.DictWriter(self._file, fieldnames=self.FIELDS)
        if self._file.tell() == 0:
            self._writer.writeheader()
            self._file.flush()

    def write(self, window: Window, *, conflict: bool = False) -> None:
        try:
            self._writer.writerow({**flatten(window.body), "conflict": int(conflict)})
            self._file.flush()
        except OSError as exc:
            raise StoreUnavailableError(
                f"--csv {self.path}: write failed: {exc.strerror}"
            ) from None

    def close(self) -> None:
        self._file.close()


def _sqlite_type(column: str) -> str:
    if column in TEXT_COLUMNS:
        return "TEXT NOT NULL"
    return "REAL" if column in REAL_COLUMNS else "INTEGER"


class SqliteStore:
    """Tables ``windows`` and ``window_conflicts`` in one SQLite file (WAL, one writer)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        where = f"--sqlite {path}"
        cols = ", ".join(f"{c} {_sqlite_type(c)}" for c in COLUMNS)
        tail = "payload TEXT NOT NULL, digest TEXT NOT NULL, received_at TEXT NOT NULL, "
        tail += "stored_at TEXT NOT NULL"
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            # Opened here, written from the subscriber's writer thread: one writer at a time.
            self._db = sqlite3.connect(path, check_same_thread=False, timeout=5)
            self._db.execute("PRAGMA journal_mode=WAL")
            found = {r[1] for r in self._db.execute("PRAGMA table_info(windows)")}
            if found and missing_columns(found):
                self._db.close()
                raise incompatible(where, "windows", missing_columns(found))
            with self._db:
                self._db.execute(
                    f"CREATE TABLE IF NOT EXISTS windows ({cols}, {tail}, "
                    "PRIMARY KEY (site, device, stream, seq))"
                )
                self._db.execute(
                    f"CREATE TABLE IF NOT EXISTS window_conflicts ({cols}, {tail}, "
                    "PRIMARY KEY (site, device, stream, seq, digest))"
                )
        except sqlite3.DatabaseError as exc:
            raise OutputError(
                f"{where}: cannot open the database: {exc}",
                hint="choose a writable path to a SQLite file (or a new one)",
            ) from None
        except OSError as exc:
            raise OutputError(
                f"{where}: cannot open: {exc.strerror}", hint="choose a writable path"
            ) from None
        names = (*COLUMNS, *EXTRA, "stored_at")
        marks = ", ".join("?" for _ in names)
        self._insert = f"INSERT OR IGNORE INTO windows ({', '.join(names)}) VALUES ({marks})"
        self._conflict = (
            f"INSERT OR IGNORE INTO window_conflicts ({', '.join(names)}) VALUES ({marks})"
        )

    def store(self, batch: Sequence[Window], received_at: str) -> list[Outcome]:
        unique, later = dedupe_batch(batch)
        digests: dict[tuple[str, str, str, int], str] = {}
        outcome: dict[tuple[str, str, str, int], Outcome] = {}
        stored = utc_now()
        try:
            with self._db:
                for w in unique:
                    row = [*flatten(w.body).values(), w.canonical, w.digest, received_at, stored]
                    if self._db.execute(self._insert, row).rowcount == 1:
                        outcome[w.key] = "new"
                        digests[w.key] = w.digest
                        continue
                    (held,) = self._db.execute(
                        "SELECT digest FROM windows WHERE site=? AND device=? AND stream=? "
                        "AND seq=?",
                        w.key,
                    ).fetchone()
                    digests[w.key] = held
                    if held == w.digest:
                        outcome[w.key] = "dup"
                    else:
                        outcome[w.key] = "conflict"
                        self._db.execute(self._conflict, row)
                for i in later:
                    if batch[i].digest != digests[batch[i].key]:
                        row = [*flatten(batch[i].body).values()]
                        row += [batch[i].canonical, batch[i].digest, received_at, stored]
                        self._db.execute(self._conflict, row)
        except sqlite3.OperationalError as exc:  # locked, disk full, I/O: the batch can wait
            raise StoreUnavailableError(f"--sqlite {self.path}: {exc}") from None
        results: list[Outcome] = []
        for i, w in enumerate(batch):
            if i in later:
                results.append("dup" if w.digest == digests[w.key] else "conflict")
            else:
                results.append(outcome[w.key])
        return results

    def close(self) -> None:
        self._db.close()
