"""The durable outbox: real SQLite files in a temporary directory, a real SIGKILL."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from firmware.contract import find_forbidden, utc_iso, validate
from firmware.errors import StorageError
from firmware.outbox import STREAM_PATTERN, Outbox

T0 = 1_795_453_200  # 2026-11-23T17:00:00Z


def window(seq: int, i: int | None = None, *, entries: int = 1, exits: int = 0) -> dict[str, Any]:
    """A valid counts payload for window number ``i`` (default: ``seq``) of 60 s."""
    i = seq if i is None else i
    processed = 10 + i % 5
    return {
        "schema": "anoncam/counts/1",
        "site": "store-042",
        "device": "door-1",
        "seq": seq,
        "start": utc_iso(T0 + 60 * i),
        "end": utc_iso(T0 + 60 * (i + 1)),
        "entries": entries,
        "exits": exits,
        "visitors": entries + exits,
        "occupancy": {"min": i % 3, "max": i % 3 + 2, "mean": i % 3 + 1.0, "last": i % 3 + 1},
        "dwell_s": {"count": 2, "p50": 10.0 + i % 4, "p90": 30.0 + i % 4},
        "frames": {"processed": processed, "dropped": i % 2},
    }


def builder(**kw: Any) -> Callable[[int], dict[str, Any]]:
    return lambda seq: window(seq, **kw)


def rows(ob: Outbox) -> list[tuple[int, dict[str, Any]]]:
    return [(r.seq, json.loads(r.payload)) for r in ob.pending(limit=1_000_000)]


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "state" / "outbox.db"


def test_seqs_are_contiguous_across_reopen(db: Path) -> None:
    """seq grows by one per window and continues after a restart (subscribers de-dup on it)."""
    with Outbox(db) as ob:
        assert [ob.add_window(builder()) for _ in range(3)] == [1, 2, 3]
    with Outbox(db) as ob:
        assert [ob.add_window(builder()) for _ in range(2)] == [4, 5]
        got = rows(ob)
    assert [s for s, _ in got] == [1, 2, 3, 4, 5]
    assert all(p["seq"] == s for s, p in got)


def test_seq_is_never_reused_after_acks(db: Path) -> None:
    """Acked (deleted) rows must not free their seqs: a reused seq is dropped as a duplicate."""
    with Outbox(db) as ob:
        for _ in range(3):
            ob.add_window(builder())
        for r in ob.pending():
            ob.ack(r.seq)
        assert ob.stats().depth == 0
    with Outbox(db) as ob:
        assert ob.stats().next_seq == 4
        assert ob.add_window(builder()) == 4


def test_pending_is_oldest_first_and_limited(db: Path) -> None:
    with Outbox(db) as ob:
        for _ in range(5):
            ob.add_window(builder())
        ob.ack(2)
        assert [r.seq for r in ob.pending(limit=3)] == [1, 3, 4]
        first = ob.pending(limit=1)[0]
        assert first.kind == "counts"
        assert json.loads(first.payload.decode("utf-8")) == window(1)


def test_ack_is_idempotent(db: Path) -> None:
    with Outbox(db) as ob:
        ob.add_window(builder())
        ob.add_window(builder())
        ob.ack(1)
        ob.ack(1)
        ob.ack(99)
        ob.ack_many([])
        assert [r.seq for r in ob.pending()] == [2]
        assert ob.stats().depth == 1


def test_failed_build_stores_nothing_and_consumes_no_seq(db: Path) -> None:
    """add_window is one transaction: if building the payload fails, the seq is not burnt."""

    def broken(seq: int) -> dict[str, Any]:
        raise RuntimeError("boom")

    with Outbox(db) as ob:
        with pytest.raises(RuntimeError):
            ob.add_window(broken)
        with pytest.raises(ValueError, match="seq"):
            ob.add_window(lambda seq: window(seq + 1))
        assert ob.stats().depth == 0
        assert ob.add_window(builder()) == 1


def test_stats_report_depth_age_and_size(db: Path) -> None:
    with Outbox(db) as ob:
        e = ob.stats()
        assert (e.depth, e.oldest_created_s, e.merged_total, e.next_seq) == (0, None, 0, 1)
        ob.add_window(builder())
        ob.add_window(builder())
        st = ob.stats()
    assert st.depth == 2
    assert st.oldest_created_s is not None and st.oldest_created_s > T0
    assert st.db_bytes > 0


def test_closed_outbox_raises_storage_error(db: Path) -> None:
    ob = Outbox(db)
    ob.close()
    ob.close()
    with pytest.raises(StorageError, match="closed"):
        ob.pending()


def totals(payloads: list[dict[str, Any]]) -> dict[str, int]:
    return {
        "entries": sum(p["entries"] for p in payloads),
        "exits": sum(p["exits"] for p in payloads),
        "visitors": sum(p["visitors"] for p in payloads),
        "processed": sum(p["frames"]["processed"] for p in payloads),
        "dropped": sum(p["frames"]["dropped"] for p in payloads),
        "dwell": sum(p["dwell_s"]["count"] for p in payloads),
        "windows": sum(p.get("merged", 1) for p in payloads),
    }


def test_merge_on_row_cap_conserves_counts(db: Path) -> None:
    """Over max_rows the oldest windows are merged, never dropped: every count is conserved and
    every seq is accounted for by a delivered row or a 'merged' count."""
    originals = [window(i, entries=i % 4, exits=i % 3) for i in range(1, 26)]
    with Outbox(db, max_rows=10) as ob:
        for _ in originals:
            ob.add_window(lambda seq: window(seq, entries=seq % 4, exits=seq % 3))
        got = rows(ob)
        st = ob.stats()
    payloads = [p for _, p in got]
    assert len(got) == 10
    assert totals(payloads) == totals(originals)
    assert st.merged_total == 15 and st.next_seq == 26
    assert [s for s, _ in got] == list(range(16, 26))  # the merged row keeps the newer seq
    head = payloads[0]
    assert head["merged"] == 16 and head["seq"] == 16
    assert head["start"] == originals[0]["start"] and head["end"] == originals[15]["end"]
    assert head["occupancy"]["min"] == 0 and head["occupancy"]["max"] == 4
    assert head["occupancy"]["last"] == originals[15]["occupancy"]["last"]
    lo = min(o["dwell_s"]["p90"] for o in originals[:16])
    hi = max(o["dwell_s"]["p90"] for o in originals[:16])
    assert lo <= head["dwell_s"]["p90"] <= hi
    for p in payloads:
        validate("counts", p)
        assert find_forbidden(p) == []


def test_merged_total_survives_restart(db: Path) -> None:
    with Outbox(db, max_rows=2) as ob:
        for _ in range(5):
            ob.add_window(builder())
    with Outbox(db, max_rows=2) as ob:
        assert ob.stats().merged_total == 3


def test_merge_on_low_disk_stops_growth(db: Path) -> None:
    """Below min_free_mb each new window folds the two oldest into one, so the file stops
    growing. A floor far above any real disk's free space triggers it without filling a disk."""
    with Outbox(db, min_free_mb=10**9) as ob:
        for _ in range(6):
            ob.add_window(builder(entries=2))
        got = rows(ob)
        st = ob.stats()
    assert len(got) == 1
    ((seq, merged),) = got
    assert seq == 6 and merged["merged"] == 6 and merged["entries"] == 12
    assert merged["start"] == window(1)["start"] and merged["end"] == window(6)["end"]
    assert st.merged_total == 5
    validate("counts", merged)


