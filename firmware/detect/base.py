"""The seams between the pipeline and its detectors: faces (anonymization), people (counting)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, runtime_checkable

from firmware.frames import Detections, Frame, Image


@runtime_checkable
class FaceDetector(Protocol):
    """A callable that finds faces in a BGR image.

    Returns boxes in the pixel coordinates of ``image``; an empty :class:`Detections` when there
    is no face, never ``None``. Raises :class:`firmware.errors.DetectorError` when inference
    fails; the pipeline then fails closed.
    """

    def __call__(self, image: Image) -> Detections: ...


@runtime_checkable
class PersonDetector(Protocol):
    """A callable that finds people (whole bodies, seen from any side) in a BGR image.

    The same contract as :class:`FaceDetector`: boxes in ``image`` pixels, empty when nobody is
    there, :class:`firmware.errors.DetectorError` when inference fails (the frame then fails
    closed: it is masked entirely).
    """

    def __call__(self, image: Image) -> Detections: ...


def detect_on_frame(detector: Callable[[Image], Detections], frame: Frame) -> Detections:
    """Run ``detector`` on the frame's detection image (its low-resolution stream when it has
    one, the Pi's cheap way to detect) and map the boxes to the main image's pixels."""
    if frame.lores is None:
        return detector(frame.image)
    dets = detector(frame.lores)
    sx = frame.width / frame.lores.shape[1]
    sy = frame.height / frame.lores.shape[0]
    return dets.scaled(sx, sy).clipped(frame.width, frame.height)
