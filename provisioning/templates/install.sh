#!/bin/bash
# anoncam first-boot install: turns a fresh Raspberry Pi OS into a counting camera, offline.
#
# Started once as root by firstrun.sh (Bookworm) or cloud-init's runcmd (Trixie) from the boot
# partition. Safe to run again by hand after fixing a problem:
#     sudo bash @@BOOT_MOUNT@@/@@PAYLOAD_DIR@@/install.sh
# It places config and credentials first, so the secrets leave the boot partition even when a
# later step fails. Then it checks the bundle against this system (its Python, the free space)
# before it writes anything big. ROOT (environment, empty on a camera) prefixes every path
# written; tests use it to run these steps in a scratch folder.
#
# When a step fails, INSTALL-FAILED.txt next to this script says when, what failed and what to
# do. It sits on the boot partition so that it can be read with the card in a laptop; the same
# text goes to stderr (the journal, under firstrun.sh) and to @@FIRSTBOOT_LOG@@. The next run
# that succeeds removes it.
set -Eeuo pipefail
umask 022
# The venv sees only itself and the system's packages: a caller's PYTHONPATH (sudo -E, a test)
# would make pip count packages as installed that the service will not find.
unset PYTHONPATH PYTHONHOME

PAYLOAD=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=${ROOT:-}

SERVICE_USER=@@SERVICE_USER@@
VENV=@@VENV_DIR@@
MODELS=@@MODELS_DIR@@
ETC=@@ETC_DIR@@
CREDS=@@CREDENTIALS_DIR@@
TLS=@@TLS_DIR@@
STATE=@@STATE_DIR@@
UNIT=@@UNIT_PATH@@
LOG="$ROOT@@FIRSTBOOT_LOG@@"
NOTE="$PAYLOAD/INSTALL-FAILED.txt"
# Kept free on top of what the install needs: logs, the outbox and apt must still fit after it.
RESERVE_MB=64

STEP="0. start"
REASON=""
FIX=""
WORK=""

mkdir -p "$(dirname "$LOG")"
log() {
    # Never the reason an install fails: a log that cannot be written still reaches stderr.
    printf '%s anoncam-install: %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$*" | tee -a "$LOG" >&2 || true
}

# fail REASON FIX: stop the install; the EXIT trap writes REASON and FIX in the note.
fail() {
    REASON=$1
    FIX=$2
    exit 1
}

release_of() {
    case "$1" in
@@PI_RELEASES@@
        *) printf 'an unknown release' ;;
    esac
}

card_command() {
    printf '    anoncam provision image CARD --inventory INVENTORY --device %s --bundle DIR' \
        "${ANONCAM_SITE:-SITE}/${ANONCAM_DEVICE:-DEVICE}"
}

# How a rewritten card gets its install run again: firstrun.sh is re-armed by 'provision image',
# cloud-init (which sets ANONCAM_START_NOW) runs a card's first boot only once.
boot_again() {
    printf "(CARD: the card's image file or its mounted boot partition.) Then put the card back\n"
    if [ "${ANONCAM_START_NOW:-0}" = 1 ]; then
        printf 'and power the camera on; cloud-init runs a first boot only once, so then run the\n'
        printf 'install by hand over SSH: sudo bash %s/install.sh' "$PAYLOAD"
    else
        printf 'and power the camera on: its first boot runs this install again.'
    fi
}

generic_fix() {
    printf 'Fix the cause (the command'"'"'s own error, printed just before this report on stderr:\n'
    printf 'the journal, at first boot), then run the install again on the camera:\n'
    printf '    sudo bash %s/install.sh\n' "$PAYLOAD"
    printf 'or write the card again on your laptop:\n%s\n%s' "$(card_command)" "$(boot_again)"
}

on_error() {
    # A command failed under set -e: name it, unless a check already said why.
    [ -n "$REASON" ] || REASON="Step $STEP failed: '$3' exited with status $1 (install.sh line $2)."
}

