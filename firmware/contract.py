"""The MQTT contract, version 1: topics, JSON Schemas, the privacy key check, window merging.

The JSON Schemas in ``firmware/schemas/`` are the source of truth for payloads; this module loads
them (through :mod:`importlib.resources`, so they work from a wheel), validates payloads against
them, and holds the two rules the schemas cannot express:

- :func:`find_forbidden` walks any payload and reports keys that would carry per-person data
  (boxes, landmarks, track ids, faces, images, embeddings, demographic guesses). Tests run every
  payload we publish through it (P1, P4). Schemas allow unknown fields for forward compatibility,
  so the schema alone would let a ``"box"`` through; this check does not.
- :func:`merge_counts` says what merging several consecutive count windows into one means. It
  lives here, next to the schema that documents the ``merged`` field, so the outbox (which merges
  when it must stay within its bounds) and the aggregator (which collapses long empty gaps) agree.

``jsonschema`` is imported lazily, only when :func:`validate` is first called: the frame loop
and the outbox never pay for it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from functools import cache
from importlib import resources
from typing import Any, Final

COUNTS_SCHEMA: Final = "anoncam/counts/1"
HEALTH_SCHEMA: Final = "anoncam/health/1"
KINDS: Final = ("counts", "status", "health")

IDENTIFIER_PATTERN: Final = r"^[a-z0-9][a-z0-9_-]{0,62}$"
"""Site, device and zone names (they appear in MQTT topics); the config's Identifier uses it."""
TOPIC_PREFIX_PATTERN: Final = r"^[A-Za-z0-9_-]+(/[A-Za-z0-9_-]+)*$"
"""The topic prefix: MQTT levels of safe characters, no wildcards, no leading or trailing '/'."""
IDENTIFIER = re.compile(IDENTIFIER_PATTERN)
_PREFIX = re.compile(TOPIC_PREFIX_PATTERN)

# Keys that would carry per-person data (P1), identity (P3) or demographic guesses (P4).
# Compared after normalisation (lower case, '_', '-', ' ' removed), so "trackId", "track-id"
# and "TRACK_ID" are all caught. "frames" (a count object) and "visitors" (a count) are allowed.
# fmt: off
FORBIDDEN_KEYS: Final = frozenset(
    {
        # geometry of a person
        "box", "boxes", "bbox", "bboxes", "bounding_box", "bounding_boxes", "rect", "rects",
        "roi", "rois", "polygon_of_person", "x1", "y1", "x2", "y2", "xmin", "ymin", "xmax",
        "ymax", "cx", "cy", "x", "y", "w", "h",
        "landmark", "landmarks", "keypoint", "keypoints", "kps", "pose",
        # identity
        "id", "ids", "uuid", "track", "tracks", "track_id", "track_ids", "tracklet", "tracklets",
        "person", "persons", "person_id", "person_ids", "face_id", "visitor_id", "subject_id",
        "identity", "identities", "name_of_person",
        # pixels and biometric templates
        "face", "faces", "image", "images", "img", "frame_data", "pixels", "jpeg", "jpg", "png",
        "thumbnail", "thumbnails", "snapshot", "crop", "crops", "embedding", "embeddings",
        "feature", "features", "descriptor", "descriptors", "template", "biometric",
        # demographic inference (P4)
        "age", "gender", "sex", "emotion", "emotions", "ethnicity", "race",
    }
)
# fmt: on


def _norm(key: str) -> str:
    return re.sub(r"[\s_-]+", "", key).lower()


_FORBIDDEN_NORM: Final = frozenset(_norm(k) for k in FORBIDDEN_KEYS)
# Any "<who>_id(s)" / "<who>_uuid" for a kind of person, whatever the spelling.
_PERSON_ID = re.compile(
    r"^(track|person|people|face|visitor|subject|customer|shopper|human)s?(id|ids|uuid|uuids)$"
)
# Demographic inference under any spelling (P4): "age_range", "estimatedAge", "gender_ratio".
_DEMOGRAPHIC = frozenset(
    {
        "gender",
        "genders",
        "sex",
        "emotion",
        "emotions",
        "ethnicity",
        "ethnic",
        "race",
        "races",
        "mood",
        "expression",
        "attractiveness",
    }
)
# "age" with a time unit after it is the age of a thing (oldest_unsent_age_s), not of a person.
_DURATION_UNITS = frozenset(
    {"s", "ms", "sec", "secs", "seconds", "min", "minutes", "h", "hours", "days"}
)
_WORDS = re.compile(r"[A-Z]?[a-z]+|[A-Z]+(?![a-z])|\d+")


