"""Cover faces: mosaic (default), blur or solid fill, in an ellipse or a box, with a margin.

The anonymizer never decides whether a face is there; it covers every box it is given, grown by
``mask_scale`` around its centre. ``mask_all`` covers the whole frame: the pipeline uses it when
detection failed, so a frame never leaves unanonymized (fail closed, P2).

Knobs and trade-offs:
- ``mode``: ``mosaic`` (cells shuffled, see :func:`scrambled_mosaic`) keeps the scene's colours
  for aiming while destroying the face's layout; ``blur`` looks softer but a weak blur can be
  partly undone, so its kernel is a third of the face size, applied three times; ``solid``
  reveals nothing.
- ``shape`` and ``mask_scale``: the defaults (box, 1.6) were chosen by running CenterFace again
  on anonymized output at its 0.2 threshold, on a 30 s synthetic scene of small real faces
  (429 faces, 32-80 px): a plain 6-cell mosaic in an ellipse at 1.6 was still scored as a face
  108 times (head outline and layout), a box 28 times, a shuffled mosaic in a box 0 times; on
  scikit-image's two portraits an ellipse below 1.6 also left a detectable head outline.
  ``ellipse`` looks rounder and hides less of the scene, at that cost. Larger is safer still.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

import numpy as np
from numpy.typing import NDArray

from firmware.boxes import grow_boxes
from firmware.frames import Image, check_image

Mode = Literal["mosaic", "blur", "solid"]
Shape = Literal["ellipse", "box"]


def _grow(boxes: NDArray[np.float32], scale: float, width: int, height: int) -> NDArray[np.int32]:
    """Scale boxes about their centres and round outwards to integer pixel bounds, clipped."""
    g = grow_boxes(boxes, scale)
    out = np.concatenate([np.floor(g[:, :2]), np.ceil(g[:, 2:])], axis=1)
    out[:, [0, 2]] = np.clip(out[:, [0, 2]], 0, width)
    out[:, [1, 3]] = np.clip(out[:, [1, 3]], 0, height)
    return out.astype(np.int32)


@dataclass(frozen=True, slots=True)
class _Cells:
    """How a region of one size splits into cells: the first row and column of each cell, the
    cells' heights and widths (the last ones ragged), their pixel counts, and the order that
    scrambles them."""

    row_starts: NDArray[np.intp]
    col_starts: NDArray[np.intp]
    heights: NDArray[np.intp]
    widths: NDArray[np.intp]
    area: NDArray[np.intp]
    order: NDArray[np.intp]


def _cell_bounds(length: int, cell: int) -> tuple[NDArray[np.intp], NDArray[np.intp]]:
    starts = np.arange(0, length, cell, dtype=np.intp)
    sizes = np.diff(np.append(starts, length))
    return starts, sizes


@lru_cache(maxsize=1024)
def _cells(h: int, w: int, cell: int, seed: int) -> _Cells:
    """The cell layout of an ``h`` x ``w`` region, computed once per size: the faces of one
    clip come in a few dozen sizes, and building the layout (and the permutation's generator)
    cost more than covering a small face (about 15 covers a frame on vtest.avi)."""
    rs, rn = _cell_bounds(h, cell)
    cs, cn = _cell_bounds(w, cell)
    rng = np.random.default_rng((h * 7919 + w) * 31 + seed)
    layout = _Cells(
        rs, cs, rn, cn, rn[:, None, None] * cn[None, :, None], rng.permutation(len(rs) * len(cs))
    )
    for a in (rs, cs, rn, cn, layout.area, layout.order):
        a.flags.writeable = False  # shared by every call of this size, from any thread
    return layout


def _cell_means(region: Image, cells: _Cells) -> Image:
    """Mean colour of each cell of ``region`` (ragged last cells included), rounded down."""
    sums = np.add.reduceat(
        np.add.reduceat(region, cells.row_starts, axis=0, dtype=np.uint32),
        cells.col_starts,
        axis=1,
    )
    means: Image = (sums / cells.area).astype(np.uint8)
    return means


def mosaic(region: Image, cell: int) -> Image:
    """Replace each ``cell`` x ``cell`` block by its mean colour (ragged last blocks included)."""
    h, w = region.shape[:2]
    cells = _cells(h, w, max(1, cell), 0)
    means = _cell_means(region, cells)
    out: Image = np.repeat(np.repeat(means, cells.heights, axis=0), cells.widths, axis=1)
    return out


def scrambled_mosaic(region: Image, cell: int, seed: int = 0) -> Image:
    """A mosaic whose cells are shuffled: the colours stay, the face's layout does not.

    A plain mosaic keeps a face's coarse structure (dark eye cells above a lighter cheek row),
    which a detector still scores as a face and which "depixelation" attacks start from.
    Shuffling the cells removes that structure. The permutation depends on the region's size
    and ``seed`` only, so a still face gets a still pattern rather than flicker.
    """
    h, w = region.shape[:2]
    cells = _cells(h, w, max(1, cell), seed)
    means = _cell_means(region, cells)
    shuffled = means.reshape(-1, 3)[cells.order].reshape(means.shape)
    out: Image = np.repeat(np.repeat(shuffled, cells.heights, axis=0), cells.widths, axis=1)
    return out


def _box_blur_axis(a: NDArray[np.float32], k: int, axis: int) -> NDArray[np.float32]:
    r = k // 2
    pad = [(0, 0)] * a.ndim
    pad[axis] = (r + 1, r)
    p = np.pad(a, pad, mode="edge")
    c = np.cumsum(p, axis=axis, dtype=np.float32)
    n = a.shape[axis]
    hi = np.take(c, np.arange(k, k + n), axis=axis)
    lo = np.take(c, np.arange(0, n), axis=axis)
    out: NDArray[np.float32] = ((hi - lo) / k).astype(np.float32)
    return out


def blur(region: Image, kernel: int) -> Image:
    """Three passes of a separable box blur (close to a Gaussian), via cumulative sums."""
    k = max(3, kernel | 1)
    a = region.astype(np.float32)
    for _ in range(3):
        a = _box_blur_axis(_box_blur_axis(a, k, 0), k, 1)
    out: Image = np.clip(a + 0.5, 0, 255).astype(np.uint8)
    return out


def _ellipse_mask(h: int, w: int) -> NDArray[np.bool_]:
    y = (np.arange(h, dtype=np.float32) + 0.5 - h / 2) / (h / 2)
    x = (np.arange(w, dtype=np.float32) + 0.5 - w / 2) / (w / 2)
    result: NDArray[np.bool_] = (y[:, None] ** 2 + x[None, :] ** 2) <= 1.0
    return result


class Anonymizer:
    """Covers face boxes in BGR frames. Stateless; safe to share between threads."""

    def __init__(
        self,
        mode: Mode = "mosaic",
        shape: Shape = "box",
        mask_scale: float = 1.6,
        *,
        cells: int = 6,
        fill: tuple[int, int, int] = (0, 0, 0),
    ) -> None:
        if mode not in ("mosaic", "blur", "solid"):
            raise ValueError(f"mode must be mosaic, blur or solid, got {mode!r}")
        if shape not in ("ellipse", "box"):
            raise ValueError(f"shape must be ellipse or box, got {shape!r}")
        if mask_scale < 1.0:
            raise ValueError(f"mask_scale must be >= 1.0, got {mask_scale}")
        self.mode: Mode = mode
        self.shape: Shape = shape
        self.mask_scale = mask_scale
        self.cells = max(2, cells)
        self.fill = np.array(fill, np.uint8)

    def _cover(self, region: Image) -> Image:
        h, w = region.shape[:2]
        size = max(h, w)
        if self.mode == "mosaic":
            return scrambled_mosaic(region, max(2, -(-size // self.cells)))
        if self.mode == "blur":
            return blur(region, max(3, size // 3))
        out = np.empty_like(region)
        out[:] = self.fill
        return out

    def mask_regions(self, image: Image, boxes: NDArray[np.floating]) -> NDArray[np.int32]:
        """The integer pixel rectangles (x1, y1, x2, y2) that :meth:`apply` covers."""
        return _grow(np.asarray(boxes, np.float32), self.mask_scale, image.shape[1], image.shape[0])

    def apply(
        self,
        image: Image,
        boxes: NDArray[np.floating],
        *,
        exact: NDArray[np.floating] | None = None,
    ) -> Image:
        """Return a copy of ``image`` with every box (``(N, 4+)`` pixels) covered.

        ``boxes`` (faces) are grown by ``mask_scale`` first; ``exact`` regions (heads of person
        boxes, already generous) are covered as given, always as boxes.
        """
        check_image(image)
        out = image.copy()
        b = np.asarray(boxes, np.float32)
        # Heads first, faces last: a face is then covered by its own scramble, at its own cell
        # size, not by the coarse cells of a wide head box that happened to overlap it (a
        # few big cells over a face's core can line up with its light and dark halves).
        regions: list[tuple[NDArray[np.int32], str]] = []
        if exact is not None and len(exact):
            e = np.asarray(exact, np.float32).reshape(-1, 4)
            regions += [(r, "box") for r in _grow(e, 1.0, image.shape[1], image.shape[0])]
        if b.size:
            regions += [(r, self.shape) for r in self.mask_regions(image, b[:, :4])]
        for (x1, y1, x2, y2), shape in regions:
            if x2 <= x1 or y2 <= y1:
                continue
            region = out[y1:y2, x1:x2]  # overlapping faces: later covers apply to earlier covers
            covered = self._cover(region)
            if shape == "ellipse":
                m = _ellipse_mask(y2 - y1, x2 - x1)
                region[m] = covered[m]
            else:
                region[...] = covered
        return out

    def mask_all(self, image: Image) -> Image:
        """Cover the whole frame (fail closed): a coarse mosaic, so aiming still sees the scene."""
        check_image(image)
        h, w = image.shape[:2]
        return mosaic(image, max(8, max(h, w) // 24))
