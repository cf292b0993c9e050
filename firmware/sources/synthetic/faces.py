"""Real face photographs for the synthetic scene, read from scikit-image's bundled data.

No network, no download: ``astronaut.png`` (Eileen Collins, frontal, colour), ``camera.png`` (the
cameraman, grey) and ``lfw_subset.npy`` (100 Labeled-Faces-in-the-Wild faces, 25x25 grey), each
cut to a head crop with its face box known.
"""

from __future__ import annotations

import importlib.util
import logging
import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import av
import numpy as np

from firmware.errors import SourceError
from firmware.frames import Image

logger = logging.getLogger(__name__)


SKIMAGE_HINT = (
    "pip install 'anoncam[dev]' (scikit-image ships the face photos of the synthetic scene)"
)


# Face boxes (x1, y1, x2, y2) in the source photos, as CenterFace 1.5 finds them at threshold
# 0.2: the ground truth is a box a face detector would draw, so IoU against it is meaningful.
_ASTRONAUT_FACE = (181.5, 58.2, 269.9, 177.8)


_CAMERAMAN_FACE = (202.3, 118.9, 257.6, 196.9)


# LFW crops are tight; CenterFace's mean box over the 100 faces, relative to the 25x25 crop
# (standard deviation about 0.03 of the crop).
_LFW_FACE = (0.055, 0.02, 0.835, 0.965)


@dataclass(frozen=True, slots=True)
class FaceSource:
    name: str
    head: Image  # BGR crop around the face
    face: tuple[float, float, float, float]  # face box in ``head`` coordinates
    outline: bool  # True: the crop has real hair and head outline; False: draw hair behind it
    grey: bool


def skimage_data_dir() -> Path:
    """scikit-image's bundled data folder, found without importing scikit-image."""
    spec = importlib.util.find_spec("skimage")
    if spec is None or not spec.submodule_search_locations:
        raise SourceError(
            "the synthetic scene needs scikit-image, which is not installed", hint=SKIMAGE_HINT
        )
    data = Path(next(iter(spec.submodule_search_locations))) / "data"
    for name in ("astronaut.png", "camera.png", "lfw_subset.npy", "gravel.png"):
        if not (data / name).is_file():
            raise SourceError(
                f"{data / name}: missing from the installed scikit-image",
                hint="reinstall it: pip install --force-reinstall scikit-image",
            )
    return data


def resize_image(image: Image, width: int, height: int) -> Image:
    """Bicubic resize through libswscale (PyAV): used only while building sprites."""
    frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="bgr24")
    out = frame.reformat(width=max(1, width), height=max(1, height), interpolation="BICUBIC")
    result: Image = np.ascontiguousarray(out.to_ndarray(format="bgr24"))
    return result


def crop_head(
    image: Image, box: tuple[float, float, float, float], margins: tuple[float, ...]
) -> tuple[Image, tuple[float, float, float, float]]:
    """Crop around a face box with margins (left, top, right, bottom) in face heights."""
    x1, y1, x2, y2 = box
    fh = y2 - y1
    left, top, right, bottom = margins
    h, w = image.shape[:2]
    cx1, cy1 = max(0, int(x1 - left * fh)), max(0, int(y1 - top * fh))
    cx2, cy2 = min(w, math.ceil(x2 + right * fh)), min(h, math.ceil(y2 + bottom * fh))
    crop = np.ascontiguousarray(image[cy1:cy2, cx1:cx2])
    return crop, (x1 - cx1, y1 - cy1, x2 - cx1, y2 - cy1)


def reference_photos() -> list[tuple[str, Image, tuple[float, float, float, float]]]:
    """The two whole portraits (astronaut, cameraman) with their face boxes: what a derived
    model must find before the detector uses it. SourceError without scikit-image."""
    from firmware.media.image import read_image

    data = skimage_data_dir()
    return [
        ("astronaut.png", read_image(data / "astronaut.png"), _ASTRONAUT_FACE),
        ("camera.png", read_image(data / "camera.png"), _CAMERAMAN_FACE),
    ]


@lru_cache(maxsize=1)
def load_faces() -> tuple[FaceSource, ...]:
    """The face photos: astronaut, cameraman, then the 100 LFW faces. Read once per process."""
    from firmware.media.image import read_image

    data = skimage_data_dir()
    out: list[FaceSource] = []
    astronaut = read_image(data / "astronaut.png")
    head, face = crop_head(astronaut, _ASTRONAUT_FACE, (0.25, 0.42, 0.25, 0.12))
    out.append(FaceSource("astronaut", head, face, outline=True, grey=False))
    camera = read_image(data / "camera.png")
    head, face = crop_head(camera, _CAMERAMAN_FACE, (0.2, 0.62, 0.2, 0.1))
    out.append(FaceSource("cameraman", head, face, outline=True, grey=True))
    lfw = np.load(data / "lfw_subset.npy", allow_pickle=False)
    # The file holds 100 faces followed by 100 non-faces; only the faces are used.
    for i in range(100):
        grey = np.clip(lfw[i] * 255.0 + 0.5, 0, 255).astype(np.uint8)
        rgb = np.ascontiguousarray(np.repeat(grey[:, :, None], 3, axis=2))
        s = grey.shape[0]
        face = (_LFW_FACE[0] * s, _LFW_FACE[1] * s, _LFW_FACE[2] * s, _LFW_FACE[3] * s)
        out.append(FaceSource(f"lfw-{i:03d}", rgb, face, outline=False, grey=True))
    return tuple(out)
