"""Atomic file writes with an exact mode (skipping files already right), and file hashes.

Shared by everything that writes a whole file at once: models, snapshots, provisioning's
secrets and card files. (Streams, such as videos and the support bundle, write their own
temporary file and rename it the same way.)"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import stat
from pathlib import Path

from firmware.errors import OutputError


def write_atomic(
    path: Path,
    data: bytes,
    *,
    mode: int = 0o644,
    what: str = "",
    make_parents: bool = True,
    keep_owner: bool = False,
) -> bool:
    """Write ``data`` to ``path`` via a temp file created with ``mode``; return True if it changed.

    The temp file is created with the final mode, so a secret is never briefly world-readable,
    and renamed over the target, so a crash leaves the old or the new file, never half of one.
    An identical file is left untouched (mode fixed if needed), which keeps re-runs idempotent.
    ``what`` names the kind of file in errors ("image"); ``make_parents=False`` refuses a missing
    folder instead of creating it (a user's typo in an output path should not grow a tree).
    ``keep_owner=True`` gives the new file the existing file's mode and, where we may, its owner
    (a config edited by the service must stay readable by whoever owned it).
    """
    label = f"cannot write {what}".rstrip()
    try:
        if path.is_file() and path.read_bytes() == data:
            if stat.S_IMODE(path.stat().st_mode) != mode:
                os.chmod(path, mode)
            return False
        if make_parents:
            path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(
            f"{path}: {label} ({exc.strerror})", hint="check the folder exists and is writable"
        ) from None
    owner: tuple[int, int] | None = None
    if keep_owner:
        with contextlib.suppress(FileNotFoundError):
            st = path.stat()
            mode, owner = stat.S_IMODE(st.st_mode), (st.st_uid, st.st_gid)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)  # the umask may have narrowed it
        if owner is not None and owner != (os.getuid(), os.getgid()):
            # Only root may give a file away; otherwise the file keeps at least its mode.
            with contextlib.suppress(PermissionError):
                os.chown(tmp, *owner)
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except OSError as exc:
        with contextlib.suppress(OSError):  # a read-only folder refuses even this
            tmp.unlink(missing_ok=True)
        raise OutputError(
            f"{path}: {label} ({exc.strerror})",
            hint="check that the folder exists, is writable and the disk is not full",
        ) from None
    return True


def _fsync_dir(folder: Path) -> None:
    """Make a rename durable across a power cut (the directory entry is data too)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        with contextlib.suppress(OSError):  # some filesystems refuse fsync on a directory
            os.fsync(fd)
    finally:
        os.close(fd)


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB blocks (models and bundles are large)."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
