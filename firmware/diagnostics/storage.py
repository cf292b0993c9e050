"""Storage: free space in the state directory, a read-only or failing card, the outbox backlog.

An SD card that develops errors is remounted read-only by the kernel; the outbox then cannot
store windows and counts stop. That is found two ways: the filesystem's read-only flag
(``statvfs``), and writing, syncing and deleting a small temp file (which also catches EIO from a
dying card and a full disk).

The outbox is opened read-only (``mode=ro``): diagnosing must never create an outbox, change its
journal mode or take its write lock while the service is running.
"""

from __future__ import annotations

import contextlib
import errno
import os
import sqlite3
import tempfile
import time
from pathlib import Path

from firmware.diagnostics.base import Check, Context, fail, ok, skip, warn
from firmware.outbox import outbox_path, read_stats

NAMES = ("storage.space", "storage.writable", "storage.outbox")

#: The outbox database's file name inside ``state_dir``.

_HINT_READONLY = (
    "the kernel remounts a filesystem read-only after I/O errors, typically a worn SD card: "
    "check 'dmesg | grep -iE \"mmc|ext4\"' and 'findmnt -T {dir}', back up and replace the card"
)


def _human_bytes(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"  # pragma: no cover


def _human_age(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def _existing_ancestor(path: Path) -> Path:
    p = path
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def check_space(ctx: Context) -> Check:
    name = "storage.space"
    state_dir = Path(ctx.config.state_dir)
    where = _existing_ancestor(state_dir)
    try:
        st = os.statvfs(where)
    except OSError as exc:
        return fail(
            name,
            f"cannot read free space of {where}: {exc.strerror}",
            f"check that {state_dir} is mounted and readable",
        )
    free = st.f_bavail * st.f_frsize
    total = st.f_blocks * st.f_frsize
    min_free = ctx.config.outbox.min_free_mb * 1024 * 1024
    figures = {
        "path": str(state_dir),
        "free_bytes": free,
        "total_bytes": total,
        "min_free_bytes": min_free,
        "exists": state_dir.exists(),
    }
    detail = (
        f"{_human_bytes(free)} free of {_human_bytes(total)} in {where} "
        f"(outbox.min_free_mb = {ctx.config.outbox.min_free_mb})"
    )
    hint = (
        "free space on that filesystem ('du -xh / | sort -h | tail' finds the culprits; "
        "old logs: 'journalctl --vacuum-size=50M'), or lower outbox.min_free_mb"
    )
    if free < min_free:
        return fail(
            name, f"{detail}: below the minimum, the outbox is merging old windows", hint, **figures
        )
    if free < 2 * min_free:
        return warn(name, f"{detail}: close to the minimum", hint, **figures)
    if not state_dir.exists():
        return warn(
            name,
            f"{state_dir} does not exist yet; {detail}",
            "the service creates it on first start (systemd StateDirectory=anoncam); "
            "check state_dir in the config",
            **figures,
        )
    return ok(name, detail, **figures)


def check_writable(ctx: Context) -> Check:
    name = "storage.writable"
    state_dir = Path(ctx.config.state_dir)
    if not state_dir.is_dir():
        return skip(name, f"{state_dir} does not exist: nothing to test")
    hint_ro = _HINT_READONLY.format(dir=state_dir)
    try:
        read_only = bool(os.statvfs(state_dir).f_flag & os.ST_RDONLY)
    except OSError as exc:
        return fail(name, f"cannot stat {state_dir}: {exc.strerror}", hint_ro)
    if read_only:
        return fail(
            name,
            f"the filesystem holding {state_dir} is mounted read-only",
            hint_ro,
            read_only=True,
        )
    path: str | None = None
    try:
        fd, path = tempfile.mkstemp(prefix=".anoncam-diagnose-", dir=state_dir)
        try:
            os.write(fd, b"\0" * 4096)
            os.fsync(fd)  # reaches the card: a dying card fails here with EIO
        finally:
            os.close(fd)
        os.unlink(path)
        path = None
    except OSError as exc:
        code = exc.errno
        if code == errno.EROFS:
            return fail(name, f"{state_dir}: read-only filesystem", hint_ro, read_only=True)
        if code == errno.EIO:
            return fail(
                name,
                f"{state_dir}: I/O error writing a test file: the storage is failing",
                hint_ro,
                read_only=False,
                io_error=True,
            )
        if code == errno.ENOSPC:
            return fail(name, f"{state_dir}: disk full", "free space on that filesystem")
        if code in (errno.EACCES, errno.EPERM):
            user = _user_name()
            return warn(
                name,
                f"{state_dir} is not writable by {user} (the service writes as 'anoncam')",
                "run diagnose with sudo to test it as root, or check the directory's owner "
                f"('ls -ld {state_dir}' should show anoncam)",
                read_only=False,
            )
        return fail(name, f"{state_dir}: cannot write a test file: {exc.strerror}", hint_ro)
    finally:
        if path is not None:
            with contextlib.suppress(OSError):
                os.unlink(path)
    return ok(
        name,
        f"{state_dir} is writable (a 4 kB test file was written, synced and removed)",
        read_only=False,
    )


def _user_name() -> str:
    try:
        import pwd

        return f"user '{pwd.getpwuid(os.geteuid()).pw_name}'"
    except (ImportError, KeyError):
        return f"uid {os.geteuid()}"


def check_outbox(ctx: Context, *, now: float | None = None) -> Check:
    name = "storage.outbox"
    path = outbox_path(ctx.config.state_dir)
    if not path.exists():
        return ok(
            name,
            f"no outbox yet ({path} is created when the first window closes)",
            depth=0,
            path=str(path),
        )
    try:
        stats = read_stats(path)
    except ValueError as exc:
        return fail(
            name,
            f"{path} is not an anoncam outbox ({exc})",
            "point state_dir at a directory of its own",
            path=str(path),
        )
    except sqlite3.Error as exc:
        text = str(exc)
        if "locked" in text or "busy" in text:
            return warn(
                name, f"{path} is locked ({text})", "try again in a few seconds", path=str(path)
            )
        if "unable to open" in text or "readonly" in text:
            return warn(
                name,
                f"cannot open {path} read-only ({text})",
                "run diagnose with sudo (the file belongs to the service user)",
                path=str(path),
            )
        return fail(
            name,
            f"{path}: cannot read the outbox ({text})",
            f"the database may be corrupt: stop anoncam and move it aside "
            f"('mv {path} {path}.corrupt'); a new one is created on start",
            path=str(path),
        )
    window = ctx.config.windows.seconds
    now = time.time() if now is None else now
    age = None if stats.oldest_created_s is None else max(0.0, now - stats.oldest_created_s)
    figures = {
        "path": str(path),
        "depth": stats.depth,
        "oldest_unsent_age_s": age,
        "merged_total": stats.merged_total,
        "next_seq": stats.next_seq,
        "db_bytes": stats.db_bytes,
        "window_s": window,
    }
    merged = f"; {stats.merged_total} window(s) merged so far" if stats.merged_total else ""
    if age is None:
        return ok(
            name,
            f"empty: every window has been published (next seq {stats.next_seq}){merged}",
            **figures,
        )
    detail = f"{stats.depth} window(s) waiting, the oldest {_human_age(age)} old{merged}"
    if age > 2 * window:
        cause = "the publisher is not getting windows to the broker"
        hint = (
            "see the mqtt checks and 'journalctl -u anoncam'; nothing is lost, the "
            "backlog is sent when the broker is reachable"
        )
        if ctx.config.mqtt.keep_until_subscribed:
            # the broker may be fine: a window also waits here while nobody subscribes to it
            cause += (
                ", or no subscriber takes them (mqtt.keep_until_subscribed holds each window "
                "until one does)"
            )
            hint = (
                "see the mqtt checks: if they pass, start the subscriber that stores the counts "
                "('anoncam subscribe' or your own) or check its subscription; otherwise see "
                "'journalctl -u anoncam'; nothing is lost, the backlog is sent when both are "
                "there"
            )
        return warn(name, f"{detail}: {cause}", hint, **figures)
    return ok(name, detail, **figures)


def run(ctx: Context) -> list[Check]:
    return [check_space(ctx), check_writable(ctx), check_outbox(ctx)]
