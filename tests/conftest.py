"""Shared fixtures: a real Mosquitto on a free loopback port."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.mosquitto import Broker, make_broker


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Broker]:
    """An anonymous Mosquitto listening on 127.0.0.1:<free port>, stopped after the test."""
    broker = make_broker(tmp_path / "broker")
    broker.start()
    yield broker
    broker.stop()
