"""``provision image`` and ``provision verify``: write a camera's first boot, read it back.

The target is a flashed Raspberry Pi OS image file (the boot partition is found from the
partition table and written with mtools) or a mounted boot partition. Nothing is written until
the inventory, the bundle, the boot partition (``cmdline.txt`` one line) and the free space
have all been checked.
"""

from __future__ import annotations

import hashlib
import logging
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from firmware.errors import AnoncamError, InputError, OutputError, UsageError
from firmware.fsutil import sha256_file
from provisioning import bundle as bundle_mod
from provisioning import device_config, firstboot, layout, payload, skeleton
from provisioning.bootfs import BootPartition, open_target
from provisioning.firstboot import Admin, Format, Wifi
from provisioning.inventory.schema import DeviceEntry, DeviceRef, LoadedInventory

logger = logging.getLogger(__name__)
Progress = Callable[[str], None]
#: Head room left on the boot partition (kernel updates write there too).
RESERVE_BYTES = 8 * 1024 * 1024


@dataclass
class CardResult:
    target: str
    format: Format
    reason: str
    files: list[str] = field(default_factory=list)
    payload_bytes: int = 0
    new_secret: bool = False


def _say(progress: Progress | None, text: str) -> None:
    """Tell the user through the CLI's progress callback, or the log when there is none."""
    if progress is not None:
        progress(text)
    else:
        logger.info("%s", text)


def _admin(inv: LoadedInventory) -> Admin:
    fleet = inv.model.fleet
    return Admin(fleet.admin_user, tuple(fleet.ssh_authorized_keys))


def _wifi(inv: LoadedInventory) -> Wifi | None:
    w = inv.model.fleet.wifi
    if w is None:
        return None
    passphrase = inv.resolve(w.password_file).read_text(encoding="utf-8").strip("\r\n")
    return Wifi(w.ssid, firstboot.wpa_psk(w.ssid, passphrase), w.country, w.hidden)


def first_boot_files(
    inv: LoadedInventory, ref: DeviceRef, entry: DeviceEntry, fmt: Format, config_text: str
) -> dict[str, str]:
    """The first-boot files for the boot partition's root (cmdline.txt is edited separately)."""
    admin, wifi = _admin(inv), _wifi(inv)
    if fmt is Format.FIRSTRUN:
        return {"firstrun.sh": firstboot.render_firstrun(admin, wifi)}
    hostname = inv.hostname(entry)
    instance = (
        f"anoncam-{ref.site}-{ref.device}-{hashlib.sha256(config_text.encode()).hexdigest()[:12]}"
    )
    return {
        "user-data": firstboot.render_user_data(
            admin, hostname=hostname, timezone=inv.timezone(entry), label=ref.key
        ),
        "meta-data": firstboot.render_meta_data(hostname=hostname, instance=instance),
        "network-config": firstboot.render_network_config(wifi),
    }


def _read_cmdline(boot: BootPartition) -> str:
    raw = boot.read("cmdline.txt")
    if raw is None:
        raise InputError(
            f"{boot.description}: no cmdline.txt, so this is not a Raspberry Pi OS boot partition",
            hint="pass the flashed image file or the mounted 'bootfs' partition",
        )
    text = raw.decode("utf-8", errors="replace")
    firstboot.split_cmdline(text)  # one line, or InputError
    return text


def _choose(boot: BootPartition, requested: str) -> tuple[Format, str]:
    if requested == "auto":
        d = firstboot.detect(boot)
        return d.format, d.reason
    return Format(requested), "chosen with --first-boot"


