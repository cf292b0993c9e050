"""The README's Telegraf and Home Assistant snippets, checked against the contract (issue 12,
item 26).

Regression: the README had no client configuration, and hand-written ones broke on real
payloads (Telegraf's json_v2 parser fails a metric when a path it was not told is optional
matches nothing, as ``occupancy.mean`` does on a window with no frames).

Telegraf rules checked (docs.influxdata.com/telegraf/v1/data_formats/input/json_v2): each
``field``/``tag`` has a GJSON ``path`` to a non-array, non-object value; ``type`` is one of int,
uint, float, string, bool; ``optional = true`` suppresses the error when the path does not match;
``timestamp_path`` points at one value and ``timestamp_format`` is a Go reference layout (or
unix/unix_ms/unix_us/unix_ns).
"""

from __future__ import annotations

import json
import re
import tomllib
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from firmware.config.settings import HomeAssistantConfig, MqttConfig
from firmware.contract import load_schema, validate
from firmware.count import FrameCounts
from firmware.mqtt.publish import homeassistant_discovery
from firmware.outbox import Outbox
from firmware.windows import WindowAggregator
from tests.unit.test_homeassistant import HA_SENSOR_KEYS

README = Path(__file__).resolve().parents[2] / "README.md"
S = 1_000_000_000
T0 = 1_795_453_200 * S
JSON_TYPES = {"int": int, "uint": int, "float": (int, float), "string": str, "bool": bool}
# Go's reference time, 2006-01-02T15:04:05Z07:00, in strptime terms (Z07:00 = 'Z' or an offset)
GO_LAYOUTS = {"2006-01-02T15:04:05Z07:00": "%Y-%m-%dT%H:%M:%S%z"}


def block(lang: str, needle: str) -> str:
    found = [
        b for b in re.findall(rf"```{lang}\n(.*?)```", README.read_text(), re.S) if needle in b
    ]
    assert len(found) == 1, f"expected one ```{lang} block with {needle!r} in the README"
    return found[0]


def gjson(payload: Any, path: str) -> tuple[bool, Any]:
    """A plain dotted GJSON path: (matched, value). null matches nothing in json_v2."""
    value = payload
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return False, None
        value = value[part]
    return value is not None, value


def real_windows(tmp_path: Path) -> list[dict[str, Any]]:
    """A busy window, a quiet one, one with no frames at all, and a merged gap."""
    with Outbox(tmp_path / "outbox.db") as ob:
        agg = WindowAggregator(
            ob, site="store-042", device="door-1", window_s=60, max_gap_windows=2
        )
        agg.observe(FrameCounts(t_ns=0, entries=2, occupancy=1, dwell_s=(4.0, 9.0)), T0)
        agg.observe(FrameCounts(t_ns=1), T0 + 60 * S)
        agg.observe(FrameCounts(t_ns=2), T0 + 3 * 60 * S)  # one empty window (17:02)
        agg.observe(FrameCounts(t_ns=3), T0 + 9 * 60 * S)  # a merged gap
        agg.flush(T0 + 9 * 60 * S + S)
        got = [json.loads(r.payload) for r in ob.pending(limit=100)]
    assert any(p["occupancy"] is None for p in got)
    assert any("merged" in p for p in got) and any(p["dwell_s"]["p50"] for p in got)
    for p in got:
        validate("counts", p)
    return got


def test_telegraf_snippet_reads_every_window(tmp_path: Path) -> None:
    config = tomllib.loads(block("toml", "json_v2"))
    (consumer,) = config["inputs"]["mqtt_consumer"]
    assert consumer["data_format"] == "json_v2"
    assert consumer["topics"] == ["anoncam/+/+/counts"] and consumer["qos"] == 1
    (parser,) = consumer["json_v2"]
    entries = [("tag", t) for t in parser["tag"]] + [("field", f) for f in parser["field"]]
    for _kind, entry in entries:
        assert set(entry) <= {"path", "rename", "type", "optional"}, entry
        assert entry.get("type", "string") in JSON_TYPES, entry
    layout = GO_LAYOUTS[parser["timestamp_format"]]
    schema_props = load_schema("counts")["properties"]
    numeric = [k for k, v in schema_props.items() if v.get("$ref") == "#/$defs/count"]
    paths = {e["path"] for _, e in entries}
    assert set(numeric) <= paths, "every count of the contract is read"
    for payload in real_windows(tmp_path):
        matched, stamp = gjson(payload, parser["timestamp_path"])
        assert matched and datetime.strptime(stamp, layout).tzinfo is not None
        for _kind, entry in entries:
            matched, value = gjson(payload, entry["path"])
            if not matched:
                # json_v2 fails the whole metric on an unmatched path unless it is optional
                assert entry.get("optional") is True, (entry["path"], payload)
                continue
            assert isinstance(value, JSON_TYPES[entry.get("type", "string")]), entry
            assert not isinstance(value, (dict, list)), entry


def test_home_assistant_example_matches_the_published_discovery() -> None:
    config = yaml.safe_load(block("yaml", "state_topic"))
    sensors = config["mqtt"]["sensor"]
    discovery = homeassistant_discovery(
        MqttConfig(homeassistant=HomeAssistantConfig(enabled=True)),
        site="store-042",
        device="door-1",
        version="t",
    )[1]
    published = {c["unique_id"]: c for c in discovery["components"].values()}
    assert {s["unique_id"] for s in sensors} == set(published)
    for s in sensors:
        assert set(s) <= HA_SENSOR_KEYS
        assert s["state_topic"] == discovery["state_topic"]
        c = published[s["unique_id"]]
        for key in ("value_template", "state_class", "last_reset_value_template", "force_update"):
            assert s.get(key) == c.get(key), (s["unique_id"], key)
