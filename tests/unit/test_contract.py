"""The MQTT contract: schemas, the per-person key check, topics, window merging."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from firmware.contract import (
    FORBIDDEN_KEYS,
    KINDS,
    find_forbidden,
    load_schema,
    merge_counts,
    topic,
    validate,
)

# The example of DESIGN.md, verbatim.
EXAMPLE: dict[str, Any] = {
    "schema": "anoncam/counts/1", "site": "store-042", "device": "door-1", "seq": 1287,
    "start": "2026-11-23T17:00:00Z", "end": "2026-11-23T17:01:00Z",
    "entries": 4, "exits": 3, "visitors": 7,
    "occupancy": {"min": 0, "max": 3, "mean": 1.4, "last": 1},
    "dwell_s": {"count": 3, "p50": 12.5, "p90": 40.0},
    "frames": {"processed": 900, "dropped": 12},
}  # fmt: skip

STATUS = {"state": "online", "version": "0.1.0", "since": "2026-11-23T17:00:03.25Z"}
HEALTH = {
    "schema": "anoncam/health/1",
    "time": "2026-11-23T17:00:00Z",
    "fps": 14.8,
    "detector_latency_ms": 31.5,
    "dropped_frames": 12,
    "outbox_depth": 0,
    "oldest_unsent_age_s": None,
    "merged_total": 0,
    "cpu_temp_c": None,
    "throttling": None,
    "camera": "ok",
}


def example(**changes: Any) -> dict[str, Any]:
    p = copy.deepcopy(EXAMPLE)
    p.update(changes)
    return p


@pytest.mark.parametrize("kind", KINDS)
def test_schemas_are_valid_draft_2020_12(kind: str) -> None:
    schema = load_schema(kind)
    Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "changed"
    assert load_schema(kind)["title"] != "changed"  # callers get their own copy


def test_unknown_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown payload kind"):
        load_schema("frames")


@pytest.mark.parametrize(
    ("kind", "payload"),
    [
        ("counts", EXAMPLE),
        ("counts", example(future_field={"anything": 1}, zones={"till": EXAMPLE["occupancy"]})),
        ("counts", example(occupancy=None, frames={"processed": 0, "dropped": 0})),
        ("counts", example(dwell_s={"count": 0, "p50": None, "p90": None}, merged=3)),
        ("counts", example(suppress_below=3)),
        ("status", STATUS),
        ("status", {"state": "offline", "version": "0.1.0", "since": "2026-11-23T17:00:03Z"}),
        ("health", HEALTH),
        (
            "health",
            {
                **HEALTH,
                "cpu_temp_c": 61.3,
                "oldest_unsent_age_s": 3.5,
                "throttling": {"raw": 0x50005, "under_voltage": True, "throttled": True},
            },
        ),
    ],
)
def test_valid_payloads_pass(kind: str, payload: dict[str, Any]) -> None:
    validate(kind, payload)


def test_missing_seq_fails_validation() -> None:
    p = example()
    del p["seq"]
    with pytest.raises(ValueError, match="'seq' is a required property"):
        validate("counts", p)


@pytest.mark.parametrize(
    ("change", "path"),
    [
        ({"dwell_s": {"count": 3, "p50": "12.5", "p90": 40.0}}, "$.dwell_s.p50"),
        ({"dwell_s": {"count": 0, "p50": 1.0, "p90": None}}, "$.dwell_s.p50"),
        ({"dwell_s": {"count": 2, "p50": 3.0, "p90": None}}, "$.dwell_s.p90"),
        ({"entries": -1}, "$.entries"),
        ({"seq": 0}, "$.seq"),
        ({"start": "2026-11-23T17:00:00+00:00"}, "$.start"),
        ({"end": "2026-11-23T17:01:00.5Z"}, "$.end"),
        ({"schema": "anoncam/counts/2"}, "$.schema"),
        ({"device": "Door 1"}, "$.device"),
        ({"merged": 1}, "$.merged"),
        ({"occupancy": None}, "$.occupancy"),  # frames were processed: occupancy is known
        ({"frames": {"processed": 0, "dropped": 0}}, "$.occupancy"),  # nothing seen, nothing known
        ({"occupancy": {"min": 0, "max": 3, "mean": 1.4}}, "$.occupancy"),
    ],
)
def test_invalid_counts_name_the_failing_path(change: dict[str, Any], path: str) -> None:
    with pytest.raises(ValueError) as info:
        validate("counts", example(**change))
    assert f"at {path}" in str(info.value)


@pytest.mark.parametrize(
    ("kind", "payload"),
    [
        ("status", {"state": "sleeping", "version": "0.1.0", "since": "2026-11-23T17:00:03Z"}),
        ("status", {"state": "online", "version": "0.1.0"}),
        ("health", {k: v for k, v in HEALTH.items() if k != "outbox_depth"}),
        ("health", {**HEALTH, "throttling": 5}),
        ("health", {**HEALTH, "fps": -1}),
    ],
)
def test_invalid_status_and_health_fail(kind: str, payload: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=f"{kind} payload invalid at"):
        validate(kind, payload)


def test_find_forbidden_passes_the_contract_payloads() -> None:
    assert find_forbidden(EXAMPLE) == []
    assert find_forbidden(example(zones={"till": EXAMPLE["occupancy"]}, merged=2)) == []
    assert find_forbidden(STATUS) == []
    assert find_forbidden(HEALTH) == []


def test_find_forbidden_catches_a_planted_box() -> None:
    """P1: schemas allow unknown fields, so only this check stops a box from being published."""
    p = example()
    p["occupancy"]["box"] = [10, 20, 110, 220]
    validate("counts", p)  # the schema alone lets it through
    assert find_forbidden(p) == ["$.occupancy.box"]


@pytest.mark.parametrize(
    ("payload", "paths"),
    [
        ({"tracks": [{"trackId": 3}]}, ["$.tracks", "$.tracks[0].trackId"]),
        ({"debug": {"Track-ID": 3}}, ["$.debug['Track-ID']"]),
        ({"people": [{"bbox": [1, 2, 3, 4], "x1": 1}]}, ["$.people[0].bbox", "$.people[0].x1"]),
        ({"faces": 2}, ["$.faces"]),
        ({"landmarks": [[1, 2]]}, ["$.landmarks"]),
        ({"visitor_ids": [1, 2]}, ["$.visitor_ids"]),
        ({"embedding": [0.1] * 8}, ["$.embedding"]),
        ({"stats": {"gender": {"f": 2}, "age": 30}}, ["$.stats.gender", "$.stats.age"]),
        ({"note": "data:image/jpeg;base64,/9j/4AAQ"}, ["$.note"]),
        ({"blob": "QUJD" * 200}, ["$.blob"]),
        ({"crop": None, "snapshot": "x"}, ["$.crop", "$.snapshot"]),
    ],
)
def test_find_forbidden_catches_per_person_data(payload: dict[str, Any], paths: list[str]) -> None:
    assert find_forbidden(payload) == paths


def test_forbidden_keys_cover_the_design_list() -> None:
    for key in ("box", "boxes", "bbox", "landmark", "landmarks", "track_id", "face", "image",
                "crop", "embedding", "x1", "y1", "x2", "y2", "id"):  # fmt: skip
        assert key in FORBIDDEN_KEYS


def test_topic() -> None:
    assert topic("anoncam", "store-042", "door-1", "counts") == "anoncam/store-042/door-1/counts"
    assert topic("acme/shops", "s", "d", "status") == "acme/shops/s/d/status"


@pytest.mark.parametrize(
    ("prefix", "site", "device", "kind"),
    [
        ("anoncam/#", "s", "d", "counts"),
        ("anoncam", "+", "d", "counts"),
        ("anoncam", "s", "Door 1", "counts"),
        ("anoncam", "s", "", "counts"),
        ("anoncam/", "s", "d", "counts"),
        ("anoncam", "s", "d", "frames"),
    ],
)
def test_topic_refuses_wildcards_and_bad_levels(
    prefix: str, site: str, device: str, kind: str
) -> None:
    with pytest.raises(ValueError):
        topic(prefix, site, device, kind)


def test_merge_counts_conserves_sums_and_brackets_percentiles() -> None:
    a = example(seq=10, entries=1, exits=2, visitors=3,
                occupancy={"min": 1, "max": 2, "mean": 1.5, "last": 2},
                dwell_s={"count": 1, "p50": 10.0, "p90": 20.0},
                frames={"processed": 100, "dropped": 1})  # fmt: skip
    off = example(seq=11, start="2026-11-23T17:01:00Z", end="2026-11-23T17:02:00Z",
                  entries=0, exits=0, visitors=0, occupancy=None,
                  dwell_s={"count": 0, "p50": None, "p90": None},
                  frames={"processed": 0, "dropped": 0})  # fmt: skip
    b = example(seq=12, start="2026-11-23T17:02:00Z", end="2026-11-23T17:03:00Z", merged=2,
                entries=4, exits=0, visitors=4,
                occupancy={"min": 0, "max": 5, "mean": 3.0, "last": 4},
                dwell_s={"count": 3, "p50": 30.0, "p90": 60.0},
                frames={"processed": 300, "dropped": 2})  # fmt: skip
    m = merge_counts([a, off, b])
    assert (m["seq"], m["merged"]) == (12, 4)
    assert (m["start"], m["end"]) == ("2026-11-23T17:00:00Z", "2026-11-23T17:03:00Z")
    assert (m["entries"], m["exits"], m["visitors"]) == (5, 2, 7)
    assert m["frames"] == {"processed": 400, "dropped": 3}
    assert m["occupancy"] == {"min": 0, "max": 5, "mean": 2.625, "last": 4}
    assert m["dwell_s"] == {"count": 4, "p50": 25.0, "p90": 50.0}
    assert 20.0 <= m["dwell_s"]["p90"] <= 60.0
    validate("counts", m)
    only_off = merge_counts([off, off])
    assert only_off["occupancy"] is None and only_off["dwell_s"]["p50"] is None
    validate("counts", only_off)
