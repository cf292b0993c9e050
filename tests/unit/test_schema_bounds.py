"""Every number in the contract's JSON Schemas is bounded (issue 12, item 1).

Regression: the schemas had no maximum, so a schema-valid ``seq`` of 2^63 raised
``OverflowError: Python int too large to convert to SQLite INTEGER`` in the subscriber's storage,
and a count above 2^53 silently loses precision in every JSON parser that reads numbers as IEEE
doubles (JavaScript, Telegraf, jq). A payload the schema accepts must fit both.
"""

from __future__ import annotations

import copy
import json
import sqlite3
from collections.abc import Iterator
from typing import Any

import pytest

from firmware.contract import load_schema, validate
from tests.unit.test_contract import EXAMPLE, HEALTH

SAFE = 2**53 - 1  # the largest integer an IEEE double holds exactly
SCHEMAS = ("counts", "health", "diagnose")  # status has no number


def _load(kind: str) -> dict[str, Any]:
    if kind == "diagnose":
        from importlib import resources

        text = resources.files("firmware").joinpath("schemas", "diagnose.schema.json")
        loaded: dict[str, Any] = json.loads(text.read_text("utf-8"))
        return loaded
    return load_schema(kind)


def _numeric_nodes(node: Any, path: str) -> Iterator[tuple[str, dict[str, Any]]]:
    if isinstance(node, dict):
        types = node.get("type")
        types = [types] if isinstance(types, str) else (types or [])
        if "integer" in types or "number" in types:
            yield path, node
        for key, child in node.items():
            yield from _numeric_nodes(child, f"{path}/{key}")
    elif isinstance(node, list):
        for i, child in enumerate(node):
            yield from _numeric_nodes(child, f"{path}/{i}")


@pytest.mark.parametrize("kind", SCHEMAS)
def test_every_number_has_bounds_that_fit_json_and_sqlite(kind: str) -> None:
    """Each integer/number node carries a minimum and a maximum within +-(2^53 - 1)."""
    nodes = list(_numeric_nodes(_load(kind), "#"))
    assert nodes, f"{kind}: no numeric field found"
    unbounded = [
        path
        for path, node in nodes
        if not (
            isinstance(node.get("minimum"), (int, float))
            and isinstance(node.get("maximum"), (int, float))
            and -SAFE <= node["minimum"] <= node["maximum"] <= SAFE
        )
    ]
    assert unbounded == []


@pytest.mark.parametrize(
    ("field", "value"),
    [
        (("seq",), 2**63),
        (("seq",), SAFE + 1),
        (("entries",), 2**64),
        (("frames", "processed"), SAFE + 1),
        (("frames", "dropped"), 2**63),
        (("dwell_s", "count"), 2**63),
        (("dwell_s", "p90"), 1e300),
        (("occupancy", "max"), 2**63),
        (("occupancy", "mean"), 1e300),
    ],
)
def test_out_of_range_numbers_are_schema_invalid(field: tuple[str, ...], value: Any) -> None:
    body = copy.deepcopy(EXAMPLE)
    target = body
    for key in field[:-1]:
        target = target[key]
    target[field[-1]] = value
    with pytest.raises(ValueError, match="counts payload invalid"):
        validate("counts", body)


def test_largest_valid_payload_fits_sqlite_and_json_doubles() -> None:
    """The edge of the schema is storable: SQLite takes every integer, a double reads it back."""
    body = copy.deepcopy(EXAMPLE)
    body["seq"] = SAFE
    body["frames"] = {"processed": SAFE, "dropped": SAFE}
    body["entries"] = SAFE
    validate("counts", body)
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE w (seq INTEGER, processed INTEGER, entries INTEGER)")
    conn.execute("INSERT INTO w VALUES (?, ?, ?)", (body["seq"], SAFE, body["entries"]))
    assert conn.execute("SELECT seq FROM w").fetchone()[0] == SAFE
    assert int(float(body["seq"])) == SAFE
    health = {**HEALTH, "outbox_depth": SAFE + 1}
    with pytest.raises(ValueError, match="health payload invalid"):
        validate("health", health)
