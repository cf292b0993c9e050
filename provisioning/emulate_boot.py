"""The host side of ``scripts/pi-emulate boot``: a provisioned card image boots on an emulated
64-bit ARM machine (``qemu-system-aarch64 -M virt``), installs offline on its first boot and then
counts under systemd.

``scripts/pi-emulate`` unpacks the cached Bookworm arm64 rootfs into a folder; this module does
the rest, with the installer's own commands where an installer has one:

1. a test fleet whose broker is ``10.0.2.100:1883`` (the only address the device can reach:
   qemu's user network forwards it to a Mosquitto on this host's loopback), its accounts, the
   aarch64 bundle, and a long synthetic clip in the rootfs as the camera's stand-in;
2. a card image as a flashed Raspberry Pi OS card is laid out (MBR, FAT32 boot partition with
   ``cmdline.txt`` and ``config.txt``, ext4 root), then ``anoncam provision image CARD.img``;
3. first boot: Debian's arm64 kernel and initrd, with the card's own ``cmdline.txt`` as the
   kernel command line (only the Pi-specific parts translated, see :func:`kernel_cmdline`);
   ``systemd.run=`` starts ``firstrun.sh``, which installs from the bundle and reboots (qemu
   runs with ``-no-reboot``, so the reboot ends it);
4. the boot partition read back from the image: first-boot files and secrets gone;
5. second boot: the ``anoncam`` unit under systemd (``Type=notify``, watchdog, hardening),
   checked over SSH with the fleet's admin key; counts and ``status: online`` arrive at a
   subscriber on the host; ``SIGSTOP`` of the service's main process makes the watchdog restart
   it, and counting resumes.

Every check lands in the same JSON summary as the chroot path's; exit 0 only when all passed.
"""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from firmware.jobs.demo_broker import free_port
from provisioning import layout
from provisioning.bootfs import open_target
from provisioning.credentials import SecretStore
from provisioning.emulate import (
    CLIP,
    CMDLINE,
    CONFIG_TXT,
    DEVICE,
    GUEST_PROBE,
    SITE,
    SUBSCRIBER,
    Listener,
    Summary,
    Timer,
    anoncam,
    check_messages,
    fleet_and_bundle,
    judge_diagnose,
    render_clip,
    start_broker,
    subscribe,
)

logger = logging.getLogger(__name__)

#: The card's disk identifier: PARTUUIDs 414e4f4e-01 (boot) and -02 (root), as the rootfs's
#: fstab (rootfs-customize.sh) and the card's cmdline.txt name them.
DISK_ID = "414e4f4e"
#: Where the device finds its broker: qemu's user network forwards it to this host's loopback.
GUEST_BROKER = ("10.0.2.100", 1883)
BOOT_MB = 512  # Bookworm's boot partition
ROOT_HEADROOM_MB = 1536  # room for the venv, the models, logs and the outbox
CLIP_SECONDS = 1200.0  # longer than the whole boot path: the service must not run out of frames


def kernel_cmdline(card: str, *, root: str | None = None) -> str:
    """The kernel command line for qemu's ``virt`` machine, from the card's ``cmdline.txt``.

    The Pi firmware passes ``cmdline.txt`` to the Pi kernel; here Debian's kernel gets it, with
    only what has no meaning on ``virt`` changed: ``serial0`` (the Pi's alias) is the PL011 UART
    ``ttyAMA0``, ``tty1`` (HDMI) is dropped, and ``init=/usr/lib/raspberrypi-sys-mods/firstboot``
    (Raspberry Pi OS's partition resizer, not in Debian) is dropped. Everything else stays,
    ``systemd.run=`` and ``root=PARTUUID=`` included. ``root`` overrides the root device."""
    out = []
    for word in card.split():
        key, _, value = word.partition("=")
        if key == "console":
            if value.startswith("tty") and not value.startswith("ttyAMA"):
                continue
            word = "console=" + value.replace("serial0", "ttyAMA0")
        elif key == "init" and "raspberrypi-sys-mods" in value:
            continue
        elif key == "root" and root is not None:
            word = f"root={root}"
        out.append(word)
    return " ".join(out)