def test_rows_handed_to_the_publisher_are_never_merged(db: Path) -> None:
    """Merging a window the publisher may already have sent into a later seq would count it
    twice; leased rows stay as they are until acked."""
    with Outbox(db, max_rows=3) as ob:
        ob.add_window(builder())
        ob.add_window(builder())
        leased = ob.pending(limit=2)
        for _ in range(6):
            ob.add_window(builder())
        got = ob.pending(limit=100)
        assert got[:2] == leased  # byte for byte
        assert len(got) == 3 and json.loads(got[2].payload)["merged"] == 6
        ob.ack(1)
        ob.ack(2)
        ob.add_window(builder())
        assert [r.seq for r in ob.pending()] == [8, 9]


def test_corrupt_file_raises_storage_error_and_is_left_untouched(db: Path) -> None:
    """A damaged outbox is never deleted or recreated silently: unsent windows may be salvaged."""
    db.parent.mkdir(parents=True)
    garbage = b"not a database, but maybe someone's data\n" * 200
    db.write_bytes(garbage)
    with pytest.raises(StorageError) as info:
        Outbox(db)
    assert str(db) in str(info.value) and "corrupt" in str(info.value)
    assert f"mv {db}" in info.value.hint
    assert db.read_bytes() == garbage
    assert sorted(p.name for p in db.parent.iterdir()) == ["outbox.db"]


