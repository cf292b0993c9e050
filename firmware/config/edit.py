"""Save a new counting line into a TOML config file: validated, minimal, atomic.

The preview page lets an installer move the counting line and the inside point; this module
writes them back to the device's config file so they survive a restart.

- Minimal edit: only the ``line`` and ``inside`` key lines of the ``[counter]`` table are replaced
  (or inserted; a missing ``[counter]`` table is added). Every other line, comments and blank
  lines included, stays byte for byte. A comment at the end of a replaced line is kept.
- Validated twice: the whole resulting config must pass
  :func:`firmware.config.settings.from_dict`, and the edited text is parsed again and must equal
  exactly what was intended, so an unusual file
  layout (``counter = {...}`` inline tables, dotted ``counter.line`` keys) is refused with a
  :class:`ConfigError` instead of being written wrong.
- Atomic: written to a temporary file in the same directory, flushed to disk, given the
  original file's mode (and owner, when we may), then renamed over the original. A crash leaves
  either the old or the new file, never half of one. A symlinked config is edited at its target.
"""

from __future__ import annotations

import logging
import math
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from firmware.config.settings import Config, CounterConfig, from_dict
from firmware.errors import ConfigError
from firmware.fsutil import write_atomic

logger = logging.getLogger(__name__)

DECIMALS = 4  # 1/10000 of the frame: finer than a pixel at 4K, short in the file
_HEADER = re.compile(r"^\s*\[\[?\s*([^\]]*?)\s*\]\]?\s*(#.*)?$")
_FIELDS = {"line": 4, "inside": 2}


def _number(value: object, path: str, problems: list[tuple[str, str]]) -> float:
    # bool is an int in Python and "0.5" would be coerced by pydantic: refuse both explicitly.
    if isinstance(value, bool) or not isinstance(value, int | float):
        problems.append((path, f"expected a number, got {type(value).__name__}"))
        return 0.0
    try:
        number = float(value)  # an int of thousands of digits (valid JSON) has no float
    except OverflowError:
        problems.append((path, "number out of range (coordinates are from 0 to 1)"))
        return 0.0
    if not math.isfinite(number):
        problems.append((path, "expected a finite number"))
        return 0.0
    return round(number, DECIMALS)


def counter_update(update: Mapping[str, object]) -> dict[str, list[float]]:
    """Check the shape of ``{"line": [x1, y1, x2, y2], "inside": [x, y]}`` and round it.

    Raises :class:`ConfigError` whose ``problems`` name each bad field (``counter.line.2``).
    Range and geometry checks are left to the config types (see :func:`validate_counter`).
    """
    problems: list[tuple[str, str]] = []
    out: dict[str, list[float]] = {}
    for key in update:
        if key not in _FIELDS:
            problems.append(
                (f"counter.{key}", "unknown key (only 'line' and 'inside' can be set here)")
            )
    for key, count in _FIELDS.items():
        if key not in update:
            problems.append((f"counter.{key}", "missing"))
            continue
        value = update[key]
        if not isinstance(value, list | tuple) or len(value) != count:
            problems.append((f"counter.{key}", f"expected a list of {count} numbers"))
            continue
        out[key] = [_number(v, f"counter.{key}.{i}", problems) for i, v in enumerate(value)]
    if problems:
        raise ConfigError(
            "counter update rejected",
            problems=problems,
            hint='send {"line": [x1, y1, x2, y2], "inside": [x, y]} with coordinates from 0 to 1',
        )
    return out


def validate_counter(current: CounterConfig, update: Mapping[str, object]) -> CounterConfig:
    """The counter settings ``current`` would have after ``update``; ConfigError if invalid."""
    values = counter_update(update)
    merged = current.model_dump(mode="json") | values
    return from_dict({"counter": merged}, origin="counter update").counter


def _fmt(values: list[float]) -> str:
    return "[" + ", ".join(repr(v) for v in values) + "]"


def _value_extent(lines: list[str], start: int, end: int) -> int:
    """Index after the last line of the key/value at ``lines[start]`` (arrays may span lines)."""
    for stop in range(start + 1, end + 1):
        try:
            tomllib.loads("".join(lines[start:stop]))
        except tomllib.TOMLDecodeError:
            continue
        return stop
    return start + 1


