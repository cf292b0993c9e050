"""read_ahead / WriteBehind: order kept, errors surface in the caller, bounded."""

from __future__ import annotations

import threading

import pytest

from firmware.media.workers import WriteBehind, read_ahead


def test_read_ahead_keeps_order_and_raises_producer_errors() -> None:
    assert list(read_ahead(range(100), depth=3)) == list(range(100))

    def broken():  # type: ignore[no-untyped-def]
        yield 1
        raise ValueError("truncated at frame 1")

    with pytest.raises(ValueError, match="truncated"):
        list(read_ahead(broken()))


def test_read_ahead_stops_producer_when_consumer_leaves() -> None:
    produced = []

    def endless():  # type: ignore[no-untyped-def]
        i = 0
        while True:
            produced.append(i)
            yield i
            i += 1

    it = read_ahead(endless(), depth=2)
    assert [next(it) for _ in range(3)] == [0, 1, 2]
    it.close()  # type: ignore[attr-defined]
    n = len(produced)
    assert n <= 3 + 2 + 2, "the producer must not run far ahead of the consumer"
    assert not any(t.name == "read-ahead" and t.is_alive() for t in threading.enumerate())


def test_write_behind_order_and_error() -> None:
    got: list[int] = []
    with WriteBehind(got.append, depth=2) as w:
        for i in range(50):
            w.submit(i)
    assert got == list(range(50))

    def sink(i: int) -> None:
        if i == 3:
            raise OSError("disk full")

    w2: WriteBehind[int] = WriteBehind(sink)
    with pytest.raises(OSError, match="disk full"):
        for i in range(100):
            w2.submit(i)
        w2.close()
