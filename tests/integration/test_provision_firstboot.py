"""The first-boot install steps, run for real in a scratch root on this machine.

Real: bash, the venv (``--system-site-packages``), the offline ``pip install`` from a wheelhouse
built for this machine, file placement and modes. Behind a seam, because they would change this
machine: ``systemctl``, ``useradd``, ``hostnamectl`` and ``chown`` (the service user does not
exist here). The seam is a PATH folder of small stand-ins that record their arguments.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from firmware import __version__
from firmware.cli import main
from firmware.fsutil import sha256_file
from provisioning import bundle as bundle_mod
from provisioning import layout, payload
from provisioning.credentials import SecretStore
from provisioning.inventory.loader import load as load_inventory
from tests.unit.test_provision_support import CMDLINE, ssh_key, write_fleet

pytestmark = pytest.mark.integration
SEAM = ("systemctl", "useradd", "hostnamectl", "chown")
HERE = f"{sys.version_info[0]}.{sys.version_info[1]}"


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def _seam(tmp: Path) -> tuple[Path, Path]:
    bindir, record = tmp / "seam-bin", tmp / "seam.log"
    bindir.mkdir()
    for name in SEAM:
        script = bindir / name
        script.write_text(f'#!/bin/sh\nprintf \'%s\\n\' "{name} $*" >>"{record}"\n')
        script.chmod(0o755)
    # The install makes its venv with 'python3': this interpreter, whose version the bundle targets.
    (bindir / "python3").symlink_to(sys.executable)
    return bindir, record


def _scratch_root(tmp: Path) -> Path:
    root = tmp / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "hosts").write_text("127.0.0.1\tlocalhost\n127.0.1.1\traspberrypi\n")
    (root / "etc" / "hostname").write_text("raspberrypi\n")
    return root


def _clean_env(**extra: str) -> dict[str, str]:
    """This process's environment as a camera would have it: no venv, no PYTHONPATH (which
    would put the checkout's anoncam in front of the installed one)."""
    env = dict(os.environ, **extra)
    for var in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME"):
        env.pop(var, None)
    return env


def _run_install(script: Path, root: Path, bindir: Path) -> subprocess.CompletedProcess[str]:
    env = _clean_env(ROOT=str(root), PATH=f"{bindir}:{os.environ['PATH']}")
    return subprocess.run(
        ["bash", str(script)], env=env, capture_output=True, text=True, timeout=600, cwd=root
    )


def _payload(tmp: Path, bundle: Path | None, **fleet: object) -> tuple[Path, str]:
    inv = load_inventory(write_fleet(tmp / "fleet", **fleet))  # type: ignore[arg-type]
    ref, entry = inv.device("store-042/door-1")
    manifest = bundle_mod.check_bundle(bundle) if bundle else None
    target = tmp / "bootfs" / layout.PAYLOAD_DIR
    payload.build(inv, ref, entry, target, bundle=bundle, bundle_manifest=manifest)
    password = SecretStore(inv.secrets_dir).existing_password(
        inv.secrets_dir / "devices/store-042/door-1"
    )
    assert password
    return target, password


@pytest.fixture(scope="session")
def native_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real bundle for this machine's platform (pip download, cached by pip between runs)."""
    if HERE not in bundle_mod.PI_TARGETS:
        pytest.skip(f"bundles target CPython {', '.join(bundle_mod.PI_TARGETS)}, not {HERE}")
    dest = tmp_path_factory.mktemp("native-bundle") / "bundle"
    bundle_mod.build_bundle(dest, [HERE], native=True)
    return dest


