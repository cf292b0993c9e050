"""Turn untrusted bytes from the network into a window fit to store, or a reason to refuse it.

Everything a subscriber receives is hostile until proven otherwise. In order, cheapest first:

1. size: at most :data:`MAX_PAYLOAD` bytes (a real window is well under 1 KiB);
2. nesting: at most :data:`MAX_DEPTH` levels of ``[``/``{``, counted on the bytes before parsing,
   so ``[[[[...100000...]]]]`` never reaches the recursive JSON parser;
3. strict JSON: ``NaN``, ``Infinity`` and numbers that overflow to infinity (``1e999``) refused;
4. every integer within +-2^53 (what a JSON number can carry exactly, and what SQLite INTEGER
   and PostgreSQL BIGINT hold), whatever the schema says;
5. no per-person field anywhere (:func:`firmware.contract.find_forbidden`, privacy P1);
6. the JSON Schema, with ``integer`` meaning a JSON integer: ``11.0`` is not a seq (checked by
   jsonschema-rs when it is installed, the ``fleet`` extra, else by jsonschema; see
   :func:`validate`);
7. rules the schema cannot say: ``end`` after ``start``, the ids in the payload match the topic;
8. only the fields the schema knows are kept (unknown extras are dropped, not stored), and the
   stored form is bounded by :data:`MAX_STORED`.

Each refusal is a :class:`IntakeError` naming the topic, the JSON path when there is one, and why.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from typing import Any, Final

from firmware import contract

MAX_PAYLOAD: Final = 16 * 1024
MAX_DEPTH: Final = 8
MAX_STORED: Final = 8 * 1024
INT_LIMIT: Final = 2**53
STREAM: Final = re.compile(r"^[0-9a-f]{16}$")


class IntakeError(ValueError):
    """A message refused before storing; ``str()`` says why."""


@dataclass(frozen=True)
class Window:
    """A counts window that passed every check, reduced to the fields the schema knows.

    ``stream`` is the device's outbox identity (``""`` for devices that predate it); the key
    ``(site, device, stream, seq)`` names one window. ``canonical`` is the stored JSON (sorted
    keys) and ``digest`` its SHA-256, so a repeat with other content is told from a resend.
    """

    site: str
    device: str
    stream: str
    seq: int
    body: dict[str, Any]
    canonical: str
    digest: str

    @property
    def key(self) -> tuple[str, str, str, int]:
        return (self.site, self.device, self.stream, self.seq)

    @property
    def merged(self) -> int:
        return int(self.body.get("merged", 1))


def check_depth(payload: bytes, limit: int = MAX_DEPTH) -> None:
    """Refuse JSON nested deeper than ``limit``, counting brackets outside strings."""
    depth = 0
    in_string = escaped = False
    for byte in payload:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):
            depth += 1
            if depth > limit:
                raise IntakeError(f"JSON nested deeper than {limit} levels")
        elif byte in (0x5D, 0x7D):
            depth -= 1


def _refuse_constant(name: str) -> Any:
    raise IntakeError(f"{name} is not a number JSON allows")


def _check_numbers(value: Any, path: str) -> None:
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return
    if isinstance(value, int):
        if not -INT_LIMIT < value < INT_LIMIT:
            raise IntakeError(f"{path}: integer out of range (limit +-2^53)")
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise IntakeError(f"{path}: number overflows to infinity")
    elif isinstance(value, dict):
        for k, v in value.items():
            _check_numbers(v, f"{path}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _check_numbers(v, f"{path}[{i}]")


def parse(payload: bytes) -> Any:
    """Steps 1 to 4: bounded, strict JSON."""
    if len(payload) > MAX_PAYLOAD:
        raise IntakeError(f"payload of {len(payload)} bytes exceeds the {MAX_PAYLOAD}-byte limit")
    check_depth(payload)
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise IntakeError(f"payload is not UTF-8 ({exc.reason})") from None
    try:
        value = json.loads(text, parse_constant=_refuse_constant)
    except RecursionError:  # unreachable after check_depth; kept so no input can kill us
        raise IntakeError("JSON nested too deeply") from None
    except json.JSONDecodeError as exc:
        raise IntakeError(f"not JSON: {exc}") from None
    _check_numbers(value, "$")
    return value


@cache
def _strict_validator(kind: str) -> Any:
    from jsonschema import Draft202012Validator, validators

    def is_int(checker: Any, instance: Any) -> bool:
        return isinstance(instance, int) and not isinstance(instance, bool)

    checker = Draft202012Validator.TYPE_CHECKER.redefine("integer", is_int)
    strict = validators.extend(Draft202012Validator, type_checker=checker)
    return strict(contract.load_schema(kind))


Path = tuple[str, ...]
"""A place in a payload: object keys from the root; ``*`` stands for every key of a map."""


def _integer_places(node: Any, root: dict[str, Any], at: Path, out: set[Path]) -> None:
    if not isinstance(node, dict):
        return
    ref = node.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/$defs/"):
        _integer_places(root["$defs"][ref.removeprefix("#/$defs/")], root, at, out)
    kind = node.get("type")
    if kind == "integer" or (isinstance(kind, list) and "integer" in kind):
        out.add(at)
    for word in ("oneOf", "anyOf", "allOf"):
        for branch in node.get(word, []):
            _integer_places(branch, root, at, out)
    for word in ("then", "else"):
        _integer_places(node.get(word), root, at, out)
    for key, sub in node.get("properties", {}).items():
        _integer_places(sub, root, (*at, key), out)
    _integer_places(node.get("additionalProperties"), root, (*at, "*"), out)


@cache
def integer_places(kind: str) -> frozenset[Path]:
    """Every place the ``kind`` schema can ask for an integer (through refs and branches)."""
    root = contract.load_schema(kind)
    out: set[Path] = set()
    _integer_places(root, root, (), out)
    return frozenset(out)


def _floats_at(value: Any, place: Path) -> bool:
    if not place:
        return isinstance(value, float)
    if not isinstance(value, dict):
        return False
    head, rest = place[0], place[1:]
    if head == "*":
        return any(_floats_at(v, rest) for v in value.values())
    return head in value and _floats_at(value[head], rest)


def float_for_integer(kind: str, value: Any) -> bool:
    """True when a JSON float (``11.0``) sits where the schema may ask for an integer."""
    return any(_floats_at(value, place) for place in integer_places(kind))


@cache
def _fast_validator(kind: str) -> Any | None:
    try:
        import jsonschema_rs
    except ImportError:
        return None
    return jsonschema_rs.validator_for(contract.load_schema(kind))


def validate(kind: str, value: Any) -> None:
    """Step 5 and 6: no per-person field, then the schema with strict integers.

    Two validators give one verdict. jsonschema (pure Python) is the reference: it names the
    path and the reason of a refusal, and its type checker is redefined so that ``11.0`` is not
    an integer. It costs about 1.2 ms per window, which bounds a subscriber at fleet scale (a
    burst of a thousand windows). jsonschema-rs, when installed, checks a window in about
    4 us; it follows the standard, where ``11.0`` *is* an integer. So a window is accepted on
    its word only when no float sits at a place the schema may want an integer; any other
    window (one it refuses, or one with such a float) goes to the reference, which decides.
    """
    from jsonschema.exceptions import best_match

    forbidden = contract.find_forbidden(value)
    if forbidden:
        raise IntakeError(f"per-person field(s) refused (privacy P1): {', '.join(forbidden[:5])}")
    fast = _fast_validator(kind)
    if fast is not None and fast.is_valid(value) and not float_for_integer(kind, value):
        return
    error = best_match(_strict_validator(kind).iter_errors(value))
    if error is not None:
        raise IntakeError(f"{kind} payload invalid at {error.json_path}: {error.message}")


# ------------------------------------------------------------------ keep only known fields
def _resolve(schema: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/$defs/"):
        resolved: dict[str, Any] = root["$defs"][ref.removeprefix("#/$defs/")]
        return _resolve(resolved, root)
    return schema


def _project(value: Any, schema: dict[str, Any], root: dict[str, Any]) -> Any:
    schema = _resolve(schema, root)
    if not isinstance(value, dict):
        return value
    for branch in schema.get("oneOf", []) + schema.get("anyOf", []):
        branch = _resolve(branch, root)
        if branch.get("type") == "object" or "properties" in branch:
            schema = branch
    props: dict[str, Any] = schema.get("properties", {})
    if props:
        return {k: _project(v, props[k], root) for k, v in value.items() if k in props}
    extra = schema.get("additionalProperties")
    if isinstance(extra, dict):  # a map such as zones: keys are data, values have a schema
        return {k: _project(v, extra, root) for k, v in value.items()}
    return {}


@cache
def _schema(kind: str) -> dict[str, Any]:
    """The schema, read once (:func:`contract.load_schema` reads the file on every call); only
    read from, never changed."""
    return contract.load_schema(kind)


def known_fields(kind: str, value: dict[str, Any]) -> dict[str, Any]:
    """``value`` without any field its schema does not describe (at any depth)."""
    root = _schema(kind)
    projected: dict[str, Any] = _project(value, root, root)
    return projected


# ------------------------------------------------------------------ the whole intake
def _time(value: str) -> datetime:
    return datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ")


def counts_window(payload: bytes, site: str, device: str) -> Window:
    """Every step for a counts message received on ``.../{site}/{device}/counts``."""
    value = parse(payload)
    validate("counts", value)
    if (value["site"], value["device"]) != (site, device):
        raise IntakeError(
            f"payload names {value['site']}/{value['device']}, the topic {site}/{device}"
        )
    try:
        start, end = _time(value["start"]), _time(value["end"])
    except ValueError as exc:
        raise IntakeError(f"$.start/$.end: not a real time ({exc})") from None
    if end <= start:
        raise IntakeError(f"$.end {value['end']} is not after $.start {value['start']}")
    stream = value.get("stream", "")
    # The schema may predate the field: check it here too, it becomes part of the key.
    if not isinstance(stream, str) or (stream and not STREAM.match(stream)):
        raise IntakeError("$.stream: must be 16 lowercase hex characters")
    body = known_fields("counts", value)
    if stream:
        body["stream"] = stream
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"))
    if len(canonical) > MAX_STORED:
        raise IntakeError(
            f"window of {len(canonical)} bytes exceeds the {MAX_STORED}-byte store bound"
        )
    digest = hashlib.sha256(canonical.encode()).hexdigest()
    return Window(site, device, stream, int(value["seq"]), body, canonical, digest)


def status_body(payload: bytes) -> dict[str, Any]:
    """A checked status payload (retained ``online``/``offline``)."""
    value = parse(payload)
    validate("status", value)
    body: dict[str, Any] = value
    return body


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def printable(value: Any) -> str:
    """``str(value)`` safe for a terminal: control characters (ESC, CR, bidi overrides) are shown
    as ``\\xNN`` / ``\\uNNNN`` escapes instead of being interpreted."""
    text = str(value)
    return _CONTROL.sub(
        lambda m: (
            f"\\x{ord(m.group()):02x}" if ord(m.group()) < 0x100 else f"\\u{ord(m.group()):04x}"
        ),
        text,
    )
