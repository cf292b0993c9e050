"""Storage checks on real directories and a real outbox (SQLite), opened read-only."""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path

import pytest

from firmware.config.settings import Config
from firmware.diagnostics import Context, Host, Status, storage
from firmware.outbox import OUTBOX_FILENAME, Outbox, read_stats

HOSTS = Path(__file__).resolve().parents[1] / "data" / "hosts"


def ctx(state_dir: Path, **extra: object) -> Context:
    data: dict[str, object] = {"state_dir": str(state_dir)}
    data.update(extra)
    return Context(Config.model_validate(data), Host(HOSTS / "x86" / "root"))


def window(seq: int) -> dict[str, object]:
    return {"schema": "anoncam/counts/1", "seq": seq, "entries": 1, "exits": 0}


def test_space_and_writable_ok(tmp_path: Path) -> None:
    c = ctx(tmp_path)
    space = storage.check_space(c)
    assert space.status == Status.OK
    assert space.figures["free_bytes"] > 0 and space.figures["min_free_bytes"] == 50 * 1024 * 1024
    writable = storage.check_writable(c)
    assert writable.status == Status.OK
    assert list(tmp_path.iterdir()) == []  # the test file is gone


def test_space_below_min_free_fails(tmp_path: Path) -> None:
    """Free space under outbox.min_free_mb FAILs: the outbox is merging windows already."""
    st = os.statvfs(tmp_path)
    free_mb = st.f_bavail * st.f_frsize // (1024 * 1024)
    if free_mb + 1 > 100_000:
        pytest.skip("more free space than outbox.min_free_mb can be set to")
    check = storage.check_space(ctx(tmp_path, outbox={"min_free_mb": free_mb + 1}))
    assert check.status == Status.FAIL and "merging" in check.detail


def test_missing_state_dir_warns_and_skips_the_write_test(tmp_path: Path) -> None:
    c = ctx(tmp_path / "not" / "yet")
    space = storage.check_space(c)
    assert space.status == Status.WARN and "does not exist yet" in space.detail
    assert storage.check_writable(c).status == Status.SKIP


def _read_only_mount() -> Path | None:
    for line in Path("/proc/mounts").read_text().splitlines():
        fields = line.split()
        if (
            len(fields) >= 4
            and "ro" in fields[3].split(",")
            and Path(fields[1]).is_dir()
            and os.statvfs(fields[1]).f_flag & os.ST_RDONLY
        ):
            return Path(fields[1])
    return None


def test_read_only_filesystem_fails() -> None:
    """A state_dir on a read-only mount (what the kernel does to a failing SD card) FAILs with
    the card hint."""
    mount = _read_only_mount()
    if mount is None:
        pytest.skip("no read-only mount on this machine to test against")
    check = storage.check_writable(ctx(mount))
    assert check.status == Status.FAIL and "read-only" in check.detail
    assert "SD card" in check.hint or "card" in check.hint


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes anywhere")
def test_unwritable_as_this_user_warns(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    check = storage.check_writable(ctx(locked))
    assert check.status == Status.WARN and "sudo" in check.hint


def test_no_outbox_yet_is_ok_and_not_created(tmp_path: Path) -> None:
    """Diagnosing never creates the outbox (the service owns it)."""
    check = storage.check_outbox(ctx(tmp_path))
    assert check.status == Status.OK and "no outbox yet" in check.detail
    assert not (tmp_path / OUTBOX_FILENAME).exists()


def test_outbox_backlog_older_than_two_windows_warns(tmp_path: Path) -> None:
    """Three windows waiting, the oldest 10 minutes old with 60 s windows: the publisher is not
    getting through (WARN); read through a read-only connection while the outbox is open."""
    path = tmp_path / OUTBOX_FILENAME
    with Outbox(path) as box:
        for _ in range(3):
            box.add_window(window)
        now = time.time()
        with sqlite3.connect(path) as conn:  # age the rows as if the broker was down for 10 min
            conn.execute("UPDATE outbox SET created_s = ? WHERE seq = 1", (now - 600,))
        check = storage.check_outbox(ctx(tmp_path), now=now)
        assert check.status == Status.WARN, check.detail
        assert check.figures["depth"] == 3
        assert check.figures["oldest_unsent_age_s"] == pytest.approx(600, abs=1)
        assert check.figures["next_seq"] == 4
        assert "10 min" in check.detail
        # held for a subscriber (the default) is one cause the tech is told about
        assert "no subscriber takes them" in check.detail and "anoncam subscribe" in check.hint
        plain = storage.check_outbox(ctx(tmp_path, mqtt={"keep_until_subscribed": False}), now=now)
        assert plain.status == Status.WARN and "subscriber" not in plain.detail + plain.hint
        assert "broker is reachable" in plain.hint
        box.ack_many([1, 2, 3])
        drained = storage.check_outbox(ctx(tmp_path), now=now)
        assert drained.status == Status.OK and "empty" in drained.detail


def test_recent_backlog_is_ok(tmp_path: Path) -> None:
    path = tmp_path / OUTBOX_FILENAME
    with Outbox(path) as box:
        box.add_window(window)
    check = storage.check_outbox(ctx(tmp_path))
    assert check.status == Status.OK and "1 window(s) waiting" in check.detail


def test_reading_stats_does_not_write(tmp_path: Path) -> None:
    """The read-only open leaves the database byte for byte as it was."""
    path = tmp_path / OUTBOX_FILENAME
    with Outbox(path) as box:
        box.add_window(window)
    before = path.read_bytes()
    stats = read_stats(path)
    assert stats.depth == 1 and path.read_bytes() == before


def test_foreign_database_fails(tmp_path: Path) -> None:
    path = tmp_path / OUTBOX_FILENAME
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE other (x)")
    check = storage.check_outbox(ctx(tmp_path))
    assert check.status == Status.FAIL and "not an anoncam outbox" in check.detail


def test_corrupt_outbox_fails_with_move_aside_hint(tmp_path: Path) -> None:
    (tmp_path / OUTBOX_FILENAME).write_bytes(b"this is not sqlite" * 100)
    check = storage.check_outbox(ctx(tmp_path))
    assert check.status == Status.FAIL and ".corrupt" in check.hint