@pytest.mark.slow
def test_first_boot_installs_offline_and_places_everything(
    tmp_path: Path, native_bundle: Path
) -> None:
    staged = tmp_path / "staged-bundle"
    subprocess.run(["cp", "-a", str(native_bundle), str(staged)], check=True)
    script_dir, password = _payload(tmp_path, staged, ntp=["ntp.example.com"])
    bindir, record = _seam(tmp_path)
    root = _scratch_root(tmp_path)
    proc = _run_install(script_dir / "install.sh", root, bindir)
    assert proc.returncode == 0, proc.stdout + proc.stderr

    venv = root / layout.VENV_DIR.lstrip("/")
    assert "include-system-site-packages = true" in (venv / "pyvenv.cfg").read_text()
    probe = subprocess.run(
        [
            str(venv / "bin" / "python"),
            "-c",
            "import firmware, numpy, sys; print(firmware.__version__, numpy.__version__, "
            "firmware.__file__.startswith(sys.prefix))",
        ],
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,  # not the checkout's firmware/
        env=_clean_env(),
    )
    version, numpy_version, in_venv = probe.stdout.split()
    assert in_venv == "True" and version == __version__  # installed into the venv, from the bundle
    assert int(numpy_version.split(".")[0]) == (1 if HERE == "3.11" else 2)  # the numpy pin held

    etc = root / layout.ETC_DIR.lstrip("/")
    config = etc / "config.toml"
    assert _mode(config) == 0o600
    creds = root / layout.CREDENTIALS_DIR.lstrip("/")
    assert _mode(creds) == 0o700
    secret = creds / layout.CREDENTIAL_NAME
    assert _mode(secret) == 0o600 and secret.read_text().strip() == password
    assert not (script_dir / "credentials").exists()  # the secret left the boot partition
    assert not (script_dir / "bundle").exists() and (script_dir / "INSTALLED").is_file()
    model = root / layout.MODELS_DIR.lstrip("/") / "centerface-opt.onnx"
    assert (
        sha256_file(model)
        == bundle_mod.read_manifest(native_bundle)["files"]["models/centerface-opt.onnx"]["sha256"]
    )
    unit = root / layout.UNIT_PATH.lstrip("/")
    assert _mode(unit) == 0o644 and "Type=notify" in unit.read_text()
    assert (root / "etc/hostname").read_text() == "store-042-door-1\n"
    assert "127.0.1.1\tstore-042-door-1" in (root / "etc/hosts").read_text()
    assert os.readlink(root / "etc/localtime") == "/usr/share/zoneinfo/Europe/Berlin"
    assert "NTP=ntp.example.com" in (root / "etc/systemd/timesyncd.conf.d/anoncam.conf").read_text()

    calls = record.read_text().splitlines()
    assert f"systemctl --root={root} enable anoncam.service" in calls
    assert "hostnamectl set-hostname store-042-door-1" in calls
    useradd = [c for c in calls if c.startswith("useradd ")]
    assert len(useradd) == 1 and f"--prefix {root}" in useradd[0]
    assert (
        "--system" in useradd[0]
        and "--groups video" in useradd[0]
        and useradd[0].endswith(" anoncam")
    )
    assert f"chown anoncam:anoncam {config}" in calls
    assert f"chown anoncam:anoncam {secret}" in calls
    assert (root / layout.FIRSTBOOT_LOG.lstrip("/")).read_text().count("done:") == 1

    # Run again by hand (as a field tech would after a fix): it succeeds and changes nothing.
    again = _run_install(script_dir / "install.sh", root, bindir)
    assert again.returncode == 0, again.stderr
    assert secret.read_text().strip() == password


def test_a_failed_install_still_moves_the_secrets(tmp_path: Path) -> None:
    """Regression guard: the password must leave the FAT partition even when the install fails
    later (here: no bundle, so no venv); the failure is logged with the way to retry."""
    script_dir, password = _payload(tmp_path, None)
    bindir, _ = _seam(tmp_path)
    root = _scratch_root(tmp_path)
    proc = _run_install(script_dir / "install.sh", root, bindir)
    assert proc.returncode != 0
    assert not (script_dir / "credentials").exists()
    assert (root / layout.PASSWORD_PATH.lstrip("/")).read_text().strip() == password
    log = (root / layout.FIRSTBOOT_LOG.lstrip("/")).read_text()
    assert "FAILED" in log and "install.sh" in log
    note = _flat((script_dir / "INSTALL-FAILED.txt").read_text())
    assert "The card has no offline bundle" in note and "anoncam provision image CARD" in note


