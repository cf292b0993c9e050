"""The fleet inventory: the skeleton validates; a bad one lists every problem, writes nothing."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest

from firmware.cli import main
from firmware.config.settings import from_dict
from firmware.errors import ConfigError, UsageError
from provisioning import device_config, skeleton
from provisioning.inventory.loader import load as load_inventory
from provisioning.inventory.schema import ssh_key_problem
from tests.unit.test_provision_support import ssh_key, write_fleet

BAD = """
[fleet]
ssh_authorized_keys = ["{key}"]
timezone = "Mars/Olympus"

[[sites]]
id = "store-042"

[[devices]]
id = "door-1"
site = "store-042"

[[devices]]
id = "door-1"
site = "store-042"
hostname = "other-host"

[[devices]]
id = "door-9"
site = "store-999"

[[devices]]
id = "door-3"
site = "store-042"
[devices.counter]
line = [0.0, 0.5, 1.0]
"""


def test_init_writes_a_skeleton_that_validates(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`provision init` must give installers a starting point that already passes validation."""
    assert main(["provision", "init", str(tmp_path / "fleet")]) == 0
    inv = load_inventory(tmp_path / "fleet" / "inventory.toml")
    assert [r.key for r in inv.refs()] == ["store-042/door-1"]
    # It is commented: an installer learns the format from the file itself.
    assert sum(line.lstrip().startswith("#") for line in skeleton.skeleton_text().splitlines()) > 20
    assert "wrote" in capsys.readouterr().out


def test_init_refuses_to_overwrite(tmp_path: Path) -> None:
    """Regression guard: re-running init must not clobber an edited inventory."""
    skeleton.write_skeleton(tmp_path)
    (tmp_path / "inventory.toml").write_text("# edited\n")
    with pytest.raises(UsageError):
        skeleton.write_skeleton(tmp_path)
    assert (tmp_path / "inventory.toml").read_text() == "# edited\n"


def test_bad_inventory_lists_every_problem_with_its_path(tmp_path: Path) -> None:
    """Duplicate ids, unknown site, malformed line, missing broker, bad time zone: all at once."""
    path = tmp_path / "inventory.toml"
    path.write_text(BAD.format(key=ssh_key()))
    with pytest.raises(ConfigError) as info:
        load_inventory(path)
    paths = {p for p, _ in info.value.problems}
    assert {"broker", "fleet.timezone", "devices.1.id", "devices.2.site"} <= paths
    assert any(p.startswith("devices.3.counter.line") for p in paths), paths
    messages = dict(info.value.problems)
    assert "duplicate device store-042/door-1" in messages["devices.1.id"]
    assert "unknown site 'store-999'" in messages["devices.2.site"]
    assert "(device store-999/door-9)" in messages["devices.2.site"]
    assert info.value.exit_code == 2


def test_bad_inventory_exits_2_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`provision broker` and `provision image` on a bad inventory: exit 2, no secret, no file."""
    path = tmp_path / "inventory.toml"
    path.write_text(BAD.format(key=ssh_key()))
    before = sorted(p.name for p in tmp_path.iterdir())
    assert main(["provision", "broker", "--inventory", str(path), "-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "devices.2.site" in err and "broker: required, but missing" in err
    image = tmp_path / "card.img"
    image.write_bytes(b"\0" * 4096)
    assert (
        main(["provision", "image", str(image), "--inventory", str(path), "--device", "door-1"])
        == 2
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*before, "card.img"])
    assert image.read_bytes() == b"\0" * 4096


def test_unknown_keys_and_bad_ssh_keys_are_reported(tmp_path: Path) -> None:
    path = write_fleet(tmp_path)
    text = path.read_text().replace('admin_user = "installer"', 'admin_usr = "installer"')
    text = text.replace(ssh_key(), "ssh-ed25519 not-base64!")
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_inventory(path)
    problems = dict(info.value.problems)
    assert "unknown key" in problems["fleet.admin_usr"]
    assert "base64" in problems["fleet.ssh_authorized_keys"]


def test_duplicate_hostnames_and_missing_files(tmp_path: Path) -> None:
    path = write_fleet(tmp_path, wifi=True, tls=True)
    (tmp_path / "wifi.txt").unlink()
    (tmp_path / "broker-ca.crt").unlink()
    text = path.read_text().replace(
        'id = "door-2"\nsite = "store-042"',
        'id = "door-2"\nsite = "store-042"\nhostname = "store-042-door-1"',
    )
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_inventory(path)
    problems = dict(info.value.problems)
    assert "already used" in problems["devices.1.hostname"]
    assert "file not found" in problems["fleet.wifi.password_file"]
    assert "file not found" in problems["broker.ca_file"]


def test_firmware_rules_apply_to_device_sections(tmp_path: Path) -> None:
    """A device section is validated by firmware's own config types (reused, not redefined)."""
    path = write_fleet(tmp_path)
    path.write_text(path.read_text().replace("height = 720", 'height = 720\nkind = "file"', 1))
    with pytest.raises(ConfigError) as info:
        load_inventory(path)
    assert any(
        p.startswith("devices.0.source") and "source.path" in m for p, m in info.value.problems
    )


