"""Reading power and heat off the host: ``vcgencmd get_throttled`` decoded bit by bit, the SoC
temperature from ``vcgencmd measure_temp`` or the kernel's thermal zones.

The firmware keeps a bit mask (``throttled=0x50005``): bits 0-3 say what is happening *now*
(under-voltage, ARM frequency capped, throttled, soft temperature limit), bits 16-19 say the same
happened at some point *since boot*. Thermal zones are ``/sys/class/thermal/thermal_zone*/temp``
in millidegrees. Parsers only: the verdicts live in :mod:`firmware.diagnostics.power`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from firmware.device.host import CommandResult, Host

#: (bit, figure name as in the health schema, meaning). Bits 16-19 repeat 0-3 "since boot".
THROTTLE_BITS: tuple[tuple[int, str, str], ...] = (
    (0, "under_voltage", "under-voltage"),
    (1, "freq_capped", "ARM frequency capped"),
    (2, "throttled", "throttled"),
    (3, "soft_temp_limit", "soft temperature limit"),
    (16, "under_voltage_since_boot", "under-voltage"),
    (17, "freq_capped_since_boot", "ARM frequency capped"),
    (18, "throttled_since_boot", "throttled"),
    (19, "soft_temp_limit_since_boot", "soft temperature limit"),
)


_KNOWN_MASK = sum(1 << bit for bit, _, _ in THROTTLE_BITS)


@dataclass(frozen=True)
class Throttle:
    """A decoded ``get_throttled`` mask."""

    raw: int
    flags: dict[str, bool]
    now: list[str]
    since_boot: list[str]
    unknown_bits: int

    @property
    def raw_hex(self) -> str:
        return f"{self.raw:#x}"


def parse_throttled(text: str) -> int:
    """``throttled=0x50005`` -> 0x50005. Raises ValueError for anything else."""
    match = re.search(r"throttled=(0x[0-9a-fA-F]+|\d+)", text)
    if not match:
        raise ValueError(f"unexpected vcgencmd get_throttled output: {text.strip()[:80]!r}")
    return int(match.group(1), 0)


def decode_throttled(raw: int) -> Throttle:
    flags: dict[str, bool] = {}
    now: list[str] = []
    since: list[str] = []
    for bit, name, meaning in THROTTLE_BITS:
        on = bool(raw >> bit & 1)
        flags[name] = on
        if on:
            (now if bit < 16 else since).append(meaning)
    return Throttle(raw, flags, now, since, raw & ~_KNOWN_MASK)


def vcgencmd_unusable(result: CommandResult) -> bool:
    return not result.ok or "VCHI initialization failed" in result.stdout + result.stderr


def parse_measure_temp(text: str) -> float:
    """``temp=48.3'C`` -> 48.3. Raises ValueError for anything else."""
    match = re.search(r"temp=(-?\d+(?:\.\d+)?)'C", text)
    if not match:
        raise ValueError(f"unexpected vcgencmd measure_temp output: {text.strip()[:80]!r}")
    return float(match.group(1))


# Zone types that are the CPU/SoC on common boards, best first.
_CPU_ZONE_TYPES = (
    "cpu-thermal",
    "x86_pkg_temp",
    "coretemp",
    "soc_thermal",
    "cpu_thermal",
    "acpitz",
)


def read_thermal_zone(host: Host) -> tuple[float, str] | None:
    """(degrees C, description) from the best sysfs thermal zone, or None when there is none."""
    zones: list[tuple[int, float, str]] = []
    for temp_path in host.glob("/sys/class/thermal/thermal_zone*/temp"):
        text = host.read_text(temp_path)
        if text is None:
            continue
        try:
            celsius = int(text.strip()) / 1000.0
        except ValueError:
            continue  # some zones answer EINVAL or garbage while their sensor sleeps
        zone = temp_path.rsplit("/", 2)[-2]
        kind = (host.read_text(temp_path.rsplit("/", 1)[0] + "/type") or "").strip()
        rank = _CPU_ZONE_TYPES.index(kind) if kind in _CPU_ZONE_TYPES else len(_CPU_ZONE_TYPES)
        zones.append((rank, celsius, f"{zone} ({kind})" if kind else zone))
    if not zones:
        return None
    # Prefer a known CPU zone; among equals, the hottest (the one that throttles first).
    rank, celsius, label = min(zones, key=lambda z: (z[0], -z[1]))
    return celsius, f"sysfs {label}"
