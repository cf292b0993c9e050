"""NanoDet person detector on onnxruntime, with its decoding and NMS in numpy.

NanoDet (Apache-2.0, 3.8 M parameters, COCO's 80 classes; person is class 0) is a fully
convolutional one-stage detector with a GFL head at strides 8, 16 and 32. For each stride it
outputs, per grid cell (row major), 80 sigmoid class scores and 4 x 11 distance logits: the
distances from the cell centre to the box's left, top, right and bottom edges, as a discrete
distribution over 0..10 strides whose expectation is the distance.

Preprocessing as NanoDet's own pipeline: BGR, ``(pixel - mean) / std`` per channel, NCHW
float32, the frame scaled to the detection size with its aspect kept and padded with the mean.

Tuning knobs and their trade-offs:
- ``threshold`` (0.45): lower finds more distant, occluded people and more false people (at
  0.35 a traffic cone and a sign fire in real footage); a false person costs a mosaic patch.
- ``detect_size`` (576x320 for a 16:9 stream): NanoDet finds people from about 20 px tall in its
  input, so this counts people from about 1/16 of the frame high (real footage: a far person 35
  px tall in 576 rows is found here, 19 px in the input, and missed at 448x256, 15 px); 448x256
  is 1.5x faster and loses the smallest; both multiples of 32.
- ``threads``: onnxruntime intra-op threads.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from firmware.config.settings import PeopleConfig
from firmware.detect.session import BoundedSession
from firmware.errors import DetectorError
from firmware.frames import Detections, Image, check_image
from firmware.media.resize import resize_bgr
from firmware.models.verify import VerifiedModel, verify

logger = logging.getLogger(__name__)

MODEL_NAME = "nanodet"
STRIDES = (8, 16, 32)
REG_MAX = 10
NUM_CLASSES = 80
PERSON = 0
_MEAN_BGR = np.array([103.53, 116.28, 123.675], np.float32)
_INV_STD_BGR = 1.0 / np.array([57.375, 57.12, 58.395], np.float32)
_PROJECT = np.arange(REG_MAX + 1, dtype=np.float32)


def nms(boxes: NDArray[np.float32], iou_threshold: float, max_keep: int = 100) -> NDArray[np.intp]:
    """Greedy NMS over ``(N, 5)`` rows; returns kept row indices, best score first. Loops over
    kept boxes (a few dozen people at most), never over pixels."""
    order = np.argsort(-boxes[:, 4], kind="stable")
    x1, y1, x2, y2 = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3]
    area = np.maximum(x2 - x1, 0) * np.maximum(y2 - y1, 0)
    keep: list[int] = []
    while order.size and len(keep) < max_keep:
        i = int(order[0])
        keep.append(i)
        rest = order[1:]
        iw = np.clip(np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]), 0, None)
        ih = np.clip(np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]), 0, None)
        inter = iw * ih
        iou = inter / np.maximum(area[i] + area[rest] - inter, 1e-9)
        order = rest[iou <= iou_threshold]
    return np.asarray(keep, np.intp)


def decode(
    outputs: list[NDArray[np.float32]], in_w: int, in_h: int, threshold: float
) -> NDArray[np.float32]:
    """Raw outputs (in any order; paired by shape) -> ``(N, 5)`` person boxes in input pixels."""
    rows: list[NDArray[np.float32]] = []
    for s in STRIDES:
        cells = math.ceil(in_h / s) * math.ceil(in_w / s)
        cls = [o for o in outputs if o.shape[1:] == (cells, NUM_CLASSES)]
        reg = [o for o in outputs if o.shape[1:] == (cells, 4 * (REG_MAX + 1))]
        if len(cls) != 1 or len(reg) != 1:
            raise DetectorError(
                f"unexpected person model outputs {[o.shape for o in outputs]} for a "
                f"{in_w}x{in_h} input",
                hint="this is not the NanoDet model anoncam expects; run 'anoncam models fetch'",
            )
        score = cls[0][0, :, PERSON]
        idx = np.flatnonzero(score > threshold)
        if idx.size == 0:
            continue
        logits = reg[0][0, idx].reshape(-1, 4, REG_MAX + 1).astype(np.float32)
        logits -= logits.max(axis=2, keepdims=True)
        p = np.exp(logits)
        dist = (p / p.sum(axis=2, keepdims=True)) @ _PROJECT * s
        fw = math.ceil(in_w / s)
        cx = ((idx % fw) + 0.5) * s
        cy = ((idx // fw) + 0.5) * s
        rows.append(
            np.stack(
                [cx - dist[:, 0], cy - dist[:, 1], cx + dist[:, 2], cy + dist[:, 3], score[idx]],
                axis=1,
            ).astype(np.float32)
        )
    if not rows:
        return np.zeros((0, 5), np.float32)
    return np.concatenate(rows)


class NanoDet:
    """The NanoDet person detector. Callable on a BGR image, returns person :class:`Detections`
    in the image's pixels (empty, never None); raises :class:`DetectorError` on failure."""

    def __init__(
        self,
        model_path: Path | None = None,
        *,
        threshold: float = 0.45,
        detect_size: tuple[int, int] = (576, 320),
        threads: int = 2,
        nms_iou: float = 0.5,
        timeout_s: float | None = None,
    ) -> None:
        if not 0.0 < threshold < 1.0:
            raise ValueError(f"threshold must be in (0, 1), got {threshold}")
        w, h = detect_size
        if w < 32 or h < 32 or w % 32 or h % 32:
            raise ValueError(f"detect_size must be multiples of 32, at least 32, got {w}x{h}")
        self.model: VerifiedModel = verify(model_path, MODEL_NAME)
        self.threshold = threshold
        self.detect_size = (int(w), int(h))
        self.nms_iou = nms_iou
        self.timeout_s = timeout_s
        self._session = BoundedSession(
            self.model.path, list(self.model.spec.outputs), threads=threads, timeout_s=timeout_s
        )
        self._input = self.model.spec.input
        self._blob = np.zeros((1, 3, h, w), np.float32)
        self._session.warm_up({self._input: self._blob})
        logger.info(
            "NanoDet ready: %s, threshold %.2f, detect size %dx%d, %d threads",
            self.model.path,
            threshold,
            w,
            h,
            threads,
        )

    def _prepare(self, image: Image) -> float:
        """Fill the input blob with ``image``, scaled by the returned factor and padded."""
        w, h = self.detect_size
        ih, iw = image.shape[:2]
        s = min(w / iw, h / ih)
        rw, rh = max(1, min(w, round(iw * s))), max(1, min(h, round(ih * s)))
        small = resize_bgr(image, rw, rh) if (rw, rh) != (iw, ih) else image
        norm = (small.astype(np.float32) - _MEAN_BGR) * _INV_STD_BGR
        self._blob[...] = 0.0  # the mean colour, after normalisation
        self._blob[0, :, :rh, :rw] = norm.transpose(2, 0, 1)
        return float(s)

    def _run(self) -> list[NDArray[np.float32]]:
        return self._session.run(
            {self._input: self._blob},
            what="person detection",
            hint="the frame was masked entirely; check CPU load or lower people.detect_width",
        )

    def __call__(self, image: Image) -> Detections:
        check_image(image)
        s = self._prepare(image)
        boxes = decode(self._run(), *self.detect_size, self.threshold)
        if len(boxes) == 0:
            return Detections.empty()
        boxes = boxes[nms(boxes, self.nms_iou)]
        boxes[:, :4] /= s
        h, w = image.shape[:2]
        boxes[:, [0, 2]] = np.clip(boxes[:, [0, 2]], 0, w)
        boxes[:, [1, 3]] = np.clip(boxes[:, [1, 3]], 0, h)
        return Detections(boxes)


def from_config(people: PeopleConfig, *, timeout_s: float | None = None) -> NanoDet:
    """The person detector as ``[people]`` configures it."""
    return NanoDet(
        people.model,
        threshold=people.threshold,
        detect_size=(people.detect_width, people.detect_height),
        threads=people.threads,
        timeout_s=timeout_s,
    )
