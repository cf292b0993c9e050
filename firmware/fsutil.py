"""Atomic file writes with an exact mode, skipping files whose content is already right.

Shared by everything that writes a whole file at once: models, snapshots, provisioning's
secrets and card files. (Streams, such as videos and the support bundle, write their own
temporary file and rename it the same way.)"""

from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path

from firmware.errors import OutputError


def write_atomic(path: Path, data: bytes, *, mode: int = 0o644) -> bool:
    """Write ``data`` to ``path`` via a temp file created with ``mode``; return True if it changed.

    The temp file is created with the final mode, so a secret is never briefly world-readable,
    and renamed over the target, so a crash leaves the old or the new file, never half of one.
    An identical file is left untouched (mode fixed if needed), which keeps re-runs idempotent.
    """
    try:
        if path.is_file() and path.read_bytes() == data:
            if stat.S_IMODE(path.stat().st_mode) != mode:
                os.chmod(path, mode)
            return False
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(
            f"{path}: cannot write ({exc.strerror})", hint="check the folder exists and is writable"
        ) from None
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)  # the umask may have narrowed it
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise OutputError(
            f"{path}: cannot write ({exc.strerror})",
            hint="check free space and permissions of the folder",
        ) from None
    return True
