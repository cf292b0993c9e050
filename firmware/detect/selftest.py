"""A derived model proves itself before it runs: it must find the faces in two real portraits.

The manifest's hash vouches for the file ``models fetch`` writes. A derived model (the int8 one
from ``models quantize``) carries only a sidecar hash, which anyone can write next to any file:
a model with the right names that finds nothing would otherwise pass and let every face
through (P2). So it is run on scikit-image's astronaut and cameraman portraits, whose face
boxes were annotated by eye, and refused unless it finds each face (IoU >= 0.5).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np

from firmware.boxes import iou_matrix
from firmware.errors import ModelError, SourceError
from firmware.frames import Detections, Image

logger = logging.getLogger(__name__)

MIN_IOU = 0.5


def prove(detect: Callable[[Image], Detections], path: Path) -> None:
    """Raise :class:`ModelError` naming ``path`` unless ``detect`` finds both reference faces."""
    from firmware.sources.synthetic.faces import reference_photos

    try:
        photos = reference_photos()
    except SourceError as exc:
        raise ModelError(
            f"{path}: a derived model (not the manifest's file) must find the faces in two "
            f"reference photos before use, and they cannot be read: {exc}",
            hint="install scikit-image (it ships the photos), or use the manifest's model "
            "('anoncam models fetch')",
        ) from None
    for name, image, face in photos:
        found = detect(image)
        truth = np.array([face], np.float32)
        best = float(iou_matrix(truth, found.boxes).max()) if len(found) else 0.0
        if best < MIN_IOU:
            raise ModelError(
                f"{path}: refused: this derived model does not find the face in {name} "
                f"(best overlap {best:.2f}, needs {MIN_IOU}); it would leave faces uncovered",
                hint="use the manifest's model ('anoncam models fetch'), or make the int8 model "
                "again with 'anoncam models quantize'",
            )
    logger.info("%s: derived model found the faces in the reference photos", path)