def _demographic(name: str) -> bool:
    words = [w.lower() for w in _WORDS.findall(name)]
    for i, w in enumerate(words):
        if w in _DEMOGRAPHIC:
            return True
        unit_follows = i + 1 < len(words) and words[i + 1] in _DURATION_UNITS
        if w in ("age", "ages", "aged") and not unit_follows:
            return True
    return False


# Image bytes smuggled into a value: a data URL, or a long run of base64.
_IMAGE_VALUE = re.compile(r"^(data:image/|[A-Za-z0-9+/=\s]{512,}$)")


def load_schema(kind: str) -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of one payload kind: ``counts``, ``status`` or ``health``.

    Returns a fresh dict each call, so callers may modify it.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown payload kind {kind!r}; expected one of {', '.join(KINDS)}")
    text = resources.files("firmware").joinpath("schemas", f"{kind}.schema.json").read_text("utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


@cache
def _validator(kind: str) -> Any:
    from jsonschema import Draft202012Validator  # lazy: see module docstring

    schema = load_schema(kind)
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


def validate(kind: str, payload: Any) -> None:
    """Check ``payload`` against the schema of ``kind``.

    Raises :class:`ValueError` naming the JSON path that failed (``$.dwell_s.p50``) and why.
    """
    from jsonschema.exceptions import best_match

    error = best_match(_validator(kind).iter_errors(payload))
    if error is not None:
        raise ValueError(f"{kind} payload invalid at {error.json_path}: {error.message}")


def _child(path: str, key: str) -> str:
    return f"{path}.{key}" if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key) else f"{path}[{key!r}]"


def _walk(value: Any, path: str) -> Iterator[str]:
    if isinstance(value, Mapping):
        for key, child in value.items():
            name = str(key)
            norm = _norm(name)
            if norm in _FORBIDDEN_NORM or _PERSON_ID.match(norm) or _demographic(name):
                yield _child(path, name)
            yield from _walk(child, _child(path, name))
    elif isinstance(value, (list, tuple)):
        for i, child in enumerate(value):
            yield from _walk(child, f"{path}[{i}]")
    elif isinstance(value, str) and _IMAGE_VALUE.match(value):
        yield path


def find_forbidden(payload: Any) -> list[str]:
    """Paths (``$.a.b[0].box``) of keys in ``payload`` that would carry per-person data.

    Walks nested objects and arrays. Also flags string values that look like image data (a
    ``data:image/`` URL or a long base64 run). An empty list means the payload passed.
    """
    return list(_walk(payload, "$"))


def check_identifier(what: str, value: str) -> None:
    """Raise ValueError unless ``value`` is a valid site / device / zone id."""
    if not IDENTIFIER.match(value):
        raise ValueError(
            f"{what} {value!r}: use lower-case letters, digits, '-' and '_', at most 63, "
            "starting with a letter or digit"
        )


def topic(prefix: str, site: str, device: str, kind: str) -> str:
    """``{prefix}/{site}/{device}/{kind}``, refusing anything that would make a wildcard or an
    empty level (a stray ``+`` or ``#`` in a site id would publish to, or subscribe across, the
    wrong devices)."""
    if not _PREFIX.match(prefix):
        raise ValueError(
            f"MQTT prefix {prefix!r}: use letters, digits, '_' and '-' in '/'-separated levels"
        )
    check_identifier("site", site)
    check_identifier("device", device)
    if kind not in KINDS:
        raise ValueError(f"unknown topic kind {kind!r}; expected one of {', '.join(KINDS)}")
    return f"{prefix}/{site}/{device}/{kind}"


