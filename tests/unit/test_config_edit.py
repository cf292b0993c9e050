"""Saving the counting line into the config file: minimal, validated, atomic edits."""

from __future__ import annotations

import os
import stat
import tomllib
from pathlib import Path

import pytest

from firmware.config.edit import counter_update, edit_counter_text, save_counter, validate_counter
from firmware.config.settings import CounterConfig, load
from firmware.errors import ConfigError, OutputError

CONFIG = """\
# door camera, installed 2026-03-02
site = "store-042"
device = "door-1"   # the front door

[source]
kind = "synthetic"
width = 640
height = 360

[counter]
# moved after the shelf was rebuilt
line = [0.0, 0.5, 1.0, 0.5]   # x1, y1, x2, y2
inside = [0.5, 1.0]
hysteresis = 0.03  # wobble guard

[[counter.zones]]
name = "till"
polygon = [[0.1, 0.1], [0.4, 0.1], [0.4, 0.3]]

[mqtt]
host = "broker.example.net"
port = 8883
"""

NEW = {"line": [0.1, 0.45, 0.9, 0.55], "inside": [0.5, 0.9]}


def write(tmp_path: Path, text: str = CONFIG, mode: int = 0o640) -> Path:
    p = tmp_path / "anoncam.toml"
    p.write_text(text, encoding="utf-8")
    p.chmod(mode)
    return p


def test_round_trip_changes_only_the_two_key_lines(tmp_path: Path) -> None:
    """Every other line (comments, other tables, zones, hysteresis) stays byte for byte, and a
    comment at the end of a replaced line is kept."""
    p = write(tmp_path)
    config = save_counter(p, NEW)
    assert config.counter.line == (0.1, 0.45, 0.9, 0.55)
    assert config.counter.inside == (0.5, 0.9)
    before, after = CONFIG.splitlines(), p.read_text().splitlines()
    assert len(before) == len(after)
    changed = [(b, a) for b, a in zip(before, after, strict=True) if b != a]
    assert changed == [
        (
            "line = [0.0, 0.5, 1.0, 0.5]   # x1, y1, x2, y2",
            "line = [0.1, 0.45, 0.9, 0.55]   # x1, y1, x2, y2",
        ),
        ("inside = [0.5, 1.0]", "inside = [0.5, 0.9]"),
    ]
    reloaded = load(p)
    assert reloaded.counter == config.counter
    assert reloaded.counter.hysteresis == 0.03 and reloaded.counter.zones[0].name == "till"
    assert reloaded.mqtt.port == 8883


def test_values_are_rounded_to_four_decimals(tmp_path: Path) -> None:
    p = write(tmp_path)
    save_counter(p, {"line": [0.123456789, 0.5, 1, 0.5], "inside": [0.5, 0.99999]})
    data = tomllib.loads(p.read_text())
    assert data["counter"]["line"] == [0.1235, 0.5, 1.0, 0.5]
    assert data["counter"]["inside"] == [0.5, 1.0]


def test_multi_line_arrays_are_replaced_whole() -> None:
    text = (
        "[counter]\nline = [\n  0.0, 0.5,\n  1.0, 0.5,\n]  # across\ninside = [0.5, 1.0]\n"
        "\n[mqtt]\nport = 1\n"
    )
    out = edit_counter_text(text, {"line": [0.2, 0.3, 0.8, 0.3], "inside": [0.5, 0.0]})
    assert (
        out == "[counter]\nline = [0.2, 0.3, 0.8, 0.3]  # across\ninside = [0.5, 0.0]\n"
        "\n[mqtt]\nport = 1\n"
    )


def test_missing_keys_are_inserted_at_the_end_of_the_counter_table() -> None:
    text = "[counter]\nhysteresis = 0.02\n\n# broker\n[mqtt]\nport = 1\n"
    out = edit_counter_text(text, {"line": [0.0, 0.4, 1.0, 0.4], "inside": [0.5, 1.0]})
    assert out == (
        "[counter]\nhysteresis = 0.02\nline = [0.0, 0.4, 1.0, 0.4]\ninside = [0.5, 1.0]\n"
        "\n# broker\n[mqtt]\nport = 1\n"
    )


def test_a_missing_counter_table_is_added(tmp_path: Path) -> None:
    p = write(tmp_path, 'site = "s1"\n\n[mqtt]\nport = 1883')  # no newline at the end either
    save_counter(p, NEW)
    text = p.read_text()
    assert text.startswith('site = "s1"\n\n[mqtt]\nport = 1883\n')
    assert load(p).counter.line == (0.1, 0.45, 0.9, 0.55)


def test_a_counter_table_goes_before_its_zone_tables(tmp_path: Path) -> None:
    """Zones defined as [[counter.zones]] without a [counter] header: the new table is placed
    before them and the zones survive."""
    p = write(tmp_path, '[[counter.zones]]\nname = "a"\npolygon = [[0, 0], [1, 0], [1, 1]]\n')
    save_counter(p, NEW)
    config = load(p)
    assert config.counter.inside == (0.5, 0.9) and config.counter.zones[0].name == "a"
    assert p.read_text().index("[counter]") < p.read_text().index("[[counter.zones]]")


