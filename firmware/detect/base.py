"""The seam between the pipeline and any face detector."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from firmware.frames import Detections, Image


@runtime_checkable
class FaceDetector(Protocol):
    """A callable that finds faces in a BGR image.

    Returns boxes in the pixel coordinates of ``image``; an empty :class:`Detections` when there
    is no face, never ``None``. Raises :class:`firmware.errors.DetectorError` when inference
    fails; the pipeline then fails closed.
    """

    def __call__(self, image: Image) -> Detections: ...
