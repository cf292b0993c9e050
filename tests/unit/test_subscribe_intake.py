"""The subscriber's intake and ledger without a broker: table-driven refusals, the stream key."""

from __future__ import annotations

import json

import pytest

from firmware.mqtt.subscribe import intake
from firmware.mqtt.subscribe.ledger import WindowLedger
from tests.integration.test_publish import DEVICE, SITE, window


def _raw(**extra: object) -> bytes:
    body = window(5)
    body.update(extra)
    return json.dumps(body).encode()


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        pytest.param(b"[" * 9 + b"]" * 9, "nested deeper", id="depth"),
        pytest.param(b"x" * (intake.MAX_PAYLOAD + 1), "exceeds", id="size"),
        pytest.param(b"\xff\xfe", "not UTF-8", id="utf8"),
        pytest.param(_raw(seq=2**63), "out of range", id="bigint"),
        pytest.param(_raw(stream="ABC"), "stream", id="stream-pattern"),
        pytest.param(_raw(track_ids=[1]), "per-person", id="p1"),
    ],
)
def test_intake_refusals(payload: bytes, reason: str) -> None:
    """Each hostile payload is refused with a reason naming what is wrong, never a crash."""
    with pytest.raises(intake.IntakeError, match=reason):
        intake.counts_window(payload, SITE, DEVICE)


def test_intake_depth_ignores_brackets_inside_strings() -> None:
    """Brackets inside strings do not count as nesting (a zone name could hold them)."""
    intake.check_depth(b'{"a": "' + b"[" * 100 + b'"}')


def test_known_fields_only_and_digest_stable() -> None:
    """Unknown fields go at every depth; key order does not change the digest."""
    w = intake.counts_window(_raw(extra_field=1), SITE, DEVICE)
    assert "extra_field" not in w.body
    body = json.loads(_raw())
    again = json.dumps(dict(reversed(list(body.items())))).encode()
    assert intake.counts_window(again, SITE, DEVICE).digest == w.digest


def test_printable_escapes_controls() -> None:
    assert intake.printable("a\x1b[2Jb\u202e") == "a\\x1b[2Jb\\u202e"


def test_ledger_stream_and_conflict() -> None:
    """Same seq on a new stream is new; same key with other content is a conflict."""
    ledger = WindowLedger()
    assert ledger.observe(SITE, DEVICE, 1, stream_id="a" * 16, digest="x").kind == "new"
    assert ledger.observe(SITE, DEVICE, 1, stream_id="b" * 16, digest="y").kind == "new"
    assert ledger.observe(SITE, DEVICE, 1, stream_id="a" * 16, digest="x").kind == "dup"
    assert ledger.observe(SITE, DEVICE, 1, stream_id="a" * 16, digest="z").kind == "conflict"
    assert ledger.conflicts == 1 and ledger.duplicates == 1 and ledger.accepted == 2


# -- the two validators: jsonschema-rs decides only where it must agree with the reference ------
def _mutations() -> list[tuple[str, dict[str, object]]]:
    """A valid window, then every top-level and nested field set to values of each JSON type,
    including integral floats (``2.0``, the case the two validators read differently)."""
    base = window(5)
    base["zones"] = {"till": {"min": 0, "max": 2, "mean": 1.0, "last": 1}}
    base["suppress_below"] = 3
    base["merged"] = 2
    out: list[tuple[str, dict[str, object]]] = [("as is", base)]
    values: list[object] = [2, 2.0, 2.5, -1, 0, 0.0, True, None, "2", [], {}]
    nested = {
        key: list(val)
        for key, val in base.items()
        if isinstance(val, dict) and key != "zones"  # occupancy, dwell_s, frames
    }
    for key in base:
        for v in values:
            out.append((f"{key}={v!r}", {**base, key: v}))
    for key, fields in nested.items():
        for field in [*fields, "lost"]:
            for v in values:
                inner = dict(base[key])  # type: ignore[call-overload]
                inner[field] = v
                out.append((f"{key}.{field}={v!r}", {**base, key: inner}))
    for field in ("min", "max", "mean", "last"):
        for v in values:
            zone = {**base["zones"]["till"], field: v}  # type: ignore[index]
            out.append((f"zones.till.{field}={v!r}", {**base, "zones": {"till": zone}}))
    return out


def _reference_accepts(value: dict[str, object]) -> bool:
    return not any(True for _ in intake._strict_validator("counts").iter_errors(value))


def test_the_fast_validator_is_installed_for_the_tests() -> None:
    """The dev install has jsonschema-rs (the fleet extra), so the next test compares both."""
    assert intake._fast_validator("counts") is not None


@pytest.mark.parametrize(("name", "value"), _mutations(), ids=[m[0] for m in _mutations()])
def test_validate_gives_the_reference_verdict(name: str, value: dict[str, object]) -> None:
    """Whatever jsonschema-rs says, validate() accepts exactly what the strict reference
    validator accepts; a float where an integer belongs is refused with its path."""
    if _reference_accepts(value):
        intake.validate("counts", value)
    else:
        with pytest.raises(intake.IntakeError, match=r"invalid at \$"):
            intake.validate("counts", value)


def test_integral_floats_are_caught_where_integers_belong() -> None:
    """The places come from the schema through $ref, oneOf and maps (zones)."""
    places = intake.integer_places("counts")
    assert {("seq",), ("occupancy", "min"), ("zones", "*", "last"), ("frames", "lost")} <= places
    assert ("occupancy", "mean") not in places and ("dwell_s", "p50") not in places
    ok = window(5)
    assert not intake.float_for_integer("counts", ok)
    assert intake.float_for_integer("counts", {**ok, "seq": 5.0})
    zones = {"till": {"min": 0, "max": 2.0, "mean": 1.0, "last": 1}}
    assert intake.float_for_integer("counts", {**ok, "zones": zones})
    # A float mean (0.0 in an empty window) is a number where a number belongs.
    occupancy = {"min": 0, "max": 0, "mean": 0.0, "last": 0}
    assert not intake.float_for_integer("counts", {**ok, "occupancy": occupancy})
