"""Every module imports on a machine without a camera, and importing touches no hardware."""

from __future__ import annotations

import importlib
import pkgutil
import subprocess
import sys

import pytest

import firmware
import provisioning

MODULES = sorted(
    m.name
    for pkg in (firmware, provisioning)
    for m in pkgutil.walk_packages(pkg.__path__, prefix=pkg.__name__ + ".")
    if m.name != "firmware.__main__"  # running it is the CLI itself
)


@pytest.mark.parametrize("name", MODULES)
def test_module_imports(name: str) -> None:
    importlib.import_module(name)


def test_no_picamera2_model_or_network_at_import() -> None:
    """Importing everything in a fresh interpreter loads neither picamera2 nor onnxruntime, and
    opens no socket (STYLE habit 1). picamera2 is made unimportable to prove nothing needs it."""
    code = f"""
import builtins, socket, sys
real_import = builtins.__import__
def guarded(name, *a, **k):
    if name.split('.')[0] in ('picamera2', 'libcamera'):
        raise ImportError('no camera stack here')
    return real_import(name, *a, **k)
builtins.__import__ = guarded
def no_socket(*a, **k):
    raise AssertionError('a socket was opened at import time')
socket.socket.connect = no_socket
import importlib
for name in {MODULES!r}:
    importlib.import_module(name)
loaded = sorted(m for m in sys.modules if m.split('.')[0] in ('picamera2', 'onnxruntime'))
print(loaded)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout


def test_every_command_has_help(capsys: pytest.CaptureFixture[str]) -> None:
    """Each subcommand's --help works and teaches (exit 0, an example or a description)."""
    from firmware.cli import build_parser, main

    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    commands = sorted(sub.choices)  # type: ignore[union-attr]
    for expected in (
        "blur",
        "demo",
        "run",
        "subscribe",
        "models",
        "config",
        "diagnose",
        "snapshot",
        "support-bundle",
        "provision",
    ):
        assert expected in commands
    for name in commands:
        with pytest.raises(SystemExit) as e:
            main([name, "--help"])
        assert e.value.code == 0
        text = capsys.readouterr().out
        assert len(text) > 200, f"'anoncam {name} --help' says too little"
    assert main([]) == 2
