"""Overlap I/O with detection: decode ahead and encode behind in background threads.

PyAV releases the GIL while FFmpeg decodes and encodes, so on a two-core machine decoding the
next frame and encoding the previous one run while onnxruntime works on the current one.
Queues are bounded (a few frames), so memory stays flat whatever the video's length, and an
exception in a background thread is raised in the caller's thread, never swallowed.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Generator, Iterable
from types import TracebackType
from typing import Generic, Self, TypeVar

T = TypeVar("T")

_DONE = object()


class _Failure:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


def read_ahead(items: Iterable[T], depth: int = 4) -> Generator[T, None, None]:
    """Iterate ``items`` produced by a background thread, at most ``depth`` ahead."""
    q: queue.Queue[object] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in items:
                while not stop.is_set():
                    try:
                        q.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put(_DONE)
        except BaseException as exc:  # handed to the consumer, who re-raises it
            q.put(_Failure(exc))

    thread = threading.Thread(target=produce, name="read-ahead", daemon=True)
    thread.start()
    try:
        while True:
            item = q.get()
            if item is _DONE:
                return
            if isinstance(item, _Failure):
                raise item.exc
            yield item  # type: ignore[misc]
    finally:
        stop.set()
        thread.join(timeout=5)


class WriteBehind(Generic[T]):
    """Call ``sink(item)`` for each submitted item in a background thread, in order.

    ``submit`` blocks when ``depth`` items are waiting. ``close`` waits for the queue to drain
    and re-raises the first exception the sink raised (``submit`` raises it too, early).
    """

    def __init__(self, sink: Callable[[T], None], depth: int = 4) -> None:
        self._sink = sink
        self._q: queue.Queue[object] = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._consume, name="write-behind", daemon=True)
        self._thread.start()

    def _consume(self) -> None:
        while True:
            item = self._q.get()
            if item is _DONE:
                return
            if self._error is None:
                try:
                    self._sink(item)  # type: ignore[arg-type]
                except BaseException as exc:  # re-raised in the submitting thread
                    self._error = exc

    def submit(self, item: T) -> None:
        if self._error is not None:
            raise self._error
        self._q.put(item)

    def close(self) -> None:
        if self._thread.is_alive():
            self._q.put(_DONE)
            self._thread.join()
        if self._error is not None:
            raise self._error

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            if self._thread.is_alive():
                self._q.put(_DONE)
                self._thread.join()
