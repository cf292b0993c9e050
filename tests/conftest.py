"""Shared fixtures: a real Mosquitto on a free loopback port, a real PostgreSQL."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.mosquitto import Broker, make_broker
from tests.support.postgres import Postgres, destroy, make_postgres

# A shell starts a background job (`bash .ci/run &`, nohup, cron) with SIGINT ignored, and an
# ignored signal stays ignored across exec: every subprocess a test starts would then ignore the
# Ctrl-C that tests send to check the clean exit (exit 130), and time out. A handled signal is
# reset to its default on exec, so handling it here gives the children the default back.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Broker]:
    """An anonymous Mosquitto listening on 127.0.0.1:<free port>, stopped after the test."""
    broker = make_broker(tmp_path / "broker")
    broker.start()
    yield broker
    broker.stop()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[Postgres]:
    """One real PostgreSQL cluster for the session (initdb + pg_ctl, loopback port); each test
    takes its own database from the ``postgres_dsn`` fixture."""
    server = make_postgres()
    yield server
    destroy(server)


@pytest.fixture
def postgres_dsn(postgres_server: Postgres, request: pytest.FixtureRequest) -> str:
    """DSN of a fresh database in the session's PostgreSQL."""
    name = "t_" + "".join(c if c.isalnum() else "_" for c in request.node.name.lower())[:50]
    return postgres_server.create_database(f"{name}_{os.getpid()}")