report() {
    local when
    when=$(date -u +%Y-%m-%dT%H:%M:%SZ)
    printf 'anoncam: the first-boot install FAILED. This camera is not counting yet.\n\n'
    printf 'When:     %s\n' "$when"
    printf 'Camera:   %s (host name %s)\n' "${ANONCAM_SITE:-?}/${ANONCAM_DEVICE:-?}" "${ANONCAM_HOSTNAME:-?}"
    printf 'Step:     %s\n\n' "$STEP"
    printf 'What failed:\n'
    printf '%s\n' "$REASON" | fold -s -w 94 | sed 's/ *$//; s/^/  /'
    printf '\nWhat to do:\n'
    printf '%s\n' "$FIX" | sed 's/^/  /'
    printf '\nLog of this install: @@FIRSTBOOT_LOG@@ on the camera.\n'
    printf 'To run the install again by hand on the camera: sudo bash %s/install.sh\n' "$PAYLOAD"
    printf 'This note is removed by the next install that succeeds.\n'
}

on_exit() {
    local status=$? text
    set +e
    [ -n "$WORK" ] && rm -rf "$WORK"
    [ "$status" = 0 ] && return 0
    [ -n "$REASON" ] || REASON="The install stopped with status $status during step $STEP."
    [ -n "$FIX" ] || FIX=$(generic_fix)
    text=$(report)
    log "FAILED during step $STEP; what to do is below and in $NOTE"
    printf '%s\n' "$text" | tee -a "$LOG" >&2
    if printf '%s\n' "$text" >"$NOTE.tmp" && mv -f "$NOTE.tmp" "$NOTE"; then
        sync
    else
        log "could not write $NOTE (is the boot partition read-only or full?)"
    fi
    exit "$status"
}
trap 'on_error $? $LINENO "$BASH_COMMAND"' ERR
trap on_exit EXIT
trap 'REASON=${REASON:-"The install was interrupted by a signal during step $STEP."}; exit 130' INT TERM HUP

# shellcheck source=/dev/null
. "$PAYLOAD/settings.env"
log "installing anoncam for $ANONCAM_SITE/$ANONCAM_DEVICE from $PAYLOAD"

# 1. The payload must be what 'provision image' wrote (a half-copied card fails here, not later).
#    Files already moved off the card by an earlier run are skipped.
STEP="1. checking the files on the boot partition"
if ! bad=$(cd "$PAYLOAD" && sha256sum --quiet --strict --ignore-missing -c SHA256SUMS 2>&1); then
    printf '%s\n' "$bad" | tee -a "$LOG" >&2
    fail "These files on the boot partition are not the ones 'anoncam provision image' wrote (a half-copied or edited card): $(printf '%s\n' "$bad" | sed -n 's/: FAILED.*//p' | tr '\n' ' ')" \
        "$(printf 'Write the card again on your laptop and check it before you boot it:\n%s\n    anoncam provision verify CARD --inventory INVENTORY --device %s\n%s' \
            "$(card_command)" "$ANONCAM_SITE/$ANONCAM_DEVICE" "$(boot_again)")"
fi

# 2. Host name and time zone, as plain files: this runs before D-Bus on Bookworm's first boot.
STEP="2. host name and time zone"
printf '%s\n' "$ANONCAM_HOSTNAME" >"$ROOT/etc/hostname"
if [ -f "$ROOT/etc/hosts" ] && grep -q '^127\.0\.1\.1' "$ROOT/etc/hosts"; then
    sed -i "s/^127\.0\.1\.1.*/127.0.1.1\t$ANONCAM_HOSTNAME/" "$ROOT/etc/hosts"
else
    printf '127.0.1.1\t%s\n' "$ANONCAM_HOSTNAME" >>"$ROOT/etc/hosts"
fi
hostnamectl set-hostname "$ANONCAM_HOSTNAME" 2>/dev/null ||
    log "hostnamectl not available yet; /etc/hostname takes effect at the next boot"
ln -sfn "/usr/share/zoneinfo/$ANONCAM_TIMEZONE" "$ROOT/etc/localtime"
printf '%s\n' "$ANONCAM_TIMEZONE" >"$ROOT/etc/timezone"
if [ -f "$PAYLOAD/timesyncd.conf" ]; then
    install -D -m 0644 "$PAYLOAD/timesyncd.conf" "$ROOT/etc/systemd/timesyncd.conf.d/anoncam.conf"
fi