def test_a_corrupt_payload_is_refused_before_anything_changes(tmp_path: Path) -> None:
    script_dir, _ = _payload(tmp_path, None)
    cfg = script_dir / "config.toml"
    cfg.write_text(cfg.read_text().replace("door-1", "door-9"))
    bindir, record = _seam(tmp_path)
    root = _scratch_root(tmp_path)
    proc = _run_install(script_dir / "install.sh", root, bindir)
    assert proc.returncode != 0
    assert "config.toml: FAILED" in proc.stdout + proc.stderr
    assert (script_dir / "credentials").is_dir()  # nothing moved
    assert not record.exists() and (root / "etc/hostname").read_text() == "raspberrypi\n"


# --------------------------------------------------------------------------- the bad cases
# Each runs the real install until it fails, reads the reason where an installer meets it (stderr,
# which is the journal under firstrun.sh; the first-boot log; INSTALL-FAILED.txt on the boot
# partition), fixes the cause the way the note says, and runs the install again.
NOTE = "INSTALL-FAILED.txt"


def _flat(text: str) -> str:
    """Whitespace collapsed: the note wraps long reasons."""
    return " ".join(text.split())


def _said(proc: subprocess.CompletedProcess[str], root: Path, script_dir: Path) -> list[str]:
    """stderr, the first-boot log and the note, each flattened."""
    log = (root / layout.FIRSTBOOT_LOG.lstrip("/")).read_text()
    return [_flat(proc.stderr), _flat(log), _flat((script_dir / NOTE).read_text())]


def _copy(src: Path, dest: Path) -> Path:
    subprocess.run(["cp", "-a", str(src), str(dest)], check=True)
    return dest


def _bundle_for_the_other_python(native: Path, dest: Path) -> tuple[Path, str]:
    """The bundle as 'provision bundle --python X' makes it for the release this machine is not
    (Trixie's 3.13 when this is 3.11): constraints and manifest for that Python only."""
    other = next(bundle_mod.PI_TARGETS[p] for p in bundle_mod.PI_TARGETS if p != HERE)
    wrong = _copy(native, dest)
    here_tag = bundle_mod.PI_TARGETS[HERE].tag
    (wrong / f"constraints-{here_tag}.txt").rename(wrong / f"constraints-{other.tag}.txt")
    bundle_mod.seal(wrong, pythons=[other.python], platform="native", model_file=_model(native))
    return wrong, other.tag


def _model(bundle: Path) -> str:
    return Path(str(bundle_mod.read_manifest(bundle)["model"])).name


def _rebundle(tmp: Path, script_dir: Path, bundle: Path) -> None:
    """The payload again with another bundle, as 'provision image' writes it, but keeping the
    note, so that the test sees the install remove it."""
    subprocess.run(["rm", "-rf", str(script_dir / "bundle")], check=True)
    _payload(tmp, bundle)
    assert (script_dir / NOTE).is_file()


def _installed(proc: subprocess.CompletedProcess[str], script_dir: Path) -> None:
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert not (script_dir / NOTE).exists()  # the stale note went with the success
    assert (script_dir / "INSTALLED").is_file() and not (script_dir / "bundle").exists()


def test_an_unexpected_failure_names_the_step_and_the_command(tmp_path: Path) -> None:
    """A step without a check of its own used to fail with "FAILED at line N" only: the note
    names the step, the command and its exit status, and says how to run the install again."""
    script_dir, _ = _payload(tmp_path, None)
    bindir, _ = _seam(tmp_path)
    root = _scratch_root(tmp_path)
    (root / "etc" / "hosts").unlink()
    (root / "etc" / "hosts").mkdir()  # the step-2 write fails: "Is a directory"
    proc = _run_install(script_dir / "install.sh", root, bindir)
    assert proc.returncode == 1
    assert "etc/hosts: Is a directory" in proc.stderr
    for text in _said(proc, root, script_dir):
        assert "Step 2. host name and time zone failed: 'printf " in text
        assert '"$ROOT/etc/hosts"\' exited with status 1 (install.sh line ' in text
        assert (
            f"then run the install again on the camera: sudo bash {script_dir}/install.sh" in text
        )


