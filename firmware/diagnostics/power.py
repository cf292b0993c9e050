"""Power and heat: ``vcgencmd get_throttled`` decoded bit by bit, and the SoC temperature.

The firmware keeps a bit mask (``throttled=0x50005``): bits 0-3 say what is happening *now*
(under-voltage, ARM frequency capped, throttled, soft temperature limit), bits 16-19 say the same
happened at some point *since boot*. A "now" bit FAILs: the device is losing frames at this
moment. A "since boot" bit WARNs: it happened (a brown-out when the heater started, a hot
afternoon) and will happen again.

The temperature comes from ``vcgencmd measure_temp`` (``temp=48.3'C``) and, off a Pi or when
vcgencmd is not usable, from the kernel's thermal zones (``/sys/class/thermal/thermal_zone*/temp``
in millidegrees).
"""

from __future__ import annotations

from firmware.device.power import (
    Throttle,
    decode_throttled,
    parse_measure_temp,
    parse_throttled,
    read_thermal_zone,
    vcgencmd_unusable,
)
from firmware.diagnostics.base import Check, Context, fail, ok, skip, warn

NAMES = ("power.throttling", "power.temperature")

# Pi 4 and Pi 5 firmware starts throttling at 80 °C (85 °C is the hard limit); warn before that.
WARN_TEMP_C = 70.0

FAIL_TEMP_C = 80.0

_HINT_POWER = (
    "use the official Raspberry Pi power supply (Pi 4: 5.1 V 3 A USB-C; Pi 5: 5.1 V 5 A USB-C) "
    "and a short, thick cable; a PoE HAT or injector must be rated for the load"
)

_HINT_HEAT = (
    "improve cooling: a heatsink or fan (the Pi 5 Active Cooler), a ventilated case, "
    "away from heaters and direct sun"
)

_HINT_VCGENCMD_ACCESS = (
    "run diagnose as root (sudo) or add the user to the 'video' group; "
    "vcgencmd needs /dev/vchiq or /dev/vcio"
)


def _throttle_hint(t: Throttle) -> str:
    power = t.flags["under_voltage"] or t.flags["under_voltage_since_boot"]
    heat = any(t.flags[n] for n in ("soft_temp_limit", "soft_temp_limit_since_boot"))
    # Capping and throttling come from either cause; without under-voltage it is the heat.
    capped = any(
        t.flags[n]
        for n in ("freq_capped", "throttled", "freq_capped_since_boot", "throttled_since_boot")
    )
    hints = []
    if power:
        hints.append(_HINT_POWER)
    if heat or (capped and not power):
        hints.append(_HINT_HEAT)
    return "; ".join(hints)


def check_throttling(ctx: Context) -> Check:
    name = "power.throttling"
    host = ctx.host
    result = host.command("vcgencmd", "get_throttled")
    if result is None:
        if host.is_raspberry_pi:
            return warn(
                name,
                "vcgencmd is not installed: under-voltage and throttling cannot be read",
                "install it: sudo apt install raspi-utils (libraspberrypi-bin on older releases)",
            )
        return skip(name, "no vcgencmd: not a Raspberry Pi, no firmware throttling flags to read")
    if vcgencmd_unusable(result):
        return warn(
            name,
            f"vcgencmd get_throttled failed: {result.first_error_line()}",
            _HINT_VCGENCMD_ACCESS,
        )
    try:
        t = decode_throttled(parse_throttled(result.stdout))
    except ValueError as exc:
        return warn(name, str(exc), "report this output; the firmware may be newer than anoncam")
    figures: dict[str, object] = {"raw": t.raw, "raw_hex": t.raw_hex, **t.flags}
    if t.unknown_bits:
        figures["unknown_bits"] = f"{t.unknown_bits:#x}"
    if t.now:
        detail = f"now: {', '.join(t.now)}"
        if t.since_boot:
            detail += f"; since boot: {', '.join(t.since_boot)}"
        return fail(name, f"{detail} (throttled={t.raw_hex})", _throttle_hint(t), **figures)
    if t.since_boot:
        return warn(
            name,
            f"since boot: {', '.join(t.since_boot)}; nothing right now (throttled={t.raw_hex})",
            _throttle_hint(t),
            **figures,
        )
    return ok(
        name,
        f"no under-voltage, capping, throttling or temperature limit since boot "
        f"(throttled={t.raw_hex})",
        **figures,
    )


def check_temperature(ctx: Context) -> Check:
    name = "power.temperature"
    reading: tuple[float, str] | None = None
    note = ""
    result = ctx.host.command("vcgencmd", "measure_temp")
    if result is not None and not vcgencmd_unusable(result):
        try:
            reading = (parse_measure_temp(result.stdout), "vcgencmd measure_temp")
        except ValueError as exc:
            note = str(exc)
    elif result is not None:
        note = f"vcgencmd measure_temp failed: {result.first_error_line()}"
    if reading is None:
        reading = read_thermal_zone(ctx.host)
    if reading is None:
        if note:
            return warn(name, f"{note}; no sysfs thermal zone either", _HINT_VCGENCMD_ACCESS)
        return skip(
            name,
            "no vcgencmd and no thermal zone in /sys/class/thermal: "
            "this machine does not expose its temperature",
        )
    celsius, source = reading
    figures = {"temp_c": round(celsius, 1), "source": source}
    detail = f"{celsius:.1f} °C ({source})"
    if celsius >= FAIL_TEMP_C:
        return fail(
            name,
            f"{detail}: at or above {FAIL_TEMP_C:.0f} °C the SoC throttles",
            _HINT_HEAT,
            **figures,
        )
    if celsius >= WARN_TEMP_C:
        return warn(
            name,
            f"{detail}: close to the {FAIL_TEMP_C:.0f} °C throttling point",
            _HINT_HEAT,
            **figures,
        )
    return ok(name, detail, **figures)


def run(ctx: Context) -> list[Check]:
    return [check_throttling(ctx), check_temperature(ctx)]
