"""Service: the config in use, the systemd unit's state and restarts, its recent errors.

``systemctl show`` is read rather than ``systemctl status`` because its ``Key=value`` lines are
stable across systemd versions; the journal is read with ``journalctl -u anoncam`` and scanned
for the lines the service writes at WARNING/ERROR level and for systemd's own failure lines.
"""

from __future__ import annotations

import re
import stat
from pathlib import Path

from firmware.device.host import CommandResult, Host, parse_key_values
from firmware.diagnostics.base import Check, Context, fail, ok, skip, warn

NAMES = ("service.config", "service.systemd", "service.journal")

UNIT = "anoncam"
SHOW_PROPERTIES = "LoadState,ActiveState,SubState,NRestarts,ExecMainStatus"
JOURNAL_LINES = 20

_NO_SYSTEMD = ("System has not been booted with systemd", "Failed to connect to bus")
# Our log format is "LEVEL logger: message"; systemd adds "Failed with result" and
# "Main process exited" lines of its own.
_ERROR_LINE = re.compile(
    r"\b(ERROR|CRITICAL|WARNING|Traceback|Failed with result|Main process exited|"
    r"failed|error:)",
)
_JOURNAL_NOISE = re.compile(r"^-- (No entries|Journal begins|Logs begin|Boot [0-9a-f]+) ")


def unit_state(host: Host) -> dict[str, str] | None:
    """The unit's ``systemctl show`` properties, or None when systemd is not there to ask."""
    result = host.command("systemctl", "show", UNIT, "-p", SHOW_PROPERTIES)
    if result is None or not result.ok:
        return None
    return parse_key_values(result.stdout)


def service_holds_camera(host: Host) -> bool:
    """True while the anoncam service runs (it then owns the camera; libcamera allows one user)."""
    state = unit_state(host)
    return state is not None and state.get("ActiveState") in ("active", "activating", "reloading")


def _no_systemd(result: CommandResult) -> bool:
    text = result.stderr + result.stdout
    return any(marker in text for marker in _NO_SYSTEMD)


def check_config(ctx: Context) -> Check:
    name = "service.config"
    if ctx.config_path is None:
        return warn(
            name,
            "no config file found: built-in defaults are in use",
            "write /etc/anoncam/config.toml (start from 'anoncam config example') "
            "or pass --config FILE",
            path=None,
        )
    problems = []
    for field, path in (
        ("mqtt.password_file", ctx.config.mqtt.password_file),
        ("mqtt.tls.key_file", ctx.config.mqtt.tls.key_file if ctx.config.mqtt.tls else None),
        ("preview.token_file", ctx.config.preview.token_file),
    ):
        if path is None:
            continue
        try:
            # Permissions only: a secret's contents are never read here.
            mode = Path(path).stat().st_mode
        except OSError:
            continue  # a missing file is reported by the check that needs it (mqtt.auth)
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            problems.append(f"{field} is readable by other users (mode {stat.S_IMODE(mode):04o})")
    if problems:
        return warn(
            name,
            f"valid: {ctx.config_path}; but {'; '.join(problems)}",
            "restrict secret files to the service user: chmod 600 FILE; chown anoncam FILE",
            path=str(ctx.config_path),
        )
    return ok(name, f"valid: {ctx.config_path}", path=str(ctx.config_path))


def check_systemd(ctx: Context) -> Check:
    name = "service.systemd"
    result = ctx.host.command("systemctl", "show", UNIT, "-p", SHOW_PROPERTIES)
    if result is None:
        return skip(name, "systemctl not found: this machine does not run systemd")
    if not result.ok:
        if _no_systemd(result):
            return skip(name, f"systemd is not running here ({result.first_error_line()})")
        return warn(
            name,
            f"systemctl show {UNIT} failed: {result.first_error_line()}",
            "run 'systemctl status anoncam' to see why",
        )
    props = parse_key_values(result.stdout)
    load = props.get("LoadState", "")
    active = props.get("ActiveState", "?")
    sub = props.get("SubState", "?")
    restarts = int(props["NRestarts"]) if props.get("NRestarts", "").isdigit() else None
    exit_status = (
        int(props["ExecMainStatus"]) if props.get("ExecMainStatus", "").isdigit() else None
    )
    figures = {
        "load_state": load or None,
        "active_state": active,
        "sub_state": sub,
        "restarts": restarts,
        "exit_status": exit_status,
    }
    state = f"{active} ({sub})"
    restarted = f", {restarts} restart(s)" if restarts else ""
    journal_hint = (
        "see 'journalctl -u anoncam -b' for the cause; fix it, "
        "then 'sudo systemctl restart anoncam'"
    )
    if load == "not-found":
        return warn(
            name,
            "the anoncam service is not installed (no anoncam.service unit)",
            "install the device with anoncam's provisioning tools; "
            "ignore this on a development machine",
            **figures,
        )
    if active == "failed":
        return fail(
            name, f"{state}, last exit status {exit_status}{restarted}", journal_hint, **figures
        )
    if active == "activating" and sub == "auto-restart":
        return fail(
            name,
            f"crashing and restarting in a loop: {state}{restarted}, "
            f"last exit status {exit_status}",
            journal_hint,
            **figures,
        )
    if active == "active":
        if restarts:
            return warn(
                name,
                f"{state}, but restarted {restarts} time(s) since it was started",
                "see 'journalctl -u anoncam -b' for why it stopped",
                **figures,
            )
        return ok(name, state, **figures)
    if active in ("inactive", "deactivating"):
        return warn(
            name,
            f"{state}: the service is not running",
            "start it and enable it at boot: sudo systemctl enable --now anoncam",
            **figures,
        )
    return warn(name, state, "run 'systemctl status anoncam'", **figures)


def check_journal(ctx: Context) -> Check:
    name = "service.journal"
    result = ctx.host.command("journalctl", "-u", UNIT, "-n", str(JOURNAL_LINES), "--no-pager")
    if result is None:
        return skip(name, "journalctl not found: this machine does not run systemd's journal")
    text = result.stdout
    if "not seeing messages from other users and the system" in text + result.stderr:
        return warn(
            name,
            "this user cannot read the service's journal",
            "run diagnose with sudo, or add the user to the 'systemd-journal' group",
        )
    if not result.ok:
        if _no_systemd(result):
            return skip(name, f"no journal here ({result.first_error_line()})")
        return warn(
            name,
            f"journalctl failed: {result.first_error_line()}",
            "run 'journalctl -u anoncam' by hand",
        )
    lines = [ln for ln in text.splitlines() if ln.strip() and not _JOURNAL_NOISE.match(ln)]
    if not lines:
        return ok(name, "no journal entries for anoncam", lines=0, error_lines=[])
    errors = [ln for ln in lines if _ERROR_LINE.search(ln)]
    figures = {"lines": len(lines), "error_lines": errors}
    if errors:
        last = errors[-1]
        if len(last) > 200:
            last = last[:197] + "..."
        return warn(
            name,
            f"{len(errors)} warning/error line(s) in the last {len(lines)}; latest: {last}",
            "read them all with 'journalctl -u anoncam -b -p warning' "
            "or 'journalctl -u anoncam -n 200'",
            **figures,
        )
    return ok(name, f"no warnings or errors in the last {len(lines)} line(s)", **figures)


def run(ctx: Context) -> list[Check]:
    return [check_config(ctx), check_systemd(ctx), check_journal(ctx)]
