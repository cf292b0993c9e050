"""Plane geometry the counter's config is checked with: a zone must be a simple polygon with an
area, and the inside point must lie clearly on one side of the counting line.

Pure functions over normalized coordinates (0..1), no numpy: a config has a handful of points.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

Point = tuple[float, float]

#: Below this, a length, area or cross product counts as zero (rounding noise, not a size).
EPS = 1e-9


def _cross(o: Point, a: Point, b: Point) -> float:
    return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])


def _on_segment(p: Point, a: Point, b: Point) -> bool:
    """``p`` on the closed segment ``a``-``b`` (given that the three are collinear)."""
    return min(a[0], b[0]) - EPS <= p[0] <= max(a[0], b[0]) + EPS and (
        min(a[1], b[1]) - EPS <= p[1] <= max(a[1], b[1]) + EPS
    )


def segments_touch(a: Point, b: Point, c: Point, d: Point) -> bool:
    """Whether the closed segments ``a``-``b`` and ``c``-``d`` share a point."""
    d1, d2 = _cross(c, d, a), _cross(c, d, b)
    d3, d4 = _cross(a, b, c), _cross(a, b, d)
    if ((d1 > EPS and d2 < -EPS) or (d1 < -EPS and d2 > EPS)) and (
        (d3 > EPS and d4 < -EPS) or (d3 < -EPS and d4 > EPS)
    ):
        return True
    return (
        (abs(d1) <= EPS and _on_segment(a, c, d))
        or (abs(d2) <= EPS and _on_segment(b, c, d))
        or (abs(d3) <= EPS and _on_segment(c, a, b))
        or (abs(d4) <= EPS and _on_segment(d, a, b))
    )


def polygon_area(points: Sequence[Point]) -> float:
    """The unsigned area (shoelace formula)."""
    n = len(points)
    twice = sum(
        points[i][0] * points[(i + 1) % n][1] - points[(i + 1) % n][0] * points[i][1]
        for i in range(n)
    )
    return abs(twice) / 2


def polygon_problem(points: Sequence[Point]) -> str | None:
    """Why ``points`` is not a simple polygon with an area, or None.

    A zone that crosses itself (a bow tie) has an inside that depends on the point-in-polygon
    rule, not on what the installer drew; one with no area never holds anybody. Both count
    nothing the installer meant, silently, so they are refused.
    """
    n = len(points)
    edges = [(points[i], points[(i + 1) % n]) for i in range(n)]
    for i, (a, b) in enumerate(edges):
        if abs(a[0] - b[0]) <= EPS and abs(a[1] - b[1]) <= EPS:
            return f"corners {i} and {(i + 1) % n} are the same point"
    if all(abs(_cross(points[0], points[1], p)) <= EPS for p in points[2:]):
        return "the polygon has no area (its corners are on one line)"
    # crossings before the area: a symmetric bow tie's signed halves cancel to no area at all
    for i, (a, b) in enumerate(edges):
        for j in range(i + 1, n):
            c, d = edges[j]
            if j == i + 1 or (i == 0 and j == n - 1):
                # neighbours share a corner; they must not fold back onto each other
                shared, far = (b, d) if j == i + 1 else (a, c)
                mine = a if j == i + 1 else b
                if abs(_cross(shared, mine, far)) <= EPS and _on_segment(far, shared, mine):
                    return f"edges {i} and {j} fold back onto each other"
                if abs(_cross(shared, far, mine)) <= EPS and _on_segment(mine, shared, far):
                    return f"edges {i} and {j} fold back onto each other"
                continue
            if segments_touch(a, b, c, d):
                return f"edges {i} and {j} cross or touch: the polygon intersects itself"
    if polygon_area(points) <= EPS:
        return "the polygon has no area (its corners are on one line)"
    return None


def distance_to_line(point: Point, line: tuple[float, float, float, float]) -> float:
    """Perpendicular distance from ``point`` to the infinite line through ``line``'s ends."""
    x1, y1, x2, y2 = line
    length = math.hypot(x2 - x1, y2 - y1)
    return abs(_cross((x1, y1), (x2, y2), point)) / length
