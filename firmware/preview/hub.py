"""The hand-over point between the running pipeline and the preview page.

The service calls :meth:`PreviewHub.publish` with each :class:`~firmware.anonymize.stage.Anonymized`
result (never a raw :class:`~firmware.frames.Frame`: ``publish`` checks the type at run time
too) plus the current window's counts and health figures. The preview server's MJPEG clients
wait on the hub for a newer frame.

Cost and memory are bounded whatever the camera rate or the number of viewers:
- only the latest anonymized image is kept (a reference; the previous one is dropped), and the
  latest JPEG of it;
- a frame is JPEG-encoded lazily, when a viewer asks for it, once for all viewers; frames
  nobody looks at are never encoded, so a preview with no viewer costs one reference per frame;
- each viewer receives at most ``max_fps`` frames per second (enforced by the server).

The hub also holds the counter settings drawn on the page, and ``on_counter_change``, the
service's callback that applies a new counting line without a restart.
"""

from __future__ import annotations

import copy
import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from firmware.anonymize.stage import Anonymized
from firmware.config.settings import CounterConfig
from firmware.frames import Image
from firmware.media.image import encode_jpeg

logger = logging.getLogger(__name__)

CounterCallback = Callable[[CounterConfig], None]


class PreviewHub:
    """Latest anonymized frame, counts, health and counter settings, shared with the server.

    Thread-safe: ``publish`` is called from the pipeline thread, everything else from the
    server's request threads.
    """

    def __init__(
        self,
        counter: CounterConfig,
        *,
        on_counter_change: CounterCallback | None = None,
        quality: int = 75,
        max_fps: float = 10.0,
    ) -> None:
        if max_fps <= 0:
            raise ValueError(f"max_fps must be > 0, got {max_fps}")
        self.quality = quality
        self.max_fps = max_fps
        self._on_counter_change = on_counter_change
        self._cond = threading.Condition()
        self._encode_lock = threading.Lock()
        self._counter = counter
        self._image: Image | None = None
        self._seq = 0  # 0: nothing published yet
        self._published_at = 0.0
        self._jpeg: tuple[int, bytes] | None = None
        self._counts: dict[str, Any] = {}
        self._health: dict[str, Any] = {}
        self._closed = False
        self.frames_encoded = 0
        self.frames_sent = 0
        self.viewers = 0

    # --- pipeline side -------------------------------------------------------------------
    def publish(
        self,
        result: Anonymized,
        counts: Mapping[str, Any] | None = None,
        health: Mapping[str, Any] | None = None,
    ) -> None:
        """Offer the pipeline's latest anonymized frame (and optionally counts and health)."""
        if not isinstance(result, Anonymized):
            # Privacy guard (P2): only the anonymizing stage's output may reach a viewer.
            raise TypeError(
                f"PreviewHub.publish takes an Anonymized result, got {type(result).__name__}"
            )
        with self._cond:
            # Keep the anonymized pixels only, not the result: it also holds the raw frame.
            self._image = result.image
            self._seq += 1
            self._published_at = time.monotonic()
            if counts is not None:
                self._counts = copy.deepcopy(dict(counts))
            if health is not None:
                self._health = copy.deepcopy(dict(health))
            self._cond.notify_all()

    def set_status(
        self, counts: Mapping[str, Any] | None = None, health: Mapping[str, Any] | None = None
    ) -> None:
        """Update counts and health without a frame (e.g. when the camera stalls)."""
        with self._cond:
            if counts is not None:
                self._counts = copy.deepcopy(dict(counts))
            if health is not None:
                self._health = copy.deepcopy(dict(health))

    def close(self) -> None:
        """Wake every waiting viewer so its stream ends (service shutdown)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    @property
    def closed(self) -> bool:
        return self._closed

    # --- server side ---------------------------------------------------------------------
    def wait_jpeg(self, after: int, timeout: float) -> tuple[int, bytes] | None:
        """The latest frame as ``(seq, jpeg)`` once its seq is greater than ``after``.

        Returns ``None`` after ``timeout`` seconds without a newer frame, or when the hub is
        closed.
        """
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._seq <= after and not self._closed:
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._cond.wait(left)
            if self._closed:
                return None
            seq, image = self._seq, self._image
        if image is None:  # pragma: no cover - seq > 0 implies an image
            return None
        return seq, self._encoded(seq, image)

    def _encoded(self, seq: int, image: Image) -> bytes:
        # One encoder at a time: viewers asking for the same frame share one encoding, and a
        # Pi never runs several encodes of the same picture in parallel.
        with self._encode_lock:
            cached = self._jpeg
            if cached is not None and cached[0] >= seq:
                return cached[1]
            data = encode_jpeg(image, self.quality)
            self._jpeg = (seq, data)
            self.frames_encoded += 1
            return data

    def count_sent(self) -> None:
        with self._cond:
            self.frames_sent += 1

    def viewer_joined(self, limit: int) -> bool:
        """Count a new stream viewer unless ``limit`` are watching already."""
        with self._cond:
            if self.viewers >= limit:
                return False
            self.viewers += 1
            return True

    def viewer_left(self) -> None:
        with self._cond:
            self.viewers -= 1

    @property
    def counter(self) -> CounterConfig:
        with self._cond:
            return self._counter

    def apply_counter(self, counter: CounterConfig) -> None:
        """Use ``counter`` from now on: redraw it on the page and tell the service."""
        with self._cond:
            self._counter = counter
        logger.info("counting line changed to %s, inside %s", counter.line, counter.inside)
        if self._on_counter_change is not None:
            self._on_counter_change(counter)

    def state(self) -> dict[str, Any]:
        """A JSON-ready snapshot of what the page shows (no image, no person's box)."""
        with self._cond:
            image = self._image
            age = time.monotonic() - self._published_at if self._seq else None
            counter = self._counter
            state: dict[str, Any] = {
                "counts": copy.deepcopy(self._counts),
                "health": copy.deepcopy(self._health),
                "stream": {
                    "frames_published": self._seq,
                    "frames_encoded": self.frames_encoded,
                    "frames_sent": self.frames_sent,
                    "viewers": self.viewers,
                    "last_frame_age_s": None if age is None else round(age, 3),
                    "width": None if image is None else int(image.shape[1]),
                    "height": None if image is None else int(image.shape[0]),
                },
            }
        state["counter"] = {
            "line": list(counter.line),
            "inside": list(counter.inside),
            "hysteresis": counter.hysteresis,
            "zones": [
                {"name": z.name, "polygon": [list(p) for p in z.polygon]} for z in counter.zones
            ],
        }
        return state