@pytest.mark.slow
def test_a_bundle_for_another_python_says_which_and_how_to_build_the_right_one(
    tmp_path: Path, native_bundle: Path
) -> None:
    """Trixie's bundle on a Bookworm card (or the other way round) used to fail with "the bundle
    has no wheels for this Python (cp311)" and a bare line number; now every place names both
    tags and the command that builds the right bundle, before any venv is made."""
    wrong, other_tag = _bundle_for_the_other_python(native_bundle, tmp_path / "wrong-bundle")
    here_tag = bundle_mod.PI_TARGETS[HERE].tag
    script_dir, password = _payload(tmp_path, wrong)
    bindir, _ = _seam(tmp_path)
    root = _scratch_root(tmp_path)
    proc = _run_install(script_dir / "install.sh", root, bindir)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    for text in _said(proc, root, script_dir):
        assert f"the card runs CPython {HERE} ({here_tag}, " in text
        assert f"the bundle was built for {other_tag} (" in text
        assert f"anoncam provision bundle --python {HERE} -o DIR" in text
        assert "anoncam provision image CARD" in text and "--device store-042/door-1" in text
    note = (script_dir / NOTE).read_text()
    assert note.startswith("anoncam: the first-boot install FAILED")
    assert "Step:     5. checking the offline bundle" in note and "When:     20" in note
    assert not (root / layout.OPT_DIR.lstrip("/")).exists()  # no venv, no models
    assert (root / layout.PASSWORD_PATH.lstrip("/")).read_text().strip() == password

    _rebundle(tmp_path, script_dir, _copy(native_bundle, tmp_path / "right-bundle"))
    _installed(_run_install(script_dir / "install.sh", root, bindir), script_dir)


@pytest.mark.slow
def test_a_bundle_missing_a_wheel_names_the_requirement_and_says_rebuild(
    tmp_path: Path, native_bundle: Path
) -> None:
    """A bundle without one of anoncam's dependencies (here paho-mqtt, which this machine's
    Python does not have either) fails in pip's offline install; the reason names what pip could
    not find instead of a line number, and the fix is a rebuilt, verified bundle."""
    incomplete = _copy(native_bundle, tmp_path / "incomplete-bundle")
    (wheel,) = (incomplete / "wheels").glob("paho_mqtt-*.whl")
    wheel.unlink()
    bundle_mod.seal(incomplete, pythons=[HERE], platform="native", model_file=_model(incomplete))
    script_dir, _ = _payload(tmp_path, incomplete)
    bindir, _ = _seam(tmp_path)
    root = _scratch_root(tmp_path)
    proc = _run_install(script_dir / "install.sh", root, bindir)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    for text in _said(proc, root, script_dir):
        assert (
            "The offline bundle is incomplete: its wheels/ folder has no wheel for paho-mqtt<"
            in text
        )
        assert ", which anoncam needs, for CPython" in text
        assert '(pip: "No matching distribution found for paho-mqtt' in text
        assert "anoncam provision bundle -o DIR" in text
        assert "anoncam provision verify CARD" in text
    assert "Step:     7. the venv and anoncam" in (script_dir / NOTE).read_text()

    _rebundle(tmp_path, script_dir, _copy(native_bundle, tmp_path / "complete-bundle"))
    _installed(_run_install(script_dir / "install.sh", root, bindir), script_dir)


def _du(path: Path) -> int:
    return sum(p.lstat().st_blocks * 512 for p in path.rglob("*"))


