"""Draw the counting geometry (line, entry direction, inside point, zones) onto an image.

Used for aiming: the snapshot shows where the line sits in the anonymized view. Drawing is
vectorized: each stroke computes the distance of every pixel in its bounding box to the segment
at once, so a full-frame diagonal costs a few milliseconds and no pixel is visited in Python.

Every stroke has a dark outline so it stays visible on bright and dark scenes alike. Sizes
scale with the image (``unit`` = the shorter side / 240) so a 640x480 and a 1920x1080 snapshot
look the same.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray

from firmware.config.settings import CounterConfig
from firmware.frames import Image, check_image

Color = tuple[int, int, int]  # BGR

LINE_COLOR: Color = (0, 215, 255)  # amber
INSIDE_COLOR: Color = (80, 200, 40)  # green
ZONE_COLOR: Color = (255, 200, 0)  # cyan-blue
HANDLE_COLOR: Color = (255, 255, 255)
OUTLINE_COLOR: Color = (0, 0, 0)


def _segment_mask(
    height: int, width: int, p0: tuple[float, float], p1: tuple[float, float], radius: float
) -> tuple[slice, slice, NDArray[np.bool_]] | None:
    """Pixels whose centres lie within ``radius`` of the segment p0-p1, inside its bounding box."""
    x0 = max(0, math.floor(min(p0[0], p1[0]) - radius))
    x1 = min(width, math.ceil(max(p0[0], p1[0]) + radius) + 1)
    y0 = max(0, math.floor(min(p0[1], p1[1]) - radius))
    y1 = min(height, math.ceil(max(p0[1], p1[1]) + radius) + 1)
    if x0 >= x1 or y0 >= y1:
        return None
    xs = np.arange(x0, x1, dtype=np.float32)[None, :] + 0.5
    ys = np.arange(y0, y1, dtype=np.float32)[:, None] + 0.5
    dx, dy = p1[0] - p0[0], p1[1] - p0[1]
    length2 = dx * dx + dy * dy
    if length2 > 0:
        t = np.clip(((xs - p0[0]) * dx + (ys - p0[1]) * dy) / length2, 0.0, 1.0)
    else:
        t = np.zeros((y1 - y0, x1 - x0), np.float32)
    dist2 = (xs - (p0[0] + t * dx)) ** 2 + (ys - (p0[1] + t * dy)) ** 2
    return slice(y0, y1), slice(x0, x1), dist2 <= radius * radius


def draw_segment(
    image: Image, p0: tuple[float, float], p1: tuple[float, float], thickness: float, color: Color
) -> None:
    """Paint a round-capped segment of ``thickness`` pixels (pixel coordinates) in place."""
    found = _segment_mask(image.shape[0], image.shape[1], p0, p1, thickness / 2)
    if found is not None:
        rows, cols, mask = found
        image[rows, cols][mask] = color


def draw_disc(image: Image, centre: tuple[float, float], radius: float, color: Color) -> None:
    """Paint a filled disc in place (a zero-length segment)."""
    draw_segment(image, centre, centre, 2 * radius, color)


def _outlined_segment(
    image: Image,
    p0: tuple[float, float],
    p1: tuple[float, float],
    width: float,
    color: Color,
    unit: float,
) -> None:
    draw_segment(image, p0, p1, width + 2 * unit, OUTLINE_COLOR)
    draw_segment(image, p0, p1, width, color)


def _outlined_disc(
    image: Image, centre: tuple[float, float], radius: float, color: Color, unit: float
) -> None:
    draw_disc(image, centre, radius + unit, OUTLINE_COLOR)
    draw_disc(image, centre, radius, color)


def entry_arrow(counter: CounterConfig) -> tuple[tuple[float, float], tuple[float, float]]:
    """Normalized start (line midpoint) and unit direction towards the inside side."""
    x1, y1, x2, y2 = counter.line
    mx, my = (x1 + x2) / 2, (y1 + y2) / 2
    nx, ny = -(y2 - y1), x2 - x1  # a normal of the line
    px, py = counter.inside
    if (px - x1) * nx + (py - y1) * ny < 0:
        nx, ny = -nx, -ny
    norm = math.hypot(nx, ny)
    return (mx, my), (nx / norm, ny / norm)


def draw_counter(image: Image, counter: CounterConfig) -> Image:
    """Return a copy of ``image`` with the zones, counting line, entry arrow and inside point.

    The arrow starts at the line's midpoint and points to the inside side: a track crossing the
    line in the arrow's direction counts as an entry.
    """
    check_image(image)
    out = image.copy()
    h, w = out.shape[:2]
    unit = max(1.0, min(h, w) / 240)

    def px(x: float, y: float) -> tuple[float, float]:
        return x * w, y * h

    for zone in counter.zones:
        pts = [px(x, y) for x, y in zone.polygon]
        for a, b in zip(pts, pts[1:] + pts[:1], strict=True):
            _outlined_segment(out, a, b, 1.5 * unit, ZONE_COLOR, unit)

    x1, y1, x2, y2 = counter.line
    a, b = px(x1, y1), px(x2, y2)
    _outlined_segment(out, a, b, 3 * unit, LINE_COLOR, unit)

    (mx, my), (nx, ny) = entry_arrow(counter)
    start = px(mx, my)
    length = 18 * unit
    sx, sy = nx * w, ny * h  # the normal in pixels (the image may not be square)
    norm = math.hypot(sx, sy)
    dx, dy = sx / norm * length, sy / norm * length
    tip = (start[0] + dx, start[1] + dy)
    head = 0.4
    left = (tip[0] - head * (dx - dy * 0.8), tip[1] - head * (dy + dx * 0.8))
    right = (tip[0] - head * (dx + dy * 0.8), tip[1] - head * (dy - dx * 0.8))
    for p, q in ((start, tip), (tip, left), (tip, right)):
        _outlined_segment(out, p, q, 2.5 * unit, INSIDE_COLOR, unit)

    for end in (a, b):
        _outlined_disc(out, end, 3 * unit, HANDLE_COLOR, unit)
    _outlined_disc(out, px(*counter.inside), 5 * unit, INSIDE_COLOR, unit)
    return out
