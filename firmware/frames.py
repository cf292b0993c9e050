"""The one frame contract and the one detections type.

Sources convert whatever they read into :class:`Frame`; detectors return :class:`Detections`.
Nothing else in the pipeline converts colour spaces or box formats.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TypeAlias

import numpy as np
from numpy.typing import NDArray

Image: TypeAlias = NDArray[np.uint8]
"""A BGR image, ``uint8``, shape ``(H, W, 3)``, C-contiguous."""


def check_image(image: NDArray[np.generic], name: str = "image") -> Image:
    """Validate that ``image`` is a BGR uint8 ``(H, W, 3)`` array; raise ``ValueError`` if not."""
    if not isinstance(image, np.ndarray):
        raise ValueError(f"{name}: expected a numpy array, got {type(image).__name__}")
    if image.dtype != np.uint8:
        raise ValueError(f"{name}: expected dtype uint8, got {image.dtype}")
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"{name}: expected shape (H, W, 3), got {image.shape}")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(f"{name}: empty image of shape {image.shape}")
    return image  # type: ignore[return-value]


@dataclass(frozen=True, slots=True)
class Frame:
    """One frame from a source.

    ``image`` is the full-resolution BGR frame that is anonymized and may be shown or written.
    ``lores`` is an optional smaller BGR copy of the same instant for the detector (the Pi
    camera's second stream); boxes found on it are scaled to ``image``.
    ``t_ns`` is a monotonic timestamp in nanoseconds (media time for files, sensor time on a Pi);
    ``index`` counts frames from 0.
    """

    image: Image
    t_ns: int
    index: int
    lores: Image | None = None

    def __post_init__(self) -> None:
        check_image(self.image, "Frame.image")
        if self.lores is not None:
            check_image(self.lores, "Frame.lores")

    @property
    def width(self) -> int:
        return int(self.image.shape[1])

    @property
    def height(self) -> int:
        return int(self.image.shape[0])


_EMPTY = np.zeros((0, 5), dtype=np.float32)


@dataclass(frozen=True, slots=True)
class Detections:
    """Face boxes as a validated ``(N, 5)`` float32 array: ``x1, y1, x2, y2, score``.

    Coordinates are pixels in the frame the detections belong to; ``x2 > x1`` and ``y2 > y1``.
    An empty result is a ``(0, 5)`` array, never ``None``.
    """

    array: NDArray[np.float32] = field(default_factory=lambda: _EMPTY.copy())

    def __post_init__(self) -> None:
        a = np.asarray(self.array, dtype=np.float32)
        if a.ndim != 2 or a.shape[1] != 5:
            raise ValueError(f"Detections: expected shape (N, 5), got {a.shape}")
        if not np.all(np.isfinite(a)):
            raise ValueError("Detections: boxes contain NaN or infinity")
        if a.shape[0] and (np.any(a[:, 2] < a[:, 0]) or np.any(a[:, 3] < a[:, 1])):
            raise ValueError("Detections: every box needs x2 >= x1 and y2 >= y1")
        a = np.ascontiguousarray(a)
        a.setflags(write=False)
        object.__setattr__(self, "array", a)

    @classmethod
    def empty(cls) -> Detections:
        return cls(_EMPTY.copy())

    @classmethod
    def from_boxes(
        cls,
        boxes: NDArray[np.floating] | list[list[float]],
        scores: NDArray[np.floating] | None = None,
    ) -> Detections:
        b = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
        s = np.ones(len(b), np.float32) if scores is None else np.asarray(scores, np.float32)
        return cls(np.concatenate([b, s.reshape(-1, 1)], axis=1))

    def __len__(self) -> int:
        return int(self.array.shape[0])

    @property
    def boxes(self) -> NDArray[np.float32]:
        return self.array[:, :4]

    @property
    def scores(self) -> NDArray[np.float32]:
        return self.array[:, 4]

    def scaled(self, sx: float, sy: float) -> Detections:
        """Boxes multiplied by ``sx`` horizontally and ``sy`` vertically (e.g. lores -> main)."""
        a = self.array.copy()
        a[:, [0, 2]] *= sx
        a[:, [1, 3]] *= sy
        return Detections(a)

    def clipped(self, width: int, height: int) -> Detections:
        a = self.array.copy()
        a[:, [0, 2]] = np.clip(a[:, [0, 2]], 0, width)
        a[:, [1, 3]] = np.clip(a[:, [1, 3]], 0, height)
        return Detections(a)

    def above(self, threshold: float) -> Detections:
        return Detections(self.array[self.array[:, 4] >= threshold])
