"""A folder of JPEG/PNG images as a frame source, in natural name order (img2 before img10)."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from pathlib import Path

from firmware.errors import InputError
from firmware.frames import Frame
from firmware.media.image import IMAGE_SUFFIXES, read_image, write_image
from firmware.sources.base import SourceBase

logger = logging.getLogger(__name__)

__all__ = ["IMAGE_SUFFIXES", "ImageFolderSource", "list_images", "read_image", "write_image"]

_DIGITS = re.compile(r"(\d+)")


def _natural_key(name: str) -> list[tuple[int, int | str]]:
    # Tuples keep ints and strings comparable: ("frame", 2) sorts before ("frame", 10).
    return [(0, int(part)) if part.isdigit() else (1, part.lower()) for part in _DIGITS.split(name)]


def list_images(folder: Path) -> tuple[list[Path], list[Path]]:
    """``(images, skipped)`` in ``folder``: JPEG/PNG files in natural order, and other files.

    Hidden files (a leading dot, like macOS ``._x.jpg`` forks) are ignored entirely.
    """
    images: list[Path] = []
    skipped: list[Path] = []
    for entry in folder.iterdir():
        if entry.name.startswith(".") or not entry.is_file():
            continue
        (images if entry.suffix.lower() in IMAGE_SUFFIXES else skipped).append(entry)
    images.sort(key=lambda p: _natural_key(p.name))
    skipped.sort(key=lambda p: _natural_key(p.name))
    return images, skipped


class ImageFolderSource(SourceBase):
    """Frames from the JPEG/PNG files of a folder, at a fixed nominal ``fps``.

    Timestamps are ``index / fps``. Non-image files are skipped with one warning; an image that
    cannot be decoded raises :class:`InputError` naming it. ``size`` is the first image's size;
    later images may differ (fine for ``anoncam blur``, which treats each on its own).
    """

    def __init__(self, path: Path | str, *, fps: float = 15.0) -> None:
        self.path = Path(path)
        if fps <= 0:
            raise ValueError(f"fps must be positive, got {fps}")
        if not self.path.exists():
            raise InputError(f"{self.path}: folder not found", hint="check the path")
        if not self.path.is_dir():
            raise InputError(f"{self.path}: not a folder", hint="pass a folder of JPEG/PNG images")
        self.paths, skipped = list_images(self.path)
        if skipped:
            logger.warning(
                "%s: skipping %d file(s) that are not .jpg/.jpeg/.png, e.g. %s",
                self.path,
                len(skipped),
                skipped[0].name,
            )
        if not self.paths:
            raise InputError(
                f"{self.path}: no JPEG or PNG images in this folder",
                hint="put .jpg/.jpeg/.png files in it, or pass a video file",
            )
        first = read_image(self.paths[0])
        self._size = (int(first.shape[1]), int(first.shape[0]))
        self._fps = float(fps)

    @property
    def size(self) -> tuple[int, int]:
        return self._size

    @property
    def fps(self) -> float:
        return self._fps

    @property
    def frame_count(self) -> int:
        return len(self.paths)

    def describe(self) -> str:
        w, h = self._size
        return f"image folder {self.path} ({len(self.paths)} images, first {w}x{h})"

    def frames(self) -> Iterator[Frame]:
        step_ns = 1e9 / self._fps
        for index, p in enumerate(self.paths):
            yield Frame(read_image(p), round(index * step_ns), index)

    def close(self) -> None:
        pass  # nothing held open between frames
