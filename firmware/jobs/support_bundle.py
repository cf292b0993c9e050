"""The support bundle: one ``.tar.gz`` a field tech sends to support, with nothing secret in it.

What goes in (under one top folder)::

    README.txt       what is in the bundle and what was left out on purpose
    manifest.json    members with sizes and SHA-256, how each part was obtained
    diagnose.json    the full diagnosis (firmware/schemas/diagnose.schema.json)
    versions.json    anoncam, Python, numpy, onnxruntime, PyAV, paho-mqtt, pydantic, OS, kernel
    config.json      the effective config, secrets redacted
    journal.txt      the service's last 500 journal lines, secret-looking values scrubbed
    outbox.json      outbox statistics (depth, age of the oldest window, merges); never payloads
    snapshot.jpg     only with ``with_snapshot``: one anonymized frame

What never goes in: the contents of any file a config key points at for a secret
(``password_file``, ``token_file``, ``key_file``: not even read), the raw config file (its
comments could hold anything), any key named like password/secret/token/key (its value is
replaced by ``"<redacted>"``; only whether the file exists and its permissions are kept), count
payloads, and images unless asked for. Every value that was redacted from the config is also
scrubbed from every other member (a check's detail may name the password file's path).

The archive is written to a temporary file next to the target, synced, then renamed over it, with
mode 0600: a half-written bundle never appears under the final name.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import io
import json
import logging
import os
import platform
import re
import sqlite3
import stat
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from firmware import __version__
from firmware.config.settings import Config
from firmware.device.host import Host
from firmware.diagnostics.suite import host_facts
from firmware.errors import AnoncamError, OutputError
from firmware.outbox import outbox_path, read_stats

logger = logging.getLogger(__name__)

REDACTED = "<redacted>"
JOURNAL_LINES = 500

#: Distributions whose versions support asks for first.
PACKAGES = (
    "anoncam",
    "numpy",
    "onnxruntime",
    "av",
    "paho-mqtt",
    "pydantic",
    "picamera2",
    "simplejpeg",
    "jsonschema",
)

# A key is secret when one of its '_'-separated words is one of these: "password_file" and
# "key_file" are, "keepalive_s" is not.
_SECRET_WORDS = frozenset(
    {
        "password",
        "passwd",
        "passphrase",
        "secret",
        "token",
        "key",
        "credential",
        "credentials",
        "apikey",
        "psk",
    }
)
# In free text (journal lines, details): "password=hunter2", "token: abc".
_SECRET_ASSIGNMENT = re.compile(
    r"(?i)\b((?:mqtt[_-]?)?(?:password|passwd|passphrase|secret|token|api[_-]?key)s?)"
    r"(\s*[=:]\s*)(\"[^\"]*\"|'[^']*'|\S+)"
)


def is_secret_key(name: str) -> bool:
    return any(word in _SECRET_WORDS for word in re.split(r"[_\-.\s]+", name.lower()))


def _file_facts(value: Any) -> dict[str, Any]:
    """Whether a secret file exists and how it is protected; never its contents or its name."""
    if not isinstance(value, str):
        return {"set": False}
    try:
        st = os.stat(value)
    except OSError:
        return {"set": True, "exists": False}
    return {
        "set": True,
        "exists": True,
        "mode": f"{stat.S_IMODE(st.st_mode):04o}",
        "readable_by_others": bool(st.st_mode & (stat.S_IRGRP | stat.S_IROTH)),
    }


def redact(data: Any, *, path: str = "", found: dict[str, Any] | None = None) -> Any:
    """A copy of ``data`` with every secret-named key's value replaced by :data:`REDACTED`.

    ``found`` collects, per dotted path, the redacted value (for scrubbing it elsewhere).
    """
    if isinstance(data, dict):
        out: dict[str, Any] = {}
        for key, value in data.items():
            child = f"{path}.{key}" if path else str(key)
            if is_secret_key(str(key)) and value is not None:
                if found is not None:
                    found[child] = value
                out[key] = REDACTED
            else:
                out[key] = redact(value, path=child, found=found)
        return out
    if isinstance(data, list):
        return [redact(v, path=f"{path}[{i}]", found=found) for i, v in enumerate(data)]
    return data


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return []


class Scrubber:
    """Removes redacted values and ``password=…``-style assignments from free text."""

    def __init__(self, values: list[str]) -> None:
        # Longest first, so a path is removed before a shorter value that is part of it.
        self.values = sorted({v for v in values if len(v) >= 4}, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for value in self.values:
            text = text.replace(value, REDACTED)
        return _SECRET_ASSIGNMENT.sub(lambda m: f"{m.group(1)}{m.group(2)}{REDACTED}", text)


def config_document(config: Config, config_path: Path | None) -> tuple[dict[str, Any], Scrubber]:
    """The redacted effective config, and a scrubber for the values taken out of it."""
    found: dict[str, Any] = {}
    effective = redact(config.model_dump(mode="json"), found=found)
    secret_files = {
        dotted: _file_facts(value) for dotted, value in found.items() if dotted.endswith("_file")
    }
    doc = {
        "path": None if config_path is None else str(config_path),
        "found": config_path is not None,
        "effective": effective,
        "secret_files": secret_files,
        "redacted": sorted(found),
        "note": "effective config (file merged with defaults); values of secret-named keys "
        "are redacted and the files they name were not read",
    }
    values = [s for v in found.values() for s in _strings(v)]
    return doc, Scrubber(values)


def versions(host: Host) -> dict[str, Any]:
    packages: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            packages[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            packages[name] = None
    packages["anoncam"] = packages["anoncam"] or __version__
    facts = host_facts(host)
    return {
        "anoncam": __version__,
        "python": sys.version.split()[0],
        "python_implementation": platform.python_implementation(),
        "machine": platform.machine(),
        "packages": packages,
        "os": facts["os"],
        "kernel": facts["kernel"],
        "model": facts["model"],
        "hardware": facts["hardware"],
    }


def journal(host: Host, lines: int = JOURNAL_LINES) -> tuple[str | None, str]:
    """(journal text or None, how it was obtained or why not)."""
    result = host.command(
        "journalctl", "-u", "anoncam", "-n", str(lines), "--no-pager", timeout=30.0
    )
    if result is None:
        return None, "journalctl not installed (no systemd journal on this machine)"
    if not result.ok:
        return None, f"journalctl failed: {result.first_error_line()}"
    note = f"journalctl -u anoncam -n {lines} --no-pager"
    if "not seeing messages from other users" in result.stdout + result.stderr:
        note += " (run without root: the service's lines may be missing; rerun with sudo)"
    return result.stdout, note


def outbox_statistics(config: Config) -> dict[str, Any]:
    path = outbox_path(config.state_dir)
    if not path.exists():
        return {"path": str(path), "exists": False}
    try:
        stats = read_stats(path)
    except (OSError, ValueError, sqlite3.Error) as exc:  # the bundle is still worth writing
        return {"path": str(path), "exists": True, "error": f"{type(exc).__name__}: {exc}"}
    now = time.time()
    return {
        "path": str(path),
        "exists": True,
        "depth": stats.depth,
        "oldest_unsent_age_s": None
        if stats.oldest_created_s is None
        else round(max(0.0, now - stats.oldest_created_s), 1),
        "merged_total": stats.merged_total,
        "next_seq": stats.next_seq,
        "db_bytes": stats.db_bytes,
    }


@dataclass(frozen=True)
class BundleResult:
    path: Path
    members: list[str]
    snapshot_included: bool
    snapshot_error: str | None


_README = """\
anoncam support bundle
======================

