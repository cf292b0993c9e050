"""Diagnose checks against recorded Raspberry Pi 4, Pi 5 and x86 hosts.

The recordings (tests/data/hosts, see its README) hold what vcgencmd, timedatectl, chronyc,
systemctl, journalctl and rpicam-hello print on those machines, and the /proc and /sys files the
checks read. The checks run unchanged; only the Host's root and command runner differ.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from firmware.config.settings import Config
from firmware.device.recorded import RecordedRunner, load_host
from firmware.diagnostics import (
    Context,
    Host,
    Status,
    camera,
    clock,
    diagnose,
    exit_code,
    host_facts,
    power,
    systemd,
)
from firmware.diagnostics.report import load_schema, render_json, render_table

HOSTS = Path(__file__).resolve().parents[1] / "data" / "hosts"


def ctx_for(host: str, scenario: str | None = None, **config: object) -> Context:
    data: dict[str, object] = {"site": "store-042", "device": "door-1"}
    data.update(config)
    return Context(Config.model_validate(data), load_host(HOSTS / host, scenario))


# ------------------------------------------------------------------------------ power
def test_every_throttle_bit_is_decoded_with_its_meaning() -> None:
    """Each of the eight documented get_throttled bits maps to its own flag and meaning; a bug
    here once swapped 'capped' and 'throttled'."""
    expected = {
        0: ("under_voltage", "under-voltage"),
        1: ("freq_capped", "ARM frequency capped"),
        2: ("throttled", "throttled"),
        3: ("soft_temp_limit", "soft temperature limit"),
        16: ("under_voltage_since_boot", "under-voltage"),
        17: ("freq_capped_since_boot", "ARM frequency capped"),
        18: ("throttled_since_boot", "throttled"),
        19: ("soft_temp_limit_since_boot", "soft temperature limit"),
    }
    for bit, (flag, meaning) in expected.items():
        t = power.decode_throttled(1 << bit)
        assert [name for name, on in t.flags.items() if on] == [flag]
        assert (t.now if bit < 16 else t.since_boot) == [meaning]
        assert (t.since_boot if bit < 16 else t.now) == []
        assert t.unknown_bits == 0
    assert power.decode_throttled(1 << 5).unknown_bits == 1 << 5


@pytest.mark.parametrize(
    ("text", "raw"),
    [("throttled=0x0\n", 0), ("throttled=0x50005\n", 0x50005), ("throttled=0xe0000", 0xE0000)],
)
def test_parse_throttled(text: str, raw: int) -> None:
    assert power.parse_throttled(text) == raw


def test_parse_throttled_rejects_other_output() -> None:
    with pytest.raises(ValueError, match="unexpected"):
        power.parse_throttled("Can't open device file: /dev/vcio")


@pytest.mark.parametrize(
    ("host", "scenario", "status", "raw", "words"),
    [
        ("pi4", None, Status.OK, 0x0, ["no under-voltage"]),
        (
            "pi4",
            "undervoltage-now",
            Status.FAIL,
            0x50005,
            ["now: under-voltage, throttled", "since boot: under-voltage, throttled"],
        ),
        (
            "pi4",
            "undervoltage-since-boot",
            Status.WARN,
            0x50000,
            ["since boot: under-voltage, throttled", "nothing right now"],
        ),
        (
            "pi4",
            "all-bits",
            Status.FAIL,
            0xF000F,
            ["now: under-voltage, ARM frequency capped, throttled, soft temperature limit"],
        ),
        ("pi5", None, Status.OK, 0x0, ["throttled=0x0"]),
        ("pi5", "hot", Status.FAIL, 0x80008, ["now: soft temperature limit"]),
        (
            "pi5",
            "throttled-since-boot",
            Status.WARN,
            0xE0000,
            ["since boot: ARM frequency capped, throttled, soft temperature limit"],
        ),
    ],
)
def test_throttling_on_recorded_pis(
    host: str, scenario: str | None, status: Status, raw: int, words: list[str]
) -> None:
    """'Now' bits FAIL, 'since boot' bits WARN, clear is OK; the detail names every bit set."""
    check = power.check_throttling(ctx_for(host, scenario))
    assert check.status == status
    assert check.figures["raw"] == raw
    for word in words:
        assert word in check.detail
    assert (check.hint != "") == (status != Status.OK)


def test_undervoltage_hint_is_about_the_power_supply_and_heat_hint_about_cooling() -> None:
    """The fix matches the cause: a weak supply is not fixed with a fan, and vice versa."""
    under = power.check_throttling(ctx_for("pi4", "undervoltage-now"))
    assert "power supply" in under.hint and "cooling" not in under.hint
    hot = power.check_throttling(ctx_for("pi5", "hot"))
    assert "cooling" in hot.hint and "power supply" not in hot.hint


def test_vcgencmd_without_vcio_access_warns_with_the_group_fix() -> None:
    """vcgencmd run outside the 'video' group prints its error on stdout and exits 255: that is
    a WARN naming the permission fix, not a parse error and not 'all clear'."""
    ctx = ctx_for("pi4", "no-vcio-access")
    check = power.check_throttling(ctx)
    assert check.status == Status.WARN
    assert "/dev/vcio" in check.detail and "video" in check.hint
    temp = power.check_temperature(ctx)  # falls back to the sysfs thermal zone
    assert temp.status == Status.OK
    assert temp.figures == {"temp_c": 48.3, "source": "sysfs thermal_zone0 (cpu-thermal)"}


def test_x86_has_no_vcgencmd_so_throttling_is_skipped() -> None:
    check = power.check_throttling(ctx_for("x86"))
    assert check.status == Status.SKIP and "not a Raspberry Pi" in check.detail


def test_temperature_from_vcgencmd_on_a_pi() -> None:
    check = power.check_temperature(ctx_for("pi4"))
    assert check.status == Status.OK
    assert check.figures == {"temp_c": 48.3, "source": "vcgencmd measure_temp"}
    hot = power.check_temperature(ctx_for("pi5", "hot"))
    assert hot.status == Status.FAIL and hot.figures["temp_c"] == 81.7


def test_temperature_off_a_pi_prefers_the_cpu_zone() -> None:
    """Off a Pi the sysfs zone of the CPU package (x86_pkg_temp) is used, not the cooler
    ACPI zone listed first."""
    check = power.check_temperature(ctx_for("x86"))
    assert check.status == Status.OK
    assert check.figures == {"temp_c": 45.0, "source": "sysfs thermal_zone1 (x86_pkg_temp)"}


def test_no_vcgencmd_and_no_thermal_zone_is_skipped(tmp_path: Path) -> None:
    """A VM exposes no thermal zone: SKIP, not a made-up temperature."""
    root = tmp_path / "root"
    shutil.copytree(HOSTS / "x86" / "root", root)
    shutil.rmtree(root / "sys")
    ctx = Context(Config.model_validate({}), load_host(HOSTS / "x86", root=root))
    check = power.check_temperature(ctx)
    assert check.status == Status.SKIP and "temperature" in check.detail


def test_unparseable_thermal_zone_is_ignored(tmp_path: Path) -> None:
    """Some zones answer garbage while their sensor sleeps; the readable zone still counts."""
    root = tmp_path / "root"
    shutil.copytree(HOSTS / "x86" / "root", root)
    (root / "sys/class/thermal/thermal_zone1/temp").write_text("\n")
    ctx = Context(Config.model_validate({}), load_host(HOSTS / "x86", root=root))
    assert power.check_temperature(ctx).figures["temp_c"] == 27.8


# ------------------------------------------------------------------------------ clock
@pytest.mark.parametrize(
    ("host", "scenario", "status", "client", "offset"),
    [
        ("pi4", None, Status.OK, "systemd-timesyncd", -0.001165),
        ("pi5", None, Status.OK, "chrony", -0.000021345),
        ("x86", None, Status.OK, "systemd-timesyncd", 0.000412),
        ("pi4", "unsynchronized", Status.FAIL, "systemd-timesyncd", None),
        ("pi5", "unsynchronized", Status.FAIL, "chrony", 0.0),
    ],
)
def test_clock_on_recorded_hosts(
    host: str, scenario: str | None, status: Status, client: str, offset: float | None
) -> None:
    """Synchronized with its offset from chrony or timesyncd; unsynchronized FAILs."""
    check = clock.check_sync(ctx_for(host, scenario))
    assert check.status == status, check.detail
    assert check.figures["ntp_client"] == client
    if offset is None:
        assert check.figures["offset_s"] is None
    else:
        assert check.figures["offset_s"] == pytest.approx(offset)
    if status == Status.FAIL:
        assert "NOT synchronized" in check.detail and "wall-clock" in check.detail
        assert "UDP port 123" in check.hint


def test_clock_with_ntp_turned_off_says_how_to_turn_it_on() -> None:
    check = clock.check_sync(ctx_for("pi4", "ntp-off"))
    assert check.status == Status.FAIL
    assert check.hint == "turn time synchronization on: sudo timedatectl set-ntp true"


def test_clock_without_systemd_or_chrony_cannot_tell() -> None:
    """In a container timedatectl cannot reach systemd: WARN 'cannot tell', never OK."""
    check = clock.check_sync(ctx_for("x86", "container"))
    assert check.status == Status.WARN
    assert "cannot tell" in check.detail and "not been booted with systemd" in check.detail


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("-1.165ms", -0.001165), ("+412us", 0.000412), ("2.5s", 2.5), ("12ns", 12e-9), ("n/a", None)],
)
def test_parse_systemd_duration(text: str, seconds: float | None) -> None:
    result = clock.parse_duration(text)
    assert result == (None if seconds is None else pytest.approx(seconds))


def test_large_offset_warns() -> None:
    """Synchronized but 2 s off (still slewing): windows would shift against other cameras."""
    runner = RecordedRunner(
        {
            ("timedatectl", "show"): (0, "NTP=yes\nNTPSynchronized=yes\n", ""),
            ("chronyc", "tracking"): (
                0,
                "System time     : 2.000000000 seconds fast of NTP time\n"
                "Leap status     : Normal\n",
                "",
            ),
        }
    )
    ctx = Context(Config.model_validate({}), Host(HOSTS / "x86" / "root", runner))
    check = clock.check_sync(ctx)
    assert check.status == Status.WARN and "+2.000 s" in check.detail


# ------------------------------------------------------------------------------ service
def test_service_running_is_ok() -> None:
    check = systemd.check_systemd(ctx_for("pi4"))
    assert check.status == Status.OK and check.detail == "active (running)"
    assert check.figures["restarts"] == 0


def test_crash_loop_fails_and_journal_shows_the_error_lines() -> None:
    """A service restarting in a loop FAILs with its restart count and exit status; the journal
    check surfaces the ERROR line that explains it."""
    ctx = ctx_for("pi4", "crash-loop")
    state = systemd.check_systemd(ctx)
    assert state.status == Status.FAIL
    assert "7 restart(s)" in state.detail and "exit status 1" in state.detail
    journal = systemd.check_journal(ctx)
    assert journal.status == Status.WARN
    errors = journal.figures["error_lines"]
    assert any(
        "ERROR firmware.mqtt.publish" in line and "Not authorized" in line for line in errors
    )
    assert any("Failed with result 'exit-code'" in line for line in errors)
    assert not any("Scheduled restart job" in line for line in errors)


def test_stopped_service_warns_with_enable_now() -> None:
    check = systemd.check_systemd(ctx_for("pi5"))
    assert check.status == Status.WARN and "enable --now" in check.hint


def test_missing_unit_and_no_systemd() -> None:
    """A bench machine without the unit WARNs; a container without systemd SKIPs."""
    assert systemd.check_systemd(ctx_for("x86")).status == Status.WARN
    container = systemd.check_systemd(ctx_for("x86", "container"))
    assert container.status == Status.SKIP and "systemd is not running" in container.detail


def test_journal_without_permission_says_which_group() -> None:
    check = systemd.check_journal(ctx_for("pi4", "journal-no-access"))
    assert check.status == Status.WARN and "systemd-journal" in check.hint


def test_journal_empty_is_ok() -> None:
    check = systemd.check_journal(ctx_for("x86"))
    assert check.status == Status.OK and check.figures["lines"] == 0


def test_config_check_warns_without_a_config_and_on_loose_secret_permissions(
    tmp_path: Path,
) -> None:
    """No config: WARN that defaults are used. A password file readable by others: WARN with
    chmod; the password itself is never read by this check."""
    ctx = ctx_for("x86")
    assert systemd.check_config(ctx).status == Status.WARN
    secret = tmp_path / "pw"
    secret.write_text("x")
    secret.chmod(0o644)
    cfg = Config.model_validate({"mqtt": {"username": "u", "password_file": str(secret)}})
    loose = systemd.check_config(Context(cfg, ctx.host, tmp_path / "config.toml"))
    assert loose.status == Status.WARN and "chmod 600" in loose.hint
    secret.chmod(0o600)
    assert systemd.check_config(Context(cfg, ctx.host, tmp_path / "c.toml")).status == Status.OK


# ------------------------------------------------------------------------------ camera
def test_camera_list_parses_rpicam_hello() -> None:
    """Camera Module 3 on a Pi 5 (RP1 path) is listed with its sensor and resolution."""
    ctx = ctx_for("pi5", source={"kind": "picamera2"})
    check = camera.check_list(ctx)
    assert check.status == Status.OK
    assert check.figures["cameras"] == [
        {
            "index": 0,
            "sensor": "imx708",
            "resolution": "4608x2592",
            "path": "/base/axi/pcie@120000/rp1/i2c@88000/imx708@1a",
        }
    ]


def test_camera_list_on_pi4_with_two_formats() -> None:
    ctx = ctx_for("pi4", "service-stopped", source={"kind": "picamera2"})
    check = camera.check_list(ctx)
    assert check.status == Status.OK and "imx219 3280x2464" in check.detail
    assert len(check.figures["cameras"]) == 1  # the mode lines are not cameras


def test_no_camera_fails_with_the_cable_fix() -> None:
    """'No cameras available!' (exit status 0) is a FAIL pointing at the ribbon cable."""
    check = camera.check_list(ctx_for("pi4", "no-camera", source={"kind": "picamera2"}))
    assert check.status == Status.FAIL
    assert "ribbon cable" in check.hint


def test_camera_is_not_probed_while_the_service_holds_it() -> None:
    """libcamera allows one user: with anoncam running, listing would fail for no fault."""
    ctx = ctx_for("pi4", source={"kind": "picamera2"})
    assert camera.check_list(ctx).status == Status.SKIP
    assert camera.check_frames(ctx, camera.check_list(ctx)).status == Status.SKIP


def test_picamera2_source_off_a_pi_warns() -> None:
    check = camera.check_picamera2(ctx_for("x86", source={"kind": "picamera2"}))
    assert check.status == Status.WARN and "not a Raspberry Pi" in check.detail


def test_camera_frames_measured_from_sensor_timestamps() -> None:
    """Frames come through the real Picamera2Source (on the picamera2 stand-in): 15 fps asked,
    frames 200 ms apart is WARN with the measured rate; at the asked rate it is OK."""
    from firmware.sources.camera import Picamera2Source
    from tests.support.picamera2_standin import standin

    ctx = ctx_for(
        "pi4",
        "service-stopped",
        source={
            "kind": "picamera2",
            "width": 320,
            "height": 240,
            "lores_width": 160,
            "lores_height": 120,
            "fps": 15.0,
        },
    )
    listed = camera.check_list(ctx)

    def slow(cfg: object) -> Picamera2Source:
        return Picamera2Source(ctx.config.source, camera_factory=standin(frame_duration_us=200_000))

    check = camera.check_frames(ctx, listed, opener=slow)
    assert check.status == Status.WARN, check.detail
    assert check.figures["fps"] == pytest.approx(5.0, rel=0.05)
    assert "low light" in check.hint

    def normal(cfg: object) -> Picamera2Source:
        return Picamera2Source(ctx.config.source, camera_factory=standin())

    good = camera.check_frames(ctx, listed, opener=normal)
    assert good.status == Status.OK, good.detail
    assert good.figures["fps"] == pytest.approx(15.0, rel=0.05)


def test_file_source_that_does_not_exist_fails(tmp_path: Path) -> None:
    ctx = ctx_for("x86", source={"kind": "file", "path": str(tmp_path / "nope.mp4")})
    (check,) = camera.run(ctx)
    assert check.name == "camera.source" and check.status == Status.FAIL
    assert "nope.mp4" in check.detail


# ------------------------------------------------------------------------------ report
def test_host_facts_from_recordings() -> None:
    """The device-tree model is read without its trailing NUL; x86 is recognised by cpuinfo."""
    pi4 = host_facts(load_host(HOSTS / "pi4"))
    assert pi4["model"] == "Raspberry Pi 4 Model B Rev 1.4"
    assert pi4["hardware"] == "pi4" and pi4["hostname"] == "store042-door1"
    assert pi4["os"] == "Debian GNU/Linux 12 (bookworm)" and pi4["uptime_s"] == 86399.12
    assert host_facts(load_host(HOSTS / "pi5"))["hardware"] == "pi5"
    x86 = host_facts(load_host(HOSTS / "x86"))
    assert x86["model"] is None and x86["hardware"] == "x86"


@pytest.mark.parametrize(
    ("host", "scenario"),
    [("pi4", "undervoltage-now"), ("pi5", "hot"), ("x86", None), ("x86", "container")],
)
def test_report_json_validates_and_table_has_hints(
    host: str, scenario: str | None, tmp_path: Path
) -> None:
    """--json output of a whole diagnosis validates against the schema in the repo, and the
    table prints a 'fix:' line under every non-OK check."""
    ctx = ctx_for(host, scenario, state_dir=str(tmp_path))
    report = diagnose(ctx, only={"power", "clock", "storage", "service"})
    data = json.loads(render_json(report))
    jsonschema.validate(data, load_schema())
    assert data["summary"] == report.counts()
    table = render_table(report)
    for check in report.checks:
        assert check.name in table
        if check.status != Status.OK and check.hint:
            assert f"fix: {check.hint}" in table
    assert exit_code(report.checks) == (1 if data["summary"]["FAIL"] else 0)


def test_schema_rejects_a_bad_status() -> None:
    """The schema is not a rubber stamp: an unknown status or a missing hint is refused."""
    bad: dict[str, Any] = {
        "version": "0",
        "generated": "2026-01-01T00:00:00Z",
        "host": {
            "hostname": None,
            "model": None,
            "hardware": "x86",
            "os": None,
            "kernel": None,
            "uptime_s": None,
        },
        "checks": [
            {
                "name": "power.throttling",
                "status": "MAYBE",
                "detail": "x",
                "hint": "",
                "figures": {},
            }
        ],
    }
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, load_schema())
    bad["checks"][0]["status"] = "OK"
    jsonschema.validate(bad, load_schema())
    del bad["checks"][0]["hint"]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, load_schema())
