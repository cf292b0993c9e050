"""Hardware figures for health messages: SoC temperature and throttling, read cheaply.

Uses the device's parsers and host seam (:mod:`firmware.device`), as the diagnostics do, so the
same recorded outputs test both.
"""

from __future__ import annotations

import logging
from typing import Any

from firmware.device.host import Host
from firmware.device.power import (
    decode_throttled,
    parse_measure_temp,
    parse_throttled,
    read_thermal_zone,
    vcgencmd_unusable,
)
from firmware.runtime.pipeline import LoopStats

logger = logging.getLogger(__name__)


def read(host: Host) -> dict[str, Any]:
    """``{"cpu_temp_c": float | None, "throttling": dict | None}`` (schema names)."""
    temp: float | None = None
    result = host.command("vcgencmd", "measure_temp", timeout=2.0)
    if result is not None and not vcgencmd_unusable(result):
        try:
            temp = parse_measure_temp(result.stdout)
        except ValueError:
            temp = None
    if temp is None:
        zone = read_thermal_zone(host)
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


class HealthProbe:
    """The figures of one health message: the frame loop's, the camera's state, the SoC's.

    Called on the publisher's thread every ``mqtt.health_interval_s``; reads ``stats`` (plain
    numbers the loop updates) and asks the host for temperature and throttling. A host that
    cannot answer gives ``None`` figures, never an exception: health must always go out.
    """

    def __init__(self, stats: LoopStats, host: Host | None = None) -> None:
        self.stats = stats
        self.host = host if host is not None else Host()
        self.camera_state = "starting"

    def __call__(self) -> dict[str, Any]:
        figures: dict[str, Any] = {
            **self.stats.as_health(),
            "camera": self.camera_state,
            "cpu_temp_c": None,
            "throttling": None,
        }
        try:
            figures.update(read(self.host))
        except (OSError, ValueError) as exc:
            logger.debug("hardware figures unavailable: %s", exc)
        return figures
