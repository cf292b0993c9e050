"""The seam between the pipeline and anything that produces frames.

A source turns what it reads (a camera, a video file, an image folder, a synthetic scene) into
:class:`firmware.frames.Frame` objects; the rest of the pipeline never knows which one it has.
"""

from __future__ import annotations

from collections.abc import Iterator
from types import TracebackType
from typing import Protocol, Self, runtime_checkable

from firmware.frames import Frame


@runtime_checkable
class FrameSource(Protocol):
    """Where frames come from.

    - ``size``: ``(width, height)`` of ``Frame.image`` in pixels.
    - ``fps``: the nominal frame rate (what was asked of the camera, or the file's average rate).
    - ``live``: True for a camera. Windows then close on the wall clock; for files they close on
      media time so that a file processed faster than real time still gives correct windows.
    - ``dropped``: frames the source knows it lost (camera frames skipped because the pipeline
      was busy). Files and synthetic scenes never drop.
    - ``frames()``: BGR frames with a monotonic ``t_ns`` (media time from 0 for files, the
      sensor timestamp for the camera) and ``index`` counting delivered frames from 0.
    - ``close()``: releases the camera or file; safe to call twice. Sources are context managers.
    """

    @property
    def size(self) -> tuple[int, int]: ...

    @property
    def fps(self) -> float: ...

    @property
    def live(self) -> bool: ...

    @property
    def dropped(self) -> int: ...

    def describe(self) -> str: ...

    def frames(self) -> Iterator[Frame]: ...

    def close(self) -> None: ...

    def __enter__(self) -> Self: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...


class SourceBase:
    """Shared plumbing for the implementations (not part of the protocol): context manager, and
    the defaults of a recorded source (not live, never drops); the camera overrides both."""

    @property
    def live(self) -> bool:
        return False

    @property
    def dropped(self) -> int:
        return 0

    def close(self) -> None:  # pragma: no cover - overridden
        pass

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
