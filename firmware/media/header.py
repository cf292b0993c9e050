"""Picture sizes read from a PNG or JPEG header, before anything is decoded.

A PNG of one colour at 12000x9000 is a few hundred KB on disk and 324 MB as pixels; FFmpeg's
probe alone decodes it. Reading the size from the first bytes lets a caller refuse it for the
cost of a few KB read. Only the two formats anoncam reads (``IMAGE_SUFFIXES``) are understood.
"""

from __future__ import annotations

import struct
from pathlib import Path

_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
# JPEG start-of-frame markers: SOF0..SOF15 except DHT (C4), JPG (C8) and DAC (CC).
_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_SCAN_LIMIT = 1 << 20  # EXIF and ICC segments come before the frame header; 1 MiB is plenty


def image_size(path: Path) -> tuple[int, int] | None:
    """``(width, height)`` from the header of a PNG or JPEG file, or None if it is neither or
    the header is cut short (the decoder then reports what is wrong)."""
    with path.open("rb") as f:
        head = f.read(8)
        if head == _PNG_MAGIC:
            ihdr = f.read(16)  # length, b"IHDR", width, height
            if len(ihdr) == 16 and ihdr[4:8] == b"IHDR":
                w, h = struct.unpack(">II", ihdr[8:16])
                return int(w), int(h)
            return None
        if head[:2] != b"\xff\xd8":
            return None
        f.seek(2)
        return _jpeg_size(f.read(_SCAN_LIMIT))


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    i = 0
    while i + 4 <= len(data):
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte before a marker
            i += 1
            continue
        if marker in (0x01, *range(0xD0, 0xD8)):  # markers without a length
            i += 2
            continue
        (length,) = struct.unpack(">H", data[i + 2 : i + 4])
        if marker in _SOF:
            if i + 9 > len(data):
                return None
            h, w = struct.unpack(">HH", data[i + 5 : i + 9])
            return int(w), int(h)
        i += 2 + length
    return None