def qemu_command(
    *,
    kernel: Path,
    initrd: Path,
    disk: Path,
    cmdline: str,
    serial_log: Path,
    broker_port: int,
    ssh_port: int | None = None,
    smp: int = 2,
    memory_mb: int = 2048,
) -> list[str]:
    """``qemu-system-aarch64`` for a Pi 4/5 stand-in: Cortex-A72, 2 GiB, the card as a virtio
    disk, and a user network with ``restrict=on`` (no way out) except two forwards: the broker
    (guest ``10.0.2.100:1883`` -> host loopback, one ``socat`` per connection, so the device can
    reconnect) and, when ``ssh_port`` is given, host loopback -> guest SSH."""
    net = f"user,id=net0,restrict=on,guestfwd=tcp:{GUEST_BROKER[0]}:{GUEST_BROKER[1]}-"
    net += f"cmd:socat - TCP:127.0.0.1:{broker_port}"
    if ssh_port is not None:
        net += f",hostfwd=tcp:127.0.0.1:{ssh_port}-:22"
    return [
        "qemu-system-aarch64", "-M", "virt", "-cpu", "cortex-a72",
        "-smp", str(smp), "-m", str(memory_mb),
        "-kernel", str(kernel), "-initrd", str(initrd), "-append", cmdline,
        "-drive", f"file={disk},format=raw,if=virtio,cache=unsafe",
        "-netdev", net, "-device", "virtio-net-pci,netdev=net0,romfile=",
        "-display", "none", "-monitor", "none", "-serial", f"file:{serial_log}",
        "-no-reboot",
    ]  # fmt: skip


# --------------------------------------------------------------------------- the card image
def _sh(cmd: Sequence[str], *, timeout: float = 900) -> str:
    proc = subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    return proc.stdout


def du_mb(path: Path) -> int:
    return int(_sh(["du", "-sxm", str(path)]).split()[0])


