"""Where received windows are stored: CSV and SQLite, both keyed so duplicates vanish."""

from __future__ import annotations

import csv
import json
import logging
import sqlite3
import time
from pathlib import Path
from typing import Any, Protocol

from firmware.errors import OutputError

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------- rows and sinks
COLUMNS = (
    "site",
    "device",
    "seq",
    "start",
    "end",
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


def flatten(window: dict[str, Any]) -> dict[str, Any]:
    """One table row from a validated counts window (occupancy is null when nothing was seen)."""
    occ = window.get("occupancy") or {}
    dwell = window.get("dwell_s") or {}
    frames = window.get("frames") or {}
    return {
        "site": window["site"],
        "device": window["device"],
        "seq": window["seq"],
        "start": window["start"],
        "end": window["end"],
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


class Sink(Protocol):
    def write(self, window: dict[str, Any]) -> None: ...
    def close(self) -> None: ...


class CsvSink:
    """Appends one row per accepted window; writes the header only into an empty file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._file = path.open("a", newline="", encoding="utf-8")
        except OSError as exc:
            raise OutputError(
                f"--csv {path}: cannot open: {exc.strerror}", hint="choose a writable path"
            ) from None
        self._writer = csv.DictWriter(self._file, fieldnames=COLUMNS)
        if self._file.tell() == 0:
            self._writer.writeheader()
            self._file.flush()

    def write(self, window: dict[str, Any]) -> None:
        try:
            self._writer.writerow(flatten(window))
            self._file.flush()
        except OSError as exc:
            raise OutputError(
                f"--csv {self.path}: write failed: {exc.strerror}",
                hint="check free disk space and permissions",
            ) from None

    def close(self) -> None:
        self._file.close()


class SqliteSink:
    """Inserts into table ``windows``; the primary key (site, device, seq) drops repeats."""

    def __init__(self, path: Path) -> None:
        self.path = path
        cols = ", ".join(f"{c} {'INTEGER' if c == 'seq' else ''}".strip() for c in COLUMNS)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            # Written from paho's network thread, created here: one writer at a time.
            self._db = sqlite3.connect(path, check_same_thread=False)
            self._db.execute(
                f"CREATE TABLE IF NOT EXISTS windows ({cols}, payload TEXT NOT NULL, "
                "received_at TEXT NOT NULL, PRIMARY KEY (site, device, seq))"
            )
            self._db.commit()
        except (sqlite3.Error, OSError) as exc:
            raise OutputError(
                f"--sqlite {path}: cannot open the database: {exc}",
                hint="choose a writable path to a SQLite file (or a new one)",
            ) from None
        marks = ", ".join("?" for _ in range(len(COLUMNS) + 2))
        self._insert = (
            f"INSERT OR IGNORE INTO windows ({', '.join(COLUMNS)}, payload, received_at) "
            f"VALUES ({marks})"
        )

    def write(self, window: dict[str, Any]) -> None:
        row = flatten(window)
        received = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        try:
            with self._db:
                self._db.execute(
                    self._insert,
                    [*(row[c] for c in COLUMNS), json.dumps(window, sort_keys=True), received],
                )
        except sqlite3.Error as exc:
            raise OutputError(
                f"--sqlite {self.path}: insert failed: {exc}",
                hint="check free disk space and that no other program locks the file",
            ) from None

    def close(self) -> None:
        self._db.close()