Made by 'anoncam support-bundle' on {hostname} at {generated}.

  diagnose.json  the full 'anoncam diagnose --json' output
  versions.json  software versions, OS and hardware
  config.json    the effective configuration; secret values redacted
  journal.txt    the last {lines} lines of the service's journal (secret-looking values scrubbed)
  outbox.json    outbox statistics only (how many windows wait, how old the oldest is)
  manifest.json  the list of members with SHA-256
{snapshot_line}
Left out on purpose: password, token and key files (never read), the raw config file,
count payloads{image_note}.
"""


def build_bundle(
    output: Path,
    *,
    config: Config,
    config_path: Path | None,
    report: dict[str, Any],
    host: Host | None = None,
    with_snapshot: bool = False,
    snapshot: Callable[[Config], bytes] | None = None,
) -> BundleResult:
    """Write the support bundle to ``output`` atomically with mode 0600.

    ``report`` is the diagnose JSON (a dict). ``snapshot`` takes the config and returns one
    anonymized JPEG; by default :func:`firmware.jobs.snapshot.take_snapshot`, imported only when
    ``with_snapshot`` is set. A failing snapshot does not stop the bundle: the failure is
    recorded in the manifest and in :attr:`BundleResult.snapshot_error`.
    """
    host = host or Host()
    output = Path(output)
    generated = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    config_doc, scrub = config_document(config, config_path)
    members: dict[str, bytes] = {}

    def add_json(name: str, data: Any) -> None:
        members[name] = scrub(json.dumps(data, indent=2, ensure_ascii=False) + "\n").encode()

    add_json("diagnose.json", report)
    add_json("versions.json", versions(host))
    add_json("config.json", config_doc)
    journal_text, journal_note = journal(host)
    if journal_text is not None:
        members["journal.txt"] = scrub(journal_text).encode("utf-8", errors="replace")
    add_json("outbox.json", outbox_statistics(config))

    snapshot_error: str | None = None
    if with_snapshot:
        try:
            if snapshot is None:
                from firmware.jobs.snapshot import take_snapshot

                snapshot = take_snapshot
            jpeg = snapshot(config)
            if not jpeg.startswith(b"\xff\xd8"):
                raise OutputError("the snapshot is not a JPEG", hint="report this as a bug")
            members["snapshot.jpg"] = jpeg
        except AnoncamError as exc:
            snapshot_error = f"{exc.message} (fix: {exc.hint})" if exc.hint else exc.message
        except ImportError as exc:
            snapshot_error = f"snapshots are not available in this build ({exc})"

    facts = report.get("host", {}) if isinstance(report.get("host"), dict) else {}
    snapshot_line = (
        "  snapshot.jpg   one anonymized frame (asked for with --with-snapshot)\n"
        if "snapshot.jpg" in members
        else ""
    )
    members["README.txt"] = _README.format(
        hostname=facts.get("hostname") or "?",
        generated=generated,
        lines=JOURNAL_LINES,
        snapshot_line=snapshot_line,
        image_note="" if "snapshot.jpg" in members else ", and any image",
    ).encode()
    manifest = {
        "schema": "anoncam/support-bundle/1",
        "generated": generated,
        "anoncam": __version__,
        "members": {
            name: {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
            for name, data in sorted(members.items())
        },
        "journal": journal_note,
        "snapshot": {
            "asked": with_snapshot,
            "included": "snapshot.jpg" in members,
            "error": snapshot_error,
        },
        "redacted_keys": config_doc["redacted"],
    }
    add_json("manifest.json", manifest)

    top = _top_folder(config, generated)
    _write_atomic(output, top, members)
    logger.info("wrote support bundle %s (%d members)", output, len(members))
    return BundleResult(
        output, [f"{top}/{n}" for n in sorted(members)], "snapshot.jpg" in members, snapshot_error
    )


def _top_folder(config: Config, generated: str) -> str:
    stamp = generated.replace("-", "").replace(":", "")
    return f"anoncam-support-{config.site}-{config.device}-{stamp}"


def _write_atomic(output: Path, top: str, members: dict[str, bytes]) -> None:
    directory = output.parent if str(output.parent) else Path(".")
    if not directory.is_dir():
        raise OutputError(
            f"{output}: folder {directory} does not exist", hint="create it or pass another -o path"
        )
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{output.name}.", suffix=".partial", dir=directory)
    except OSError as exc:
        raise OutputError(
            f"{output}: cannot create a file in {directory}: {exc.strerror}",
            hint="pass an -o path in a writable folder",
        ) from None
    try:
        os.fchmod(fd, 0o600)  # mkstemp already makes it 0600; say so explicitly for the reader
        with os.fdopen(fd, "wb") as raw:
            with tarfile.open(fileobj=raw, mode="w:gz") as tar:
                now = int(time.time())
                for name, data in sorted(members.items()):
                    info = tarfile.TarInfo(f"{top}/{name}")
                    info.size = len(data)
                    info.mtime = now
                    info.mode = 0o600
                    info.uname = info.gname = "anoncam"
                    tar.addfile(info, io.BytesIO(data))
            raw.flush()
            os.fsync(raw.fileno())
        os.replace(tmp, output)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise OutputError(
            f"{output}: cannot write the bundle: {exc.strerror or exc}",
            hint="free disk space or pass another -o path",
        ) from None
    with contextlib.suppress(OSError):  # the rename is durable once the folder is synced
        dir_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
