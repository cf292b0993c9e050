"""``provision broker``: the broker side of the fleet, written into one output folder.

Writes ``passwd`` (0600, Mosquitto hashes), ``acl``, ``mosquitto.conf`` (a snippet to include) and,
with client certificates, ``fleet-ca.crt``. Plain passwords stay in the secret store; a re-run
keeps every password and reuses each hash line whose password still verifies, so the files come
out byte-identical unless the inventory changed or a rotation was asked for.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from firmware.errors import UsageError
from firmware.fsutil import write_atomic
from provisioning import certs, mosquitto
from provisioning.credentials import Secret, SecretStore
from provisioning.inventory.schema import LoadedInventory

logger = logging.getLogger(__name__)

#: Where the snippet assumes the files are installed on the broker host.
BROKER_INSTALL_DIR = "/etc/mosquitto/anoncam"


@dataclass
class BrokerResult:
    out_dir: Path
    written: list[Path] = field(default_factory=list)
    unchanged: list[Path] = field(default_factory=list)
    created: list[str] = field(default_factory=list)
    rotated: list[str] = field(default_factory=list)
    secrets_dir: Path | None = None


def account_folder(store: SecretStore, acc: mosquitto.Account) -> Path:
    if acc.kind == "device":
        assert acc.site is not None and acc.device is not None
        return store.device_dir(acc.site, acc.device)
    return store.subscriber_dir(acc.username)


def resolve_rotation(inv: LoadedInventory, names: Sequence[str], rotate_all: bool) -> set[str]:
    """MQTT user names to rotate. Accepts SITE/DEVICE, a fleet-unique DEVICE, or a user name."""
    accounts = mosquitto.accounts(inv)
    if rotate_all:
        return {a.username for a in accounts}
    out: set[str] = set()
    for name in names:
        hits = [a for a in accounts if name in (a.username, a.label)]
        if not hits:
            hits = [a for a in accounts if a.kind == "device" and a.device == name]
        if len(hits) != 1:
            known = ", ".join(a.label for a in accounts) or "(none)"
            why = "is ambiguous (pass SITE/DEVICE)" if hits else "is not in the inventory"
            raise UsageError(f"--rotate {name}: {why}", hint=f"accounts: {known}")
        out.add(hits[0].username)
    return out


def account_password(
    inv: LoadedInventory, acc: mosquitto.Account, *, rotate: bool = False
) -> Secret:
    store = SecretStore(inv.secrets_dir)
    return store.password(account_folder(store, acc), rotate=rotate)


def write_broker(
    inv: LoadedInventory, out_dir: Path, *, rotate: Sequence[str] = (), rotate_all: bool = False
) -> BrokerResult:
    targets = resolve_rotation(inv, rotate, rotate_all)  # fails before anything is written
    store = SecretStore(inv.secrets_dir)
    result = BrokerResult(out_dir, secrets_dir=store.root)
    passwd_path = out_dir / "passwd"
    try:
        old = mosquitto.parse_passwd(passwd_path.read_text(encoding="utf-8"))
    except (FileNotFoundError, UnicodeDecodeError):
        old = {}
    client_certs = inv.model.broker.client_certificates
    entries: list[tuple[str, str]] = []
    for acc in mosquitto.accounts(inv):
        folder = account_folder(store, acc)
        secret = store.password(folder, rotate=acc.username in targets)
        if secret.created:
            (result.rotated if acc.username in targets else result.created).append(acc.label)
        previous = old.get(acc.username)
        if previous and mosquitto.verify_password(secret.value, previous):
            entries.append((acc.username, previous))
        else:
            entries.append((acc.username, mosquitto.hash_password(secret.value)))
        if client_certs and acc.kind == "device":
            certs.ensure_client(store, folder, acc.username, inv.model.fleet.name)
    files: list[tuple[str, bytes, int]] = [
        ("passwd", mosquitto.render_passwd(entries).encode(), 0o600),
        ("acl", mosquitto.render_acl(inv).encode(), 0o644),
        (
            "mosquitto.conf",
            mosquitto.render_conf(
                inv, install_dir=BROKER_INSTALL_DIR, client_ca=client_certs
            ).encode(),
            0o644,
        ),
    ]
    if client_certs:
        ca_pem, _, _ = certs.ensure_ca(store, inv.model.fleet.name)
        files.append(("fleet-ca.crt", ca_pem, 0o644))
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, data, mode in files:
        path = out_dir / name
        if write_atomic(path, data, mode=mode):
            result.written.append(path)
        else:
            result.unchanged.append(path)
    logger.info(
        "broker files in %s: %d written, %d unchanged",
        out_dir,
        len(result.written),
        len(result.unchanged),
    )
    return result
