"""The host side of ``scripts/pi-emulate chroot``: a card's first-boot install, run for real in an
arm64 Raspberry Pi OS stand-in (a Debian Bookworm rootfs) under qemu-user, then checked.

``scripts/pi-emulate`` builds and unpacks the rootfs and mounts ``/proc`` and ``/dev`` in it;
this module does the rest, with the installer's own commands:

1. a test fleet (``provision init``, its broker pointing at this host's loopback), the broker's
   accounts (``provision broker``), the aarch64 bundle (``provision bundle --python 3.11``) and the
   card payload written onto a boot-partition folder (``provision image``), copied to the rootfs's
   ``/boot/firmware``;
2. the payload's ``install.sh`` in the chroot, in a network namespace of its own (no network);
3. checks in the chroot: the venv's numpy is the system's, onnxruntime and av import, both models
   verify, ``anoncam diagnose --json`` validates against its schema, the modes under
   ``/etc/anoncam``, no secret left on the boot partition;
4. ``anoncam run`` as the service user on a synthetic clip rendered here, publishing to a
   Mosquitto on loopback (the chroot shares the host's network) with the fleet's passwords and
   ACLs; a subscriber with the dashboard's account validates every message.

Every check lands in a JSON summary (``--json``); the exit status is 0 only when all passed.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import signal
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from firmware import contract
from firmware.jobs.demo_broker import free_port, mosquitto_path
from provisioning import layout
from provisioning.credentials import SecretStore

SITE, DEVICE = "store-042", "door-1"
SUBSCRIBER = "dashboard"
# As the unit runs anoncam: the service user, the password handed over as a credential
# (systemd's LoadCredential= sets CREDENTIALS_DIRECTORY).
AS_SERVICE = [
    "runuser", "-u", layout.SERVICE_USER, "--", "/usr/bin/env",
    f"CREDENTIALS_DIRECTORY={layout.CREDENTIALS_DIR}", "ORT_DISABLE_TELEMETRY=1",
]  # fmt: skip
CLIP = "/opt/anoncam/emulate/scene.mp4"
SCHEMAS = Path(__file__).resolve().parent.parent / "firmware" / "schemas"
# A Pi's cmdline.txt and config.txt, as Raspberry Pi OS Bookworm's image holds them.
CMDLINE = (
    "console=serial0,115200 console=tty1 root=PARTUUID=414e4f4e-02 rootfstype=ext4 "
    "fsck.repair=yes rootwait quiet init=/usr/lib/raspberrypi-sys-mods/firstboot\n"
)
CONFIG_TXT = (
    "# Raspberry Pi OS config.txt (emulation stand-in)\narm_64bit=1\ncamera_auto_detect=1\n"
)
ENV = ["/usr/bin/env", "-i", "PATH=/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root", "LANG=C.UTF-8"]


logger = logging.getLogger(__name__)


@dataclass
class Summary:
    checks: dict[str, dict[str, Any]] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    facts: dict[str, Any] = field(default_factory=dict)

    def save(self, json_path: Path, timings: Path | None) -> None:
        """Write the summary, with the shell script's timings (``what<TAB>seconds`` lines)."""
        if timings is not None and timings.is_file():
            for line in timings.read_text().splitlines():
                what, _, secs = line.partition("\t")
                self.timings[what] = float(secs)
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(self.as_dict(), indent=2) + "\n")

    def exit_status(self) -> int:
        passed = sum(c["ok"] for c in self.checks.values())
        logger.info("%d of %d checks passed", passed, len(self.checks))
        return 0 if self.ok else 1

    def check(self, name: str, ok: bool, detail: Any = None) -> bool:
        self.checks[name] = {"ok": bool(ok), "detail": detail}
        logger.info("%s %s: %s", "PASS" if ok else "FAIL", name, detail)
        return ok

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(c["ok"] for c in self.checks.values())

    def as_dict(self) -> dict[str, Any]:
        failed = [k for k, c in self.checks.items() if not c["ok"]]
        return {
            "schema": "anoncam/pi-emulate/1",
            "path": "chroot",
            "ok": self.ok,
            "failed": failed,
            "checks": self.checks,
            "timings_s": self.timings,
            **self.facts,
        }


