"""Reading and writing single JPEG/PNG images with PyAV.

Used by the image folder source and by ``anoncam blur`` for single pictures. Writing encodes
the pixels only: no EXIF, GPS, maker notes or encoder comment is written, whatever the input
carried. Reading applies the EXIF orientation so the anonymized copy is upright.
"""

from __future__ import annotations

import logging
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np

from firmware.errors import InputError, OutputError
from firmware.frames import Image, check_image
from firmware.fsutil import write_atomic
from firmware.media.avio import error_text, frame_to_bgr, open_input
from firmware.media.header import image_size

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png"})
"""File name endings (lower case) the image folder source reads and ``write_image`` writes."""


MAX_PIXELS = 25_000_000
"""The largest picture read (width x height): 6000x4000, a 24-megapixel camera, fits. Memory
grows with the pixels (``anoncam blur`` at full-size detection peaked at 2.4 GB for 12 MP), so
anything larger is refused from its header, before a byte of it is decoded."""
MAX_SIDE = 16_384


def check_size(path: Path, width: int, height: int) -> None:
    """InputError naming ``path`` when ``width`` x ``height`` is beyond the limits above."""
    if width * height > MAX_PIXELS or max(width, height) > MAX_SIDE:
        raise InputError(
            f"{path}: {width}x{height} is {width * height / 1e6:.0f} megapixels, more than the "
            f"{MAX_PIXELS / 1e6:.0f} anoncam reads (at most {MAX_SIDE} pixels a side)",
            hint=f"scale it down to at most {MAX_PIXELS / 1e6:.0f} megapixels first; memory "
            "grows with the pixel count",
        )


def read_image(path: Path | str) -> Image:
    """Decode the first picture of ``path`` into a BGR uint8 array, rotated upright.

    Raises :class:`InputError` naming the file when it is missing, not a readable image, or
    larger than :data:`MAX_PIXELS` (checked from the header, before decoding).
    """
    p = Path(path)
    try:
        size = image_size(p)
    except OSError:
        pass  # open_input below names the file and the reason
    else:
        if size is None:
            # Without a size from the header nothing bounds what FFmpeg's probe would decode.
            raise InputError(
                f"{p}: not a readable image (no PNG or JPEG picture size in its header)",
                hint="the file is corrupt, truncated or of another type; re-copy it, or "
                "re-export it as JPEG or PNG",
            )
        check_size(p, *size)
    container = open_input(p, "image")
    try:
        if not container.streams.video:
            raise InputError(
                f"{p}: not a readable image (no picture in it)", hint="pass a JPEG or PNG"
            )
        for frame in container.decode(video=0):
            return frame_to_bgr(frame, apply_rotation=True)
    except av.FFmpegError as exc:
        raise InputError(
            f"{p}: not a readable image ({error_text(exc)})",
            hint="the file is corrupt or truncated; re-copy or re-export it",
        ) from None
    finally:
        container.close()
    raise InputError(f"{p}: not a readable image (no picture decoded)", hint="pass a JPEG or PNG")


def jpeg_qscale(quality: int) -> int:
    """Map a libjpeg-style quality (1-100) to FFmpeg's mjpeg quantizer scale (1-31).

    libjpeg scales its tables by ``(200 - 2q) / 100`` above 50 and ``50 / q`` below; FFmpeg's
    quantizer 2 gives about the size and PSNR of libjpeg quality 92 (measured on astronaut.png),
    so the scale factor times 12.5 lands on FFmpeg's scale.
    """
    if not 1 <= quality <= 100:
        raise ValueError(f"JPEG quality must be in 1..100, got {quality}")
    factor = (200 - 2 * quality) / 100 if quality >= 50 else 50 / quality
    return int(min(31, max(1, round(factor * 12.5))))


def encode_jpeg_qscale(image: Image, qscale: int) -> bytes:
    """JPEG bytes of a BGR image at FFmpeg's quantizer scale ``qscale`` (1 best .. 31), full-range
    4:2:0 (what every viewer expects; odd sizes are fine), with no metadata at all."""
    q = str(qscale)
    # bitexact drops the "Lavc..." comment segment: the file carries pixels and nothing else.
    return _encode(image, "mjpeg", "yuvj420p", {"qmin": q, "qmax": q, "flags": "+bitexact"})


DEFAULT_QUALITY = 85
"""The live preview's quality: a Pi streams it over Wi-Fi many times a second."""


def encode_jpeg(image: Image, quality: int = DEFAULT_QUALITY) -> bytes:
    """JPEG bytes of a BGR uint8 ``(H, W, 3)`` image at ``quality`` (1..100, libjpeg's scale:
    :func:`jpeg_qscale`), full-range 4:2:0, no metadata.

    Callers that handle camera frames (the preview hub, the snapshot) only pass it the ``image``
    of an :class:`firmware.anonymize.stage.Anonymized` result.
    """
    return encode_jpeg_qscale(image, jpeg_qscale(quality))


def decode_jpeg(data: bytes) -> Image:
    """Decode JPEG bytes to a BGR image (used by tests and the support bundle's checks)."""
    ctx = av.CodecContext.create("mjpeg", "r")
    frames = ctx.decode(av.Packet(data))
    frames += ctx.decode(None)
    if not frames:
        raise ValueError("not a decodable JPEG")
    out: Image = np.ascontiguousarray(frames[0].to_ndarray(format="bgr24"), dtype=np.uint8)
    return out


def encode_image(image: Image, suffix: str, *, quality: int = 92) -> bytes:
    """Encode a BGR image as PNG or JPEG bytes (by ``suffix``), without any metadata."""
    suffix = suffix.lower()
    if suffix == ".png":
        return _encode(image, "png", "rgb24", {})
    if suffix in (".jpg", ".jpeg"):
        return encode_jpeg_qscale(image, jpeg_qscale(quality))
    raise OutputError(
        f"cannot write images of type {suffix!r}", hint="use a .jpg, .jpeg or .png file name"
    )


def _encode(image: Image, codec: str, pix_fmt: str, options: dict[str, str]) -> bytes:
    check_image(image)
    h, w = image.shape[:2]
    ctx: Any = av.CodecContext.create(codec, "w")  # PyAV types the base class only
    ctx.width, ctx.height, ctx.pix_fmt = w, h, pix_fmt
    ctx.time_base = Fraction(1, 1)
    ctx.options = options
    frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="bgr24")
    frame = frame.reformat(format=pix_fmt)
    frame.pts = 0
    packets = list(ctx.encode(frame)) + list(ctx.encode(None))
    return b"".join(bytes(p) for p in packets)


def write_image(path: Path | str, image: Image, *, quality: int = 92) -> None:
    """Write ``image`` (BGR) to ``path`` as JPEG (``quality`` 1-100) or PNG, chosen by suffix.

    Atomic (:func:`firmware.fsutil.write_atomic`): a reader never sees half an image. Raises
    :class:`OutputError` when the file cannot be written.
    """
    p = Path(path)
    data = encode_image(image, p.suffix, quality=quality)
    write_atomic(p, data, what="image", make_parents=False)
    logger.debug("wrote %s (%d bytes)", p, len(data))