def _trailing_comment(text: str) -> str:
    """The ``# comment`` ending a key's last line, with the spaces before it.

    Only numeric arrays reach this point (the config was validated first), so the first ``#``
    cannot be inside a string.
    """
    body = text.rstrip("\r\n")
    hash_at = body.find("#")
    if hash_at < 0:
        return ""
    before = body[:hash_at]
    return body[len(before.rstrip()) :]


def edit_counter_text(text: str, values: Mapping[str, list[float]]) -> str:
    """Return ``text`` with ``[counter]`` ``line``/``inside`` set to ``values``, all else kept."""
    lines = text.splitlines(keepends=True)
    if lines and not lines[-1].endswith(("\n", "\r")):
        lines[-1] += "\n"
    headers = [(i, m.group(1)) for i, line in enumerate(lines) if (m := _HEADER.match(line))]
    table = next((i for i, name in headers if name.replace(" ", "") == "counter"), None)
    if table is None:
        block = ["[counter]\n", *(f"{k} = {_fmt(v)}\n" for k, v in values.items())]
        # [counter] must come before its sub-tables ([[counter.zones]]) to read naturally.
        sub = next((i for i, name in headers if name.replace(" ", "").startswith("counter.")), None)
        if sub is None:
            if lines and lines[-1].strip():
                block.insert(0, "\n")
            return "".join(lines + block)
        return "".join(lines[:sub] + block + ["\n"] + lines[sub:])
    end = next((i for i, _ in headers if i > table), len(lines))
    missing = dict(values)
    i = table + 1
    while i < end:
        m = re.match(r"^(\s*)(line|inside)\s*=", lines[i])
        if m is None or m.group(2) not in missing:
            i += 1
            continue
        stop = _value_extent(lines, i, end)
        comment = _trailing_comment(lines[stop - 1])
        new = f"{m.group(1)}{m.group(2)} = {_fmt(missing.pop(m.group(2)))}{comment}\n"
        lines[i:stop] = [new]
        end -= stop - i - 1
        i += 1
    if missing:
        last = table
        for j in range(table + 1, end):
            if lines[j].strip() and not lines[j].lstrip().startswith("#"):
                last = _value_extent(lines, j, end) - 1
        lines[last + 1 : last + 1] = [f"{k} = {_fmt(v)}\n" for k, v in missing.items()]
    return "".join(lines)


def save_counter(path: Path, update: Mapping[str, object]) -> Config:
    """Set ``counter.line`` and ``counter.inside`` in the TOML file ``path``; return the new Config.

    Raises :class:`ConfigError` (with the dotted path of each problem) when the update or the
    resulting file would be invalid, or the file cannot be read or edited safely, and
    :class:`OutputError` when it cannot be written. The file is unchanged on any error.
    """
    values = counter_update(update)
    target = Path(path).resolve()
    try:
        text = target.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            f"{path}: config file not found", hint="create it or start with --config FILE"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(
            f"{path}: cannot read config: {exc}", hint="check the file's permissions"
        ) from None
    try:
        data: dict[str, Any] = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(
            f"{path}: not valid TOML: {exc}", hint="fix the TOML syntax at the given line"
        ) from None
    counter = data.get("counter", {})
    if not isinstance(counter, dict):
        raise ConfigError(
            f"{path}: counter is not a table",
            problems=[("counter", "expected a table")],
            hint="write the counter settings as a [counter] table",
        )
    intended = data | {"counter": counter | values}
    config = from_dict(intended, origin=str(path))

    new_text = edit_counter_text(text, values)
    try:
        reread = tomllib.loads(new_text)
    except tomllib.TOMLDecodeError as exc:
        reread = {"error": str(exc)}
    if reread != intended:
        raise ConfigError(
            f"{path}: cannot edit the counter settings safely in this file's layout",
            hint="write them as 'line = [...]' and 'inside = [...]' under a [counter] table, "
            "then retry",
        )
    # Keeps the file's owner and mode; an OutputError names the file and what to check.
    write_atomic(target, new_text.encode("utf-8"), what="config", keep_owner=True)
    logger.info("saved counter line %s inside %s to %s", values["line"], values["inside"], path)
    return config
