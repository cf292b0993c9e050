"""PyAV plumbing shared by the file sources: opening inputs with errors that name the file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import av
import numpy as np

from firmware.errors import InputError
from firmware.frames import Image


def open_input(path: Path, what: str) -> Any:
    """``av.open(path)`` for reading; every failure becomes an :class:`InputError` naming ``path``.

    ``what`` ("video", "image") only shapes the message. Returns an ``av.InputContainer``
    (typed ``Any`` because PyAV's container types are awkward to spell across versions).
    """
    if not path.exists():
        raise InputError(f"{path}: file not found", hint="check the path and that the file exists")
    if path.is_dir():
        raise InputError(f"{path}: is a folder, expected a {what} file", hint=f"pass a {what} file")
    try:
        return av.open(str(path), mode="r")
    except PermissionError:
        raise InputError(
            f"{path}: permission denied", hint="make the file readable by the anoncam user"
        ) from None
    except av.FFmpegError as exc:
        raise InputError(
            f"{path}: not a readable {what} ({error_text(exc)})",
            hint=f"check that the file is a complete {what}; re-copy or re-export it",
        ) from None
    except OSError as exc:
        raise InputError(
            f"{path}: cannot read: {exc.strerror or exc}", hint="check the file and its disk"
        ) from None


def error_text(exc: BaseException) -> str:
    """FFmpeg's own words for an error, without PyAV's errno prefix."""
    text = getattr(exc, "strerror", None)
    return str(text) if text else str(exc)


def frame_to_bgr(frame: Any, *, apply_rotation: bool = False) -> Image:
    """A decoded ``av.VideoFrame`` as a C-contiguous BGR uint8 array.

    With ``apply_rotation`` the display rotation FFmpeg reports (EXIF orientation of a JPEG,
    a phone video's display matrix) is applied, so the image is upright as a viewer shows it.
    """
    image: Image = frame.to_ndarray(format="bgr24")
    if apply_rotation:
        # PyAV gives the counter-clockwise angle that displays the frame upright; np.rot90 with
        # a positive k also turns counter-clockwise.
        turns = round(float(getattr(frame, "rotation", 0) or 0) / 90.0) % 4
        if turns:
            image = np.rot90(image, k=turns)
    return np.ascontiguousarray(image)
