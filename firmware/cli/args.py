"""Shared argument parsers for the CLI (sizes, points, lines)."""

from __future__ import annotations

import argparse
from collections.abc import Callable


def size(text: str) -> tuple[int, int]:
    """Parse ``WxH`` (e.g. ``640x480``)."""
    try:
        w, h = text.lower().split("x")
        width, height = int(w), int(h)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not WIDTHxHEIGHT, e.g. 640x480") from None
    if width < 32 or height < 32:
        raise argparse.ArgumentTypeError(f"{text!r}: width and height must be at least 32")
    return width, height


def floats(count: int) -> Callable[[str], tuple[float, ...]]:
    """A parser for ``count`` comma-separated normalized coordinates (0..1)."""

    def parse(text: str) -> tuple[float, ...]:
        try:
            values = tuple(float(v) for v in text.split(","))
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{text!r}: expected {count} comma-separated numbers"
            ) from None
        if len(values) != count:
            raise argparse.ArgumentTypeError(f"{text!r}: expected {count} comma-separated numbers")
        if any(not 0.0 <= v <= 1.0 for v in values):
            raise argparse.ArgumentTypeError(
                f"{text!r}: coordinates are normalized, between 0 and 1"
            )
        return values

    return parse
