"""P2: when detection fails, the frame is masked entirely; never emitted unanonymized."""

from __future__ import annotations

import numpy as np
import pytest

from firmware.anonymize.cover import Anonymizer
from firmware.anonymize.hold import MaskHold
from firmware.anonymize.stage import AnonymizingStage
from firmware.boxes import iou_matrix
from firmware.detect.centerface import CenterFace
from firmware.errors import DetectorError
from firmware.frames import Detections, Frame, Image
from tests.support.faces import FACES, load_bgr

pytestmark = pytest.mark.integration


class FlakyDetector:
    """The real detector, failing on chosen frame numbers (an honest stand-in for a crash)."""

    def __init__(self, real: CenterFace, fail_on: set[int], exc: Exception) -> None:
        self.real, self.fail_on, self.exc, self.calls = real, fail_on, exc, 0

    def __call__(self, image: Image) -> Detections:
        n = self.calls
        self.calls += 1
        if n in self.fail_on:
            raise self.exc
        return self.real(image)


@pytest.fixture(scope="module")
def real() -> CenterFace:
    return CenterFace()


@pytest.mark.parametrize(
    "exc", [DetectorError("boom"), RuntimeError("onnxruntime crashed"), MemoryError()]
)
def test_failed_detection_masks_whole_frame(real: CenterFace, exc: Exception) -> None:
    image = load_bgr("astronaut.png")
    truth = np.array(FACES["astronaut.png"], np.float32)
    stage = AnonymizingStage(FlakyDetector(real, {1, 2}, exc), Anonymizer(), MaskHold(0.0))
    results = [stage.process(Frame(image, t_ns=i * 66_000_000, index=i)) for i in range(4)]
    assert [r.failed for r in results] == [False, True, True, False]
    assert stage.failures == 2
    for r in results:
        found = real(r.image)
        overlap = iou_matrix(truth, found.boxes).max() if len(found) else 0.0
        assert overlap < 0.3, f"frame {r.index}: a face is visible after anonymization"
    failed = results[1].image
    # masked entirely: no pixel keeps its original fine detail
    assert (failed != image).any(axis=2).mean() > 0.9
    assert np.array_equal(failed, Anonymizer().mask_all(image))


def test_detector_timeout_fails_closed() -> None:
    """A detector that cannot finish in time (real model, tiny timeout) fails closed."""
    image = load_bgr("astronaut.png")
    stage = AnonymizingStage(CenterFace(timeout_s=1e-6), Anonymizer(), MaskHold())
    r = stage.process(Frame(image, t_ns=0, index=0))
    assert r.failed
    assert np.array_equal(r.image, Anonymizer().mask_all(image))