class Timer:
    def __init__(self, summary: Summary, name: str) -> None:
        self.summary, self.name = summary, name

    def __enter__(self) -> None:
        self.start = time.monotonic()

    def __exit__(self, *exc: object) -> None:
        secs = round(time.monotonic() - self.start, 1)
        self.summary.timings[self.name] = secs
        logger.info("TIME %s: %s s", self.name, secs)


def _run(
    cmd: Sequence[str], *, timeout: float = 1800, **kw: Any
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout, **kw)


def anoncam(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """The installer's CLI on this host, from this checkout."""
    proc = _run([sys.executable, "-m", "firmware", *args], cwd=cwd)
    if proc.returncode != 0:
        raise SystemExit(f"anoncam {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}")
    return proc


def in_root(
    root: Path, *cmd: str, net: bool = True, timeout: float = 1800
) -> subprocess.CompletedProcess[str]:
    """``cmd`` in the arm64 rootfs (qemu-user through binfmt); ``net=False``: no network at all."""
    prefix = [] if net else ["unshare", "--net"]
    return _run([*prefix, "chroot", str(root), *ENV, *cmd], timeout=timeout)


# --------------------------------------------------------------------------- 1. the card
def ssh_public_key() -> str:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate().public_key()
    raw = key.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return raw.decode() + " pi-emulate"


def write_fleet(
    fleet: Path,
    port: int,
    cwd: Path,
    *,
    host: str = "127.0.0.1",
    ssh_key: str | None = None,
    source: str = "",
) -> Path:
    """The skeleton inventory, pointed at the broker at ``host:port`` as the device reaches it,
    with windows and a detector timeout for a CPU emulated 10-20 times slower than a Pi's.
    ``source``: TOML lines for the device's ``[source]`` (the boot path's service has no
    ``--source`` flag)."""
    anoncam("provision", "init", str(fleet), cwd=cwd)
    inv = fleet / "inventory.toml"
    text = inv.read_text(encoding="utf-8")
    lines = []
    for line in text.splitlines():
        if line.startswith('  "ssh-ed25519 '):
            line = f'  "{ssh_key or ssh_public_key()}",'
        elif line.startswith("host = "):
            line = f'host = "{host}"'
        elif line.startswith("port = 1883"):
            line = f"port = {port}"
        elif line.startswith("seconds = 60"):
            line = "seconds = 2"
        lines.append(line)
    text = "\n".join(lines) + "\n"
    if source:
        text = text.replace("[devices.source]\n", f"[devices.source]\n{source}")
    text = text.replace(
        "[devices.windows]",
        "# emulation: qemu-user runs a detection in seconds, not milliseconds\n"
        "[devices.detector]\ntimeout_s = 60.0\n\n[devices.windows]",
    )
    inv.write_text(text, encoding="utf-8")
    return inv


def fleet_and_bundle(
    work: Path, port: int, summary: Summary, repo: Path, **fleet: str
) -> tuple[Path, Path]:
    """A test fleet (inventory, broker accounts) and the aarch64 bundle for Bookworm's 3.11."""
    fleet_dir = work / "fleet"
    shutil.rmtree(fleet_dir, ignore_errors=True)
    inv = write_fleet(fleet_dir, port, repo, **fleet)
    anoncam(
        "provision", "broker", "--inventory", str(inv), "-o", str(fleet_dir / "broker"), cwd=repo
    )  # fmt: skip
    bundle = work / "bundle"
    with Timer(summary, "bundle (provision bundle --python 3.11)"):
        anoncam("provision", "bundle", "-o", str(bundle), "--python", "3.11", cwd=repo)
    manifest = json.loads((bundle / "manifest.json").read_text())
    summary.facts["bundle"] = {
        "files": len(manifest["files"]),
        "mb": round(sum(int(f["size"]) for f in manifest["files"].values()) / 1e6),
        "pythons": manifest["pythons"],
        "platform": manifest["platform"],
    }
    return inv, bundle


def build_card(work: Path, root: Path, port: int, summary: Summary, repo: Path) -> Path:
    inv, bundle = fleet_and_bundle(work, port, summary, repo)
    bootfs = work / "bootfs"
    shutil.rmtree(bootfs, ignore_errors=True)
    bootfs.mkdir()
    (bootfs / "cmdline.txt").write_text(CMDLINE)
    (bootfs / "config.txt").write_text(CONFIG_TXT)
    with Timer(summary, "card payload (provision image)"):
        out = anoncam(
            "provision", "image", str(bootfs), "--inventory", str(inv),
            "--device", f"{SITE}/{DEVICE}", "--bundle", str(bundle), cwd=repo,
        )  # fmt: skip
    summary.facts["provision_image"] = out.stdout.strip().splitlines()[-1:]
    target = root / "boot" / "firmware"
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(bootfs, target, symlinks=True)
    return inv


def render_clip(root: Path, summary: Summary, duration_s: float = 4.0) -> None:
    """A synthetic scene as a file: the device has no scikit-image for the live one."""
    from firmware.sources.synthetic.scene import SyntheticScene, write_video

    dest = root / CLIP.lstrip("/")
    dest.parent.mkdir(parents=True, exist_ok=True)
    scene = SyntheticScene(
        320, 180, fps=3.0, duration_s=duration_s, seed=1, max_in_view=1, mean_gap_s=0.5
    )
    with Timer(summary, "render clip (host)"):
        write_video(scene, dest)
    dest.chmod(0o644)
    dest.parent.chmod(0o755)
    summary.facts["clip"] = {"size": "320x180", "fps": 3.0, "frames": scene.frame_count}


# --------------------------------------------------------------------------- 2.-3. install, check
GUEST_PROBE = r"""
import json, os, subprocess, sys
out = {}
import numpy
out["numpy"] = [numpy.__version__, numpy.__file__]
import onnxruntime, av
out["onnxruntime"], out["av"] = onnxruntime.__version__, av.__version__
site = [p for p in sys.path if p.startswith(sys.prefix) and p.endswith("site-packages")]
out["venv_site"] = site
out["venv_numpy"] = sorted(n for p in site for n in os.listdir(p) if n.lower().startswith("numpy"))
import firmware
out["anoncam"] = [firmware.__version__, firmware.__file__]
print(json.dumps(out))
"""


def quiet(text: str, keep: int = 300) -> str | None:
    """Output without onnxruntime's cpuinfo warnings (qemu-user has no ARM /sys to parse)."""
    lines = [ln for ln in text.strip().splitlines() if "cpuinfo" not in ln]
    return "\n".join(lines)[-keep:] or None


def _mode(path: Path) -> str:
    return oct(stat.S_IMODE(path.lstat().st_mode))


def _owner(root: Path, path: Path) -> str:
    uid = path.lstat().st_uid
    for line in (root / "etc" / "passwd").read_text().splitlines():
        parts = line.split(":")
        if parts[2] == str(uid):
            return parts[0]
    return str(uid)


def install_and_check(root: Path, summary: Summary) -> bool:
    boot = root / "boot" / "firmware"
    payload = boot / layout.PAYLOAD_DIR
    with Timer(summary, "install.sh (qemu-user, no network)"):
        proc = in_root(root, "bash", f"/boot/firmware/{layout.PAYLOAD_DIR}/install.sh", net=False)
    log_tail = (proc.stdout + proc.stderr).strip().splitlines()[-6:]
    if not summary.check(
        "install", proc.returncode == 0, {"exit": proc.returncode, "log": log_tail}
    ):
        return False
    summary.check(
        "secrets off the boot partition",
        not (payload / "credentials").exists()
        and not any(p.name == layout.CREDENTIAL_NAME for p in boot.rglob("*")),
        sorted(str(p.relative_to(boot)) for p in boot.rglob("*")),
    )
    summary.check("bundle off the boot partition", not (payload / "bundle").exists(), None)
    etc, creds = root / layout.ETC_DIR.lstrip("/"), root / layout.CREDENTIALS_DIR.lstrip("/")
    expected = {  # the installer guide, "5. First boot": 0600/0700, owned by anoncam
        etc / "config.toml": ("0o600", layout.SERVICE_USER),
        creds: ("0o700", layout.SERVICE_USER),
        creds / layout.CREDENTIAL_NAME: ("0o600", layout.SERVICE_USER),
    }
    found = {str(p.relative_to(root)): (_mode(p), _owner(root, p)) for p in expected if p.exists()}
    want = {str(p.relative_to(root)): v for p, v in expected.items()}
    summary.check("modes under /etc/anoncam", found == want, {"found": found, "want": want})
    unit = root / layout.UNIT_PATH.lstrip("/")
    wants = root / "etc/systemd/system/multi-user.target.wants" / layout.SERVICE_NAME
    summary.check("unit installed and enabled", unit.is_file() and wants.is_symlink(), str(unit))

    venv_python = f"{layout.VENV_DIR}/bin/python"
    with Timer(summary, "imports (qemu-user)"):
        probe = in_root(root, venv_python, "-c", GUEST_PROBE, net=False)
    if not summary.check("imports", probe.returncode == 0, quiet(probe.stderr, 400)):
        return False
    facts = json.loads(probe.stdout.strip().splitlines()[-1])
    summary.facts["device"] = facts
    numpy_version, numpy_file = facts["numpy"]
    summary.check(
        "venv uses the system numpy 1.24",
        numpy_version.startswith("1.24.")
        and numpy_file.startswith("/usr/lib/python3/dist-packages/")
        and not facts["venv_numpy"],
        {"numpy": facts["numpy"], "numpy in the venv": facts["venv_numpy"]},
    )
    summary.check(
        "anoncam installed in the venv",
        facts["anoncam"][1].startswith(layout.VENV_DIR),
        facts["anoncam"],
    )
    anoncam_bin = f"{layout.VENV_DIR}/bin/anoncam"
    for name, file in (("centerface", "centerface-opt.onnx"), ("nanodet", "nanodet.onnx")):
        with Timer(summary, f"models verify {name}"):
            v = in_root(
                root, anoncam_bin, "models", "verify",
                f"{layout.MODELS_DIR}/{file}", "--model", name, net=False,
            )  # fmt: skip
        summary.check(f"models verify {name}", v.returncode == 0, quiet(v.stdout + v.stderr))
    return True


def diagnose_check(root: Path, summary: Summary) -> None:
    """``anoncam diagnose --json`` as the service user, with the broker up."""
    anoncam_bin = f"{layout.VENV_DIR}/bin/anoncam"
    with Timer(summary, "diagnose --json"):
        d = in_root(
            root,
            *AS_SERVICE,
            anoncam_bin,
            "diagnose",
            "--json",
            "--config",
            layout.CONFIG_PATH,
            "--timeout",
            "5",
        )
    judge_diagnose(d, summary)
    # The README's 'sudo anoncam diagnose' (root, no systemd credential): recorded, not required.
    with Timer(summary, "diagnose --json as root"):
        r = in_root(root, anoncam_bin, "diagnose", "--json", "--only", "mqtt")
    try:
        as_root = {c["name"]: c["status"] for c in json.loads(r.stdout).get("checks", [])}
    except ValueError:
        as_root = {"error": quiet(r.stderr) or "no output"}
    summary.facts["diagnose_as_root_mqtt"] = as_root


def judge_diagnose(d: subprocess.CompletedProcess[str], summary: Summary, where: str = "") -> None:
    """``anoncam diagnose --json``'s output: valid against its schema, model and MQTT OK."""
    try:
        report = json.loads(d.stdout)
    except ValueError:
        report = None
    problems: list[str] = []
    if report is not None:
        import jsonschema

        schema = json.loads((SCHEMAS / "diagnose.schema.json").read_text())
        validator = jsonschema.Draft202012Validator(schema)
        problems = [e.message for e in validator.iter_errors(report)]
    summary.check(
        f"diagnose --json validates{where}",
        report is not None and not problems,
        {"exit": d.returncode, "problems": problems[:5], "stderr": quiet(d.stderr)},
    )
    if isinstance(report, dict):
        summary.facts[f"diagnose{where}"] = report
    statuses = {c["name"]: c["status"] for c in (report or {}).get("checks", [])}
    must = ("model.file", "mqtt.tcp", "mqtt.auth", "mqtt.roundtrip", "service.config")
    summary.check(
        f"diagnose: model and MQTT to the host broker OK{where}",
        all(statuses.get(name) == "OK" for name in must),
        {name: statuses.get(name) for name in must},
    )


# --------------------------------------------------------------------------- 4. the run
@dataclass
class Listener:
    messages: list[tuple[str, bytes, bool]] = field(default_factory=list)
    connected: threading.Event = field(default_factory=threading.Event)


def start_broker(work: Path, fleet: Path, port: int) -> subprocess.Popen[bytes]:
    broker = work / "mosquitto"
    broker.mkdir(exist_ok=True)
    conf = broker / "mosquitto.conf"
    lines = [
        f"listener {port} 127.0.0.1",
        "allow_anonymous false",
        f"password_file {fleet / 'broker' / 'passwd'}",
        f"acl_file {fleet / 'broker' / 'acl'}",
        "persistence false",
        "log_dest stdout",
    ]
    if os.geteuid() == 0:
        lines.append("user root")  # Mosquitto 2 would drop to 'mosquitto' and not read the files
    conf.write_text("\n".join(lines) + "\n")
    binary = mosquitto_path()
    if binary is None:
        raise SystemExit("mosquitto not installed: run 'apt-get install mosquitto'")
    logf = open(broker / "mosquitto.log", "wb")  # noqa: SIM115 - the broker owns it
    proc = subprocess.Popen([binary, "-c", str(conf)], stdout=logf, stderr=subprocess.STDOUT)
    logf.close()
    import socket

    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return proc
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise SystemExit(
        f"mosquitto did not listen on {port}: {(broker / 'mosquitto.log').read_text()}"
    )


def subscribe(port: int, password: str) -> tuple[Any, Listener]:
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    listener = Listener()
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="pi-emulate-listener")
    client.username_pw_set(SUBSCRIBER, password)

    def on_connect(c: Any, _u: Any, _f: Any, rc: Any, _p: Any = None) -> None:
        if not rc.is_failure:
            c.subscribe(f"anoncam/{SITE}/{DEVICE}/#", qos=1)
            listener.connected.set()

    def on_message(_c: Any, _u: Any, msg: Any) -> None:
        listener.messages.append((msg.topic, bytes(msg.payload), bool(msg.retain)))

    client.on_connect = on_connect
    client.on_message = on_message
    client.connect("127.0.0.1", port)
    client.loop_start()
    if not listener.connected.wait(10):
        raise SystemExit("the test subscriber could not connect to the broker")
    return client, listener