@pytest.mark.parametrize(
    ("update", "path"),
    [
        ({"line": [0.0, 0.5, 1.5, 0.5], "inside": [0.5, 1.0]}, "counter.line.2"),
        ({"line": [0.0, 0.5, 1.0, 0.5], "inside": [0.5, -0.1]}, "counter.inside.1"),
        ({"line": ["0", 0.5, 1.0, 0.5], "inside": [0.5, 1.0]}, "counter.line.0"),
        ({"line": [0.0, True, 1.0, 0.5], "inside": [0.5, 1.0]}, "counter.line.1"),
        ({"line": [0.0, 0.5, 1.0], "inside": [0.5, 1.0]}, "counter.line"),
        ({"line": [0.0, 0.5, 1.0, 0.5]}, "counter.inside"),
        ({"line": [0.0, 0.5, 1.0, 0.5], "inside": [0.5, 1.0], "zones": []}, "counter.zones"),
        ({"line": [0.2, 0.2, 0.2, 0.2], "inside": [0.5, 1.0]}, "counter"),
        ({"line": [0.0, 0.5, 1.0, 0.5], "inside": [0.3, 0.5]}, "counter"),
        ({"line": [0.0, 0.5, 1.0, float("nan")], "inside": [0.5, 1.0]}, "counter.line.3"),
    ],
)
def test_invalid_updates_are_rejected_with_their_path_and_leave_the_file(
    tmp_path: Path, update: dict[str, object], path: str
) -> None:
    """Out-of-range, wrongly typed, missing or unknown fields and degenerate geometry (equal
    end points, inside point on the line) are refused naming the field; the file is unchanged."""
    p = write(tmp_path)
    before = p.read_bytes()
    with pytest.raises(ConfigError) as info:
        save_counter(p, update)
    assert path in [problem for problem, _ in info.value.problems], info.value.problems
    assert p.read_bytes() == before
    with pytest.raises(ConfigError):
        validate_counter(CounterConfig(), update)


def test_validate_counter_keeps_zones_and_hysteresis() -> None:
    zone = {"name": "till", "polygon": [(0.1, 0.1), (0.4, 0.1), (0.4, 0.3)]}
    current = CounterConfig.model_validate({"hysteresis": 0.05, "zones": [zone]})
    new = validate_counter(current, NEW)
    assert (
        new.line == (0.1, 0.45, 0.9, 0.55) and new.hysteresis == 0.05 and new.zones == current.zones
    )


def test_counter_update_reports_every_problem_at_once() -> None:
    with pytest.raises(ConfigError) as info:
        counter_update({"line": [2, "x", 0, 0], "inside": "middle", "colour": 1})
    paths = [p for p, _ in info.value.problems]
    assert paths == ["counter.colour", "counter.line.1", "counter.inside"]


def test_an_otherwise_invalid_file_is_not_written(tmp_path: Path) -> None:
    """The whole result is validated: a file already broken elsewhere is refused, unchanged."""
    p = write(tmp_path, CONFIG.replace("port = 8883", "port = 99999"))
    before = p.read_bytes()
    with pytest.raises(ConfigError) as info:
        save_counter(p, NEW)
    assert "mqtt.port" in [path for path, _ in info.value.problems]
    assert p.read_bytes() == before


@pytest.mark.parametrize(
    "text",
    [
        "counter = { line = [0.0, 0.5, 1.0, 0.5], inside = [0.5, 1.0] }\n",
        "counter.line = [0.0, 0.5, 1.0, 0.5]\ncounter.inside = [0.5, 1.0]\n",
    ],
)
def test_layouts_that_cannot_be_edited_safely_are_refused(tmp_path: Path, text: str) -> None:
    """Inline tables and dotted keys would need a rewrite: the file is left as it is."""
    p = write(tmp_path, text)
    with pytest.raises(ConfigError, match="cannot edit the counter settings safely"):
        save_counter(p, NEW)
    assert p.read_text() == text


def test_mode_is_kept_and_no_temporary_file_is_left(tmp_path: Path) -> None:
    p = write(tmp_path, mode=0o600)
    inode = p.stat().st_ino
    save_counter(p, NEW)
    assert stat.S_IMODE(p.stat().st_mode) == 0o600
    assert p.stat().st_ino != inode, "written to a new file and renamed, not rewritten in place"
    assert sorted(x.name for x in tmp_path.iterdir()) == ["anoncam.toml"]


def test_a_symlinked_config_is_edited_at_its_target(tmp_path: Path) -> None:
    target = write(tmp_path)
    link = tmp_path / "current.toml"
    link.symlink_to(target.name)
    save_counter(link, NEW)
    assert link.is_symlink()
    assert load(target).counter.inside == (0.5, 0.9)


def test_a_failed_write_leaves_the_old_file_and_no_debris(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """If the rename fails (disk full, I/O error) the original survives intact and the
    temporary file is removed; the error says what to check."""
    p = write(tmp_path)
    before = p.read_bytes()

    def refuse(src: object, dst: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(OutputError, match="No space left"):
        save_counter(p, NEW)
    monkeypatch.undo()
    assert p.read_bytes() == before
    assert sorted(x.name for x in tmp_path.iterdir()) == ["anoncam.toml"]


def test_missing_or_broken_files_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        save_counter(tmp_path / "nope.toml", NEW)
    p = write(tmp_path, "[counter\nline = 1\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        save_counter(p, NEW)
