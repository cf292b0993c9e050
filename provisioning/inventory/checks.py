"""Every problem of an inventory at once: field errors, cross checks, files, each camera's config.

Problems are ``(dotted path, message)`` pairs, sorted, with the device named in each
``devices.N`` path, so an installer fixes them all in one pass. Nothing is written.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from firmware.errors import ConfigError
from provisioning.device_config import device_config_problems
from provisioning.inventory.schema import Inventory, LoadedInventory, default_hostname


def _pydantic_problems(err: ValidationError) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for e in err.errors():
        path = ".".join(str(p) for p in e["loc"]) or "(top level)"
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = "unknown key (check the spelling against 'anoncam provision init')"
        elif e["type"] == "missing":
            msg = "required, but missing"
        out.append((path, msg))
    return out


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _cross_checks(data: dict[str, Any], base_dir: Path) -> list[tuple[str, str]]:
    """Checks that span entries, done on the raw data so they run even when fields are invalid."""
    problems: list[tuple[str, str]] = []
    sites = _as_list(data.get("sites"))
    site_ids: dict[str, int] = {}
    for i, s in enumerate(sites):
        sid = s.get("id") if isinstance(s, dict) else None
        if isinstance(sid, str):
            if sid in site_ids:
                problems.append(
                    (f"sites.{i}.id", f"duplicate site id {sid!r} (first at sites.{site_ids[sid]})")
                )
            else:
                site_ids[sid] = i
    seen: dict[tuple[str, str], int] = {}
    hostnames: dict[str, int] = {}
    for i, d in enumerate(_as_list(data.get("devices"))):
        if not isinstance(d, dict):
            continue
        site, dev = d.get("site"), d.get("id")
        if isinstance(site, str) and sites and site not in site_ids:
            known = ", ".join(sorted(site_ids)) or "(none)"
            problems.append((f"devices.{i}.site", f"unknown site {site!r} (known sites: {known})"))
        if isinstance(site, str) and isinstance(dev, str):
            if (site, dev) in seen:
                problems.append(
                    (
                        f"devices.{i}.id",
                        f"duplicate device {site}/{dev} (first at devices.{seen[(site, dev)]})",
                    )
                )
                continue  # its default host name clashes too; one report is enough
            seen[(site, dev)] = i
            host = d.get("hostname") or default_hostname(site, dev)
            if isinstance(host, str):
                if host in hostnames:
                    problems.append(
                        (
                            f"devices.{i}.hostname",
                            f"host name {host!r} is already used by devices.{hostnames[host]}",
                        )
                    )
                else:
                    hostnames[host] = i
    users: dict[str, int] = {}
    for i, s in enumerate(_as_list(data.get("subscribers"))):
        name = s.get("username") if isinstance(s, dict) else None
        if isinstance(name, str):
            if name in users:
                problems.append(
                    (
                        f"subscribers.{i}.username",
                        f"duplicate user {name!r} (first at subscribers.{users[name]})",
                    )
                )
            else:
                users[name] = i
    problems.extend(_file_checks(data, base_dir))
    problems.extend(_control_character_problems(data))
    return problems


def _control_character_problems(value: Any, path: str = "") -> list[tuple[str, str]]:
    """Every string of the raw inventory holding a control character or a line separator.

    Inventory strings end up in shell scripts, NetworkManager keyfiles, cloud-init YAML and TOML:
    a line break there starts a line of the attacker's choosing (a second authorized key with
    ``command=``, a ``key-mgmt=none`` in a Wi-Fi profile). No field needs one, so all are refused,
    keys included, whichever file they would reach.
    """
    problems: list[tuple[str, str]] = []
    if isinstance(value, dict):
        for key, item in value.items():
            sub = f"{path}.{key}" if path else str(key)
            problems.extend(_control_character_problems(key, sub + " (the key)"))
            problems.extend(_control_character_problems(item, sub))
    elif isinstance(value, list):
        for n, item in enumerate(value):
            problems.extend(_control_character_problems(item, f"{path}.{n}" if path else str(n)))
    elif isinstance(value, str):
        bad = next((c for c in value if unicodedata.category(c) in ("Cc", "Zl", "Zp")), None)
        if bad is not None:
            problems.append(
                (
                    path,
                    f"holds the control character U+{ord(bad):04X} at position "
                    f"{value.index(bad)}: remove it (no inventory value may hold line breaks, "
                    "tabs or other control characters)",
                )
            )
    return problems


def _file_checks(data: dict[str, Any], base_dir: Path) -> list[tuple[str, str]]:
    problems: list[tuple[str, str]] = []
    broker = data.get("broker")
    if isinstance(broker, dict) and isinstance(broker.get("ca_file"), str):
        p = Path(broker["ca_file"])
        p = p if p.is_absolute() else base_dir / p
        if not p.is_file():
            problems.append(("broker.ca_file", f"file not found: {p}"))
    fleet = data.get("fleet")
    wifi = fleet.get("wifi") if isinstance(fleet, dict) else None
    if isinstance(wifi, dict) and isinstance(wifi.get("password_file"), str):
        p = Path(wifi["password_file"])
        p = p if p.is_absolute() else base_dir / p
        try:
            secret = p.read_text(encoding="utf-8").strip("\r\n")
        except FileNotFoundError:
            problems.append(("fleet.wifi.password_file", f"file not found: {p}"))
        except (OSError, UnicodeDecodeError) as exc:
            problems.append(("fleet.wifi.password_file", f"cannot read {p}: {exc}"))
        else:
            is_hex = len(secret) == 64 and all(c in "0123456789abcdefABCDEF" for c in secret)
            if not (8 <= len(secret) <= 63 or is_hex):
                problems.append(
                    ("fleet.wifi.password_file", f"{p}: a WPA2 passphrase has 8 to 63 characters")
                )
    return problems


def _label_devices(
    problems: Iterable[tuple[str, str]], data: dict[str, Any]
) -> list[tuple[str, str]]:
    """Name the device in each devices.N problem: an installer thinks in ids, not indexes."""
    devices = _as_list(data.get("devices"))
    out = []
    for path, msg in problems:
        parts = path.split(".")
        if len(parts) > 1 and parts[0] == "devices" and parts[1].isdigit():
            n = int(parts[1])
            d = devices[n] if n < len(devices) else None
            if isinstance(d, dict) and isinstance(d.get("id"), str):
                msg = f"{msg} (device {d.get('site', '?')}/{d['id']})"
        out.append((path, msg))
    return out


def validate(data: dict[str, Any], *, path: Path) -> LoadedInventory:
    """Validate a mapping read from ``path``; raise ConfigError with every problem."""
    problems: list[tuple[str, str]] = []
    model: Inventory | None = None
    try:
        model = Inventory.model_validate(data)
    except ValidationError as err:
        problems.extend(_pydantic_problems(err))
    problems.extend(_cross_checks(data, path.parent))
    if model is not None and not problems:
        # Each camera's config must pass the camera's own validation, or first boot would
        # install a service that refuses to start.
        loaded = LoadedInventory(model, path)
        for i, entry in enumerate(model.devices):
            for sub, msg in device_config_problems(loaded, entry):
                problems.append((f"devices.{i}.{sub}", msg))
    if problems:
        # A stable order (by path, then message) keeps the listing readable and diffable.
        unique = sorted(set(_label_devices(problems, data)))
        raise ConfigError(
            f"{path}: {len(unique)} problem(s) in the inventory",
            problems=unique,
            hint="fix each listed field, then run the command again (nothing was written)",
        )
    assert model is not None
    return LoadedInventory(model, path)
