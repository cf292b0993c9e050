"""JPEG encoding of a BGR image with PyAV's ``mjpeg`` encoder (libavcodec), no metadata.

The output is a bare baseline JPEG: no EXIF, no JFIF comment, no encoder tag (``bitexact``), so
a snapshot or a preview frame carries nothing but pixels. This module encodes whatever image it
is given; callers that handle camera frames (the preview hub, the snapshot) only pass it the
``image`` of an :class:`firmware.anonymizing.Anonymized` result.

``quality`` is on the familiar 1..100 scale and maps linearly onto libavcodec's quantizer scale
(100 -> q 2, the finest; 1 -> q 31). Trade-off: 90 (q 5) is sharp enough to judge focus and
aim, about 2x the bytes of 75 (q 9); the live preview uses a lower quality than the snapshot
because a Pi streams it over Wi-Fi many times a second.
"""

from __future__ import annotations

import av
import numpy as np

from firmware.frames import Image
from firmware.sources.image_io import encode_jpeg_qscale

DEFAULT_QUALITY = 85


def qscale_for(quality: int) -> int:
    """libavcodec's quantizer scale (2 best .. 31 worst) for a 1..100 ``quality``."""
    if not 1 <= quality <= 100:
        raise ValueError(f"JPEG quality must be between 1 and 100, got {quality}")
    return round(31 - (quality - 1) * 29 / 99)


def encode_jpeg(image: Image, quality: int = DEFAULT_QUALITY) -> bytes:
    """Encode a BGR uint8 ``(H, W, 3)`` image as JPEG bytes (full-range YUV 4:2:0)."""
    return encode_jpeg_qscale(image, qscale_for(quality))


def decode_jpeg(data: bytes) -> Image:
    """Decode JPEG bytes to a BGR image (used by tests and the support bundle's checks)."""
    ctx = av.CodecContext.create("mjpeg", "r")
    frames = ctx.decode(av.Packet(data))
    frames += ctx.decode(None)
    if not frames:
        raise ValueError("not a decodable JPEG")
    out: Image = np.ascontiguousarray(frames[0].to_ndarray(format="bgr24"), dtype=np.uint8)
    return out