@pytest.mark.slow
def test_too_little_free_space_fails_before_writing_anything_big(
    tmp_path: Path, native_bundle: Path
) -> None:
    """The camera's root filesystem is a 16 MB tmpfs: the install must say how much is free and
    how much it needs before it makes the venv or copies a model, keep the secrets it already
    placed, and succeed once the filesystem is large enough; the estimate must cover what the
    install really took."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs as the camera's root filesystem needs root")
    script_dir, password = _payload(tmp_path, _copy(native_bundle, tmp_path / "bundle"))
    bindir, _ = _seam(tmp_path)
    mount = tmp_path / "root"
    mount.mkdir()
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=16m", "anoncam-test", str(mount)], check=True
    )
    try:
        root = _scratch_root(tmp_path)
        proc = _run_install(script_dir / "install.sh", root, bindir)
        assert proc.returncode == 1, proc.stdout + proc.stderr
        said = _said(proc, root, script_dir)
        found = re.search(r"(\d+) MB free, the install needs (\d+) MB", said[2])
        assert found, said[2]
        free_mb, want_mb = int(found[1]), int(found[2])
        assert free_mb <= 16 < want_mb
        for text in said:
            assert f"Not enough free space on {root} " in text
            assert f"{free_mb} MB free, the install needs {want_mb} MB" in text
            assert f"Free at least {want_mb - free_mb} MB on {root}" in text
            assert f"sudo bash {script_dir}/install.sh" in text
        assert not (root / layout.OPT_DIR.lstrip("/")).exists()
        st = os.statvfs(root)
        assert (st.f_blocks - st.f_bfree) * st.f_frsize < 1_000_000  # config, password, log
        assert (root / layout.PASSWORD_PATH.lstrip("/")).read_text().strip() == password
        assert not (script_dir / "credentials").exists()

        # A larger filesystem (as a larger card, or space freed): the same card installs.
        size = f"size={want_mb + 16}m"
        subprocess.run(["mount", "-o", f"remount,{size}", str(mount)], check=True)
        _installed(_run_install(script_dir / "install.sh", root, bindir), script_dir)
        used = _du(root / layout.OPT_DIR.lstrip("/"))
        log = (root / layout.FIRSTBOOT_LOG.lstrip("/")).read_text()
        ok = re.search(r"the install needs (\d+) MB \(venv (\d+) MB, models (\d+) MB", log)
        assert ok and int(ok[1]) <= want_mb
        assert used <= (int(ok[2]) + int(ok[3])) * 1_000_000  # the estimate is an upper bound
    finally:
        subprocess.run(["umount", str(mount)], check=True)


# --------------------------------------------------------------------------- firstrun.sh
def _firstrun_host(tmp: Path) -> tuple[Path, Path, Path]:
    """What firstrun.sh changes outside ROOT (it writes /etc, /var/log and the admin's home, as
    on a fresh Pi), redirected: a copy of /etc with the admin user as uid 1000, and an empty
    /var/log, both bind-mounted over the real ones in a mount namespace of the run's own."""
    etc, varlog, home = tmp / "host-etc", tmp / "host-var-log", tmp / "home" / "installer"
    subprocess.run(["cp", "-a", "/etc", str(etc)], check=True)
    for name, entry in (
        ("passwd", f"installer:x:1000:1000::{home}:/bin/bash"),
        ("group", "installer:x:1000:"),
    ):
        kept = [ln for ln in (etc / name).read_text().splitlines() if ln.split(":")[2] != "1000"]
        (etc / name).write_text("\n".join([*kept, entry]) + "\n")
    (etc / "sudoers.d").mkdir(exist_ok=True)  # Raspberry Pi OS has sudo; this machine may not
    (etc / "anoncam-test-etc").write_text("the bind mount is in place\n")
    varlog.mkdir()
    home.mkdir(parents=True)
    return etc, varlog, home


def _run_firstrun(
    boot: Path, root: Path, bindir: Path, etc: Path, varlog: Path
) -> subprocess.CompletedProcess[str]:
    # set -e before exec: if a bind mount failed, stop before firstrun.sh touches this machine.
    wrapper = (
        'set -eu; mount --bind "$1" /etc; mount --bind "$2" /var/log; '
        'test -f /etc/anoncam-test-etc; exec bash "$3"'
    )
    unshare = ["unshare", "--mount", "--propagation", "private", "--"]
    return subprocess.run(
        [*unshare, "bash", "-c", wrapper, "_", str(etc), str(varlog), str(boot / "firstrun.sh")],
        env=_clean_env(ROOT=str(root), PATH=f"{bindir}:{os.environ['PATH']}"),
        capture_output=True,
        text=True,
        timeout=600,
        cwd=root,
    )