def write_card(
    target: Path,
    inv: LoadedInventory,
    device: str,
    bundle_dir: Path,
    *,
    first_boot: str = "auto",
    progress: Progress | None = None,
) -> CardResult:
    ref, entry = inv.device(device)
    placeholder = [k for k in inv.model.fleet.ssh_authorized_keys if skeleton.is_placeholder(k)]
    if placeholder:
        raise UsageError(
            f"{inv.path}: fleet.ssh_authorized_keys still holds the skeleton's placeholder key",
            hint="put your own public key there (cat ~/.ssh/id_ed25519.pub); "
            "nobody can log in with the placeholder",
        )
    boot = open_target(target)
    _say(progress, f"writing {ref.key} to {boot.description}")
    cmdline = _read_cmdline(boot)
    fmt, reason = _choose(boot, first_boot)
    _say(progress, f"first boot: {fmt.value} ({reason})")
    manifest = bundle_mod.check_bundle(bundle_dir, progress=progress)
    if not manifest.get("model"):
        raise InputError(
            f"{bundle_dir}: the bundle has no model", hint="rebuild it with 'provision bundle'"
        )
    if manifest.get("platform") != "linux_aarch64":
        _say(progress, f"note: the bundle is for {manifest.get('platform')}, not a Raspberry Pi")
    result = CardResult(str(target), fmt, reason)
    with tempfile.TemporaryDirectory(prefix="anoncam-card-") as tmp:
        stage = Path(tmp) / layout.PAYLOAD_DIR
        built = payload.build(inv, ref, entry, stage, bundle=bundle_dir, bundle_manifest=manifest)
        result.new_secret = built.new_secret
        config_text = (stage / "config.toml").read_text(encoding="utf-8")
        files = first_boot_files(inv, ref, entry, fmt, config_text)
        need = built.size() + sum(len(v) for v in files.values()) + RESERVE_BYTES
        free = boot.free_bytes() + boot.used_bytes(layout.PAYLOAD_DIR)  # a re-write replaces it
        if need > free:
            raise OutputError(
                f"{boot.description}: needs {need / 1e6:.0f} MB free, has {free / 1e6:.0f} MB",
                hint="use a full-size Raspberry Pi OS image (512 MB boot partition) or a bundle "
                "built for one Python only (--python)",
            )
        total_mb = built.size() / 1e6

        step = [0]

        def copied(done: int, total: int) -> None:
            # One line per tenth: a card takes a minute or two, a line per file is noise.
            tenth = 10 * done // max(total, 1)
            if tenth > step[0]:
                step[0] = tenth
                _say(progress, f"  copied {done / 1e6:6.1f} / {total_mb:.1f} MB")

        _say(progress, f"copying {layout.PAYLOAD_DIR}/ ({total_mb:.1f} MB)")
        boot.put_tree(stage, layout.PAYLOAD_DIR, progress=copied)
        result.payload_bytes = built.size()
        result.files.append(f"{layout.PAYLOAD_DIR}/")
    for name, text in files.items():
        boot.write(name, text.encode())
        result.files.append(name)
    wifi = inv.model.fleet.wifi
    if fmt is Format.FIRSTRUN:
        boot.write(
            "cmdline.txt",
            firstboot.add_firstrun(cmdline, wifi_country=wifi.country if wifi else None).encode(),
        )
        result.files.append("cmdline.txt")
    else:
        # A card first written for firstrun.sh and then re-written for cloud-init: undo the former.
        line, ending = firstboot.split_cmdline(cmdline)
        kept = " ".join(w for w in line.split() if w not in firstboot.FIRSTRUN_PARAMS)
        if kept != line:
            boot.write("cmdline.txt", (kept + (ending or "\n")).encode())
            result.files.append("cmdline.txt")
        old = boot.read("firstrun.sh")
        if old is not None and b"anoncam" in old:
            boot.remove("firstrun.sh")
    _say(progress, f"wrote {', '.join(result.files)} ({fmt.value})")
    return result


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str = ""


