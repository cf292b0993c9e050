"""``anoncam diagnose`` and ``scripts/diagnose``: options, exit codes, JSON, robustness.

These run the real host checks of this machine (no broker needed: MQTT is left out with
--only, or points at a closed port); tests/integration/test_diagnose_mqtt.py adds the broker.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import jsonschema
import pytest

from firmware.cli import main
from firmware.config.settings import Config
from firmware.diagnostics import Context, Host, Status, parse_only, resolve_config, run_checks
from firmware.diagnostics.report import load_schema
from firmware.errors import UsageError
from tests.support.mosquitto import free_port

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "diagnose"
LOCAL = "power,clock,storage,service"


def write_config(tmp_path: Path, **mqtt: object) -> Path:
    cfg = tmp_path / "config.toml"
    lines = [
        'site = "store-042"',
        'device = "door-1"',
        f'state_dir = "{tmp_path / "state"}"',
        "[mqtt]",
        'host = "127.0.0.1"',
        f"port = {mqtt.get('port', free_port())}",
    ]
    cfg.write_text("\n".join(lines) + "\n")
    return cfg


def run_cli(*args: str, python: str = sys.executable) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [python, "-m", "firmware", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
        check=False,
    )


def test_json_validates_and_exit_zero_without_failures(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--json on this machine's real host checks validates against the schema; no FAIL -> 0."""
    cfg = write_config(tmp_path)
    code = main(["-q", "diagnose", "--config", str(cfg), "--only", LOCAL, "--json"])
    data = json.loads(capsys.readouterr().out)
    jsonschema.validate(data, load_schema())
    assert data["config"] == {"path": str(cfg), "found": True}
    assert {c["name"].split(".")[0] for c in data["checks"]} == set(LOCAL.split(","))
    assert code == (1 if data["summary"]["FAIL"] else 0)


def test_broker_down_exits_one_and_table_shows_the_fix(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A FAIL anywhere makes the exit status 1; the table prints the fix under it."""
    cfg = write_config(tmp_path)  # a free port: nothing listens there
    code = main(["-q", "diagnose", "--config", str(cfg), "--only", "mqtt", "--timeout", "2"])
    out = capsys.readouterr().out
    assert code == 1
    assert "FAIL    mqtt.tcp" in out and "connection refused" in out
    assert "fix: is the broker running" in out
    assert "SKIP    mqtt.auth" in out


@pytest.mark.parametrize(
    "args", [["--only", "bogus"], ["--only", ","], ["--timeout", "0"], ["--timeout", "abc"]]
)
def test_usage_errors_exit_two(args: list[str]) -> None:
    result = run_cli("diagnose", *args)
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""


def test_invalid_config_exits_two_listing_problems(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('site = "Not Valid"\n[mqtt]\nport = 70000\n')
    result = run_cli("diagnose", "--config", str(bad))
    assert result.returncode == 2
    assert "site:" in result.stderr and "mqtt.port:" in result.stderr
    missing = run_cli("diagnose", "--config", str(tmp_path / "nope.toml"))
    assert missing.returncode == 2 and "not found" in missing.stderr


def test_no_config_uses_defaults_with_a_warning(tmp_path: Path) -> None:
    choice = resolve_config(None, default=tmp_path / "absent.toml")
    assert choice.path is None and choice.config == Config.model_validate({})
    present = write_config(tmp_path)
    assert resolve_config(None, default=present).path == present


def test_only_accepts_families_and_items() -> None:
    assert parse_only("mqtt, power.throttling") == {"mqtt", "power.throttling"}
    assert parse_only(None) is None
    with pytest.raises(UsageError, match=r"power\.throtling"):
        parse_only("power.throtling")


def test_only_an_item_reports_just_that_item(tmp_path: Path) -> None:
    ctx = Context(Config.model_validate({"state_dir": str(tmp_path)}), Host())
    checks = run_checks(ctx, {"storage.writable", "clock"})
    assert [c.name for c in checks] == ["clock.sync", "storage.writable"]


class _BrokenRunner:
    """A command runner that fails in a way no check expects (as a broken libc or a kernel bug
    could): the diagnosis must report it and go on."""

    def __call__(self, argv: Sequence[str], timeout: float) -> tuple[int, str, str]:
        if argv[0] == "vcgencmd":
            raise RuntimeError("mailbox exploded")
        raise FileNotFoundError(argv[0])


def test_a_crashing_family_is_a_fail_line_and_the_rest_still_runs(tmp_path: Path) -> None:
    ctx = Context(Config.model_validate({"state_dir": str(tmp_path)}), Host(run=_BrokenRunner()))
    checks = run_checks(ctx, {"power", "storage"})
    crashed = [c for c in checks if c.name == "power"]
    assert len(crashed) == 1 and crashed[0].status == Status.FAIL
    assert "RuntimeError: mailbox exploded" in crashed[0].detail
    assert [c.name for c in checks if c.family == "storage"] == [
        "storage.space",
        "storage.writable",
        "storage.outbox",
    ]


@pytest.mark.parametrize("python", [sys.executable, "/usr/bin/python3"])
def test_scripts_diagnose_runs_from_the_checkout(python: str, tmp_path: Path) -> None:
    """scripts/diagnose is 'anoncam diagnose' with the same exit codes, with the venv's Python
    and with the system Python (which re-runs it with the checkout's .venv)."""
    if not Path(python).exists():
        pytest.skip(f"{python} not installed")
    env = {k: v for k, v in os.environ.items() if k != "ANONCAM_DIAGNOSE_REEXEC"}
    cfg = write_config(tmp_path)
    ok = subprocess.run(
        [python, str(SCRIPT), "--config", str(cfg), "--only", "storage"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env=env,
        check=False,
    )
    assert ok.returncode == 0, ok.stderr
    assert "storage.writable" in ok.stdout
    usage = subprocess.run(
        [python, str(SCRIPT), "--only", "nonsense"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env=env,
        check=False,
    )
    assert usage.returncode == 2 and "unknown check" in usage.stderr
    down = subprocess.run(
        [python, str(SCRIPT), "--config", str(cfg), "--only", "mqtt.tcp"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env=env,
        check=False,
    )
    assert down.returncode == 1 and "FAIL" in down.stdout


def test_scripts_diagnose_is_executable_and_thin() -> None:
    assert os.access(SCRIPT, os.X_OK)
    assert SCRIPT.read_text().startswith("#!/usr/bin/env python3\n")
    assert 'main(["diagnose", *sys.argv[1:]])' in SCRIPT.read_text()