def run_and_receive(root: Path, work: Path, inv: Path, port: int, summary: Summary) -> None:
    store = SecretStore((inv.parent / "secrets").resolve())
    password = store.existing_password(store.subscriber_dir(SUBSCRIBER))
    assert password, "provision broker made no subscriber password"
    broker = start_broker(work, inv.parent, port)
    client = None
    try:
        client, listener = subscribe(port, password)
        diagnose_check(root, summary)
        # As the unit runs it, with the installed config; the source is the clip, not a camera.
        cmd = [
            *AS_SERVICE, f"{layout.VENV_DIR}/bin/anoncam", "run", "--config", layout.CONFIG_PATH,
            "--source", CLIP, "--drain-timeout", "30",
        ]  # fmt: skip
        with Timer(summary, "anoncam run on the clip (qemu-user)"):
            proc = in_root(root, *cmd, timeout=900)
        time.sleep(1.0)  # the last QoS 1 deliveries to the listener
        log_tail = (quiet(proc.stderr, 2000) or "").splitlines()[-6:]
        summary.check(
            "anoncam run exits 0", proc.returncode == 0, {"exit": proc.returncode, "log": log_tail}
        )
    finally:
        if client is not None:
            client.loop_stop()
            client.disconnect()
        broker.send_signal(signal.SIGTERM)
        try:
            broker.wait(5)
        except subprocess.TimeoutExpired:
            broker.kill()
    check_messages(listener, summary)


