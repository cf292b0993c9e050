"""Hardware figures for health messages: SoC temperature and throttling, read cheaply.

Reuses the diagnostics parsers and its host seam, so the same recorded outputs test both.
"""

from __future__ import annotations

from typing import Any

from firmware.diagnostics.base import Context, Host
from firmware.diagnostics.power import (
    decode_throttled,
    parse_measure_temp,
    parse_throttled,
    read_thermal_zone,
    vcgencmd_unusable,
)


def read(host: Host, ctx: Context) -> dict[str, Any]:
    """``{"cpu_temp_c": float | None, "throttling": dict | None}`` (schema names)."""
    temp: float | None = None
    result = host.command("vcgencmd", "measure_temp", timeout=2.0)
    if result is not None and not vcgencmd_unusable(result):
        try:
            temp = parse_measure_temp(result.stdout)
        except ValueError:
            temp = None
    if temp is None:
        zone = read_thermal_zone(ctx)
        temp = zone[0] if zone else None
    throttling: dict[str, Any] | None = None
    result = host.command("vcgencmd", "get_throttled", timeout=2.0)
    if result is not None and not vcgencmd_unusable(result):
        try:
            t = decode_throttled(parse_throttled(result.stdout))
            throttling = {"raw": t.raw, **t.flags}
        except ValueError:
            throttling = None
    return {"cpu_temp_c": None if temp is None else round(temp, 1), "throttling": throttling}