@pytest.mark.slow
def test_firstrun_reports_a_failed_install_in_the_journal_and_a_rewritten_card_boots_again(
    tmp_path: Path, native_bundle: Path
) -> None:
    """firstrun.sh used to send everything to its log file only (the journal and the console saw
    nothing). Now its stdout (the journal under systemd.run) and the log both carry the install's
    reason; it exits 0 and leaves cmdline.txt without systemd.run (no boot loop); and running
    'provision image' on that card again re-arms cmdline.txt, rewrites the payload (the stale
    note goes) and the next first boot installs."""
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("firstrun.sh writes /etc and /var/log: it runs as root in a mount namespace")
    inv_path = write_fleet(tmp_path / "fleet")
    boot = tmp_path / "bootfs"
    boot.mkdir()
    (boot / "cmdline.txt").write_text(CMDLINE)
    wrong, other_tag = _bundle_for_the_other_python(native_bundle, tmp_path / "wrong-bundle")
    image = ["provision", "image", str(boot), "--inventory", str(inv_path)]
    image += ["--device", "store-042/door-1", "--first-boot", "firstrun"]
    assert main([*image, "--bundle", str(wrong)]) == 0
    armed = (boot / "cmdline.txt").read_text()
    bindir, _ = _seam(tmp_path)
    for name in ("usermod", "groupmod"):
        (bindir / name).write_text("#!/bin/sh\nexit 0\n")
        (bindir / name).chmod(0o755)
    root = _scratch_root(tmp_path)
    etc, varlog, home = _firstrun_host(tmp_path)

    proc = _run_firstrun(boot, root, bindir, etc, varlog)
    assert proc.returncode == 0, proc.stdout + proc.stderr  # always 0: reboot, not power off
    journal, log = _flat(proc.stdout), _flat((varlog / "anoncam-firstboot.log").read_text())
    assert proc.stderr == ""  # stderr joined stdout: one stream, in order
    assert f"the bundle was built for {other_tag} (" in journal  # install.sh's own output
    assert "anoncam firstrun: install exit code 1" in journal
    assert f"the install FAILED; the reason and what to do: {boot}/anoncam/{NOTE}" in journal
    assert "anoncam firstrun: install exit code 1" in log and "anoncam firstrun: done" in log
    install_log = _flat((root / layout.FIRSTBOOT_LOG.lstrip("/")).read_text())
    assert f"the bundle was built for {other_tag} (" in install_log
    assert install_log.count("What failed:") == 1  # once in the log, not once per copy
    assert f"the bundle was built for {other_tag} (" in _flat((boot / "anoncam" / NOTE).read_text())
    assert (boot / "cmdline.txt").read_text() == CMDLINE  # out of cmdline.txt: a normal next boot
    assert not (boot / "firstrun.sh").exists()
    assert (home / ".ssh" / "authorized_keys").read_text() == ssh_key() + "\n"  # reachable
    assert "NOPASSWD" in (etc / "sudoers.d" / "010_anoncam-admin").read_text()

    # The installer writes the card again, with the right bundle, and boots it again.
    right = _copy(native_bundle, tmp_path / "right-bundle")
    assert main([*image, "--bundle", str(right)]) == 0
    assert (boot / "cmdline.txt").read_text() == armed
    assert (boot / "firstrun.sh").is_file() and not (boot / "anoncam" / NOTE).exists()
    assert (boot / "anoncam" / "credentials" / layout.CREDENTIAL_NAME).is_file()
    verify = ["provision", "verify", str(boot), "--inventory", str(inv_path)]
    assert main([*verify, "--device", "store-042/door-1"]) == 0

    again = _run_firstrun(boot, root, bindir, etc, varlog)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "anoncam firstrun: install exit code 0" in again.stdout
    assert "done: anoncam.service is enabled" in again.stdout
    _installed(again, boot / "anoncam")
    assert (boot / "cmdline.txt").read_text() == CMDLINE and not (boot / "firstrun.sh").exists()
