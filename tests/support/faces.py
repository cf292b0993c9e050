"""Real face photos and face-free images shipped inside scikit-image's wheel (no download).

Face boxes were annotated by eye on the original images (forehead to chin, cheek to cheek),
independently of any detector run, and are used as ground truth with IoU >= 0.5.
"""

from __future__ import annotations

import os
from pathlib import Path

import av
import numpy as np
import skimage
from numpy.typing import NDArray

DATA = Path(os.path.dirname(skimage.__file__)) / "data"

# name -> list of face boxes (x1, y1, x2, y2) in pixels of the original image
FACES: dict[str, list[tuple[float, float, float, float]]] = {
    "astronaut.png": [(178.0, 58.0, 272.0, 182.0)],
    "camera.png": [(200.0, 115.0, 260.0, 198.0)],
}
FACE_FREE = [
    "coffee.png",
    "rocket.jpg",
    "brick.png",
    "grass.png",
    "gravel.png",
    "moon.png",
    "coins.png",
    "page.png",
    "text.png",
    "hubble_deep_field.jpg",
    "chelsea.png",
]


def load_bgr(name: str) -> NDArray[np.uint8]:
    """Decode a bundled image with PyAV into BGR uint8 (grey images become three channels)."""
    with av.open(str(DATA / name)) as c:
        frame = next(c.decode(video=0))
        img: NDArray[np.uint8] = frame.to_ndarray(format="bgr24")
    return np.ascontiguousarray(img)


def face_sprite(
    name: str = "astronaut.png",
) -> tuple[NDArray[np.uint8], tuple[float, float, float, float]]:
    """The image and its first annotated face box."""
    return load_bgr(name), FACES[name][0]
