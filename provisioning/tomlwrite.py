"""A small TOML writer for the configs we generate (tomllib reads, but cannot write).

Handles what a device config holds: strings, booleans, integers, floats, arrays of scalars or of
arrays, nested tables and arrays of tables. Keys must be bare keys. Output is deterministic
(insertion order), so a re-run writes byte-identical files.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def _key(k: str) -> str:
    if not _BARE_KEY.match(k):
        raise ValueError(f"TOML key {k!r} is not a bare key")
    return k


def _value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        text = repr(v)
        return text if any(c in text for c in ".en") else text + ".0"
    if isinstance(v, str):
        # A JSON string is a valid TOML basic string: the same escapes, \uXXXX for controls.
        return json.dumps(v, ensure_ascii=False)
    if isinstance(v, Sequence):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    raise TypeError(f"cannot write {type(v).__name__} to TOML")


def _is_table_array(v: Any) -> bool:
    return isinstance(v, list) and bool(v) and all(isinstance(x, Mapping) for x in v)


def dumps(data: Mapping[str, Any], *, header: str = "") -> str:
    """Serialize ``data``; ``None`` values are left out (TOML has no null)."""
    lines: list[str] = [f"# {line}" if line else "#" for line in header.splitlines()]
    if lines:
        lines.append("")
    _table(data, [], lines)
    return "\n".join(lines).rstrip("\n") + "\n"


def _table(data: Mapping[str, Any], path: list[str], lines: list[str]) -> None:
    for k, v in data.items():
        if v is None or isinstance(v, Mapping) or _is_table_array(v):
            continue
        lines.append(f"{_key(k)} = {_value(v)}")
    for k, v in data.items():
        if isinstance(v, Mapping):
            sub = [*path, _key(k)]
            if lines and lines[-1] != "":
                lines.append("")
            lines.append(f"[{'.'.join(sub)}]")
            _table(v, sub, lines)
        elif _is_table_array(v):
            sub = [*path, _key(k)]
            for item in v:
                if lines and lines[-1] != "":
                    lines.append("")
                lines.append(f"[[{'.'.join(sub)}]]")
                _table(item, sub, lines)
