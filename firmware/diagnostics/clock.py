"""Clock: is the system clock synchronized, and by how much is it off?

Count windows close on wall-clock boundaries and carry UTC start and end times, so a clock that is
not synchronized gives windows that subscribers cannot line up with other cameras or with the
till. A Pi 4 has no battery-backed clock: after a power cut it runs from the last saved time
until NTP answers. Hence FAIL when unsynchronized.

Sources, first that answers: ``timedatectl show`` (``NTPSynchronized=yes``, which systemd takes
from the kernel's own synchronisation flag whichever NTP client runs), then ``chronyc tracking``.
The offset comes from ``chronyc tracking`` (``System time : 0.000012 seconds fast of NTP time``)
or from ``timedatectl timesync-status`` (``Offset: -1.165ms``) for systemd-timesyncd, which is
what Raspberry Pi OS uses.
"""

from __future__ import annotations

import re

from firmware.device.host import CommandResult, parse_key_values
from firmware.diagnostics.base import Check, Context, fail, ok, warn

NAMES = ("clock.sync",)

#: An offset beyond this shifts windows visibly against other devices' windows.
WARN_OFFSET_S = 1.0

_HINT_UNSYNCED = (
    "the NTP client cannot reach a time server: check the network, DNS and that the firewall lets "
    "UDP port 123 out ('timedatectl timesync-status' or 'chronyc sources' show which server)"
)
_HINT_NTP_OFF = "turn time synchronization on: sudo timedatectl set-ntp true"


def parse_colon_fields(text: str) -> dict[str, str]:
    """``Key : value`` / ``Key: value`` lines (chronyc tracking, timesync-status) into a dict."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip():
            out[key.strip()] = value.strip()
    return out


_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "min": 60.0}


def parse_duration(text: str) -> float | None:
    """systemd's ``-1.165ms`` / ``+12us`` / ``2.5s`` into seconds; None if not a duration."""
    match = re.fullmatch(r"\s*([+-]?\d+(?:\.\d+)?)\s*(ns|us|µs|ms|s|min)\s*", text)
    if not match:
        return None
    return float(match.group(1)) * _UNITS[match.group(2)]


def parse_chrony_offset(system_time: str) -> float | None:
    """``0.000012345 seconds fast of NTP time`` -> +1.2345e-05 (positive: our clock is ahead)."""
    match = re.match(r"([\d.]+) seconds (fast|slow) of NTP time", system_time)
    if not match:
        return None
    value = float(match.group(1))
    return value if match.group(2) == "fast" else -value


def _fmt_offset(seconds: float) -> str:
    if abs(seconds) >= 1.0:
        return f"{seconds:+.3f} s"
    return f"{seconds * 1000:+.3f} ms"


def _unusable(result: CommandResult | None) -> str | None:
    """Why a command cannot be used, or None when it answered."""
    if result is None:
        return "not installed"
    if not result.ok:
        return result.first_error_line()
    return None


def check_sync(ctx: Context) -> Check:
    name = "clock.sync"
    host = ctx.host
    figures: dict[str, object] = {}
    synchronized: bool | None = None
    source = ""
    ntp_enabled: bool | None = None

    show = host.command("timedatectl", "show")
    show_problem = _unusable(show)
    if show is not None and show_problem is None:
        values = parse_key_values(show.stdout)
        if "NTPSynchronized" in values:
            synchronized = values["NTPSynchronized"] == "yes"
            source = "timedatectl"
            ntp_enabled = values.get("NTP") == "yes" if "NTP" in values else None
            figures["timezone"] = values.get("Timezone")
            figures["ntp_enabled"] = ntp_enabled

    offset: float | None = None
    chrony = host.command("chronyc", "tracking")
    chrony_problem = _unusable(chrony)
    if chrony is not None and chrony_problem is None:
        fields = parse_colon_fields(chrony.stdout)
        offset = parse_chrony_offset(fields.get("System time", ""))
        figures["ntp_client"] = "chrony"
        if "Reference ID" in fields:
            figures["server"] = fields["Reference ID"]
        if "Stratum" in fields and fields["Stratum"].isdigit():
            figures["stratum"] = int(fields["Stratum"])
        leap = fields.get("Leap status")
        if synchronized is None and leap is not None:
            synchronized = leap != "Not synchronised"
            source = "chronyc tracking"
    elif show_problem is None:
        status = host.command("timedatectl", "timesync-status")
        if status is not None and status.ok:
            fields = parse_colon_fields(status.stdout)
            offset = parse_duration(fields.get("Offset", ""))
            figures["ntp_client"] = "systemd-timesyncd"
            if "Server" in fields:
                figures["server"] = fields["Server"]

    figures["synchronized"] = synchronized
    figures["offset_s"] = offset
    figures["source"] = source or None
    client = figures.get("ntp_client")
    via = f" ({client})" if client else ""
    off = f", offset {_fmt_offset(offset)}" if offset is not None else ""

    if synchronized is None:
        why = (
            f"timedatectl: {show_problem or 'no NTPSynchronized field'}; chronyc: {chrony_problem}"
        )
        return warn(
            name,
            f"cannot tell whether the clock is synchronized ({why})",
            "on the device, systemd's timedatectl answers this; check the time by hand "
            "against a trusted clock and that an NTP client runs",
            **figures,
        )
    if not synchronized:
        hint = _HINT_NTP_OFF if ntp_enabled is False else _HINT_UNSYNCED
        state = (
            "NTP is turned off" if ntp_enabled is False else "NTP is on but has not synchronized"
        )
        return fail(
            name,
            f"clock is NOT synchronized ({state}){off}: count windows are aligned on wall-clock "
            "time and will carry wrong times",
            hint,
            **figures,
        )
    if offset is not None and abs(offset) >= WARN_OFFSET_S:
        return warn(
            name,
            f"synchronized{via} but offset {_fmt_offset(offset)}",
            "the NTP client is still slewing a large error; wait, or check the time server",
            **figures,
        )
    return ok(name, f"synchronized{via}{off}", **figures)


def run(ctx: Context) -> list[Check]:
    return [check_sync(ctx)]
