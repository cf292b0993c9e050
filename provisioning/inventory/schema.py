"""The fleet inventory: one TOML file describing the broker, the sites and every camera.

It reuses firmware's config types for everything a camera needs (``source``, ``counter``,
``windows``, ``detector``, ...), so a device section is validated by exactly the rules the camera
itself applies. :func:`load` returns a :class:`LoadedInventory` or raises :class:`ConfigError`
listing every problem at once with its dotted path (``devices.2.counter.line: ...``): field
errors from pydantic and the cross checks (duplicate ids, unknown sites, missing files) together,
so an installer fixes them all in one pass. Nothing is written while validating.

Relative paths in the inventory (``broker.ca_file``, ``fleet.wifi.password_file``,
``fleet.secrets_dir``) are relative to the inventory file's folder.
"""

from __future__ import annotations

import base64
import binascii
import zoneinfo
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from firmware.config.settings import (
    AnonymizerConfig,
    Bool,
    CounterConfig,
    DetectorConfig,
    Identifier,
    Int,
    PeopleConfig,
    PreviewConfig,
    SourceConfig,
    TrackerConfig,
    WindowConfig,
)
from firmware.contract import TOPIC_PREFIX_PATTERN
from firmware.errors import UsageError

_HOSTNAME = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"


_DNS_NAME = r"^[A-Za-z0-9]([A-Za-z0-9.-]{0,252}[A-Za-z0-9])?$"


_LINUX_USER = r"^[a-z_][a-z0-9_-]{0,31}$"


_SUBSCRIBER = r"^[A-Za-z0-9_-]{1,64}$"


_SSH_KEY_TYPES = frozenset(
    {
        "ssh-ed25519",
        "ssh-rsa",
        "ecdsa-sha2-nistp256",
        "ecdsa-sha2-nistp384",
        "ecdsa-sha2-nistp521",
        "sk-ssh-ed25519@openssh.com",
        "sk-ecdsa-sha2-nistp256@openssh.com",
    }
)


#: The key ``provision init`` puts in the skeleton: well-formed so the skeleton validates, but
#: nobody holds its private key. ``provision image`` refuses it.
PLACEHOLDER_KEY_COMMENT = "REPLACE-ME-with-your-installer-public-key"


Hostname = Annotated[
    str, Field(pattern=_HOSTNAME, description="lower-case host name label (letters, digits, '-')")
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


def _check_timezone(value: str) -> str:
    known = zoneinfo.available_timezones()
    # An empty set means this machine has no tz database to check against; the Pi has one.
    if known and value not in known:
        raise ValueError(f"unknown time zone {value!r} (use an IANA name like 'Europe/Berlin')")
    return value


class WifiSettings(_Strict):
    ssid: str = Field(min_length=1, max_length=32, description="network name")
    country: str = Field(
        pattern=r"^[A-Z]{2}$", description="ISO 3166 country code; the radio stays off without it"
    )
    password_file: Path = Field(
        description="file holding the WPA2 passphrase (8-63 characters), relative to the inventory"
    )
    hidden: Bool = Field(False, description="the network does not broadcast its name")


class FleetSettings(_Strict):
    name: Identifier = Field("fleet", description="a name for this fleet, used in file headers")
    timezone: str = Field("UTC", description="IANA time zone of the cameras (sites may override)")
    ntp_servers: list[Annotated[str, Field(pattern=_DNS_NAME)]] = Field(
        default_factory=list, description="NTP servers; empty keeps the OS defaults"
    )
    admin_user: str = Field(
        "installer",
        pattern=_LINUX_USER,
        description="login user created on each camera (SSH key only)",
    )
    ssh_authorized_keys: list[str] = Field(
        min_length=1, description="public keys allowed to log in as admin_user"
    )
    secrets_dir: Path = Field(
        Path("secrets"), description="where generated passwords and keys are kept (0700)"
    )
    wifi: WifiSettings | None = Field(
        None, description="optional Wi-Fi; cameras use Ethernet without it"
    )

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str) -> str:
        return _check_timezone(v)

    @field_validator("ssh_authorized_keys")
    @classmethod
    def _keys(cls, keys: list[str]) -> list[str]:
        for n, key in enumerate(keys):
            problem = ssh_key_problem(key)
            if problem:
                raise ValueError(f"key {n}: {problem}")
        return keys


class BrokerSettings(_Strict):
    host: str = Field(min_length=1, pattern=_DNS_NAME, description="broker host name or address")
    port: Int = Field(1883, ge=1, le=65535, description="broker port (8883 is usual for TLS)")
    tls: Bool = Field(False, description="connect with TLS")
    ca_file: Path | None = Field(
        None, description="CA certificate of the broker (PEM); absent with tls: the system CAs"
    )
    client_certificates: Bool = Field(
        False, description="also issue each camera a client certificate from a fleet CA"
    )
    prefix: str = Field("anoncam", pattern=TOPIC_PREFIX_PATTERN, description="MQTT topic prefix")
    protocol: Literal["auto", "5", "3.1.1"] = Field("auto", description="MQTT version")
    homeassistant: Bool = Field(False, description="cameras publish Home Assistant discovery")
    homeassistant_prefix: str = Field("homeassistant", pattern=TOPIC_PREFIX_PATTERN)

    @model_validator(mode="after")
    def _tls_needed(self) -> BrokerSettings:
        if self.ca_file is not None and not self.tls:
            raise ValueError("broker.ca_file is set but broker.tls is false: set tls = true")
        if self.client_certificates and not self.tls:
            raise ValueError("broker.client_certificates needs broker.tls = true")
        return self


