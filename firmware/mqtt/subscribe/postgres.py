"""PostgreSQL (and TimescaleDB) store for a fleet: ``anoncam subscribe --postgres DSN``.

Same tables and outcomes as the SQLite store (see :mod:`.sinks`), with real types: times are
``timestamptz``, the payload ``jsonb``. Several subscribers (``--share``) may write into one
database at once: table creation is serialised by an advisory lock, and a key two of them race
for is settled by the primary key (``ON CONFLICT DO NOTHING``), then compared by digest.

When the server offers the TimescaleDB extension, ``windows`` becomes a hypertable on
``window_start``. TimescaleDB needs the time column in every unique index, so there the primary
key is ``(site, device, stream, seq, window_start)``; conflicts are still found per
``(site, device, stream, seq)`` because every batch first looks its keys up.

psycopg is imported lazily: only ``--postgres`` needs it (extra ``anoncam[fleet]``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from firmware.errors import ConfigError, OutputError, UsageError
from firmware.mqtt.subscribe.intake import Window
from firmware.mqtt.subscribe.sinks import (
    COLUMNS,
    EXTRA,
    REAL_COLUMNS,
    TEXT_COLUMNS,
    Outcome,
    StoreUnavailableError,
    dedupe_batch,
    flatten,
    incompatible,
    missing_columns,
)

logger = logging.getLogger(__name__)

_TIME_COLUMNS = frozenset({"window_start", "window_end"})
_LOCK = 0x616E6F6E  # "anon": advisory lock id for creating the tables


def _pg_type(column: str) -> str:
    if column in _TIME_COLUMNS:
        return "timestamptz NOT NULL"
    if column == "stream":
        return "text NOT NULL DEFAULT ''"
    if column in TEXT_COLUMNS:
        return "text NOT NULL"
    return "double precision" if column in REAL_COLUMNS else "bigint"


def describe(dsn: str) -> str:
    """``user@host:port/dbname`` from a DSN, never its password (for messages and logs)."""
    from psycopg.conninfo import conninfo_to_dict

    try:
        info = conninfo_to_dict(dsn)
    except Exception:
        return "(unparsable DSN)"
    host = info.get("host") or info.get("hostaddr") or "localhost"
    return f"{info.get('user', '')}@{host}:{info.get('port', 5432)}/{info.get('dbname', '')}"


def _import_psycopg() -> Any:
    try:
        import psycopg
    except ImportError:
        raise UsageError(
            "--postgres needs the psycopg package",
            hint="pip install 'anoncam[fleet]' (or 'psycopg[binary]')",
        ) from None
    return psycopg


def connect(dsn: str) -> Any:
    """Open a connection, turning every refusal into an error that names the fix."""
    psycopg = _import_psycopg()
    where = f"--postgres {describe(dsn)}"
    try:
        return psycopg.connect(dsn, autocommit=False)
    except psycopg.ProgrammingError as exc:
        raise UsageError(
            f"--postgres: not a valid DSN ({str(exc).strip()})",
            hint="give a libpq URI or key=value string, e.g. "
            "postgresql://anoncam@db.lan:5432/counts or 'host=db.lan dbname=counts user=anoncam'",
        ) from None
    except psycopg.OperationalError as exc:
        text = str(exc).strip()
        if "password authentication failed" in text or "no password supplied" in text:
            raise ConfigError(
                f"{where}: the server refused the password",
                hint="check the user and password (in the DSN, PGPASSWORD or ~/.pgpass)",
            ) from None
        if "does not exist" in text:
            raise ConfigError(
                f"{where}: {text.splitlines()[-1]}",
                hint="create it (createdb / CREATE DATABASE, CREATE ROLE) or fix the DSN",
            ) from None
        raise OutputError(
            f"{where}: cannot connect: {text.splitlines()[-1] if text else exc}",
            hint="check the host and port, that PostgreSQL runs and accepts TCP connections "
            "(listen_addresses, pg_hba.conf)",
        ) from None


class PostgresStore:
    """Tables ``windows`` and ``window_conflicts`` in a PostgreSQL database."""

    def __init__(self, dsn: str) -> None:
        self._dsn = dsn
        self.where = f"--postgres {describe(dsn)}"
        self._psycopg = _import_psycopg()
        self._conn: Any = connect(dsn)
        self.hypertable = False
        try:
            self._create()
        except BaseException as exc:
            self._conn.close()
            if not isinstance(exc, self._psycopg.Error):
                raise
            raise OutputError(
                f"{self.where}: cannot create the tables: {str(exc).strip()}",
                hint="the user needs CREATE on the database's schema (GRANT CREATE ON SCHEMA "
                "public TO ...), or create the tables once as the owner",
            ) from None
        names = (*COLUMNS, *EXTRA)
        self._names = ", ".join(names)
        one = ", ".join(
            "%s::timestamptz" if c in _TIME_COLUMNS or c == "received_at" else "%s" for c in names
        )
        self._row = f"({one})"

    def _create(self) -> None:
        cols = ", ".join(f"{c} {_pg_type(c)}" for c in COLUMNS)
        tail = (
            "payload jsonb NOT NULL, digest text NOT NULL, received_at timestamptz NOT NULL, "
            "stored_at timestamptz NOT NULL DEFAULT clock_timestamp()"
        )
        with self._conn.transaction():
            # Several subscribers start at once: one creates, the others wait and then find it.
            self._conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK,))
            found = {
                r[0]
                for r in self._conn.execute(
                    "SELECT column_name FROM information_schema.columns "
                    "WHERE table_schema = current_schema() AND table_name = 'windows'"
                )
            }
            if found:
                if missing_columns(found):
                    raise incompatible(self.where, "windows", missing_columns(found))
                self.hypertable = self._is_hypertable()
                return
            timescale = self._conn.execute(
                "SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'"
            ).fetchone()
            if timescale:
                self._conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
            key = "site, device, stream, seq" + (", window_start" if timescale else "")
            self._conn.execute(f"CREATE TABLE windows ({cols}, {tail}, PRIMARY KEY ({key}))")
            self._conn.execute(
                f"CREATE TABLE IF NOT EXISTS window_conflicts ({cols}, {tail}, "
                "PRIMARY KEY (site, device, stream, seq, digest))"
            )
            if timescale:
                self._conn.execute(
                    "SELECT create_hypertable('windows', 'window_start', if_not_exists => TRUE)"
                )
                self._conn.execute(
                    "CREATE INDEX IF NOT EXISTS windows_key ON windows (site, device, stream, seq)"
                )
                self.hypertable = True
            logger.info(
                "created tables windows and window_conflicts%s",
                " (TimescaleDB hypertable)" if timescale else "",
            )

    def _is_hypertable(self) -> bool:
        try:
            with self._conn.transaction():  # a savepoint: a failure here leaves _create's intact
                row = self._conn.execute(
                    "SELECT 1 FROM timescaledb_information.hypertables "
                    "WHERE hypertable_name = 'windows'"
                ).fetchone()
        except self._psycopg.Error:
            return False  # no TimescaleDB here: the view does not exist
        return row is not None

    # ------------------------------------------------------------------ writing
    def _lookup(self, keys: Sequence[tuple[str, str, str, int]]) -> dict[Any, str]:
        if not keys:
            return {}
        values = ", ".join("(%s, %s, %s, %s::bigint)" for _ in keys)
        params = [v for k in keys for v in k]
        rows = self._conn.execute(
            "SELECT site, device, stream, seq, digest FROM windows "
            f"WHERE (site, device, stream, seq) IN (VALUES {values})",
            params,
        ).fetchall()
        return {(r[0], r[1], r[2], r[3]): r[4] for r in rows}

    def _params(self, windows: Sequence[Window], received_at: str) -> list[Any]:
        params: list[Any] = []
        for w in windows:
            params += [*flatten(w.body).values(), w.canonical, w.digest, received_at]
        return params

    def _insert(self, table: str, windows: Sequence[Window], received_at: str) -> set[Any]:
        if not windows:
            return set()
        rows = ", ".join(self._row for _ in windows)
        cur = self._conn.execute(
            f"INSERT INTO {table} ({self._names}) VALUES {rows} ON CONFLICT DO NOTHING "
            "RETURNING site, device, stream, seq",
            self._params(windows, received_at),
        )
        return {tuple(r) for r in cur.fetchall()}

    def store(self, batch: Sequence[Window], received_at: str) -> list[Outcome]:
        psycopg = self._psycopg
        unique, later = dedupe_batch(batch)
        try:
            if self._conn is None or self._conn.closed:
                self._conn = psycopg.connect(self._dsn, autocommit=False)
            with self._conn.transaction():
                held = self._lookup([w.key for w in unique])
                fresh = [w for w in unique if w.key not in held]
                inserted = self._insert("windows", fresh, received_at)
                raced = [w.key for w in fresh if w.key not in inserted]
                held.update(self._lookup(raced))  # another subscriber stored it just now
                for w in fresh:
                    if w.key in inserted:
                        held[w.key] = w.digest
                conflicts = [w for w in batch if held[w.key] != w.digest]
                if conflicts:
                    self._insert("window_conflicts", dedupe_batch(conflicts)[0], received_at)
        except psycopg.OperationalError as exc:  # server restarting, network: try again later
            self._drop()
            raise StoreUnavailableError(f"{self.where}: {str(exc).strip()}") from None
        results: list[Outcome] = []
        for i, w in enumerate(batch):
            if held[w.key] != w.digest:
                results.append("conflict")
            elif i not in later and w.key in inserted:
                results.append("new")
            else:
                results.append("dup")
        return results

    def _drop(self) -> None:
        try:
            if self._conn is not None:
                self._conn.close()
        finally:
            self._conn = None

    def close(self) -> None:
        self._drop()
