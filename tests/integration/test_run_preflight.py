"""``anoncam run`` refuses a config it cannot run before it connects to anything."""

from __future__ import annotations

from pathlib import Path

import pytest

from firmware.cli import main
from tests.support.mosquitto import Broker
from tests.support.scenes import Listener

pytestmark = pytest.mark.integration


def test_run_refuses_a_bad_preview_token_before_going_online(
    tmp_path: Path, mosquitto: Broker, capsys: pytest.CaptureFixture[str]
) -> None:
    """Regression (issue 12 item 14): with `preview.bind = "0.0.0.0"` and a 5-character token,
    `run` connected, published a retained `online` and only then failed on the preview. The
    file checks now run first: exit 2, and the broker never hears from the device."""
    token = tmp_path / "token"
    token.write_text("abcde\n")
    config = tmp_path / "config.toml"
    config.write_text(
        f'state_dir = "{tmp_path / "state"}"\n'
        f'[mqtt]\nhost = "{mosquitto.host}"\nport = {mosquitto.port}\n'
        f'[preview]\nenabled = true\nbind = "0.0.0.0"\ntoken_file = "{token}"\n'
        "[source]\nwidth = 160\nheight = 120\nduration_s = 1\n"
    )
    code = main(["run", "--config", str(config), "--drain-timeout", "0"])
    err = capsys.readouterr().err
    assert code == 2 and "preview.token_file" in err, err
    # A fresh subscriber gets every retained status first; the marker it publishes itself
    # arrives after them, so reaching it proves there is none (no sleep needed).
    listener = Listener(mosquitto, ("anoncam/#",))
    try:
        listener.client.publish("anoncam/test/marker/probe", b"end", qos=1)
        assert listener.wait(lambda r: bool(r.on("probe")), 10), "marker never arrived"
        assert [m.topic for m in listener.messages] == ["anoncam/test/marker/probe"]
    finally:
        listener.close()
