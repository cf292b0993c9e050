"""A small progress line for long work, on stderr.

On a terminal it redraws one line (frames, percent, fps, ETA); in a log or pipe it prints a
line every few seconds instead, so CI logs and journald stay readable.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO


class ProgressLine:
    def __init__(self, label: str, stream: TextIO | None = None, interval_s: float = 0.2) -> None:
        self.label = label
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.interval_s = interval_s if self.tty else 5.0
        self.start = time.monotonic()
        self._last = 0.0
        self._shown = False

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        if now - self._last < self.interval_s and done != total:
            return
        self._last = now
        elapsed = max(now - self.start, 1e-6)
        fps = done / elapsed
        if total > 0:
            pct = min(100.0, 100.0 * done / total)
            eta = (total - done) / fps if fps > 0 else 0.0
            text = f"{self.label}: {done}/{total} frames {pct:5.1f}% {fps:6.1f} fps ETA {eta:5.0f}s"
        else:
            text = f"{self.label}: {done} frames {fps:6.1f} fps"
        if self.tty:
            self.stream.write("\r" + text.ljust(78))
        else:
            self.stream.write(text + "\n")
        self.stream.flush()
        self._shown = True

    def close(self) -> None:
        if self.tty and self._shown:
            self.stream.write("\n")
            self.stream.flush()
