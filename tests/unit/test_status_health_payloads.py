"""Status and health payloads as the publisher builds them (issue 12, item 25)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from firmware.config.settings import MqttConfig
from firmware.contract import load_schema, validate
from firmware.mqtt.publish import Publisher
from firmware.outbox import Outbox
from firmware.runtime.pipeline import LoopStats


def _publisher(tmp_path: Path, stats: LoopStats) -> tuple[Publisher, Outbox]:
    outbox = Outbox(tmp_path / "outbox.db")

    def health() -> dict[str, Any]:
        return {**stats.as_health(), "camera": "ok", "cpu_temp_c": None, "throttling": None}

    pub = Publisher(MqttConfig(), site="s", device="d", outbox=outbox, health=health, version="1.0")
    return pub, outbox


def test_health_frames_have_the_counts_shape_and_the_old_integer_stays(tmp_path: Path) -> None:
    """Health carried ``frames`` as an integer where counts carry an object. Changing its type
    would break version-1 consumers, so ``frames_since_start`` is added with the counts' shape
    (processed, dropped) and ``frames`` keeps its integer."""
    stats = LoopStats(frames=900, dropped=12)
    pub, outbox = _publisher(tmp_path, stats)
    with outbox:
        body = json.loads(pub._health_payload())
    validate("health", body)
    assert body["schema"] == "anoncam/health/1"
    assert body["frames"] == 900
    counts_frames = load_schema("counts")["properties"]["frames"]["required"]
    assert sorted(body["frames_since_start"]) == sorted(counts_frames)
    assert body["frames_since_start"] == {"processed": 900, "dropped": 12}


def test_status_payloads_name_their_schema_and_the_will_has_no_made_up_time(
    tmp_path: Path,
) -> None:
    """Status payloads had no ``schema`` field, and the Last Will's ``since`` was the connect
    time (the broker sends the will unchanged, much later)."""
    pub, outbox = _publisher(tmp_path, LoopStats())
    with outbox:
        online = json.loads(pub._status_payload("online", since=1_795_453_200))
        will = json.loads(pub._will_payload())
    for body in (online, will):
        validate("status", body)
        assert body["schema"] == "anoncam/status/1"
    assert online["since"] == "2026-11-23T17:00:00Z"
    assert will["since"] is None and will["state"] == "offline"
