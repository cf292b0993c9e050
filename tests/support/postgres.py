"""A real PostgreSQL server for tests and the fleet benchmark, from Debian's postgresql binaries.

``initdb`` into a temporary directory, ``pg_ctl start`` on a free loopback port (and a unix socket
in the same directory), password authentication (scram) for TCP, stopped by ``pg_ctl stop`` at
teardown. PostgreSQL refuses to run as root, so as root the server runs as the ``postgres``
system user (``runuser -u postgres --``) and the directory is handed to that user.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from firmware.jobs.demo_broker import free_port

SUPERUSER = "anoncam"
PASSWORD = "test-only-password"


def pg_bindir() -> Path:
    """Newest ``/usr/lib/postgresql/<N>/bin`` that has ``initdb``."""
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0,
    )
    if not found:
        raise RuntimeError(
            "PostgreSQL not installed: run 'apt-get install postgresql' (bash scripts/setup does)"
        )
    return Path(found[-1]).parent


def _as_owner(cmd: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


@dataclass
class Postgres:
    """One throwaway cluster. ``dsn(db)`` for clients; ``restart()`` for fault tests."""

    directory: Path
    port: int
    bindir: Path = field(default_factory=pg_bindir)

    @property
    def data(self) -> Path:
        return self.directory / "data"

    @property
    def log(self) -> Path:
        return self.directory / "server.log"

    def dsn(self, dbname: str = "postgres", password: str = PASSWORD) -> str:
        return (
            f"postgresql://{SUPERUSER}:{password}@127.0.0.1:{self.port}/{dbname}?connect_timeout=5"
        )

    def _run(self, *args: str, timeout: float = 120) -> None:
        result = subprocess.run(
            _as_owner([str(self.bindir / args[0]), *args[1:]]),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if result.returncode != 0:
            log = self.log.read_text(errors="replace") if self.log.exists() else ""
            raise RuntimeError(f"{args[0]} failed: {result.stderr}{result.stdout}\n{log}")

    def init(self) -> None:
        pwfile = self.directory / "pw"
        pwfile.write_text(PASSWORD + "\n")
        if os.geteuid() == 0:
            shutil.chown(self.directory, "postgres", "postgres")
            shutil.chown(pwfile, "postgres", "postgres")
        self._run(
            "initdb",
            "-D",
            str(self.data),
            "-U",
            SUPERUSER,
            f"--pwfile={pwfile}",
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            "-E",
            "UTF8",
            "--no-sync",  # a throwaway cluster: fsync of the template files only costs time
        )
        pwfile.unlink()

    def start(self) -> None:
        opts = (
            f"-p {self.port} -k {self.directory} -c listen_addresses=127.0.0.1 "
            "-c fsync=off -c synchronous_commit=on -c full_page_writes=off "
            "-c shared_buffers=32MB -c max_connections=40"
        )
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", opts, "-w", "start")

    def stop(self, mode: str = "fast") -> None:
        if (self.data / "postmaster.pid").exists():
            self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")

    def restart(self) -> None:
        """Stop (fast: open connections are cut) and start again on the same port."""
        self.stop()
        self.start()

    def create_database(self, name: str) -> str:
        """A fresh database; returns its DSN."""
        import psycopg

        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.dsn(name)

    def wait_ready(self, timeout: float = 30) -> None:
        import psycopg

        deadline = time.monotonic() + timeout
        while True:
            try:
                with psycopg.connect(self.dsn()):
                    return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)


def make_postgres() -> Postgres:
    """Initialise and start a cluster in a new temporary directory (outside pytest's 0700 tmp,
    which the ``postgres`` user could not enter); the caller stops it and removes the folder."""
    directory = Path(tempfile.mkdtemp(prefix="anoncam-pg-"))
    server = Postgres(directory, free_port())
    try:
        server.init()
        server.start()
    except BaseException:
        shutil.rmtree(directory, ignore_errors=True)
        raise
    return server


def destroy(server: Postgres) -> None:
    try:
        server.stop("immediate")
    finally:
        shutil.rmtree(server.directory, ignore_errors=True)