def make_card(rootfs: Path, work: Path, root_mb: int | None = None) -> Path:
    """A blank card image as a flashed Raspberry Pi OS card is laid out: an MBR with disk id
    ``DISK_ID``, partition 1 FAT32 (``bootfs``, type 0x0c) holding ``cmdline.txt`` and
    ``config.txt``, partition 2 ext4 (``rootfs``) made from the unpacked root filesystem
    (``mkfs.ext4 -d``, no loop device). ``root_mb`` defaults to the rootfs plus headroom."""
    if root_mb is None:
        root_mb = du_mb(rootfs) + ROOT_HEADROOM_MB
    card = work / "card.img"
    boot_img, root_img = work / "bootfs.img", work / "rootfs.img"
    for f in (card, boot_img, root_img):
        f.unlink(missing_ok=True)
    first_mb = 4  # partition 1 starts at 4 MiB, as pi-gen's images
    _sh(["truncate", "-s", f"{BOOT_MB}M", str(boot_img)])
    _sh(["mkfs.vfat", "-F", "32", "-n", "bootfs", "-i", DISK_ID, str(boot_img)])
    staging = work / "bootfs-files"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    (staging / "cmdline.txt").write_text(CMDLINE)
    (staging / "config.txt").write_text(CONFIG_TXT)
    _sh(
        [
            "mcopy",
            "-i",
            str(boot_img),
            str(staging / "cmdline.txt"),
            str(staging / "config.txt"),
            "::",
        ]
    )
    (rootfs / "boot" / "firmware").mkdir(parents=True, exist_ok=True)
    _sh(["mkfs.ext4", "-q", "-F", "-L", "rootfs", "-d", str(rootfs), str(root_img), f"{root_mb}M"])
    total = first_mb + BOOT_MB + root_mb
    _sh(["truncate", "-s", f"{total}M", str(card)])
    table = (
        "label: dos\n"
        f"label-id: 0x{DISK_ID}\n"
        f"start={first_mb * 2048}, size={BOOT_MB * 2048}, type=c\n"
        f"start={(first_mb + BOOT_MB) * 2048}, size={root_mb * 2048}, type=83\n"
    )
    proc = subprocess.run(
        ["sfdisk", "--no-reread", "--no-tell-kernel", "-q", str(card)],
        input=table, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    if proc.returncode != 0:
        raise SystemExit(f"sfdisk failed: {proc.stderr}")
    for img, start_mb in ((boot_img, first_mb), (root_img, first_mb + BOOT_MB)):
        _sh(["dd", f"if={img}", f"of={card}", "bs=1M", f"seek={start_mb}", "conv=notrunc,sparse"])
        img.unlink()
    return card


def root_partition_read(card: Path, path: str) -> str | None:
    """A file of the card's ext4 root, read with debugfs (no mount), or None if absent."""
    offset = (4 + BOOT_MB) * 1024 * 1024
    proc = subprocess.run(
        ["debugfs", "-R", f"cat {path}", f"{card}?offset={offset}"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    return proc.stdout if proc.returncode == 0 and proc.stdout else None


# --------------------------------------------------------------------------- the machine
class Machine:
    """One run of the emulated machine (a boot until it powers off or reboots)."""

    def __init__(self, cmd: list[str], serial_log: Path) -> None:
        self.serial_log = serial_log
        serial_log.unlink(missing_ok=True)
        self.err = open(serial_log.with_suffix(".qemu.log"), "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(cmd, stdout=self.err, stderr=subprocess.STDOUT)
        self.started = time.monotonic()

    def console(self) -> str:
        try:
            return self.serial_log.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def wait_exit(self, timeout: float) -> int | None:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            if self.wait_exit(10) is None:
                self.proc.kill()
                self.proc.wait()
        self.err.close()


class Ssh:
    """Commands on the booted device as the fleet's admin user (key login, sudo)."""

    def __init__(self, key: Path, user: str, port: int) -> None:
        self.base = [
            "ssh", "-i", str(key), "-p", str(port), "-o", "BatchMode=yes",
            "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
            "-o", "LogLevel=ERROR", "-o", "ConnectTimeout=10", f"{user}@127.0.0.1",
        ]  # fmt: skip

    def run(self, command: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        try:
            return subprocess.run(
                [*self.base, command], capture_output=True, text=True, timeout=timeout
            )
        except subprocess.TimeoutExpired as exc:
            return subprocess.CompletedProcess(exc.cmd, 124, "", f"timed out after {timeout} s")

    def show(self, unit: str, *props: str) -> dict[str, str]:
        proc = self.run(f"systemctl show {unit} -p {','.join(props)}", timeout=60)
        return dict(ln.split("=", 1) for ln in proc.stdout.splitlines() if "=" in ln)


def wait_for(what: str, probe: Callable[[], Any], timeout: float, every: float = 3.0) -> Any:
    """Poll ``probe`` until it returns something truthy; None after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        got = probe()
        if got:
            return got
        if time.monotonic() > deadline:
            logger.warning("gave up waiting for %s after %.0f s", what, timeout)
            return None
        time.sleep(every)


# --------------------------------------------------------------------------- the path
def _kernel_files(rootfs: Path) -> tuple[Path, Path]:
    kernels = sorted((rootfs / "boot").glob("vmlinuz-*"))
    initrds = sorted((rootfs / "boot").glob("initrd.img-*"))
    if not kernels or not initrds:
        raise SystemExit(f"no Debian arm64 kernel/initrd in {rootfs}/boot (rebuild the rootfs)")
    return kernels[-1], initrds[-1]


def _ssh_key(work: Path) -> tuple[Path, str]:
    key = work / "admin_ed25519"
    key.unlink(missing_ok=True)
    key.with_suffix(".pub").unlink(missing_ok=True)
    _sh(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "pi-emulate", "-f", str(key)])
    return key, key.with_suffix(".pub").read_text().strip()


def secret_left_on(card: Path, secret: str, work: Path) -> list[str]:
    """Files of the card's boot partition that still hold ``secret`` (copied out with mtools)."""
    dest = work / "bootfs-after"
    shutil.rmtree(dest, ignore_errors=True)
    open_target(card).get_tree("", dest)
    needle = secret.encode()
    found = [
        str(f.relative_to(dest))
        for f in dest.rglob("*")
        if f.is_file() and needle in f.read_bytes()
    ]
    shutil.rmtree(dest, ignore_errors=True)
    return found


def boot_until_reboot(
    card: Path,
    kernel: Path,
    initrd: Path,
    serial: Path,
    broker_port: int,
    summary: Summary,
    what: str,
) -> tuple[int | None, str, str]:
    """One boot of the card, until its first reboot ends qemu (``-no-reboot``). Returns qemu's
    exit status, the serial console, and the kernel command line it was given."""
    card_cmdline = (open_target(card).read("cmdline.txt") or b"").decode().strip()
    cmdline = kernel_cmdline(card_cmdline)
    cmd = qemu_command(
        kernel=kernel, initrd=initrd, disk=card, cmdline=cmdline, serial_log=serial,
        broker_port=broker_port,
    )  # fmt: skip
    summary.facts["qemu"] = shlex.join(cmd)
    machine = Machine(cmd, serial)
    try:
        with Timer(summary, f"{what}: power on to reboot (qemu-system-aarch64)"):
            rc = machine.wait_exit(1800)
        return rc, machine.console(), cmdline
    finally:
        machine.stop()


def provision(card: Path, inv: Path, bundle: Path, repo: Path, summary: Summary, what: str) -> None:
    with Timer(summary, what):
        anoncam(
            "provision", "image", str(card), "--inventory", str(inv),
            "--device", f"{SITE}/{DEVICE}", "--bundle", str(bundle), cwd=repo,
        )  # fmt: skip


def failed_first_boot(
    card: Path, kernel: Path, initrd: Path, work: Path, broker_port: int, summary: Summary
) -> bool:
    """The card holds a bundle for Trixie's Python 3.13 only: its first boot must fail, say so
    on the boot partition with the fix, still reboot into a reachable system and disarm."""
    rc, console, _ = boot_until_reboot(
        card, kernel, initrd, work / "boot0-serial.log", broker_port, summary,
        "first boot, bundle for the wrong Python",
    )  # fmt: skip
    boot = open_target(card)
    note = (boot.read(f"{layout.PAYLOAD_DIR}/INSTALL-FAILED.txt") or b"").decode()
    summary.facts["install_failed_note"] = note.strip().splitlines()
    summary.check(
        "wrong Python: INSTALL-FAILED.txt on the boot partition names both and the fix",
        "cp313" in note and "cp311" in note and "provision bundle --python 3.11" in note,
        note.strip().splitlines()[:12],
    )
    after = (boot.read("cmdline.txt") or b"").decode()
    summary.check(
        "wrong Python: the card still rebooted, first boot disarmed",
        rc is not None and "reboot: Restarting system" in console and "systemd.run" not in after,
        {"qemu_exit": rc, "cmdline": after.strip()},
    )
    return summary.ok


def first_boot(
    card: Path,
    kernel: Path,
    initrd: Path,
    work: Path,
    broker_port: int,
    secret: str,
    summary: Summary,
) -> bool:
    summary.facts["card_cmdline"] = (open_target(card).read("cmdline.txt") or b"").decode().strip()
    rc, console, cmdline = boot_until_reboot(
        card, kernel, initrd, work / "boot1-serial.log", broker_port, summary, "first boot"
    )
    summary.facts["first_boot_cmdline"] = cmdline
    log = root_partition_read(card, layout.FIRSTBOOT_LOG) or ""
    summary.check(
        "first boot ran firstrun.sh and rebooted",
        rc is not None and "reboot: Restarting system" in console and "firstrun: done" in log,
        {"qemu_exit": rc, "console_tail": console.strip().splitlines()[-3:]},
    )
    summary.facts["firstboot_log_tail"] = log.strip().splitlines()[-5:]
    summary.check(
        "install finished on first boot",
        "anoncam-install: done" in log or "done:" in log,
        log.strip().splitlines()[-3:],
    )
    # The boot partition after first boot, read from the card image as an installer would.
    boot = open_target(card)
    after = (boot.read("cmdline.txt") or b"").decode()
    summary.facts["cmdline_after_first_boot"] = after.strip()
    summary.check(
        "first boot disarmed (cmdline.txt, firstrun.sh)",
        "systemd.run" not in after and not boot.exists("firstrun.sh"),
        after.strip(),
    )
    payload = layout.PAYLOAD_DIR
    summary.check(
        "secrets and bundle off the boot partition",
        not boot.exists(f"{payload}/credentials") and not boot.exists(f"{payload}/bundle"),
        {"installed": (boot.read(f"{payload}/INSTALLED") or b"").decode().strip()},
    )
    left = secret_left_on(card, secret, work)
    summary.check("no file on the boot partition holds the MQTT password", not left, left)
    return summary.ok


def _active(ssh: Ssh) -> dict[str, str] | None:
    props = ssh.show("anoncam", "ActiveState", "SubState", "MainPID", "NRestarts")
    return props if props.get("ActiveState") == "active" else None


def second_boot(
    card: Path,
    kernel: Path,
    initrd: Path,
    work: Path,
    broker_port: int,
    ssh: Ssh,
    ssh_port: int,
    listener: Listener,
    summary: Summary,
) -> None:
    cmdline = kernel_cmdline((open_target(card).read("cmdline.txt") or b"").decode())
    serial = work / "boot2-serial.log"
    cmd = qemu_command(
        kernel=kernel, initrd=initrd, disk=card, cmdline=cmdline, serial_log=serial,
        broker_port=broker_port, ssh_port=ssh_port,
    )  # fmt: skip
    machine = Machine(cmd, serial)
    try:
        with Timer(summary, "second boot: power on to SSH login"):
            up = wait_for("SSH", lambda: ssh.run("true", timeout=30).returncode == 0, 900, 5)
        if not summary.check("second boot reaches an SSH login (admin key)", bool(up), None):
            summary.facts["boot2_console_tail"] = machine.console().strip().splitlines()[-15:]
            return
        with Timer(summary, "second boot: SSH to anoncam active (READY=1)"):
            props = wait_for("anoncam active", lambda: _active(ssh), 600, 5)
        unit = ssh.show(
            "anoncam", "ActiveState", "SubState", "Type", "WatchdogUSec", "NotifyAccess",
            "User", "ProtectSystem", "NoNewPrivileges", "CapabilityBoundingSet", "NRestarts",
        )  # fmt: skip
        summary.facts["unit"] = unit
        summary.check(
            "systemctl show anoncam: active, Type=notify, watchdog, hardening",
            bool(props)
            and unit.get("Type") == "notify"
            and unit.get("WatchdogUSec") == "30s"
            and unit.get("User") == layout.SERVICE_USER
            and unit.get("ProtectSystem") == "strict"
            and unit.get("NoNewPrivileges") == "yes",
            unit,
        )
        device_checks(ssh, summary)
        # Three boots so far: the failed first boot (-2), the fixed one (-1), this one (0).
        failed = ssh.run("sudo journalctl -b -2 --no-pager -o cat | grep -m3 -F cp313", 180)
        summary.check(
            "wrong Python: the failure is in the journal of the failed boot",
            "cp313" in failed.stdout,
            failed.stdout.strip().splitlines()[:3] or failed.stderr.strip()[-300:],
        )
        with Timer(summary, "second boot: active to the first counts window"):
            got = wait_for("a counts window", lambda: _windows(listener), 600, 3)
        summary.check("counts arrive from the booted device", bool(got), None)
        if props:
            watchdog(ssh, listener, props, summary)
        ssh.run("sudo systemctl poweroff", timeout=30)
        machine.wait_exit(120)
    finally:
        summary.facts["boot2_console_tail"] = machine.console().strip().splitlines()[-6:]
        machine.stop()


def _windows(listener: Listener) -> int:
    return sum(1 for topic, _, _ in listener.messages if topic.endswith("/counts"))


def device_checks(ssh: Ssh, summary: Summary) -> None:
    probe = ssh.run(
        f"sudo -u {layout.SERVICE_USER} {layout.VENV_DIR}/bin/python -c {shlex.quote(GUEST_PROBE)}"
    )
    if summary.check("imports on the booted device", probe.returncode == 0, probe.stderr[-400:]):
        facts = json.loads(probe.stdout.strip().splitlines()[-1])
        summary.facts["device"] = facts
        version, where = facts["numpy"]
        summary.check(
            "venv uses the system numpy (Bookworm's 1.24)",
            version.startswith("1.24.")
            and where.startswith("/usr/lib/python3/dist-packages")
            and not facts["venv_numpy"],
            facts["numpy"],
        )
    paths = [
        layout.CONFIG_PATH, layout.CREDENTIALS_DIR,
        f"{layout.CREDENTIALS_DIR}/{layout.CREDENTIAL_NAME}",
    ]  # fmt: skip
    modes = ssh.run("sudo stat -c '%n %a %U' " + " ".join(paths), timeout=60)
    found = {ln.split()[0]: ln.split()[1:] for ln in modes.stdout.splitlines() if ln.strip()}
    want = {
        paths[0]: ["600", layout.SERVICE_USER],
        paths[1]: ["700", layout.SERVICE_USER],
        paths[2]: ["600", layout.SERVICE_USER],
    }
    summary.check("modes under /etc/anoncam (booted)", found == want, found)
    arch = ssh.run("uname -m; python3 --version", timeout=60).stdout.split()
    summary.facts["uname_python"] = arch
    summary.check("aarch64 with Bookworm's Python 3.11", arch[:1] == ["aarch64"], arch)
    exposure = ssh.run("systemd-analyze security anoncam --no-pager | tail -1", timeout=120)
    summary.facts["systemd_analyze_security"] = exposure.stdout.strip()
    # What a field tech runs on site (README, "Diagnosing a camera"), beside the running service;
    # all but model.inference, whose timed runs take minutes under emulation and measure nothing
    # about a Pi (the chroot path runs the whole of it).
    only = "camera,model.file,mqtt,clock,power,storage,service"
    with Timer(summary, "diagnose --json (booted, sudo)"):
        d = ssh.run(
            f"sudo {layout.VENV_DIR}/bin/anoncam diagnose --json --timeout 10 --only {only}", 600
        )
    judge_diagnose(d, summary, " (booted)")


def watchdog(ssh: Ssh, listener: Listener, props: dict[str, str], summary: Summary) -> None:
    """SIGSTOP the service's main process: its frame loop stops sending WATCHDOG=1, so systemd
    must kill and restart it within WatchdogSec (30 s), and counting must resume."""
    pid, restarts = props["MainPID"], int(props.get("NRestarts", "0") or 0)
    before = _windows(listener)
    ssh.run(f"sudo kill -STOP {pid}", timeout=30)
    start = time.monotonic()

    def restarted() -> dict[str, str] | None:
        now = _active(ssh)
        if now and now["MainPID"] != pid and int(now.get("NRestarts", "0") or 0) > restarts:
            return now
        return None

    with Timer(summary, "watchdog: SIGSTOP to the service active again"):
        after = wait_for("the watchdog restart", restarted, 600, 5)
    journal = ssh.run("sudo journalctl -u anoncam -b --no-pager | grep -i watchdog | tail -3")
    summary.facts["watchdog_journal"] = journal.stdout.strip().splitlines()
    summary.check(
        "watchdog restarts a stopped service",
        bool(after) and "watchdog timeout" in journal.stdout.lower(),
        {"after_s": round(time.monotonic() - start), "now": after},
    )
    with Timer(summary, "watchdog: restart to the next counts window"):
        more = wait_for("counts after the restart", lambda: _windows(listener) > before, 600, 3)
    summary.check("counts resume after the restart", bool(more), None)


def boot_main(rootfs: Path, work: Path, json_path: Path, timings: Path | None) -> int:
    summary = Summary()
    repo = Path(__file__).resolve().parent.parent
    broker_port, ssh_port = free_port(), free_port()
    start = time.monotonic()
    broker = client = None
    try:
        key, public = _ssh_key(work)
        source = f'kind = "file"\npath = "{CLIP}"\n'
        inv, bundle = fleet_and_bundle(
            work, GUEST_BROKER[1], summary, repo, host=GUEST_BROKER[0], ssh_key=public,
            source=source,
        )  # fmt: skip
        render_clip(rootfs, summary, duration_s=CLIP_SECONDS)
        kernel, initrd = _kernel_files(rootfs)
        with Timer(summary, "card image (MBR, FAT32, ext4 from the rootfs)"):
            card = make_card(rootfs, work)
        summary.facts["card_mb"] = card.stat().st_size // 2**20
        wrong = work / "bundle-cp313"
        with Timer(summary, "bundle for the wrong Python (provision bundle --python 3.13)"):
            anoncam("provision", "bundle", "-o", str(wrong), "--python", "3.13", cwd=repo)
        provision(card, inv, wrong, repo, summary, "provision image CARD.img (cp313 bundle)")
        store = SecretStore((inv.parent / "secrets").resolve())
        password = store.existing_password(store.subscriber_dir(SUBSCRIBER))
        assert password, "provision broker made no subscriber password"
        broker = start_broker(work, inv.parent, broker_port)
        client, listener = subscribe(broker_port, password)
        secret = store.existing_password(store.device_dir(SITE, DEVICE))
        assert secret, "provision image made no device password"
        # The note's fix, once the wrong bundle failed: write the card again for this Python.
        if failed_first_boot(card, kernel, initrd, work, broker_port, summary):
            provision(card, inv, bundle, repo, summary, "provision image CARD.img again (cp311)")
        if summary.ok and first_boot(card, kernel, initrd, work, broker_port, secret, summary):
            ssh = Ssh(key, "installer", ssh_port)
            second_boot(card, kernel, initrd, work, broker_port, ssh, ssh_port, listener, summary)
            time.sleep(1.0)
            check_messages(listener, summary, redelivered=True)
    finally:
        if client is not None:
            client.loop_stop()
            client.disconnect()
        if broker is not None:
            broker.send_signal(signal.SIGTERM)
            broker.wait(10)
        summary.timings["boot path (this module)"] = round(time.monotonic() - start, 1)
        summary.save(json_path, timings)
    return summary.exit_status()


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m provisioning.emulate_boot")
    p.add_argument("--root", type=Path, required=True, help="the unpacked arm64 rootfs")
    p.add_argument("--work", type=Path, required=True)
    p.add_argument("--json", type=Path, required=True)
    p.add_argument("--timings", type=Path, default=None)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="pi-emulate: %(message)s", stream=sys.stderr)
    # Stopped from outside (Ctrl-C, a test's timeout): still stop qemu and the broker.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    return boot_main(args.root, args.work, args.json, args.timings)


if __name__ == "__main__":
    sys.exit(main())
