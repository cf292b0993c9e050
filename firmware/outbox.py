"""Durable queue of closed count windows: SQLite on the device, drained by the MQTT publisher.

A window is written once, in one transaction, together with the sequence counter, and deleted only
when the broker acknowledged it. A broker outage or a power cut loses nothing.

Storage choices, and why:

- **WAL journal.** The publisher reads while the aggregator writes; appends are small sequential
  writes to the WAL, which is kinder to an SD card than rewriting pages in place.
- **synchronous=FULL for windows, NORMAL for acks.** A window commit is fsynced: on a power cut
  a window we reported as written must still be there, and above all the ``seq`` counter must not
  go back. With NORMAL a power cut could roll back a window that was already published and acked,
  and its seq would be handed to a different window, which subscribers would then drop as a
  duplicate. One fsync per window (a minute by default) costs nothing. An ack, on the other hand,
  may be lost by a power cut at no harm: the row is published again and subscribers de-duplicate
  on seq (delivery is at least once anyway). Not fsyncing acks keeps the drain of a long backlog
  from costing one SD-card flush per message; the next window commit makes them durable.
- **One connection behind a lock**, shared by the frame-loop thread (:meth:`Outbox.add_window`)
  and the publisher's thread (:meth:`Outbox.pending`, :meth:`Outbox.ack`). SQLite serialises
  writers anyway; a second connection would only add SQLITE_BUSY handling between our own
  threads. Every call is a short transaction (milliseconds), and the lock also guards the
  in-memory set of rows handed to the publisher (below).

Bounds. The outbox never drops a window. When it holds more than ``max_rows`` windows, or the
free space on its filesystem falls below ``min_free_mb``, it merges its OLDEST unsent windows into
one (see :func:`firmware.contract.merge_counts`): counts are conserved, the merged row keeps the
newest merged window's seq and carries ``"merged": n``. Subscriber-visible effect: the ``n - 1``
seqs it absorbed never arrive; the gap is explained by ``merged`` (over all delivered rows, the
sum of ``merged``, 1 when absent, equals the number of seqs issued). Recent history keeps full
resolution; the distant end of a long backlog becomes one long summary window. While disk space
is low, each new window pays for itself by folding the two oldest unsent windows into one, so the
database stops growing (SQLite reuses the freed pages; the file does not shrink). Merging happens
in the same transaction as the insert that triggered it. Only windows of one stream (same site,
device and ``stream``) are merged together.

Streams and seq. Each outbox has a random **stream** id (16 hex digits), made when the outbox is
made and stored in it: it survives restarts with the outbox and changes when the outbox is new
(a card swap, a corrupt outbox moved aside, a restored backup), so a subscriber de-duplicating
on ``(site, device, stream, seq)`` never mistakes a new outbox's seq 1 for an old one. A new
stream also starts when the device's site or device id changes (:meth:`Outbox.bind`: the new
identity's windows must not read as a continuation of the old one's) and when the seq counter
cannot be trusted (below). Rows keep the ids and stream they were written with.

``meta.next_seq`` is not trusted blindly: on open it is reconciled with the highest seq stored and
the highest seq ever acknowledged by the broker (``max_sent_seq``, kept in ``meta``), so a
counter that went back (a restored file, a hand edit) can neither reuse a seq nor hit the primary
key. A counter that is missing or absurd (beyond the contract's 2^53 - 1) gives a new stream,
continuing after the highest seq known: whatever was issued before is then never confused with
what comes next.

Rows already handed out by :meth:`Outbox.pending` and not yet acked are never merged: the
publisher may have sent them, and folding a sent window into a later seq would count it twice.
This protection lives in memory; after a crash between publish and ack, a merge could fold a
window the broker already has into a later one (a double count that the overlapping start/end
reveal). That needs a crash while the outbox is at its bounds, and is documented rather than
solved.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Final
from urllib.parse import quote

from firmware.contract import merge_counts
from firmware.errors import StorageError

logger = logging.getLogger(__name__)

_APPLICATION_ID: Final = 0x616E6362  # "ancb": marks the file as an anoncam outbox

OUTBOX_FILENAME: Final = "outbox.sqlite3"
"""The outbox's file name inside the device's ``state_dir``."""


def outbox_path(state_dir: Path) -> Path:
    """Where the device keeps its outbox."""
    return Path(state_dir) / OUTBOX_FILENAME


_USER_VERSION: Final = 1
_MERGE_CHUNK: Final = 1000  # rows read per merge step: bounds memory when a big cut is needed
_KIND: Final = "counts"
SEQ_MAX: Final = 2**53 - 1  # the contract's bound: exact in every JSON parser, fits SQLite
STREAM_PATTERN: Final = "^[0-9a-f]{16}$"
# Below this much free space an I/O error is a full disk, not a failing card: SQLite reports
# the ENOSPC of a WAL or shared-memory file as SQLITE_IOERR, not SQLITE_FULL.
_FULL_BELOW_BYTES: Final = 1024 * 1024

_SCHEMA: Final = (
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID",
    """CREATE TABLE IF NOT EXISTS outbox (
        seq       INTEGER PRIMARY KEY,
        kind      TEXT NOT NULL,
        created_s REAL NOT NULL,
        payload   BLOB NOT NULL
    )""",
    "INSERT OR IGNORE INTO meta (key, value) VALUES ('merged_total', 0), ('max_sent_seq', 0)",
    # Text values (the stream id, the identity it belongs to): meta's INTEGER affinity would turn
    # an all-digit stream id into a number.
    "CREATE TABLE IF NOT EXISTS notes (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID",
)


@dataclass(frozen=True)
class OutboxRow:
    """One unsent window. ``payload`` is UTF-8 JSON, ready to publish."""

    seq: int
    kind: str
    payload: bytes


@dataclass(frozen=True)
class OutboxStats:
    """``oldest_created_s``: epoch seconds when the oldest unsent window was written (None: empty).
    ``merged_total``: windows folded into a neighbour so far (persisted), i.e. seqs subscribers
    will never see. ``db_bytes``: database plus WAL file size."""

    depth: int
    oldest_created_s: float | None
    merged_total: int
    next_seq: int
    db_bytes: int
    stream: str | None = None


def new_stream() -> str:
    """A fresh random stream id: 16 lower-case hex digits (64 bits; collisions are negligible)."""
    return secrets.token_hex(8)


def _free_bytes(where: Path) -> int | None:
    try:
        st = os.statvfs(where)
    except OSError as exc:
        logger.debug("statvfs %s failed: %s", where, exc)
        return None
    return st.f_bavail * st.f_frsize


def _full(path: Path, exc: BaseException, doing: str) -> StorageError:
    where = path.parent
    return StorageError(
        f"{path}: disk full while {doing} ({exc})",
        hint=(
            f"free space on the filesystem holding {where} ('df -h {where}'); the storage is not "
            "failing, it is full. Windows already stored are kept"
        ),
    )


def _error(path: Path, exc: BaseException, doing: str) -> StorageError:
    """Turn a SQLite or OS error into a StorageError that names the file and the fix."""
    where = path.parent
    code = getattr(exc, "sqlite_errorcode", None)
    primary = code & 0xFF if isinstance(code, int) else None
    errno = getattr(exc, "errno", None)
    if primary == sqlite3.SQLITE_IOERR or errno == 5:
        # A full disk shows up as an I/O error when the WAL or -shm file cannot grow: tell it
        # from a failing card by the free space left.
        free = _free_bytes(where)
        if free is not None and free < _FULL_BELOW_BYTES:
            return _full(path, exc, doing)
    if primary in (sqlite3.SQLITE_NOTADB, sqlite3.SQLITE_CORRUPT):
        return StorageError(
            f"{path}: outbox database is corrupt or not a SQLite file ({exc}) while {doing}",
            hint=(
                f"stop anoncam and move the file aside: 'mv {path} {path}.corrupt' (also any "
                f"{path.name}-wal and -shm next to it); a new empty outbox is created on the next "
                f"start. Unsent windows may be salvaged with 'sqlite3 {path}.corrupt .recover'"
            ),
        )
    if primary == sqlite3.SQLITE_FULL or errno == 28:  # ENOSPC
        return _full(path, exc, doing)
    if primary in (
        sqlite3.SQLITE_READONLY,
        sqlite3.SQLITE_CANTOPEN,
        sqlite3.SQLITE_PERM,
        sqlite3.SQLITE_AUTH,
    ) or errno in (1, 13, 30):
        return StorageError(
            f"{path}: cannot write the outbox database while {doing} ({exc})",
            hint=(
                f"make {where} writable by the user running anoncam, and check the filesystem "
                f"is not read-only ('findmnt -T {where}'; an SD card with errors is remounted "
                "read-only: check 'dmesg')"
            ),
        )
    if primary in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
        return StorageError(
            f"{path}: outbox database is locked by another process while {doing} ({exc})",
            hint=(
                "only one anoncam service may use a state directory; "
                "stop the other one ('systemctl status anoncam')"
            ),
        )
    if primary == sqlite3.SQLITE_IOERR or errno == 5:
        return StorageError(
            f"{path}: I/O error while {doing} ({exc})",
            hint=(
                "the storage may be failing: check 'dmesg' for SD card errors "
                "and replace the card if they repeat"
            ),
        )
    return StorageError(
        f"{path}: outbox database failed while {doing} ({exc})",
        hint=f"check {where} and the logs; move {path} aside only if it is damaged",
    )


class Outbox:
    """A durable, bounded, thread-safe queue of count windows in one SQLite file.

    ``max_rows``: unsent windows kept before the oldest are merged. Higher keeps a longer outage at
    full resolution; each row is ~0.5 kB. ``min_free_mb``: below this much free space in the
    database's filesystem, the outbox stops growing (see the module docstring). Set it above what
    logs and the OS need to keep working.
    """

    def __init__(self, path: Path, *, max_rows: int = 100_000, min_free_mb: int = 50) -> None:
        if max_rows < 2:
            raise ValueError(
                f"max_rows must be at least 2 (got {max_rows}): merging needs two rows"
            )
        if min_free_mb < 0:
            raise ValueError(f"min_free_mb must be >= 0 (got {min_free_mb})")
        self._path = Path(path)
        self._max_rows = max_rows
        self._min_free_bytes = min_free_mb * 1024 * 1024
        self._lock = threading.Lock()
        self._leased: set[int] = set()  # seqs handed to the publisher, not yet acked
        self._bounding = False  # for logging state changes, not every merge
        self._full_sync = True
        self._stream = ""
        self._conn: sqlite3.Connection | None = self._open()

    @property
    def path(self) -> Path:
        return self._path

    @property
    def stream(self) -> str:
        """The stream id new windows belong to (see the module docstring)."""
        return self._stream

    def __repr__(self) -> str:
        return f"Outbox({str(self._path)!r}, max_rows={self._max_rows})"

    # -- opening -------------------------------------------------------------------------------

    def _open(self) -> sqlite3.Connection:
        path = self._path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(
                f"{path}: cannot create the state directory {path.parent} ({exc})",
                hint=(
                    "create it, writable by the user running anoncam (systemd: StateDirectory=), "
                    "and check the filesystem is not read-only ('findmnt -T /')"
                ),
            ) from exc
        existed = path.exists()
        if existed and not path.is_file():
            raise StorageError(
                f"{path}: exists but is not a file",
                hint="point state_dir at a directory anoncam owns",
            )
        try:
            conn = sqlite3.connect(
                str(path), timeout=5.0, isolation_level=None, check_same_thread=False
            )
        except sqlite3.Error as exc:
            raise _error(path, exc, "opening") from exc
        try:
            self._check_identity(conn, existed)
            # Only now may SQLite write: nothing above modifies a file that is not ours.
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                logger.warning(
                    "%s: filesystem refused WAL (journal_mode=%s); readers may block the writer",
                    path,
                    mode,
                )
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA journal_size_limit=4194304")  # truncate the WAL after checkpoints
            conn.execute("BEGIN IMMEDIATE")
            for stmt in _SCHEMA:
                conn.execute(stmt)
            self._reconcile(conn)
            conn.execute(f"PRAGMA application_id={_APPLICATION_ID}")
            conn.execute(f"PRAGMA user_version={_USER_VERSION}")
            conn.execute("COMMIT")
        except StorageError:
            conn.close()
            raise
        except sqlite3.Error as exc:
            with contextlib.suppress(sqlite3.Error):
                conn.close()
            raise _error(path, exc, "opening") from exc
        logger.info("outbox %s opened (%s)", path, "existing" if existed else "new")
        return conn

    def _reconcile(self, conn: sqlite3.Connection) -> None:
        """Inside the opening transaction: make ``next_seq`` safe and make sure of a stream."""
        path = self._path
        stored = _meta_int(conn, "next_seq")
        top_row = conn.execute("SELECT MAX(seq) FROM outbox WHERE seq <= ?", (SEQ_MAX,)).fetchone()
        sent = _meta_int(conn, "max_sent_seq")
        floor = max(int(top_row[0] or 0), min(sent or 0, SEQ_MAX)) + 1
        stream = _note(conn, "stream")
        fresh = stream is None or re.fullmatch(STREAM_PATTERN, stream) is None
        if stored is None:
            if floor > 1:
                logger.warning(
                    "%s: the seq counter is missing; continuing at %d after the highest seq "
                    "stored or sent, in a new stream",
                    path,
                    floor,
                )
                fresh = True
            elif stream is not None:
                fresh = True  # a counter gone from an outbox that had a stream: cannot be sure
            next_seq = floor
        elif stored < 1 or stored > SEQ_MAX:
            logger.warning(
                "%s: the seq counter holds %d, outside 1..2^53-1; continuing at %d after the "
                "highest seq stored or sent, in a new stream",
                path,
                stored,
                floor,
            )
            next_seq, fresh = floor, True
        elif stored < floor:
            logger.warning(
                "%s: the seq counter (%d) is behind the seqs stored or sent; continuing at %d",
                path,
                stored,
                floor,
            )
            next_seq = floor
        else:
            next_seq = stored
        conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('next_seq', ?)", (next_seq,))
        if fresh or stream is None:
            stream = new_stream()
            conn.execute(
                "INSERT OR REPLACE INTO notes (key, value) VALUES ('stream', ?)", (stream,)
            )
        self._stream = stream

    def bind(self, site: str, device: str) -> str:
        """Tie the outbox to the device identity that writes new windows; return the stream id.

        The first identity is recorded. A different one later (a renamed site or device) starts a
        new stream: the new identity's seqs must not read as a continuation of the old one's.
        Unsent rows keep the ids they were written with (the publisher sends each on its own
        topic).
        """
        with self._transaction("recording the device identity", durable=True) as conn:
            old = (_note(conn, "site"), _note(conn, "device"))
            if old != (site, device):
                if old[0] is not None and old[1] is not None:
                    depth = int(conn.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])
                    self._stream = new_stream()
                    conn.execute(
                        "INSERT OR REPLACE INTO notes (key, value) VALUES ('stream', ?)",
                        (self._stream,),
                    )
                    logger.warning(
                        "%s: device identity changed from %s/%s to %s/%s: new stream %s; "
                        "%d unsent window(s) keep the old ids and go out on the old topic",
                        self._path,
                        old[0],
                        old[1],
                        site,
                        device,
                        self._stream,
                        depth,
                    )
                conn.executemany(
                    "INSERT OR REPLACE INTO notes (key, value) VALUES (?, ?)",
                    [("site", site), ("device", device)],
                )
        return self._stream

    def note(self, key: str) -> str | None:
        """A small text value kept with the outbox (e.g. what the publisher left retained)."""
        with self._lock:
            try:
                return _note(self._db(), key)
            except sqlite3.Error as exc:
                raise _error(self._path, exc, f"reading note {key!r}") from exc

    def set_note(self, key: str, value: str | None) -> None:
        """Store (or, with None, forget) a small text value kept with the outbox."""
        with self._transaction(f"writing note {key!r}", durable=True) as conn:
            if value is None:
                conn.execute("DELETE FROM notes WHERE key = ?", (key,))
            else:
                conn.execute(
                    "INSERT OR REPLACE INTO notes (key, value) VALUES (?, ?)", (key, value)
                )

    def _check_identity(self, conn: sqlite3.Connection, existed: bool) -> None:
        """Refuse a file that is damaged or belongs to something else, before writing to it."""
        path = self._path
        app_id = conn.execute("PRAGMA application_id").fetchone()[0]
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if app_id != _APPLICATION_ID and (app_id != 0 or tables - {"meta", "outbox", "notes"}):
            raise StorageError(
                f"{path}: a SQLite database but not an anoncam outbox (application_id {app_id:#x})",
                hint=(
                    "set state_dir to a directory of its own; "
                    "anoncam does not write into other databases"
                ),
            )
        if version > _USER_VERSION:
            raise StorageError(
                f"{path}: outbox written by a newer anoncam "
                f"(format {version}, this one reads {_USER_VERSION})",
                hint="install that newer anoncam again, or let it drain the outbox first",
            )
        if existed and tables:
            problems = [r[0] for r in conn.execute("PRAGMA quick_check")]
            if problems != ["ok"]:
                raise StorageError(
                    f"{path}: outbox database is corrupt: {'; '.join(problems[:3])}",
                    hint=(
                        f"stop anoncam and move it aside ('mv {path} {path}.corrupt'); a new "
                        "outbox is created on the next start. Salvage unsent windows with "
                        f"'sqlite3 {path}.corrupt .recover'"
                    ),
                )

    # -- plumbing ------------------------------------------------------------------------------

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StorageError(
                f"{self._path}: outbox is closed",
                hint="stop the publisher before closing the outbox",
            )
        return self._conn

    def _sync(self, conn: sqlite3.Connection, full: bool) -> None:
        if full != self._full_sync:
            conn.execute(f"PRAGMA synchronous={'FULL' if full else 'NORMAL'}")
            self._full_sync = full

    @contextlib.contextmanager
    def _transaction(self, doing: str, *, durable: bool) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE … COMMIT under the lock; any failure rolls back and nothing changes."""
        with self._lock:
            conn = self._db()
            try:
                self._sync(conn, durable)
                conn.execute("BEGIN IMMEDIATE")
                yield conn
                conn.execute("COMMIT")
            except BaseException as exc:
                if conn.in_transaction:
                    with contextlib.suppress(sqlite3.Error):
                        conn.execute("ROLLBACK")
                if isinstance(exc, sqlite3.Error):
                    raise _error(self._path, exc, doing) from exc
                raise

    @staticmethod
    def _meta(conn: sqlite3.Connection, key: str) -> int:
        return int(conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()[0])

    # -- API -----------------------------------------------------------------------------------

    def add_window(self, build: Callable[[int], dict[str, Any]], *, windows: int = 1) -> int:
        """Store one window and return its seq, all in one durable transaction.

        Takes the next seq, calls ``build(seq)`` for the payload (whose ``"seq"`` must equal it),
        inserts it, then merges the oldest rows if the outbox is over its bounds. If ``build`` or
        the database fails, nothing is stored and the seq is not consumed.

        ``windows`` (an addition for the aggregator): how many consecutive windows this row stands
        for; the row consumes that many seqs and gets the last one (a collapsed gap, with
        ``"merged": windows`` in its payload).
        """
        if windows < 1:
            raise ValueError(f"windows must be >= 1 (got {windows})")
        with self._transaction("adding a window", durable=True) as conn:
            first = self._meta(conn, "next_seq")
            seq = first + windows - 1
            if seq > SEQ_MAX:
                raise StorageError(
                    f"{self._path}: seq {seq} would exceed the contract's maximum 2^53 - 1",
                    hint=f"stop anoncam and move {self._path} aside: a new outbox starts a new "
                    "stream at seq 1",
                )
            payload = build(seq)
            if payload.get("seq") != seq:
                raise ValueError(
                    f"window payload has seq {payload.get('seq')!r}, the outbox gave {seq}"
                )
            data = json.dumps(payload, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
            conn.execute(
                "INSERT INTO outbox (seq, kind, created_s, payload) VALUES (?, ?, ?, ?)",
                (seq, _KIND, time.time(), data.encode("utf-8")),
            )
            conn.execute("UPDATE meta SET value = ? WHERE key = 'next_seq'", (seq + 1,))
            self._enforce_bounds(conn)
        return seq

    def pending(self, limit: int = 100) -> list[OutboxRow]:
        """Up to ``limit`` unsent windows, oldest first (seq order). They stay until :meth:`ack`;
        until then they are never merged (the publisher may have sent them)."""
        with self._lock:
            conn = self._db()
            try:
                rows = conn.execute(
                    "SELECT seq, kind, payload FROM outbox ORDER BY seq LIMIT ?", (max(0, limit),)
                ).fetchall()
            except sqlite3.Error as exc:
                raise _error(self._path, exc, "reading unsent windows") from exc
            self._leased.update(int(r[0]) for r in rows)
        return [OutboxRow(int(s), str(k), bytes(p)) for s, k, p in rows]

    def ack(self, seq: int) -> None:
        """Delete the window ``seq`` (the broker has it). Acking a seq that is gone does nothing."""
        self.ack_many([seq])

    def ack_many(self, seqs: Iterable[int]) -> None:
        """Delete several windows in one transaction (an addition: fewer commits when draining)."""
        gone = [int(s) for s in seqs]
        if not gone:
            return
        with self._transaction("deleting sent windows", durable=False) as conn:
            conn.executemany("DELETE FROM outbox WHERE seq = ?", [(s,) for s in gone])
            # What the broker has is never issued again, even if next_seq went back (see open).
            conn.execute(
                "UPDATE meta SET value = MAX(value, ?) WHERE key = 'max_sent_seq'",
                (min(max(gone), SEQ_MAX),),
            )
        # After COMMIT: a failed delete leaves the rows leased, so they are still never merged.
        with self._lock:
            self._leased.difference_update(gone)

    def stats(self) -> OutboxStats:
        with self._lock:
            try:
                return _read_stats(self._db(), self._path)
            except sqlite3.Error as exc:
                raise _error(self._path, exc, "reading statistics") from exc

    def close(self) -> None:
        """Close the database (idempotent). Later calls raise StorageError."""
        with self._lock:
            if self._conn is not None:
                try:
                    self._conn.close()
                except sqlite3.Error as exc:
                    raise _error(self._path, exc, "closing") from exc
                finally:
                    self._conn = None

    def __enter__(self) -> Outbox:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- bounds --------------------------------------------------------------------------------

    def _free_bytes(self) -> int | None:
        return _free_bytes(self._path.parent)

    def _enforce_bounds(self, conn: sqlite3.Connection) -> None:
        """Inside the caller's transaction: fold the oldest rows until within bounds."""
        depth = int(conn.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])
        free = self._free_bytes()
        low_disk = free is not None and free < self._min_free_bytes
        shed = max(depth - self._max_rows, 1 if low_disk else 0)
        if shed <= 0:
            if self._bounding:
                logger.info("outbox %s back within bounds (%d rows)", self._path, depth)
                self._bounding = False
            return
        if not self._bounding:
            logger.warning(
                "outbox %s over its bounds (%d rows, cap %d, %s MB free, floor %d MB): "
                "merging the oldest unsent windows",
                self._path,
                depth,
                self._max_rows,
                "?" if free is None else free // (1024 * 1024),
                self._min_free_bytes // (1024 * 1024),
            )
            self._bounding = True
        while shed > 0:
            folded = self._merge_oldest(conn, min(shed, _MERGE_CHUNK))
            if folded == 0:
                # Fewer than two rows the publisher does not hold: nothing to merge. Harmless
                # while disk is low (the outbox is tiny); over the cap it means the publisher
                # holds rows it never acks, which the state-change warning above already shows.
                logger.debug("outbox %s: no unleased rows left to merge", self._path)
                return
            shed -= folded

    def _merge_oldest(self, conn: sqlite3.Connection, shed: int) -> int:
        """Merge the oldest ``shed + 1`` rows not held by the publisher into the newest of them.
        Returns how many rows were folded away."""
        want = shed + 1
        cursor = conn.execute(
            "SELECT seq, created_s, payload FROM outbox WHERE kind = ? ORDER BY seq LIMIT ?",
            (_KIND, want + len(self._leased)),
        )
        rows = [r for r in cursor.fetchall() if int(r[0]) not in self._leased]
        try:
            payloads = [json.loads(bytes(r[2])) for r in rows]
        except (ValueError, UnicodeDecodeError) as exc:
            raise StorageError(
                f"{self._path}: a stored window is not valid JSON ({exc})",
                hint=(
                    f"the file is damaged: stop anoncam, move {self._path} aside and "
                    "salvage it with 'sqlite3 FILE .recover'"
                ),
            ) from exc
        # Only windows of one stream and identity: merging across a rename would publish old
        # counts under the new ids.
        rows, payloads = _first_run(rows, payloads, want)
        if len(rows) < 2:
            return 0
        merged = merge_counts(payloads)
        keep = int(rows[-1][0])
        merged["seq"] = keep
        gone = [int(r[0]) for r in rows[:-1]]
        conn.executemany("DELETE FROM outbox WHERE seq = ?", [(s,) for s in gone])
        conn.execute(
            "UPDATE outbox SET payload = ?, created_s = ? WHERE seq = ?",
            (
                json.dumps(
                    merged, separators=(",", ":"), ensure_ascii=False, allow_nan=False
                ).encode("utf-8"),
                min(float(r[1]) for r in rows),
                keep,
            ),
        )
        conn.execute("UPDATE meta SET value = value + ? WHERE key = 'merged_total'", (len(gone),))
        return len(gone)