def test_damaged_outbox_pages_are_detected_at_open(db: Path) -> None:
    with Outbox(db) as ob:
        for _ in range(100):
            ob.add_window(builder())
    data = bytearray(db.read_bytes())
    data[3 * 4096 : 5 * 4096] = bytes(range(256)) * 32  # scribble over two b-tree pages
    db.write_bytes(bytes(data))
    with pytest.raises(StorageError, match="corrupt") as info:
        Outbox(db)
    assert str(db) in str(info.value)
    assert db.read_bytes() == bytes(data)


def test_foreign_sqlite_database_is_refused(db: Path) -> None:
    import sqlite3

    db.parent.mkdir(parents=True)
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE customers (name TEXT)")
    conn.commit()
    conn.close()
    before = db.read_bytes()
    with pytest.raises(StorageError, match="not an anoncam outbox"):
        Outbox(db)
    assert db.read_bytes() == before


@contextlib.contextmanager
def read_only(path: Path) -> Iterator[None]:
    """Make ``path`` unwritable. chmod does not stop root, so as root use the immutable flag,
    which refuses writes like a read-only remount does (skip where the filesystem lacks it)."""
    if os.geteuid() != 0:
        mode = path.stat().st_mode
        path.chmod(0o555 if path.is_dir() else 0o444)
        try:
            yield
        finally:
            path.chmod(mode)
        return
    chattr = shutil.which("chattr")
    if chattr is None or subprocess.run([chattr, "+i", str(path)], capture_output=True).returncode:
        pytest.skip("root, and this filesystem cannot mark files immutable (chattr +i)")
    try:
        yield
    finally:
        subprocess.run([chattr, "-i", str(path)], check=True)


@pytest.mark.parametrize("existing", [False, True], ids=["new-db", "existing-db"])
def test_read_only_directory_raises_storage_error(db: Path, existing: bool) -> None:
    db.parent.mkdir(parents=True)
    if existing:
        with Outbox(db) as ob:
            ob.add_window(builder())
    before = db.read_bytes() if existing else None
    with read_only(db.parent), pytest.raises(StorageError) as info:
        Outbox(db)
    assert str(db) in str(info.value)
    assert "writable" in info.value.hint
    if existing:
        assert db.read_bytes() == before
        with Outbox(db) as ob:
            assert [r.seq for r in ob.pending()] == [1]


def test_read_only_database_file_raises_storage_error(db: Path) -> None:
    with Outbox(db) as ob:
        ob.add_window(builder())
    with read_only(db), pytest.raises(StorageError, match="cannot write"):
        Outbox(db)


def test_full_disk_raises_storage_error_and_keeps_stored_windows(db: Path) -> None:
    """SQLITE_FULL is what SQLite reports when the disk is full. SQLite's own page cap
    (max_page_count) produces that same error without filling a real disk."""
    with Outbox(db) as ob:
        ob.add_window(builder())
        conn = ob._conn
        assert conn is not None
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        conn.execute(f"PRAGMA max_page_count={pages}")
        big = "x" * 20_000  # needs new pages
        with pytest.raises(StorageError, match="disk full") as info:
            ob.add_window(lambda seq: {**window(seq), "padding": big})
        assert "df -h" in info.value.hint
        conn.execute("PRAGMA max_page_count=1073741823")
        assert [r.seq for r in ob.pending()] == [1]
        assert ob.add_window(builder()) == 2  # the failed window consumed no seq


def test_concurrent_writer_and_publisher(db: Path) -> None:
    """The frame loop appends while the publisher thread reads and acks: no error, no loss."""
    n = 150
    acked: list[int] = []
    errors: list[BaseException] = []
    done = threading.Event()
    with Outbox(db) as ob:

        def publisher() -> None:
            try:
                while not done.is_set() or ob.stats().depth:
                    for r in ob.pending(limit=7):
                        ob.ack(r.seq)
                        acked.append(r.seq)
            except BaseException as exc:  # surfaced below, in the test thread
                errors.append(exc)

        t = threading.Thread(target=publisher)
        t.start()
        written = [ob.add_window(builder()) for _ in range(n)]
        done.set()
        t.join(timeout=30)
    assert not errors
    assert written == list(range(1, n + 1))
    assert sorted(set(acked)) == written


