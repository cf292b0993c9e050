"""The ``anoncam/`` folder written to a card's boot partition, assembled in a local folder first.

::

    anoncam/
      install.sh          the first-boot install steps (both first-boot formats call it)
      settings.env        host name, time zone, site and device for install.sh
      config.toml         the camera's config (validated by firmware)
      anoncam.service     the systemd unit
      timesyncd.conf      NTP servers (when the inventory names any)
      credentials/        mqtt-password (+ mqtt-client.key): moved to /etc/anoncam at first boot
      tls/                broker-ca.crt, mqtt-client.crt (public)
      bundle/             the offline bundle (wheels, constraints, model, manifest.json)
      SHA256SUMS          every file above, checked by install.sh and by 'provision verify'

Everything but the bundle is a pure function of the inventory and the secret store, so
``verify`` can rebuild it and compare.
"""

from __future__ import annotations

import hashlib
import os
import shlex
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from firmware.errors import InputError, UsageError
from firmware.fsutil import sha256_file
from provisioning import certs, device_config, firstboot, layout, mosquitto
from provisioning.bundle import PI_TARGETS
from provisioning.credentials import SecretStore
from provisioning.inventory.schema import DeviceEntry, DeviceRef, LoadedInventory

SUMS = "SHA256SUMS"


@dataclass
class Payload:
    root: Path
    sums: dict[str, str] = field(default_factory=dict)  # relative path -> sha256
    new_secret: bool = False

    def size(self) -> int:
        return sum(p.stat().st_size for p in self.root.rglob("*") if p.is_file())


def _write(payload: Payload, rel: str, data: bytes) -> None:
    path = payload.root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    payload.sums[rel] = hashlib.sha256(data).hexdigest()


def render_unit() -> str:
    return firstboot.fill(
        firstboot.template("anoncam.service"),
        {
            "VENV": layout.VENV_DIR,
            "CONFIG": layout.CONFIG_PATH,
            "USER": layout.SERVICE_USER,
            "CREDENTIAL": layout.CREDENTIAL_NAME,
            "PASSWORD_PATH": layout.PASSWORD_PATH,
            "STATE_DIR": layout.STATE_DIR,
        },
    )


def render_install() -> str:
    return firstboot.fill(
        firstboot.template("install.sh"),
        {
            **firstboot.common_values(),
            "SERVICE_USER": layout.SERVICE_USER,
            "SERVICE_NAME": layout.SERVICE_NAME,
            "VENV_DIR": layout.VENV_DIR,
            "MODELS_DIR": layout.MODELS_DIR,
            "ETC_DIR": layout.ETC_DIR,
            "CREDENTIALS_DIR": layout.CREDENTIALS_DIR,
            "TLS_DIR": layout.TLS_DIR,
            "STATE_DIR": layout.STATE_DIR,
            "UNIT_PATH": layout.UNIT_PATH,
            "CREDENTIAL": layout.CREDENTIAL_NAME,
            # install.sh names the release of a Python tag when the bundle lacks it
            "PI_RELEASES": "\n".join(
                f"        {t.tag}) printf '%s' {shlex.quote(t.release)} ;;"
                for t in PI_TARGETS.values()
            ),
        },
    )


def render_settings(inv: LoadedInventory, entry: DeviceEntry) -> str:
    values = {
        "ANONCAM_SITE": entry.site,
        "ANONCAM_DEVICE": entry.id,
        "ANONCAM_HOSTNAME": inv.hostname(entry),
        "ANONCAM_TIMEZONE": inv.timezone(entry),
    }
    body = "".join(f"{k}={shlex.quote(v)}\n" for k, v in values.items())
    return "# anoncam first-boot settings, read by install.sh\n" + body


def render_timesyncd(servers: list[str]) -> str:
    return (
        "# anoncam: NTP servers from the fleet inventory\n[Time]\nNTP=" + " ".join(servers) + "\n"
    )


def device_account(inv: LoadedInventory, ref: DeviceRef) -> mosquitto.Account:
    for acc in mosquitto.accounts(inv):
        if acc.username == ref.username:
            return acc
    raise UsageError(f"no MQTT account for {ref.key}")  # unreachable for a validated inventory


def _link_or_copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def build(
    inv: LoadedInventory,
    ref: DeviceRef,
    entry: DeviceEntry,
    root: Path,
    *,
    bundle: Path | None,
    bundle_manifest: dict[str, Any] | None,
    create_secrets: bool = True,
) -> Payload:
    """Assemble the payload in ``root``. With ``create_secrets=False`` (verify) a missing
    password is an error instead of being generated."""
    payload = Payload(root)
    store = SecretStore(inv.secrets_dir)
    folder = store.device_dir(ref.site, ref.device)
    if create_secrets:
        secret = store.password(folder)
        password, payload.new_secret = secret.value, secret.created
    else:
        existing = store.existing_password(folder)
        if existing is None:
            raise InputError(
                f"{inv.secrets_dir}: no MQTT password for {ref.key}",
                hint="this card was not written from this inventory's secret store",
            )
        password = existing
    model_file = device_config.DEFAULT_MODEL_FILE
    if bundle_manifest is not None and bundle_manifest.get("model"):
        model_file = Path(str(bundle_manifest["model"])).name
    _write(payload, "config.toml", device_config.render(inv, entry, model_file=model_file).encode())
    _write(payload, "settings.env", render_settings(inv, entry).encode())
    _write(payload, "install.sh", render_install().encode())
    _write(payload, layout.SERVICE_NAME, render_unit().encode())
    if inv.model.fleet.ntp_servers:
        _write(payload, "timesyncd.conf", render_timesyncd(inv.model.fleet.ntp_servers).encode())
    _write(payload, f"credentials/{layout.CREDENTIAL_NAME}", (password + "\n").encode())
    broker = inv.model.broker
    if broker.ca_file is not None:
        _write(payload, "tls/broker-ca.crt", inv.resolve(broker.ca_file).read_bytes())
    if broker.client_certificates:
        if create_secrets:
            client = certs.ensure_client(store, folder, ref.username, inv.model.fleet.name)
            cert_pem, key_pem = client.cert_pem, client.key_pem
        else:
            try:
                cert_pem = (folder / "mqtt-client.crt").read_bytes()
                key_pem = (folder / "mqtt-client.key").read_bytes()
            except FileNotFoundError:
                raise InputError(
                    f"{folder}: no client certificate for {ref.key}",
                    hint="write the card again with 'provision image'",
                ) from None
        _write(payload, "credentials/mqtt-client.key", key_pem)
        _write(payload, "tls/mqtt-client.crt", cert_pem)
    if bundle is not None and bundle_manifest is not None:
        for rel, info in sorted(bundle_manifest["files"].items()):
            _link_or_copy(bundle / rel, root / "bundle" / rel)
            payload.sums[f"bundle/{rel}"] = str(info["sha256"])
        _link_or_copy(bundle / "manifest.json", root / "bundle" / "manifest.json")
        payload.sums["bundle/manifest.json"] = sha256_file(bundle / "manifest.json")
    sums = "".join(f"{h}  {rel}\n" for rel, h in sorted(payload.sums.items()))
    (root / SUMS).write_text(sums, encoding="utf-8")
    return payload


def parse_sums(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in text.splitlines():
        if line.strip():
            digest, _, rel = line.partition("  ")
            out[rel] = digest
    return out
