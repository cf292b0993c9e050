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
