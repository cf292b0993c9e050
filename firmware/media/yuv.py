"""Planar YUV 4:2:0 (I420, the Pi camera's low-resolution stream) to BGR, in vectorized numpy.

The Pi 4 and older can only deliver the second ("lores") stream as YUV420, so the camera source
converts it here for the detector. Chroma is upsampled by repetition (each chroma sample covers
its 2x2 block): the detector downsamples anyway and bilinear chroma would double the cost.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from numpy.typing import NDArray

from firmware.frames import Image

Matrix = Literal["bt601", "bt709", "bt2020"]

# (Kr, Kb) luma coefficients of each Y'CbCr encoding.
_COEFFS: dict[str, tuple[float, float]] = {
    "bt601": (0.299, 0.114),
    "bt709": (0.2126, 0.0722),
    "bt2020": (0.2627, 0.0593),
}


def _coefficients(matrix: Matrix) -> tuple[float, float, float, float]:
    """``(cr->R, cb->G, cr->G, cb->B)`` for normalized chroma."""
    kr, kb = _COEFFS[matrix]
    kg = 1.0 - kr - kb
    return 2 * (1 - kr), -2 * kb * (1 - kb) / kg, -2 * kr * (1 - kr) / kg, 2 * (1 - kb)


def i420_to_bgr(
    buffer: NDArray[np.uint8],
    width: int,
    height: int,
    *,
    stride: int | None = None,
    matrix: Matrix = "bt601",
    full_range: bool = False,
    v_first: bool = False,
) -> Image:
    """Convert one I420 picture to a ``(height, width, 3)`` BGR uint8 array.

    ``buffer`` is either the flat buffer or picamera2's ``make_array`` of a YUV420 stream: an
    array of ``height * 3 / 2`` rows of ``stride`` bytes, where the Y plane has ``height`` rows
    of ``stride`` bytes and the U and V planes follow with ``height / 2`` rows of ``stride / 2``
    bytes each (so two chroma rows share one array row). Padding right of ``width`` is ignored.
    ``full_range``: Y and C span 0-255 (JPEG, libcamera's ``Sycc``) instead of 16-235/240.
    ``v_first``: YVU420 (V plane before U).
    """
    if width % 2 or height % 2:
        raise ValueError(f"YUV420 needs even dimensions, got {width}x{height}")
    if stride is None:
        stride = int(buffer.shape[1]) if buffer.ndim == 2 else width
    if stride < width or stride % 2:
        raise ValueError(f"stride {stride} does not fit width {width}")
    flat = np.ascontiguousarray(buffer).reshape(-1)
    h2, w2, s2 = height // 2, width // 2, stride // 2
    y_end = height * stride
    c_size = h2 * s2
    if flat.size < y_end + 2 * c_size:
        raise ValueError(
            f"YUV420 buffer of {flat.size} bytes is too small for {width}x{height} "
            f"(stride {stride})"
        )
    y = flat[:y_end].reshape(height, stride)[:, :width].astype(np.float32)
    u = flat[y_end : y_end + c_size].reshape(h2, s2)[:, :w2].astype(np.float32)
    v = flat[y_end + c_size : y_end + 2 * c_size].reshape(h2, s2)[:, :w2].astype(np.float32)
    if v_first:
        u, v = v, u
    u -= 128.0
    v -= 128.0
    if full_range:
        y += 0.5  # rounds when the float result is truncated to uint8 below
    else:
        y -= 16.0
        y *= 255.0 / 219.0
        y += 0.5
        u *= 255.0 / 224.0
        v *= 255.0 / 224.0
    r_v, g_u, g_v, b_u = _coefficients(matrix)
    # Chroma terms at half resolution, broadcast over each 2x2 block of luma.
    y4 = y.reshape(h2, 2, w2, 2)
    out = np.empty((height, width, 3), np.uint8)
    out4 = out.reshape(h2, 2, w2, 2, 3)
    for channel, term in ((0, b_u * u), (1, g_u * u + g_v * v), (2, r_v * v)):
        value = y4 + term[:, None, :, None]
        np.clip(value, 0.0, 255.0, out=value)
        out4[..., channel] = value
    return out


def bgr_to_i420(
    image: Image, *, stride: int | None = None, matrix: Matrix = "bt601", full_range: bool = False
) -> NDArray[np.uint8]:
    """The inverse, for tests and the camera stand-in: BGR to a ``(h * 3 / 2, stride)`` I420 array.

    Chroma is the mean of each 2x2 block. Padding bytes are filled with 0.
    """
    h, w = image.shape[:2]
    if w % 2 or h % 2:
        raise ValueError(f"YUV420 needs even dimensions, got {w}x{h}")
    stride = w if stride is None else stride
    kr, kb = _COEFFS[matrix]
    kg = 1.0 - kr - kb
    bgr = image.astype(np.float64)
    b, g, r = bgr[..., 0], bgr[..., 1], bgr[..., 2]
    yf = kr * r + kg * g + kb * b
    cb = (b - yf) / (2 * (1 - kb))
    cr = (r - yf) / (2 * (1 - kr))
    if not full_range:
        yf = 16.0 + yf * 219.0 / 255.0
        cb = cb * 224.0 / 255.0
        cr = cr * 224.0 / 255.0
    h2, w2, s2 = h // 2, w // 2, stride // 2
    cb = cb.reshape(h2, 2, w2, 2).mean(axis=(1, 3)) + 128.0
    cr = cr.reshape(h2, 2, w2, 2).mean(axis=(1, 3)) + 128.0
    flat = np.zeros(h * stride + 2 * h2 * s2, np.uint8)
    flat[: h * stride].reshape(h, stride)[:, :w] = np.clip(np.rint(yf), 0, 255)
    u_plane = flat[h * stride : h * stride + h2 * s2].reshape(h2, s2)
    v_plane = flat[h * stride + h2 * s2 :].reshape(h2, s2)
    u_plane[:, :w2] = np.clip(np.rint(cb), 0, 255)
    v_plane[:, :w2] = np.clip(np.rint(cr), 0, 255)
    return flat.reshape(h * 3 // 2, stride)