def utc_iso(epoch_s: int) -> str:
    """Epoch seconds as the contract's time format: ``2026-11-23T17:00:00Z``."""
    return datetime.fromtimestamp(epoch_s, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _weighted(pairs: Sequence[tuple[float, int]]) -> float | None:
    total = sum(w for _, w in pairs)
    if total > 0:
        return sum(v * w for v, w in pairs) / total
    if pairs:  # gauges with zero weight should not exist; fall back to a plain mean
        return sum(v for v, _ in pairs) / len(pairs)
    return None


def _merge_gauges(gauges: Sequence[tuple[Mapping[str, Any], int]]) -> dict[str, Any] | None:
    """Combine occupancy-like gauges, each with the frames it was measured over (oldest first)."""
    if not gauges:
        return None
    mean = _weighted([(float(g["mean"]), w) for g, w in gauges])
    return {
        "min": min(int(g["min"]) for g, _ in gauges),
        "max": max(int(g["max"]) for g, _ in gauges),
        "mean": round(mean if mean is not None else 0.0, 3),
        "last": int(gauges[-1][0]["last"]),
    }


def merge_counts(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Merge consecutive count windows (oldest first) into one.

    - entries, exits, visitors, frames processed / dropped / lost, dwell count: summed.
    - occupancy (and each zone): min of mins, max of maxes, mean weighted by frames processed,
      ``last`` from the newest window that processed frames; null when none did.
    - dwell p50 / p90: the count-weighted mean of the windows' p50 / p90. The exact percentile of
      the union cannot be rebuilt from percentiles, and we do not keep per-person dwell times on
      disk (P1). The true p-quantile of a mixture lies between the smallest and largest
      p-quantile of its parts, and so does this estimate; it is exact when the windows have
      alike distributions. ``merged`` tells the subscriber the figure is an estimate.
    - start from the oldest, end, seq and any other field from the newest.
    - ``merged``: how many original windows the result stands for (a merged input counts with
      its own ``merged``).
    """
    if not rows:
        raise ValueError("merge_counts needs at least one window")
    newest = rows[-1]
    out: dict[str, Any] = dict(newest)
    out["start"] = rows[0]["start"]
    for key in ("entries", "exits", "visitors"):
        out[key] = sum(int(r[key]) for r in rows)
    processed = [int(r["frames"]["processed"]) for r in rows]
    out["frames"] = {
        **newest["frames"],
        "processed": sum(processed),
        "dropped": sum(int(r["frames"]["dropped"]) for r in rows),
    }
    lost = sum(int(r["frames"].get("lost", 0)) for r in rows)
    if lost:
        out["frames"]["lost"] = lost
    measured = list(zip(rows, processed, strict=True))
    out["occupancy"] = _merge_gauges(
        [(r["occupancy"], p) for r, p in measured if r["occupancy"] is not None]
    )
    dwell = [r["dwell_s"] for r in rows]
    count = sum(int(d["count"]) for d in dwell)
    timed = [d for d in dwell if int(d["count"]) > 0 and None not in (d["p50"], d["p90"])]
    p50 = _weighted([(float(d["p50"]), int(d["count"])) for d in timed])
    p90 = _weighted([(float(d["p90"]), int(d["count"])) for d in timed])
    if count == 0 or p50 is None or p90 is None:
        out["dwell_s"] = {**newest["dwell_s"], "count": count, "p50": None, "p90": None}
    else:
        out["dwell_s"] = {
            **newest["dwell_s"],
            "count": count,
            "p50": round(p50, 1),
            "p90": round(p90, 1),
        }
    zone_names = sorted({name for r in rows for name in r.get("zones", {})})
    if zone_names:
        out["zones"] = {
            name: _merge_gauges(
                [(r["zones"][name], p) for r, p in measured if name in r.get("zones", {})]
            )
            for name in zone_names
        }
    thresholds = [int(r["suppress_below"]) for r in rows if "suppress_below" in r]
    if thresholds:
        out["suppress_below"] = max(thresholds)
    out["merged"] = sum(int(r.get("merged", 1)) for r in rows)
    return out
