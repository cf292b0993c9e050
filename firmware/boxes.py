"""Box maths shared by the detectors, the anonymizer's mask hold and the tracker.

Boxes are ``(N, 4)`` float arrays ``[x1, y1, x2, y2]`` in pixels. Every function is vectorized
over boxes; the greedy matcher loops over candidate pairs (a few dozen), never over pixels.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray


def grow_boxes(
    boxes: NDArray[np.floating], factor: float | NDArray[np.floating]
) -> NDArray[np.float32]:
    """Boxes ``(N, 4)`` scaled about their centres by ``factor`` (a number, or ``(N, 1)``)."""
    b = np.asarray(boxes, np.float32).reshape(-1, 4)
    centre = (b[:, :2] + b[:, 2:]) / 2
    half = (b[:, 2:] - b[:, :2]) / 2 * np.asarray(factor, np.float32)
    out: NDArray[np.float32] = np.concatenate([centre - half, centre + half], axis=1)
    return out.astype(np.float32, copy=False)


def iou_matrix(a: NDArray[np.floating], b: NDArray[np.floating]) -> NDArray[np.float32]:
    """Pairwise intersection over union of boxes ``a`` (N, 4) and ``b`` (M, 4) -> (N, M)."""
    a = np.asarray(a, np.float32).reshape(-1, 4)
    b = np.asarray(b, np.float32).reshape(-1, 4)
    ix1 = np.maximum(a[:, None, 0], b[None, :, 0])
    iy1 = np.maximum(a[:, None, 1], b[None, :, 1])
    ix2 = np.minimum(a[:, None, 2], b[None, :, 2])
    iy2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(ix2 - ix1, 0, None) * np.clip(iy2 - iy1, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    out = np.where(union > 0, inter / np.maximum(union, 1e-9), 0.0)
    return out.astype(np.float32)


def greedy_pairs(
    score: NDArray[np.floating], valid: NDArray[np.bool_]
) -> tuple[NDArray[np.intp], NDArray[np.intp]]:
    """Pairs (row, col), best score first, each row and column used at most once."""
    r, c = np.nonzero(valid)
    if r.size == 0:
        return np.zeros(0, np.intp), np.zeros(0, np.intp)
    # Stable sort: on equal scores the older track (lower row) wins.
    order = np.argsort(-score[r, c], kind="stable")
    used_r: set[int] = set()
    used_c: set[int] = set()
    out_r: list[int] = []
    out_c: list[int] = []
    limit = min(score.shape)
    for i, j in zip(r[order].tolist(), c[order].tolist(), strict=True):
        if i in used_r or j in used_c:
            continue
        used_r.add(i)
        used_c.add(j)
        out_r.append(i)
        out_c.append(j)
        if len(out_r) == limit:
            break
    return np.asarray(out_r, np.intp), np.asarray(out_c, np.intp)
