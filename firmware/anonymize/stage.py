"""The anonymizing stage: detect, remember, cover. Fails closed.

Every frame that leaves this stage is anonymized (P2). If the detector raises or times out, the
whole frame is covered and the failure is reported on the result; a frame is never returned
with an unanonymized face because detection went wrong.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray

from firmware.anonymize.cover import Anonymizer
from firmware.anonymize.hold import MaskHold
from firmware.detect.base import FaceDetector, detect_on_frame
from firmware.frames import Detections, Frame, Image

if TYPE_CHECKING:
    from firmware.config.settings import AnonymizerConfig, Config, DetectorConfig

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Anonymized:
    """One processed frame, anonymized. ``detections`` (this frame's detector output) and
    ``masks`` (every box covered: detections plus held faces) are in ``image`` pixels; they stay
    on the device.

    Privacy held by the type (P2): the result carries the frame's time stamp and index and the
    anonymized ``image``, never the source :class:`~firmware.frames.Frame` or its raw pixels, so
    no sink that receives it can emit an unanonymized picture.
    """

    t_ns: int
    index: int
    image: Image
    detections: Detections
    failed: bool
    detect_ms: float
    masks: NDArray[np.float32] = field(default_factory=lambda: np.zeros((0, 4), np.float32))

    @property
    def width(self) -> int:
        return int(self.image.shape[1])

    @property
    def height(self) -> int:
        return int(self.image.shape[0])


@dataclass(frozen=True, slots=True)
class Detected:
    """What the detector made of one frame: ``detections``, or None and the ``error`` it
    raised (the frame is then covered whole); ``ms`` the time it took."""

    detections: Detections | None
    error: BaseException | None
    ms: float


class AnonymizingStage:
    def __init__(self, detector: FaceDetector, anonymizer: Anonymizer, hold: MaskHold) -> None:
        self.detector = detector
        self.anonymizer = anonymizer
        self.hold = hold
        self.failures = 0
        self._failing = False

    def detect(self, frame: Frame) -> Detections:
        """Run the detector on the detection image and map boxes to the main image."""
        return detect_on_frame(self.detector, frame)

    def detect_timed(self, frame: Frame) -> Detected:
        """Run the detector and time it; a failure of any kind is caught and carried, so this
        can run on a worker thread ahead of :meth:`finish`, which fails closed on it."""
        start = time.perf_counter()
        try:
            dets = self.detect(frame)
        except Exception as exc:  # any detector failure must fail closed, whatever its type
            return Detected(None, exc, (time.perf_counter() - start) * 1e3)
        return Detected(dets, None, (time.perf_counter() - start) * 1e3)

    def process(
        self,
        frame: Frame,
        *,
        heads: NDArray[np.float32] | None = None,
        people_failed: bool = False,
    ) -> Anonymized:
        """Detect faces, hold them, cover them and the ``heads`` regions (of person boxes, in
        ``frame.image`` pixels, covered as given). ``people_failed``: the person detector failed
        on this frame, so a head may be anywhere: the whole frame is covered (fail closed)."""
        return self.finish(
            frame, self.detect_timed(frame), heads=heads, people_failed=people_failed
        )

    def finish(
        self,
        frame: Frame,
        detected: Detected,
        *,
        heads: NDArray[np.float32] | None = None,
        people_failed: bool = False,
    ) -> Anonymized:
        """Hold and cover ``frame`` given what the detector found on it (:meth:`detect_timed`,
        possibly run ahead on another thread). Frames must come in order: the hold remembers
        faces from one frame to the next."""
        ms = detected.ms
        if detected.detections is None:
            self.failures += 1
            if not self._failing:
                logger.error(
                    "detection failed, masking whole frames until it recovers: %s", detected.error
                )
                self._failing = True
            masked = self.anonymizer.mask_all(frame.image)
            return Anonymized(frame.t_ns, frame.index, masked, Detections.empty(), True, ms)
        dets = detected.detections
        if self._failing:
            logger.warning("detection recovered after %d failed frame(s)", self.failures)
            self._failing = False
        boxes = self.hold.update(dets.boxes, frame.t_ns)
        if people_failed:
            masked = self.anonymizer.mask_all(frame.image)
            return Anonymized(frame.t_ns, frame.index, masked, dets, True, ms, boxes)
        has_heads = heads is not None and len(heads) > 0
        if len(boxes) or has_heads:
            image = self.anonymizer.apply(frame.image, boxes, exact=heads)
        else:
            image = frame.image.copy()
        masks = np.concatenate([boxes, heads]) if has_heads and heads is not None else boxes
        return Anonymized(
            frame.t_ns, frame.index, np.ascontiguousarray(image), dets, False, ms, masks
        )


def stage_from_settings(
    detector: DetectorConfig, anonymizer: AnonymizerConfig, *, deadline: bool = True
) -> AnonymizingStage:
    """Wire the real CenterFace detector, the anonymizer and the mask hold from validated
    settings: the one builder behind the service, snapshots and ``anoncam blur``.

    ``deadline`` applies ``detector.timeout_s``: a live camera must not wait for a slow frame
    (it is masked whole instead), while a file job loses nothing by waiting and would only
    mask frames needlessly on a busy machine.
    """
    from firmware.detect.centerface import CenterFace  # loads onnxruntime: only when asked

    d, a = detector, anonymizer
    size = (d.detect_width, d.detect_height) if d.detect_width and d.detect_height else None
    face_detector = CenterFace(
        d.model,
        threshold=d.threshold,
        detect_size=size,
        threads=d.threads,
        timeout_s=d.timeout_s if deadline else None,
    )
    return AnonymizingStage(
        face_detector, Anonymizer(a.mode, a.shape, a.mask_scale), MaskHold(a.hold_s)
    )


def stage_from_config(config: Config) -> AnonymizingStage:
    """The stage exactly as the service runs it (also used by snapshots and the preview tests)."""
    return stage_from_settings(config.detector, config.anonymizer)