class SiteEntry(_Strict):
    id: Identifier
    name: str = Field("", description="human name of the store")
    timezone: str | None = Field(None, description="overrides fleet.timezone for this site")

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str | None) -> str | None:
        return None if v is None else _check_timezone(v)


class DeviceEntry(_Strict):
    id: Identifier
    site: Identifier
    hostname: Hostname | None = Field(None, description="default: '{site}-{id}'")
    source: SourceConfig | None = Field(
        None, description="camera settings; kind defaults to picamera2"
    )
    detector: DetectorConfig | None = None
    people: PeopleConfig | None = Field(None, description="person detector (counting)")
    anonymizer: AnonymizerConfig | None = None
    tracker: TrackerConfig | None = None
    counter: CounterConfig | None = Field(None, description="counting line and inside point")
    windows: WindowConfig | None = None
    preview: PreviewConfig | None = None


class SubscriberEntry(_Strict):
    username: str = Field(pattern=_SUBSCRIBER, description="MQTT user name (no '.')")
    description: str = ""
    homeassistant: Bool = Field(
        False, description="may also read the Home Assistant discovery topics"
    )


class Inventory(_Strict):
    fleet: FleetSettings
    broker: BrokerSettings
    sites: list[SiteEntry] = Field(min_length=1)
    devices: list[DeviceEntry] = Field(default_factory=list)
    subscribers: list[SubscriberEntry] = Field(default_factory=list)


def ssh_key_problem(key: str) -> str | None:
    """Why ``key`` is not an OpenSSH public key line, or None if it looks like one."""
    if any(c in key for c in "\r\n"):
        # authorized_keys is line-based: a second line would be a key of its own, with options
        # such as command="..." that nothing here has checked.
        return "a key is one line: this one holds a line break (put each key in its own entry)"
    parts = key.strip().split()
    if len(parts) < 2:
        return "expected 'TYPE BASE64 [comment]', as in ~/.ssh/id_ed25519.pub"
    kind, blob = parts[0], parts[1]
    if kind not in _SSH_KEY_TYPES:
        return f"unknown key type {kind!r} (expected one of {', '.join(sorted(_SSH_KEY_TYPES))})"
    try:
        raw = base64.b64decode(blob, validate=True)
    except (binascii.Error, ValueError):
        return "the key data is not base64"
    if len(raw) < 4 or raw[4 : 4 + int.from_bytes(raw[:4], "big")] != kind.encode():
        return "the key data does not match its type"
    return None


def default_hostname(site: str, device: str) -> str:
    return f"{site}-{device}".replace("_", "-")[:63].strip("-")


def device_username(site: str, device: str) -> str:
    """The MQTT user of a camera. '.' cannot occur in ids, so the name is unambiguous."""
    return f"{site}.{device}"


@dataclass(frozen=True)
class DeviceRef:
    site: str
    device: str

    @property
    def key(self) -> str:
        return f"{self.site}/{self.device}"

    @property
    def username(self) -> str:
        return device_username(self.site, self.device)


@dataclass(frozen=True)
class LoadedInventory:
    """A validated inventory and the file it came from (relative paths resolve against it)."""

    model: Inventory
    path: Path

    @property
    def base_dir(self) -> Path:
        return self.path.parent

    def resolve(self, p: Path) -> Path:
        return p if p.is_absolute() else (self.base_dir / p)

    @property
    def secrets_dir(self) -> Path:
        return self.resolve(self.model.fleet.secrets_dir)

    @cached_property
    def sites(self) -> dict[str, SiteEntry]:
        return {s.id: s for s in self.model.sites}

    def refs(self) -> list[DeviceRef]:
        return [DeviceRef(d.site, d.id) for d in self.model.devices]

    def device(self, ref: str) -> tuple[DeviceRef, DeviceEntry]:
        """Find a device by 'site/id', or by 'id' when that id is unique in the fleet."""
        if "/" in ref:
            site, _, dev = ref.partition("/")
            found = [d for d in self.model.devices if d.site == site and d.id == dev]
        else:
            found = [d for d in self.model.devices if d.id == ref]
        if len(found) == 1:
            return DeviceRef(found[0].site, found[0].id), found[0]
        known = ", ".join(f"{d.site}/{d.id}" for d in self.model.devices) or "(none)"
        if not found:
            raise UsageError(
                f"{self.path}: no device {ref!r} in the inventory",
                hint=f"pass one of: {known}",
            )
        raise UsageError(
            f"{self.path}: device id {ref!r} exists in several sites",
            hint="pass it as SITE/DEVICE, one of: " + ", ".join(f"{d.site}/{d.id}" for d in found),
        )

    def hostname(self, entry: DeviceEntry) -> str:
        return entry.hostname or default_hostname(entry.site, entry.id)

    def timezone(self, entry: DeviceEntry) -> str:
        site = self.sites[entry.site]
        return site.timezone or self.model.fleet.timezone
