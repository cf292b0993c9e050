"""The real CenterFace model on real photos."""

from __future__ import annotations

import numpy as np
import pytest

from firmware.boxes import iou_matrix
from firmware.detect.centerface import CenterFace, decode, nms
from tests.support.faces import FACE_FREE, FACES, load_bgr

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def detector() -> CenterFace:
    return CenterFace()


@pytest.mark.parametrize("name", sorted(FACES))
def test_finds_annotated_faces(detector: CenterFace, name: str) -> None:
    image = load_bgr(name)
    dets = detector(image)
    truth = np.array(FACES[name], np.float32)
    assert len(dets) >= len(truth), f"{name}: found {len(dets)} faces, expected {len(truth)}"
    best = iou_matrix(truth, dets.boxes).max(axis=1)
    assert np.all(best >= 0.5), f"{name}: IoU with ground truth {best}"


@pytest.mark.parametrize("name", FACE_FREE)
def test_no_faces_in_face_free_images(detector: CenterFace, name: str) -> None:
    dets = detector(load_bgr(name))
    assert len(dets) == 0, f"{name}: false faces {dets.array.tolist()}"


def test_odd_sizes_and_downscaled_detection_map_boxes_back(detector: CenterFace) -> None:
    """Any frame size works (padding to a multiple of 32) and a downscaled detection copy
    returns boxes in the original image's pixels."""
    image = load_bgr("astronaut.png")
    big = np.ascontiguousarray(np.repeat(np.repeat(image, 2, axis=0), 2, axis=1)[:1001, :1003])
    truth = np.array(FACES["astronaut.png"], np.float32) * 2
    full = detector(big)
    small = CenterFace(detect_size=(512, 512))(big)
    for dets in (full, small):
        assert iou_matrix(truth, dets.boxes).max() >= 0.5
        assert np.all(dets.boxes[:, 2] <= 1003) and np.all(dets.boxes[:, 3] <= 1001)


def test_threshold_trades_recall(detector: CenterFace) -> None:
    """A threshold above every score finds nothing; the default finds the face."""
    image = load_bgr("camera.png")
    score = float(detector(image).scores.max())
    strict = CenterFace(threshold=min(0.99, score + 0.05))
    assert len(strict(image)) == 0


def test_timeout_raises_detector_error() -> None:
    """A detection slower than timeout_s is aborted by onnxruntime and raises DetectorError."""
    from firmware.errors import DetectorError

    slow = CenterFace(timeout_s=1e-6)
    image = np.zeros((1088, 1920, 3), np.uint8)
    with pytest.raises(DetectorError, match="timed out"):
        slow(image)


def test_decode_and_nms_on_a_constructed_heatmap() -> None:
    """decode() places a box at the heatmap peak with the encoded size; nms keeps the best."""
    h, w = 30, 40
    heat = np.zeros((1, h, w), np.float32)
    scale = np.zeros((2, h, w), np.float32)
    offset = np.zeros((2, h, w), np.float32)
    heat[0, 10, 20] = 0.9
    heat[0, 10, 21] = 0.5  # neighbour of the same face, suppressed by NMS
    scale[:, 10, 20:22] = np.log(40 / 4)  # 40 px box
    boxes = decode(heat, scale, offset, threshold=0.2)
    assert boxes.shape == (2, 5)
    kept = nms(boxes, 0.3)
    assert kept.shape == (1, 5)
    cx, cy = (20 + 0.5) * 4, (10 + 0.5) * 4
    np.testing.assert_allclose(kept[0], [cx - 20, cy - 20, cx + 20, cy + 20, 0.9], rtol=1e-5)
    assert decode(heat, scale, offset, threshold=0.95).shape == (0, 5)