@pytest.mark.parametrize(
    "options", [{}, {"homeassistant": True, "tls": True, "client_certificates": True}]
)
def test_device_config_validates_with_firmware_and_holds_no_password(
    tmp_path: Path, options: dict[str, Any]
) -> None:
    """The camera's config.toml is valid for firmware.config and never contains the password."""
    inv = load_inventory(write_fleet(tmp_path, **options))
    ref, entry = inv.device("store-042/door-2")
    text = device_config.render(inv, entry)
    cfg = from_dict(tomllib.loads(text))
    assert (cfg.site, cfg.device, cfg.mqtt.username) == ("store-042", "door-2", ref.username)
    assert cfg.source.kind == "picamera2"
    settings = [line for line in text.splitlines() if not line.startswith("#")]
    assert cfg.mqtt.password_file is None and not any("password" in line for line in settings)
    assert str(cfg.state_dir) == "/var/lib/anoncam"
    assert str(cfg.detector.model) == "/opt/anoncam/models/centerface-opt.onnx"
    assert cfg.counter.line == (0.0, 0.5, 1.0, 0.5)
    if options:
        assert cfg.mqtt.tls is not None and str(cfg.mqtt.tls.key_file).startswith(
            "/etc/anoncam/credentials/"
        )
        assert cfg.mqtt.homeassistant.enabled


def test_device_lookup(tmp_path: Path) -> None:
    inv = load_inventory(
        write_fleet(tmp_path, devices=[("store-042", "door-1"), ("store-043", "door-1")])
    )
    with pytest.raises(UsageError, match="several sites"):
        inv.device("door-1")
    assert inv.device("store-043/door-1")[0].username == "store-043.door-1"
    with pytest.raises(UsageError, match="no device"):
        inv.device("store-042/door-7")


def test_toml_writer_round_trips_what_configs_hold() -> None:
    """Zones (arrays of tables), quotes, unicode, floats and nested tables survive tomllib."""
    data = {
        "site": 'a "quoted"\\ name\n',
        "n": 3,
        "x": 1e-7,
        "whole": 2.0,
        "flag": False,
        "skip": None,
        "counter": {
            "line": [0.0, 0.5, 1.0, 0.5],
            "zones": [{"name": "till", "polygon": [[0.1, 0.2], [0.3, 0.2], [0.3, 0.9]]}],
        },
        "mqtt": {"tls": {"ca_file": "/etc/anoncam/tls/ca.crt"}, "prefix": "ä/b"},
    }
    text = device_config.to_toml(data, header="two\nlines")
    back = tomllib.loads(text)
    expected = {k: v for k, v in data.items() if v is not None}
    assert back == expected
    assert text.startswith("# two\n# lines\n")


@pytest.mark.parametrize("char", ["\x7f", "\x00", "\x1b", "\x9f", "\u2028"])
def test_toml_writer_escapes_every_control_character(char: str) -> None:
    """Regression (issue 8 item 6): the hand-written writer put a raw DEL into the file, which
    tomllib then refused (a TOMLDecodeError instead of a clear error); tomli-w escapes it."""
    value = f"x{char}y"
    text = device_config.to_toml({"a": value})
    assert tomllib.loads(text) == {"a": value}


def test_a_line_break_in_an_ssh_key_is_refused(tmp_path: Path) -> None:
    """Regression: a key followed by '\\n' and a second line with `command="..."` passed (only
    the first line was checked) and went verbatim into firstrun.sh and cloud-init user-data, so
    the card got an extra authorized_keys line with options nobody checked."""
    path = write_fleet(tmp_path)
    injected = ssh_key() + '\\ncommand=\\"touch /tmp/x\\" ' + ssh_key(seed=9)
    path.write_text(path.read_text().replace(ssh_key(), injected, 1))
    assert "\n" in tomllib.loads(path.read_text())["fleet"]["ssh_authorized_keys"][0]
    with pytest.raises(ConfigError) as info:
        load_inventory(path)
    problems = dict(info.value.problems)
    assert "line break" in problems["fleet.ssh_authorized_keys"], problems
    assert ssh_key_problem(ssh_key() + "\r" + ssh_key(seed=9)) is not None
    assert ssh_key_problem(ssh_key()) is None


@pytest.mark.parametrize(
    ("old", "new", "field"),
    [
        ('ssid = "store-cams"', 'ssid = "c\\npsk=x\\nkey-mgmt=none"', "fleet.wifi.ssid"),
        (
            'username = "dashboard"',
            'username = "dashboard"\ndescription = "a\\u001b[2Jb"',
            "subscribers.0.description",
        ),
        ('id = "store-042"', 'id = "store-042"\nname = "Main\\u007fStreet"', "sites.0.name"),
        ('password_file = "wifi.txt"', 'password_file = "wifi\\r.txt"', "fleet.wifi.password_file"),
    ],
)
def test_control_characters_in_inventory_strings_are_refused(
    tmp_path: Path, old: str, new: str, field: str
) -> None:
    """Regression: `ssid = "c\\npsk=x\\nkey-mgmt=none"` was accepted and injected lines into the
    NetworkManager keyfile; any inventory string with a control character now names its field."""
    path = write_fleet(tmp_path, wifi=True)
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))
    with pytest.raises(ConfigError) as info:
        load_inventory(path)
    flagged = {p for p, m in info.value.problems if "control character" in m}
    assert field in flagged, info.value.problems