# 3. The service user: no login, no home, camera access through group video.
STEP="3. the service user"
if ! getent passwd "$SERVICE_USER" >/dev/null; then
    useradd ${ROOT:+--prefix "$ROOT"} --system --user-group --groups video \
        --home-dir "$STATE" --no-create-home --shell /usr/sbin/nologin "$SERVICE_USER"
    log "created service user $SERVICE_USER"
fi

# 4. Config and credentials (0600, owned by the service user), then off the boot partition.
STEP="4. config and credentials"
install -d -m 0755 "$ROOT$ETC"
install -d -m 0700 "$ROOT$CREDS"
chown "$SERVICE_USER:$SERVICE_USER" "$ROOT$CREDS"
install -d -m 0750 "$ROOT$STATE"
chown "$SERVICE_USER:$SERVICE_USER" "$ROOT$STATE"
install -m 0600 "$PAYLOAD/config.toml" "$ROOT$ETC/config.toml"
chown "$SERVICE_USER:$SERVICE_USER" "$ROOT$ETC/config.toml"
if [ -d "$PAYLOAD/credentials" ]; then
    for secret in "$PAYLOAD"/credentials/*; do
        [ -f "$secret" ] || continue
        install -m 0600 "$secret" "$ROOT$CREDS/$(basename "$secret")"
        chown "$SERVICE_USER:$SERVICE_USER" "$ROOT$CREDS/$(basename "$secret")"
    done
    sync
    rm -rf "$PAYLOAD/credentials"
    log "credentials placed in $CREDS and removed from the boot partition"
fi
[ -s "$ROOT$CREDS/@@CREDENTIAL@@" ] ||
    fail "There is no MQTT password in $CREDS, and none on the boot partition." \
        "$(printf "Write the card again on your laptop (it takes the password from the fleet's\nsecret store):\n%s\n%s" "$(card_command)" "$(boot_again)")"
if [ -d "$PAYLOAD/tls" ]; then
    install -d -m 0755 "$ROOT$TLS"
    for cert in "$PAYLOAD"/tls/*; do
        [ -f "$cert" ] && install -m 0644 "$cert" "$ROOT$TLS/$(basename "$cert")"
    done
fi

# 5. Before anything big is written: the bundle must fit this system's Python and free space.
STEP="5. checking the offline bundle against this system"
BUNDLE="$PAYLOAD/bundle"
if [ ! -d "$BUNDLE" ] && [ ! -x "$ROOT$VENV/bin/anoncam" ]; then
    fail "The card has no offline bundle ($BUNDLE is missing) and anoncam is not installed yet." \
        "$(printf 'Write the card again on your laptop, with the bundle:\n%s\n%s' "$(card_command)" "$(boot_again)")"
fi
if [ -d "$BUNDLE" ]; then
    command -v python3 >/dev/null ||
        fail "There is no python3 on this system." \
            "Write Raspberry Pi OS Lite (64-bit), Bookworm or Trixie, to the card (it has python3),
then write this camera's card again:
$(card_command)
$(boot_again)"
    PY="$ROOT$VENV/bin/python"
    [ -x "$PY" ] || PY=python3
    TAG=$("$PY" -c 'import sys; print("cp%d%d" % sys.version_info[:2])')
    version="${TAG:2:1}.${TAG:3}"
    if [ ! -f "$BUNDLE/constraints-$TAG.txt" ]; then
        have=""
        for f in "$BUNDLE"/constraints-cp*.txt; do
            [ -f "$f" ] || continue
            t=${f##*/constraints-}
            t=${t%.txt}
            have="${have:+$have, }$t ($(release_of "$t"))"
        done
        fail "The offline bundle has no wheels for this camera's Python: the card runs CPython $version ($TAG, $(release_of "$TAG")), the bundle was built for ${have:-no Python at all (no constraints-*.txt)} only." \
            "On your laptop, build a bundle for this Python and write the card again with it:
    anoncam provision bundle --python $version -o DIR