CHILD = """
import sys
from pathlib import Path
from firmware.outbox import STREAM_PATTERN, Outbox
from firmware.contract import utc_iso

ob = Outbox(Path(sys.argv[1]))
while True:
    seq = ob.add_window(lambda s: {
        "schema": "anoncam/counts/1", "site": "s", "device": "d", "seq": s,
        "start": utc_iso(60 * s), "end": utc_iso(60 * s + 60), "entries": 1, "exits": 0,
        "visitors": 1, "occupancy": None, "dwell_s": {"count": 0, "p50": None, "p90": None},
        "frames": {"processed": 0, "dropped": 0}})
    print(seq, flush=True)
"""


def test_sigkill_mid_write_loses_no_committed_window(db: Path, tmp_path: Path) -> None:
    """A power cut or OOM kill: every window add_window returned for is there after reopening,
    seqs contiguous, and the counter continues without reuse. Three kills at random moments."""
    script = tmp_path / "writer.py"
    script.write_text(CHILD)
    reported = 0
    for _ in range(3):
        proc = subprocess.Popen(
            [sys.executable, str(script), str(db)], stdout=subprocess.PIPE, text=True
        )
        assert proc.stdout is not None
        new = 0
        while new < 40:
            line = proc.stdout.readline()
            assert line, "writer died before it was killed"
            assert int(line) > reported
            reported = int(line)
            new += 1
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        proc.stdout.close()
        with Outbox(db) as ob:
            got = rows(ob)
            seqs = [s for s, _ in got]
            assert seqs == list(range(1, len(seqs) + 1))
            assert len(seqs) >= reported
            assert all(p["seq"] == s for s, p in got)
            assert ob.stats().next_seq == len(seqs) + 1
            reported = len(seqs)


def test_bad_bounds_are_rejected(db: Path) -> None:
    with pytest.raises(ValueError, match="max_rows"):
        Outbox(db, max_rows=1)
    with pytest.raises(ValueError, match="min_free_mb"):
        Outbox(db, min_free_mb=-1)


# --------------------------------------------------------------------------- issue 12
def _meta(db: Path, sql: str, *args: Any) -> None:
    """Edit the outbox file behind anoncam's back, as a restored backup or a hand edit would."""
    conn = sqlite3.connect(db)
    with conn:
        conn.execute(sql, args)
    conn.close()


def test_stream_survives_reopen_and_changes_with_a_new_outbox(db: Path) -> None:
    """Issue 12, item 2: a new outbox restarts seq at 1, so subscribers dropped its windows as
    duplicates of the old outbox's. Each outbox now has a random stream id, kept with it."""
    with Outbox(db) as ob:
        first = ob.stream
        assert re.fullmatch(STREAM_PATTERN, first)
        ob.add_window(builder())
    with Outbox(db) as ob:
        assert ob.stream == first
        assert ob.stats().stream == first
    for suffix in ("", "-wal", "-shm"):
        with contextlib.suppress(FileNotFoundError):
            os.remove(f"{db}{suffix}")
    with Outbox(db) as ob:  # a card swap, a corrupt outbox moved aside
        assert ob.stream != first
        assert ob.add_window(builder()) == 1


@pytest.mark.parametrize("stored", [20, 1])
def test_next_seq_behind_the_rows_never_reuses_a_seq(db: Path, stored: int) -> None:
    """Issue 12, item 3: with a row seq 21 and next_seq 20, seq 21 went out twice with different
    content, and the next insert failed on UNIQUE (every later window lost)."""
    with Outbox(db) as ob:
        for _ in range(21):
            ob.add_window(builder())
        stream = ob.stream
    _meta(db, "UPDATE meta SET value = ? WHERE key = 'next_seq'", stored)
    with Outbox(db) as ob:
        assert ob.add_window(builder()) == 22
        assert ob.add_window(builder()) == 23
        assert ob.stream == stream  # the seqs skipped were used: the same stream continues
        assert [s for s, _ in rows(ob)] == list(range(1, 24))


def test_next_seq_behind_what_was_sent_never_reuses_a_seq(db: Path) -> None:
    """Issue 12, item 3: rows already acked are gone from the table, so max(seq) alone would
    hand seq 5 out again; the highest seq the broker acknowledged is kept for this."""
    with Outbox(db) as ob:
        for _ in range(5):
            ob.add_window(builder())
        ob.ack_many(r.seq for r in ob.pending())
    _meta(db, "UPDATE meta SET value = 2 WHERE key = 'next_seq'")
    with Outbox(db) as ob:
        assert ob.add_window(builder()) == 6