def verify_card(
    target: Path, inv: LoadedInventory, device: str, *, progress: Progress | None = None
) -> list[Check]:
    """Read a written card back and check every file against what the inventory says."""
    ref, entry = inv.device(device)
    checks: list[Check] = []

    def check(name: str, ok: bool, detail: str = "") -> None:
        checks.append(Check(name, ok, detail))

    boot = open_target(target)
    check("boot partition", True, boot.description)
    try:
        cmdline = _read_cmdline(boot)
    except InputError as exc:
        check("cmdline.txt is one line", False, exc.message)
        return checks
    check("cmdline.txt is one line", True)
    if boot.exists("firstrun.sh"):
        fmt = Format.FIRSTRUN
    elif (boot.read("user-data") or b"").find(b"anoncam") >= 0:
        fmt = Format.CLOUD_INIT
    else:
        check("first-boot files", False, "neither an anoncam firstrun.sh nor an anoncam user-data")
        return checks
    check("first-boot format", True, fmt.value)
    with tempfile.TemporaryDirectory(prefix="anoncam-verify-") as tmp:
        card = Path(tmp) / "card"
        _say(progress, f"reading {layout.PAYLOAD_DIR}/ back from {boot.description}")
        if not boot.get_tree(layout.PAYLOAD_DIR, card):
            check(f"{layout.PAYLOAD_DIR}/ folder", False, "missing")
            return checks
        got = card / layout.PAYLOAD_DIR
        try:
            expected = payload.build(
                inv,
                ref,
                entry,
                Path(tmp) / "expected",
                bundle=None,
                bundle_manifest=_card_manifest(got),
                create_secrets=False,
            )
        except AnoncamError as exc:
            check("expected payload", False, exc.message)
            return checks
        sums_raw = (
            (got / payload.SUMS).read_text(encoding="utf-8")
            if (got / payload.SUMS).is_file()
            else ""
        )
        sums = payload.parse_sums(sums_raw)
        check("SHA256SUMS present", bool(sums))
        bad = [
            rel
            for rel, digest in sums.items()
            if not (got / rel).is_file() or sha256_file(got / rel) != digest
        ]
        check("every file matches SHA256SUMS", not bad, ", ".join(bad[:5]))
        for rel, digest in sorted(expected.sums.items()):
            check(
                f"{layout.PAYLOAD_DIR}/{rel}",
                sums.get(rel) == digest,
                "" if sums.get(rel) == digest else "differs from the inventory / secret store",
            )
        config_path = got / "config.toml"
        try:
            cfg = device_config.parse(
                config_path.read_text(encoding="utf-8"), origin=str(config_path)
            )
            ok = (cfg.site, cfg.device, cfg.mqtt.username) == (ref.site, ref.device, ref.username)
            check(
                "config.toml valid for this device",
                ok,
                f"{cfg.site}/{cfg.device} as {cfg.mqtt.username}",
            )
            check("no password in config.toml", cfg.mqtt.password_file is None)
        except (AnoncamError, OSError) as exc:
            check("config.toml valid for this device", False, str(exc))
        manifest = _card_manifest(got)
        check(
            "offline bundle",
            manifest is not None and bool(manifest.get("model")),
            "" if manifest else "bundle/manifest.json missing",
        )
        if manifest is not None:
            check(
                "bundle has pip and anoncam wheels",
                any(f.startswith("wheels/pip-") for f in manifest["files"])
                and bool(manifest.get("anoncam_wheel")),
            )
            from firmware.models.manifest import spec

            model_rel = str(manifest.get("model") or "")
            want = spec().sha256
            have = manifest["files"].get(model_rel, {}).get("sha256")
            check("model matches firmware's manifest", have == want, model_rel)
        config_text = (expected.root / "config.toml").read_text(encoding="utf-8")
    for name, text in first_boot_files(inv, ref, entry, fmt, config_text).items():
        check(
            name,
            boot.read(name) == text.encode(),
            "" if boot.read(name) == text.encode() else "differs",
        )
    if fmt is Format.FIRSTRUN:
        line, _ = firstboot.split_cmdline(cmdline)
        words = line.split()
        ok = all(words.count(p) == 1 for p in firstboot.FIRSTRUN_PARAMS)
        check("cmdline.txt starts firstrun.sh once", ok, line if not ok else "")
    return checks


def _card_manifest(folder: Path) -> dict[str, Any] | None:
    try:
        return bundle_mod.read_manifest(folder / "bundle")
    except InputError:
        return None