$(card_command)
$(boot_again)
(Without --python, a bundle holds the wheels for both Bookworm (3.11) and Trixie (3.13).)"
    fi

    # What the install writes, from the bundle itself: each wheel's files as listed in its zip
    # directory, rounded up to 4 KiB blocks, .py files twice (pip compiles a .pyc for each), two
    # blocks per folder; plus the models. Measured: 186.9 MB estimated for the 184.7 MB (du) that
    # the aarch64 cp311 wheels take in a Bookworm venv, 272.2 MB for 271.9 MB on x86-64. It is
    # an upper bound: every wheel for this Python counts, also numpy, which pip skips when the
    # system's numpy fits. What an earlier run already installed is credited.
    SPACE=$(python3 - "$BUNDLE" "$TAG" "$ROOT$VENV" "$ROOT$MODELS" <<'PY'
import os
import sys
import zipfile
from pathlib import Path, PurePosixPath

bundle, tag, venv, models = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3]), Path(sys.argv[4])
BLOCK, MB = 4096, 1_000_000
minor = int(tag[3:])


def blocks(n: int) -> int:
    return -(-n // BLOCK) * BLOCK


def for_this_python(wheel: Path) -> bool:
    # name-version(-build)-pythons-abis-platforms.whl, each tag part dotted when compressed
    pythons, abis = wheel.name[: -len(".whl")].split("-")[-3:-1]
    for py in pythons.split("."):
        if py in ("py3", tag):
            return True
        if py.startswith("cp3") and "abi3" in abis.split(".") and int(py[3:]) <= minor:
            return True
    return False


def unpacked(wheel: Path) -> int:
    with zipfile.ZipFile(wheel) as z:
        files = [i for i in z.infolist() if not i.is_dir()]
    folders = {PurePosixPath(i.filename).parent for i in files}
    sizes = (blocks(i.file_size) * (2 if i.filename.endswith(".py") else 1) for i in files)
    return sum(sizes) + 2 * BLOCK * len(folders)


def used(path: Path) -> int:
    if not path.exists():
        return 0
    if path.is_file():
        return path.lstat().st_blocks * 512
    return sum(p.lstat().st_blocks * 512 for p in path.rglob("*"))


def filesystem(path: Path) -> tuple[int, Path]:
    while not path.exists():
        path = path.parent
    device = path.stat().st_dev
    while not os.path.ismount(path) and path != path.parent:
        path = path.parent
    return device, path


def mb(n: int) -> int:
    return -(-n // MB)


wheels = [
    w
    for w in sorted((bundle / "wheels").glob("*.whl"))
    if not w.name.startswith("pip-") and for_this_python(w)  # pip runs from its wheel
]
need_venv = max(0, sum(unpacked(w) for w in wheels) - used(venv))
need_models = sum(
    max(0, blocks(m.stat().st_size) - used(models / m.name))
    for m in sorted((bundle / "models").glob("*"))
    if m.is_file()
)
(venv_device, venv_mount), (models_device, models_mount) = filesystem(venv), filesystem(models)
rows = [(venv_mount, need_venv, need_models if models_device == venv_device else 0)]
if models_device != venv_device:
    rows.append((models_mount, 0, need_models))
for mount, for_venv, for_models in rows:
    st = os.statvfs(mount)
    free = st.f_bavail * st.f_frsize  # what is left without root's reserved blocks
    print(free // MB, mb(for_venv), mb(for_models), mount)  # the mount last: it may hold spaces
PY
    )
    while read -r free_mb venv_mb models_mb mount; do
        want_mb=$((venv_mb + models_mb + RESERVE_MB))
        if [ "$free_mb" -lt "$want_mb" ]; then
            fail "Not enough free space on $mount (the filesystem that holds $VENV and $MODELS): $free_mb MB free, the install needs $want_mb MB (anoncam and its dependencies unpacked: $venv_mb MB, the models: $models_mb MB, and $RESERVE_MB MB kept free for logs and the outbox). Nothing big was written yet." \
                "Free at least $((want_mb - free_mb)) MB on $mount, or use a larger card. To see what takes the room:
    sudo du -xh -d 2 $mount | sort -h | tail
('sudo apt-get clean' and 'sudo journalctl --vacuum-size=50M' free some.) Then run the install
again on the camera:
    sudo bash $PAYLOAD/install.sh"
        fi
        log "free space on $mount: $free_mb MB; the install needs $want_mb MB (venv $venv_mb MB, models $models_mb MB, $RESERVE_MB MB reserve)"
    done <<<"$SPACE"

    # 6. The models, read-only to the service, checked against the bundle's manifest.
    STEP="6. the models"
    install -d -m 0755 "$ROOT$MODELS"
    for model in "$BUNDLE"/models/*; do
        [ -f "$model" ] && install -m 0644 "$model" "$ROOT$MODELS/$(basename "$model")"
    done

    # 7. A venv that sees apt's picamera2 and numpy, and anoncam installed offline into it.
    #    --without-pip plus the bundled pip wheel: no ensurepip (python3-venv) and no network.
    STEP="7. the venv and anoncam, installed offline from the bundle"
    if [ ! -x "$ROOT$VENV/bin/python" ]; then
        python3 -m venv --system-site-packages --without-pip "$ROOT$VENV"
        log "created venv $VENV"
    fi
    PIP_WHEELS=("$BUNDLE"/wheels/pip-*.whl)
    # A clean pip environment: only the bundle, never an index or a pip.conf of this system.
    for var in $(compgen -e); do
        case "$var" in PIP_*) unset "$var" ;; esac
    done
    WORK=$(mktemp -d)
    if ! PIP_CONFIG_FILE=/dev/null PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1 \
        "$ROOT$VENV/bin/python" "${PIP_WHEELS[0]}/pip" install --no-index --no-cache-dir \
        --find-links "$BUNDLE/wheels" --constraint "$BUNDLE/constraints-$TAG.txt" \
        --upgrade --upgrade-strategy only-if-needed anoncam 2>&1 | tee -a "$LOG" "$WORK/pip.out"; then
        missing=$(sed -n 's/^ERROR: No matching distribution found for //p' "$WORK/pip.out" | head -n 1)
        if [ -n "$missing" ]; then
            requirement=${missing%% (from *} # pip: "paho-mqtt<3,>=2.0 (from anoncam)"
            wanted_by=""
            if [[ $missing == *" (from "*")" ]]; then
                wanted_by=${missing#* (from }
                wanted_by=${wanted_by%)}
            fi
            fail "The offline bundle is incomplete: its wheels/ folder has no wheel for $requirement${wanted_by:+, which $wanted_by needs,} for CPython $version ($TAG) (pip: \"No matching distribution found for $missing\")." \
                "On your laptop, build the bundle again, write the card with it and check the card:
    anoncam provision bundle -o DIR
$(card_command)
    anoncam provision verify CARD --inventory INVENTORY --device $ANONCAM_SITE/$ANONCAM_DEVICE
$(boot_again)"
        fi
        if grep -q 'No space left on device' "$WORK/pip.out"; then
            fail "The disk filled up while pip installed anoncam into $VENV (pip: \"No space left on device\")." \
                "Free space on the camera's root filesystem (df -h /; 'sudo apt-get clean' and
'sudo journalctl --vacuum-size=50M' free some) or use a larger card, then run the install again:
    sudo bash $PAYLOAD/install.sh"
        fi
        fail "pip could not install anoncam from the bundle: $(grep '^ERROR:' "$WORK/pip.out" | tail -n 1 || echo 'see its output in the log')" \
            "$(generic_fix)"
    fi
    log "installed $("$ROOT$VENV/bin/anoncam" --version)"
fi

# 8. The installed anoncam must read the config it will run with.
STEP="8. the config, read by the installed anoncam"
"$ROOT$VENV/bin/python" -c 'import sys; import firmware.config.settings as c; c.load(sys.argv[1])' "$ROOT$ETC/config.toml"

# 9. The service: installed, enabled, and started now when the system is already up (cloud-init).
STEP="9. the service"
install -D -m 0644 "$PAYLOAD/@@SERVICE_NAME@@" "$ROOT$UNIT"
systemctl ${ROOT:+--root="$ROOT"} enable @@SERVICE_NAME@@
if [ "${ANONCAM_START_NOW:-0}" = 1 ]; then
    systemctl daemon-reload
    systemctl start --no-block @@SERVICE_NAME@@
fi

# 10. Free the boot partition (kernel updates need the room); leave a note of what happened.
STEP="10. freeing the boot partition"
rm -rf "$BUNDLE"
rm -f "$NOTE"
printf 'installed %s on %s\n' "$ANONCAM_SITE/$ANONCAM_DEVICE" "$(date -u +%Y-%m-%dT%H:%M:%SZ)" >"$PAYLOAD/INSTALLED"
sync
log "done: @@SERVICE_NAME@@ is enabled; follow it with: journalctl -u @@SERVICE_NAME@@ -f"
