"""Detect several frames at once, and hand them back in order.

A file job (``anoncam blur``) has every frame in advance, so on a CPU with N cores it can run
the face detector on N frames at the same time, one onnxruntime thread each, instead of one
frame at a time on N threads. The second way stalls whenever one of its threads is preempted
by the decoder or the encoder, which share the cores; the first has nothing to wait for. The
hold and the cover still run in frame order, in the caller's thread
(:meth:`~firmware.anonymize.stage.AnonymizingStage.finish`).

The live service does not do this: a camera wants each frame's latency low, not only the rate.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Generator, Iterable
from concurrent.futures import Future, ThreadPoolExecutor

from firmware.anonymize.stage import AnonymizingStage, Detected
from firmware.frames import Frame


def detect_ahead(
    stage: AnonymizingStage, frames: Iterable[Frame], workers: int
) -> Generator[tuple[Frame, Detected], None, None]:
    """``(frame, what the detector found on it)`` for each frame, in input order, with up to
    ``workers`` detections running at once and ``workers`` more frames queued behind them (so
    memory stays a few frames). The detector must be safe to call from several threads (an
    onnxruntime session is). A detector failure is carried in :class:`Detected`, not raised;
    an error reading ``frames`` is raised here, after the frames before it."""
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    pending: deque[tuple[Frame, Future[Detected]]] = deque()

    def oldest() -> tuple[Frame, Detected]:
        frame, future = pending.popleft()
        return frame, future.result()  # detect_timed raises nothing: failures are carried

    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="detect") as pool:
        try:
            for frame in frames:
                pending.append((frame, pool.submit(stage.detect_timed, frame)))
                if len(pending) > 2 * workers:
                    yield oldest()
            while pending:
                yield oldest()
        except Exception:
            # reading failed (a truncated video): the frames read before it are handed on first
            while pending:
                yield oldest()
            raise
        finally:  # the consumer stopped early: drop what has not started
            for _, future in pending:
                future.cancel()
