"""int8 quantization of the face model: the file it writes loads, keeps CenterFace's signature,
is really quantized, and still finds a real face. Calibrates on a handful of images to stay fast."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from firmware.boxes import iou_matrix
from firmware.cli import main
from firmware.detect.centerface import CenterFace
from firmware.errors import ModelError
from firmware.fsutil import sha256_file
from firmware.media.image import write_image
from firmware.models.manifest import default_model_path
from firmware.models.quantize import (
    BACKGROUNDS,
    QuantizedModel,
    builtin_calibration_images,
    quantize,
)
from tests.support.faces import FACE_FREE, FACES, load_bgr

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def int8(tmp_path_factory: pytest.TempPathFactory) -> QuantizedModel:
    out = tmp_path_factory.mktemp("int8") / "centerface-int8.onnx"
    return quantize(out, images=builtin_calibration_images(count=4))


def _signature(path: Path) -> tuple[list[tuple[str, list[object]]], list[str]]:
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    inputs = [(i.name, list(i.shape)) for i in sess.get_inputs()]
    return inputs, [o.name for o in sess.get_outputs()]


def test_int8_model_keeps_the_signature_and_is_quantized(int8: QuantizedModel) -> None:
    """Same input (with dynamic dims) and output names as the fp32 model; QDQ nodes with
    per-channel int8 weights, so the file is not an fp32 copy under another name."""
    fp32 = default_model_path()
    assert int8.path.is_file() and int8.sha256 == sha256_file(int8.path)
    assert _signature(int8.path) == _signature(fp32)
    assert int8.size < fp32.stat().st_size / 2  # int8 weights: about a quarter of the bytes
    model = onnx.load(str(int8.path))
    ops = {n.op_type for n in model.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    int8_weights = [i for i in model.graph.initializer if i.data_type == onnx.TensorProto.INT8]
    assert len(int8_weights) >= 60  # every Conv / ConvTranspose weight
    per_channel = [
        n
        for n in model.graph.node
        if n.op_type == "DequantizeLinear" and any(a.name == "axis" for a in n.attribute)
    ]
    assert per_channel, "weights should be quantized per output channel"


def test_int8_model_finds_the_astronaut(int8: QuantizedModel) -> None:
    """The detector loads the int8 file (check_hash=False) and finds the annotated face."""
    detector = CenterFace(int8.path, check_hash=False)
    truth = np.array(FACES["astronaut.png"], np.float32)
    found = detector(load_bgr("astronaut.png"))
    assert len(found) >= 1
    assert float(iou_matrix(truth, found.boxes).max()) >= 0.5


def test_int8_file_is_checked_against_its_own_hash(int8: QuantizedModel, tmp_path: Path) -> None:
    """The int8 model loads by path (its sidecar hash), a corrupted copy is refused, and it is
    never mistaken for the manifest's fp32 model (same name without a sidecar: refused)."""
    assert CenterFace(int8.path).model.sha256 == int8.sha256
    data = bytearray(int8.path.read_bytes())
    data[len(data) // 3] ^= 0xFF
    bad = tmp_path / int8.path.name
    bad.write_bytes(bytes(data))
    (tmp_path / (int8.path.name + ".sha256")).write_text(
        (int8.path.parent / (int8.path.name + ".sha256")).read_text()
    )
    with pytest.raises(ModelError, match="does not match"):
        CenterFace(bad)
    disguised = tmp_path / "centerface-opt.onnx"
    disguised.write_bytes(int8.path.read_bytes())
    with pytest.raises(ModelError, match="does not match the manifest"):
        CenterFace(disguised)


def test_calibration_set_avoids_the_test_pictures() -> None:
    """The built-in calibration set must not use any picture the tests evaluate on: the two
    face photos, the face-free set and the synthetic scene's gravel floor."""
    used_by_tests = set(FACES) | set(FACE_FREE) | {"gravel.png", "astronaut.png", "camera.png"}
    assert not set(BACKGROUNDS) & used_by_tests
    images = builtin_calibration_images(count=3)
    assert [im.shape for im in images] == [(480, 640, 3)] * 3
    assert all(im.dtype == np.uint8 for im in images)


def test_cli_quantize_from_a_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """'anoncam models quantize --calibration-dir DIR -o FILE' writes a loadable model and
    prints its path and hash."""
    folder = tmp_path / "stills"
    folder.mkdir()
    for i, image in enumerate(builtin_calibration_images(count=2, seed=3)):
        write_image(folder / f"still-{i}.png", image)
    (folder / "notes.txt").write_text("not an image: skipped")
    out = tmp_path / "int8.onnx"
    assert main(["models", "quantize", "--calibration-dir", str(folder), "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "2 image(s)" in printed
    assert str(out) in printed and sha256_file(out) in printed
    CenterFace(out, check_hash=False)


def test_cli_quantize_without_images_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    out = tmp_path / "int8.onnx"
    assert main(["models", "quantize", "--calibration-dir", str(empty), "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert str(empty) in err and "no JPEG or PNG" in err
    assert not out.exists()
