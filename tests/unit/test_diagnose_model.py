"""The model checks: the manifest hash via firmware.models.verify.verify, and one timed inference
compared with the reference figure for the hardware class."""

from __future__ import annotations

from pathlib import Path

import pytest

from firmware.config.settings import Config
from firmware.device.recorded import load_host
from firmware.diagnostics import Context, Host, Status
from firmware.diagnostics import model as model_checks
from firmware.models.manifest import default_model_path

HOSTS = Path(__file__).resolve().parents[1] / "data" / "hosts"


def ctx(host: Host | None = None, **data: object) -> Context:
    return Context(Config.model_validate(data), host or Host())


def test_expected_ms_scales_with_padded_pixels() -> None:
    """Twice the pixels, twice the reference; sizes are padded to multiples of 32 as the
    detector pads them; no reference for unknown hardware."""
    base = model_checks.expected_ms("x86", (640, 480))
    assert base == model_checks.REFERENCE_MS["centerface"]["x86"]
    assert model_checks.expected_ms("x86", (1280, 480)) == pytest.approx(2 * base)
    assert model_checks.expected_ms("x86", (630, 470)) == pytest.approx(base)  # padded up
    pi4, pi5 = (model_checks.expected_ms(hw, (640, 480)) for hw in ("pi4", "pi5"))
    assert pi4 is not None and pi5 is not None and pi4 > pi5 > base
    assert model_checks.expected_ms("other", (640, 480)) is None


def test_detect_size_follows_the_config() -> None:
    assert model_checks.detect_size(ctx(detector={"detect_width": 320, "detect_height": 256})) == (
        320,
        256,
    )
    cam = ctx(source={"kind": "picamera2"})
    lores = (cam.config.source.lores_width, cam.config.source.lores_height)
    assert model_checks.detect_size(cam) == lores  # the camera's detection stream
    assert model_checks.detect_size(
        ctx(source={"kind": "synthetic", "width": 800, "height": 600})
    ) == (800, 600)


def test_missing_model_fails_with_the_fetch_hint(tmp_path: Path) -> None:
    (check, inference) = model_checks.run(ctx(detector={"model": str(tmp_path / "absent.onnx")}))
    assert check.status == Status.FAIL and "models fetch" in check.hint
    assert inference.status == Status.SKIP


def test_wrong_hash_fails(tmp_path: Path) -> None:
    bad = tmp_path / "centerface-opt.onnx"
    bad.write_bytes(b"not the model")
    check = model_checks.check_file(ctx(detector={"model": str(bad)}))
    assert check.status == Status.FAIL and "SHA-256" in check.detail


@pytest.fixture(scope="module")
def model_path() -> Path:
    path = default_model_path()
    if not path.is_file():
        pytest.fail(f"{path} missing: run 'anoncam models fetch' (scripts/setup does)")
    return path


@pytest.mark.integration
def test_real_model_verifies_and_times_one_inference(model_path: Path) -> None:
    """The real model: hash matches, and one inference at 320x240 is timed and compared."""
    c = ctx(
        load_host(HOSTS / "x86"),
        detector={"model": str(model_path), "detect_width": 320, "detect_height": 240},
    )
    file_check, inference = model_checks.run(c)
    assert file_check.status == Status.OK and file_check.figures["sha256"].startswith("5c1d2b54")
    assert inference.status in (Status.OK, Status.WARN)  # WARN only on a very loaded machine
    assert inference.figures["width"] == 320 and inference.figures["hardware"] == "x86"
    assert inference.figures["ms"] > 0
    # 320x240 is padded to 320x256 before inference
    expected = model_checks.REFERENCE_MS["centerface"]["x86"] * 320 * 256 / (640 * 480)
    assert inference.figures["expected_ms"] == pytest.approx(expected, abs=0.1)


@pytest.mark.integration
def test_a_much_slower_machine_than_expected_warns(
    model_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Measured time more than twice the reference WARNs with the throttling/size fix. The
    reference of an impossibly fast class is patched in to make this machine 'slow'."""
    c = ctx(
        load_host(HOSTS / "x86"),
        detector={"model": str(model_path), "detect_width": 320, "detect_height": 240},
    )
    monkeypatch.setitem(model_checks.REFERENCE_MS["centerface"], "x86", 0.001)
    check = model_checks.check_inference(c)
    assert check.status == Status.WARN and "slower" in check.detail
    assert "throttling" in check.hint


@pytest.mark.integration
def test_only_the_file_check_leaves_out_the_timed_inference(model_path: Path) -> None:
    """``--only model.file`` verifies the file without the timed runs (minutes on a slow or
    emulated CPU); ``--only model`` and no selection still run both."""
    data = {"detector": {"model": str(model_path), "detect_width": 64, "detect_height": 64}}
    config, host = Config.model_validate(data), load_host(HOSTS / "x86")
    only_file = model_checks.run(Context(config, host, only=frozenset({"model.file"})))
    assert [c.name for c in only_file] == ["model.file"]
    for only in (None, frozenset({"model"}), frozenset({"model.inference"})):
        assert [c.name for c in model_checks.run(Context(config, host, only=only))] == [
            "model.file",
            "model.inference",
        ]
