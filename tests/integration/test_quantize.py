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
from firmware.models.packed_input import pack_input
from firmware.models.quantize import (
    BACKGROUNDS,
    QuantizedModel,
    builtin_calibration_images,
    quantize,
    stale_int8,
)
from firmware.sources.synthetic.faces import reference_photos
from tests.support.faces import FACE_FREE, FACES, load_bgr

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def int8(tmp_path_factory: pytest.TempPathFactory) -> QuantizedModel:
    out = tmp_path_factory.mktemp("int8") / "centerface-int8.onnx"
    return quantize(out, images=builtin_calibration_images(count=4))


@pytest.fixture(scope="module")
def unpacked(tmp_path_factory: pytest.TempPathFactory) -> QuantizedModel:
    """The same calibration without the packed input: the graph the packing rewrites."""
    out = tmp_path_factory.mktemp("int8-unpacked") / "centerface-int8.onnx"
    return quantize(out, images=builtin_calibration_images(count=4), packed=False)


def _session(path: Path) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def _signature(path: Path) -> tuple[list[tuple[str, str, list[object]]], list[str]]:
    sess = _session(path)
    inputs = [(i.name, i.type, list(i.shape)) for i in sess.get_inputs()]
    return inputs, [o.name for o in sess.get_outputs()]


def test_int8_model_keeps_the_signature_and_is_quantized(
    int8: QuantizedModel, unpacked: QuantizedModel
) -> None:
    """The fp32 model's input and output names; the packed model takes uint8 (N, H/2, W/2, 12),
    the unpacked one the fp32 model's float (N, 3, H, W). QDQ nodes with per-channel int8
    weights, so the file is not an fp32 copy under another name."""
    fp32 = default_model_path()
    assert int8.path.is_file() and int8.sha256 == sha256_file(int8.path)
    assert _signature(unpacked.path) == _signature(fp32)
    (name, kind, shape), outputs = _signature(int8.path)[0][0], _signature(int8.path)[1]
    assert (name, outputs) == (_signature(fp32)[0][0][0], _signature(fp32)[1])
    assert kind == "tensor(uint8)" and shape[1:] == ["H_half", "W_half", 12]
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


def _raw_outputs(path: Path, image: np.ndarray, packed: bool) -> list[np.ndarray]:
    """The model's four outputs for ``image`` (sides cut to multiples of 32), fed as a float
    RGB blob or as packed uint8 BGR pixels."""
    from firmware.models.packing import pack2x2

    h, w = (image.shape[0] // 32) * 32, (image.shape[1] // 32) * 32
    crop = np.ascontiguousarray(image[:h, :w])
    feed = pack2x2(crop, h, w) if packed else crop[:, :, ::-1].transpose(2, 0, 1)[None]
    out: list[np.ndarray] = _session(path).run(None, {"input.1": np.ascontiguousarray(feed)})
    return out


def test_packed_input_gives_the_same_outputs_to_the_bit(
    int8: QuantizedModel, unpacked: QuantizedModel
) -> None:
    """The packing (uint8, BGR, the first layer as a 2x2 convolution on 2x2 blocks) is exact:
    the heatmap, scale, offset and landmarks equal the unpacked graph's on both portraits and
    a synthetic scene frame, bit for bit. (The calibration put the input's scale at 1 already,
    which the packing fixes; any other scale would show here.)"""
    from firmware.sources.synthetic.scene import SyntheticScene

    images = [image for _, image, _ in reference_photos()]
    images.append(SyntheticScene(640, 480, people=3, seed=1).render(12))
    for image in images:
        blob = image.astype(np.float32)
        ref = _raw_outputs(unpacked.path, blob, packed=False)
        got = _raw_outputs(int8.path, image, packed=True)
        assert len(ref) == len(got) == 4
        for r, g in zip(ref, got, strict=True):
            assert r.shape == g.shape
            assert np.array_equal(r, g), float(np.abs(r - g).max())


def test_packing_refuses_a_graph_it_does_not_know(int8: QuantizedModel) -> None:
    """A graph whose first layer is not quantize, dequantize, 3x3/2 convolution on 3 channels
    (here: one already packed) is refused with a ModelError, not rewritten into nonsense."""
    with pytest.raises(ModelError, match="cannot pack the model's input"):
        pack_input(onnx.load(str(int8.path)))


def test_stale_int8_asks_for_the_older_layout_again(
    int8: QuantizedModel, unpacked: QuantizedModel, tmp_path: Path
) -> None:
    """scripts/setup quantizes again when the int8 file is missing, has no sidecar hash, is
    unreadable, or has the float input of before; a packed file is current."""
    assert stale_int8(int8.path) is None
    assert stale_int8(unpacked.path) == unpacked.path
    assert stale_int8(tmp_path / "missing.onnx") == tmp_path / "missing.onnx"
    lone = tmp_path / "lone.onnx"
    lone.write_bytes(int8.path.read_bytes())  # no sidecar
    assert stale_int8(lone) == lone
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(int8.path.read_bytes()[:1000])
    (tmp_path / "broken.onnx.sha256").write_text(f"{'0' * 64}  broken.onnx\n")
    assert stale_int8(broken) == broken


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