def check_messages(listener: Listener, summary: Summary, *, redelivered: bool = False) -> None:
    """Every message schema-valid and free of forbidden keys, counts windows numbered 1..N, and
    ``status: online``. ``redelivered``: a device that restarted may publish a window again
    (at-least-once); the distinct seqs must still be 1..N."""
    windows, statuses, invalid = [], [], []
    for topic, raw, retained in listener.messages:
        kind = topic.rsplit("/", 1)[-1]
        if kind == "diagnostics":  # diagnose's own round-trip probe
            continue
        try:
            body = json.loads(raw)
            contract.validate(kind, body)
            if contract.find_forbidden(body):
                raise ValueError(f"forbidden keys {contract.find_forbidden(body)}")
        except (ValueError, KeyError) as exc:
            invalid.append(f"{topic}: {exc}")
            continue
        if kind == "counts":
            windows.append(body)
        elif kind == "status":
            statuses.append((body.get("state"), retained))
    summary.facts["received"] = {
        "messages": len(listener.messages),
        "windows": len(windows),
        "seqs": [w["seq"] for w in windows],
        "frames_processed": sum(w["frames"]["processed"] for w in windows),
        "statuses": [s for s, _ in statuses],
    }
    summary.check(
        "every message schema-valid", not invalid and bool(listener.messages), invalid[:5]
    )
    seqs = [w["seq"] for w in windows]
    distinct = sorted(set(seqs)) if redelivered else seqs
    summary.check(
        "counts windows received",
        bool(windows) and distinct == list(range(1, len(distinct) + 1)),
        seqs,
    )
    summary.check("status online", "online" in [s for s, _ in statuses], [s for s, _ in statuses])


def chroot_main(root: Path, work: Path, json_path: Path, timings: Path | None) -> int:
    summary = Summary()
    repo = Path(__file__).resolve().parent.parent
    port = free_port()
    start = time.monotonic()
    try:
        inv = build_card(work, root, port, summary, repo)
        render_clip(root, summary)
        if install_and_check(root, summary):
            run_and_receive(root, work, inv, port, summary)
    finally:
        summary.timings["chroot path (this module)"] = round(time.monotonic() - start, 1)
        summary.save(json_path, timings)
    return summary.exit_status()


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m provisioning.emulate")
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("chroot", help="run by scripts/pi-emulate chroot (root, mounted rootfs)")
    c.add_argument("--root", type=Path, required=True)
    c.add_argument("--work", type=Path, required=True)
    c.add_argument("--json", type=Path, required=True)
    c.add_argument("--timings", type=Path, default=None)
    args = p.parse_args(argv)
    # This module's entry point is the one place that decides where its log goes.
    logging.basicConfig(level=logging.INFO, format="pi-emulate: %(message)s", stream=sys.stderr)
    return chroot_main(args.root, args.work, args.json, args.timings)


if __name__ == "__main__":
    sys.exit(main())