@pytest.mark.parametrize(
    "edit",
    [
        "DELETE FROM meta WHERE key = 'next_seq'",
        f"UPDATE meta SET value = {2**63 - 1} WHERE key = 'next_seq'",
        "UPDATE meta SET value = 'many' WHERE key = 'next_seq'",
        "UPDATE meta SET value = -4 WHERE key = 'next_seq'",
    ],
)
def test_missing_or_absurd_next_seq_starts_a_new_stream_after_every_known_seq(
    db: Path, edit: str
) -> None:
    """Issue 12, item 3: a missing next_seq restarted at 1 while rows remained; 2**63-1 was an
    OverflowError. Now the counter continues after every seq stored or sent, in a new stream
    (whatever was issued before cannot be confused with what comes next), and no window is lost."""
    with Outbox(db) as ob:
        for _ in range(4):
            ob.add_window(builder())
        ob.ack_many([1, 2])
        stream = ob.stream
    _meta(db, edit)
    with Outbox(db) as ob:
        assert ob.add_window(builder()) == 5
        assert ob.stream != stream
        assert ob.stats().next_seq == 6
        assert [s for s, _ in rows(ob)] == [3, 4, 5]


def test_an_outbox_without_a_stream_gets_one_and_keeps_its_seq(db: Path) -> None:
    """An outbox written before streams existed: the seq counter is trusted (it was kept), a
    stream is added."""
    with Outbox(db) as ob:
        for _ in range(3):
            ob.add_window(builder())
    _meta(db, "DROP TABLE notes")
    with Outbox(db) as ob:
        assert re.fullmatch(STREAM_PATTERN, ob.stream)
        assert ob.add_window(builder()) == 4


def test_a_new_identity_gets_a_new_stream_and_merges_stay_within_one(db: Path) -> None:
    """Issue 12, item 5: after a site/device rename the new device's windows must not continue
    the old device's; and merging (outbox over its bounds) must never fold old-id windows into
    a new-id row, which would publish the old device's counts under the new ids."""
    with Outbox(db, max_rows=4) as ob:
        old = ob.bind("store-042", "door-1")
        assert ob.bind("store-042", "door-1") == old
        for _ in range(2):
            ob.add_window(lambda seq: {**window(seq), "stream": ob.stream})
    with Outbox(db, max_rows=4) as ob:
        assert ob.stream == old
        new = ob.bind("store-042", "door-9")
        assert new != old and ob.stream == new
        for _ in range(5):
            ob.add_window(lambda seq: {**window(seq), "device": "door-9", "stream": ob.stream})
        got = rows(ob)
    by_device = {(p["device"], p["stream"]) for _, p in got}
    assert by_device == {("door-1", old), ("door-9", new)}
    olds = [p for _, p in got if p["device"] == "door-1"]
    assert sum(p.get("merged", 1) for p in olds) == 2  # only ever merged among themselves
    assert sum(p.get("merged", 1) for _, p in got) == 7


def test_io_error_on_a_full_disk_says_full_not_failing(tmp_path: Path) -> None:
    """Issue 12, item 6 (start-up): on a full filesystem SQLite reports the WAL/-shm files it
    cannot create as 'disk I/O error', and the outbox said the card may be failing. A real 512 kB
    tmpfs, filled to the last byte."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    with small_filesystem(tmp_path / "fs", "512k") as where:
        path = where / "state" / "outbox.sqlite3"
        with Outbox(path, min_free_mb=0) as ob:
            ob.add_window(builder())
        fill(where)
        with pytest.raises(StorageError, match="disk full") as info:
            Outbox(path, min_free_mb=0)
        assert "failing" not in info.value.message
        assert f"df -h {path.parent}" in info.value.hint
        os.remove(where / "fill")
        with Outbox(path, min_free_mb=0) as ob:
            assert [s for s, _ in rows(ob)] == [1]  # nothing lost


@contextlib.contextmanager
def small_filesystem(where: Path, size: str) -> Iterator[Path]:
    """A real tmpfs of ``size`` mounted at ``where`` (root only), unmounted afterwards."""
    where.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], check=True)
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=True)


def fill(where: Path) -> None:
    """Write a file until the filesystem is full."""
    fd = os.open(where / "fill", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        with contextlib.suppress(OSError):
            while True:
                os.write(fd, b"\0" * 4096)
        with contextlib.suppress(OSError):
            while True:
                os.write(fd, b"\0")
    finally:
        os.close(fd)
