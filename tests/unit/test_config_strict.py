"""Config values are taken as typed, never coerced, and counter geometry must make sense.

Regressions from issue 12 item 15: `port = "1883"`, `seconds = "60"`, `seconds = true` (1-second
windows), `fps = "15"` and `threads = 2.0` all passed; so did a bow-tie or flat zone polygon and
an inside point within the hysteresis band of the line.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from firmware.config.settings import from_dict
from firmware.errors import ConfigError
from provisioning.inventory.loader import load as load_inventory
from tests.unit.test_provision_support import write_fleet


def _problems(toml: str) -> dict[str, str]:
    with pytest.raises(ConfigError) as info:
        from_dict(tomllib.loads(toml))
    return dict(info.value.problems)


@pytest.mark.parametrize(
    ("toml", "path"),
    [
        ('[mqtt]\nport = "1883"', "mqtt.port"),
        ('[windows]\nseconds = "60"', "windows.seconds"),
        ("[windows]\nseconds = true", "windows.seconds"),
        ('[source]\nfps = "15"', "source.fps"),
        ("[detector]\nthreads = 2.0", "detector.threads"),
        ("[preview]\nenabled = 1", "preview.enabled"),
        ('[counter]\nline = [0, "0.5", 1, 0.5]', "counter.line.1"),
        ("[anonymizer]\nhold_s = nan", "anonymizer.hold_s"),
    ],
)
def test_values_are_not_coerced(toml: str, path: str) -> None:
    assert path in _problems(toml)


def test_typed_values_still_pass() -> None:
    """An int where a float is expected is a number, not a coercion: it stays accepted."""
    cfg = from_dict(tomllib.loads("[source]\nfps = 15\n[counter]\nline = [0, 0.5, 1, 0.5]"))
    assert cfg.source.fps == 15.0 and cfg.counter.line == (0.0, 0.5, 1.0, 0.5)


@pytest.mark.parametrize(
    ("polygon", "why"),
    [
        ("[[0.1, 0.1], [0.9, 0.9], [0.9, 0.1], [0.1, 0.9]]", "intersects itself"),
        ("[[0.1, 0.1], [0.5, 0.5], [0.9, 0.9]]", "no area"),
        ("[[0.1, 0.1], [0.1, 0.1], [0.3, 0.1]]", "same point"),
        ("[[0.1, 0.1], [0.9, 0.1], [0.9, 0.9], [0.9, 0.9], [0.1, 0.9]]", "same point"),
        ("[[0.1, 0.1], [0.9, 0.1], [0.5, 0.1], [0.5, 0.9]]", "fold back"),
        ("[[0.1, 0.1], [0.9, 0.1], [0.1, 0.5], [0.9, 0.9], [0.1, 0.9], [0.5, 0.5]]", "itself"),
    ],
)
def test_a_zone_must_be_a_simple_polygon(polygon: str, why: str) -> None:
    problems = _problems(f'[[counter.zones]]\nname = "till"\npolygon = {polygon}')
    assert why in problems["counter.zones.0.polygon"], problems


def test_concave_zones_pass() -> None:
    """An L-shaped (concave) zone is simple: the check must not refuse what counts correctly."""
    toml = '[[counter.zones]]\nname = "l"\npolygon = [[0,0],[1,0],[1,0.2],[0.2,0.2],[0.2,1],[0,1]]'
    assert from_dict(tomllib.loads(toml)).counter.zones[0].name == "l"


def test_the_inside_point_must_be_beyond_the_hysteresis_band() -> None:
    problems = _problems("[counter]\nline = [0, 0.5, 1, 0.5]\ninside = [0.5, 0.51]")
    assert "hysteresis band" in problems["counter"], problems
    ok = from_dict(tomllib.loads("[counter]\nline = [0, 0.5, 1, 0.5]\ninside = [0.5, 0.53]"))
    assert ok.counter.inside == (0.5, 0.53)


def test_inventory_values_are_not_coerced(tmp_path: Path) -> None:
    path = write_fleet(tmp_path)
    path.write_text(path.read_text().replace("port = 1883", 'port = "1883"', 1))
    with pytest.raises(ConfigError) as info:
        load_inventory(path)
    assert "broker.port" in dict(info.value.problems)
