"""Drawing the counting geometry: checked pixel by pixel where each stroke must (not) be."""

from __future__ import annotations

import numpy as np
import pytest

from firmware.config.settings import CounterConfig, ZoneConfig
from firmware.jobs.overlay import (
    HANDLE_COLOR,
    INSIDE_COLOR,
    LINE_COLOR,
    OUTLINE_COLOR,
    ZONE_COLOR,
    draw_counter,
    draw_segment,
    entry_arrow,
)

GREY = (100, 110, 120)


def canvas(w: int = 640, h: int = 480) -> np.ndarray:
    img = np.empty((h, w, 3), np.uint8)
    img[:] = GREY
    return img


def at(img: np.ndarray, x: float, y: float) -> tuple[int, int, int]:
    return tuple(int(v) for v in img[int(y), int(x)])  # type: ignore[return-value]


def test_horizontal_line_is_drawn_across_with_outline_and_nothing_far_away() -> None:
    """The default line y = 0.5 spans the width; 40 px above it the image is untouched."""
    img = canvas()
    out = draw_counter(img, CounterConfig(line=(0.0, 0.5, 1.0, 0.5), inside=(0.5, 1.0)))
    for x in (20, 200, 450, 620):
        assert at(out, x, 240) == LINE_COLOR
    unit = 480 / 240
    # just beyond the coloured stroke (3 units wide) lies the dark outline
    assert at(out, 200, 240 - 1.5 * unit - 1) == OUTLINE_COLOR
    assert at(out, 200, 200) == GREY
    assert at(out, 200, 300) == GREY
    assert at(img, 200, 240) == GREY, "the input image must not be modified"


def test_diagonal_line_hits_points_on_the_segment_only() -> None:
    """A diagonal line passes through its quarter points and leaves a point 30 px off it alone;
    beyond its end points nothing is drawn."""
    img = canvas()
    c = CounterConfig(line=(0.2, 0.2, 0.8, 0.8), inside=(0.8, 0.2))
    out = draw_counter(img, c)
    for t in (0.25, 0.75):
        x, y = (0.2 + 0.6 * t) * 640, (0.2 + 0.6 * t) * 480
        assert at(out, x, y) == LINE_COLOR
    assert at(out, 0.35 * 640 - 30, 0.35 * 480 + 30) == GREY  # off the line
    assert at(out, 0.9 * 640, 0.9 * 480) == GREY  # beyond the end point
    assert at(out, 0.2 * 640, 0.2 * 480) == HANDLE_COLOR  # end point handle


def test_inside_point_and_entry_arrow_point_to_the_inside_side() -> None:
    """The arrow from the line's midpoint goes towards the inside point: flipping the inside
    side flips the arrow."""
    below = draw_counter(canvas(), CounterConfig(line=(0.0, 0.5, 1.0, 0.5), inside=(0.25, 0.9)))
    above = draw_counter(canvas(), CounterConfig(line=(0.0, 0.5, 1.0, 0.5), inside=(0.25, 0.1)))
    assert at(below, 0.25 * 640, 0.9 * 480) == INSIDE_COLOR
    assert at(above, 0.25 * 640, 0.1 * 480) == INSIDE_COLOR
    shaft = 240 + 20  # 10 units along the arrow's shaft (unit = 2 px)
    assert at(below, 320, shaft) == INSIDE_COLOR
    assert at(below, 320, 480 - shaft) == GREY
    assert at(above, 320, 480 - shaft) == INSIDE_COLOR
    assert at(above, 320, shaft) == GREY


def test_entry_arrow_direction_is_the_normal_towards_inside() -> None:
    (mx, my), (nx, ny) = entry_arrow(CounterConfig(line=(0.5, 0.0, 0.5, 1.0), inside=(0.1, 0.5)))
    assert (mx, my) == (0.5, 0.5)
    assert nx == pytest.approx(-1.0) and ny == pytest.approx(0.0, abs=1e-9)


def test_zones_are_outlined_not_filled() -> None:
    """A zone's edges are drawn; its interior is left as it was."""
    zone = ZoneConfig(name="till", polygon=[(0.1, 0.1), (0.4, 0.1), (0.4, 0.3), (0.1, 0.3)])
    out = draw_counter(
        canvas(), CounterConfig(line=(0.0, 0.8, 1.0, 0.8), inside=(0.5, 1.0), zones=[zone])
    )
    assert at(out, 0.25 * 640, 0.1 * 480) == ZONE_COLOR  # top edge midpoint
    assert at(out, 0.4 * 640, 0.2 * 480) == ZONE_COLOR  # right edge midpoint
    assert at(out, 0.25 * 640, 0.2 * 480) == GREY  # interior


def test_strokes_partly_or_wholly_outside_the_image_are_clipped() -> None:
    img = canvas(100, 80)
    draw_segment(img, (-50, -50), (-10, -10), 5, (1, 2, 3))
    assert np.all(img == np.array(GREY, np.uint8))
    draw_segment(img, (-50, 40), (150, 40), 3, (1, 2, 3))
    assert at(img, 0, 40) == (1, 2, 3) and at(img, 99, 40) == (1, 2, 3)
    assert at(img, 50, 30) == GREY


def test_drawing_scales_with_the_image() -> None:
    """The line is about 3/240 of the shorter side thick on both a small and a large image."""
    for w, h in ((320, 240), (1920, 1080)):
        out = draw_counter(canvas(w, h), CounterConfig())
        column = out[:, w // 3]
        thick = int(np.sum(np.all(column == np.array(LINE_COLOR, np.uint8), axis=1)))
        unit = h / 240
        assert 3 * unit - 2 <= thick <= 3 * unit + 2, (w, h, thick)