def _stream_key(payload: Any) -> tuple[Any, ...]:
    if not isinstance(payload, dict):
        return (None,)
    return (payload.get("site"), payload.get("device"), payload.get("stream"))


def _first_run(rows: list[Any], payloads: list[Any], want: int) -> tuple[list[Any], list[Any]]:
    """The oldest run of at least two consecutive rows of one stream, at most ``want`` long."""
    start = 0
    while start < len(rows):
        end = start + 1
        key = _stream_key(payloads[start])
        while end < len(rows) and end - start < want and _stream_key(payloads[end]) == key:
            end += 1
        if end - start >= 2:
            return rows[start:end], payloads[start:end]
        start = end
    return [], []


def _meta_int(conn: sqlite3.Connection, key: str) -> int | None:
    """An integer from meta, None when missing or not an integer (a damaged or edited file)."""
    row = conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
    if row is None or not isinstance(row[0], int):
        return None
    return int(row[0])


def _note(conn: sqlite3.Connection, key: str) -> str | None:
    row = conn.execute("SELECT value FROM notes WHERE key = ?", (key,)).fetchone()
    return None if row is None else str(row[0])


def _read_stats(conn: sqlite3.Connection, path: Path) -> OutboxStats:
    """The statistics, from an open connection (the one SQL for them, writer and reader alike)."""
    depth = int(conn.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])
    oldest = conn.execute("SELECT MIN(created_s) FROM outbox").fetchone()[0]
    meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
    size = 0
    for suffix in ("", "-wal"):
        with contextlib.suppress(OSError):
            size += os.stat(f"{path}{suffix}").st_size
    return OutboxStats(
        depth=depth,
        oldest_created_s=None if oldest is None else float(oldest),
        merged_total=int(meta.get("merged_total", 0)),
        next_seq=int(meta.get("next_seq", 1)),
        db_bytes=size,
        stream=_note(conn, "stream") if _has_notes(conn) else None,
    )


def _has_notes(conn: sqlite3.Connection) -> bool:
    # An outbox written before streams existed has no notes table (read-only readers see it so).
    found = conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='notes'")
    return found.fetchone() is not None


def read_stats(path: Path) -> OutboxStats:
    """An outbox's statistics read without writing anything (diagnostics, support bundle), while
    the service may hold it open.

    Raises :class:`sqlite3.Error` (busy, corrupt, not a database) and :class:`ValueError` when the
    file is a database but not an anoncam outbox.
    """
    uri = f"file:{quote(str(path))}?mode=ro"
    conn = sqlite3.connect(uri, uri=True, timeout=2.0)
    try:
        app_id = conn.execute("PRAGMA application_id").fetchone()[0]
        if app_id != _APPLICATION_ID:
            raise ValueError(f"application_id {app_id:#x}, expected {_APPLICATION_ID:#x}")
        return _read_stats(conn, path)
    finally:
        conn.close()
