#!/bin/bash
# anoncam first-boot install: turns a fresh Raspberry Pi OS into a counting camera, offline.
#
# Started once as root by firstrun.sh (Bookworm) or cloud-init's runcmd (Trixie) from the boot
# partition. Safe to run again by hand after fixing a problem:
#     sudo bash @@BOOT_MOUNT@@/@@PAYLOAD_DIR@@/install.sh
# It places config and credentials first, so the secrets leave the boot partition even when a
# later step fails. ROOT (environment, empty on a camera) prefixes every path written; tests use
# it to run these steps in a scratch folder.
set -Eeuo pipefail
umask 022
# The venv sees only itself and the system's packages: a caller's PYTHONPATH (sudo -E, a test)
# would make pip count packages as installed that the service will not find.
unset PYTHONPATH PYTHONHOME

PAYLOAD=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=${ROOT:-}
# shellcheck source=/dev/null
. "$PAYLOAD/settings.env"

SERVICE_USER=@@SERVICE_USER@@
VENV=@@VENV_DIR@@
MODELS=@@MODELS_DIR@@
ETC=@@ETC_DIR@@
CREDS=@@CREDENTIALS_DIR@@
TLS=@@TLS_DIR@@
STATE=@@STATE_DIR@@
UNIT=@@UNIT_PATH@@
LOG="$ROOT@@FIRSTBOOT_LOG@@"

mkdir -p "$(dirname "$LOG")"
log() {
    printf '%s anoncam-install: %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$*" | tee -a "$LOG" >&2
}
trap 'log "FAILED at line $LINENO; the camera is not counting yet. Fix the cause, then run: sudo bash $PAYLOAD/install.sh"' ERR

log "installing anoncam for $ANONCAM_SITE/$ANONCAM_DEVICE from $PAYLOAD"

# 1. The payload must be what 'provision image' wrote (a half-copied card fails here, not later).
#    Files already moved off the card by an earlier run are skipped.
(cd "$PAYLOAD" && sha256sum --quiet --strict --ignore-missing -c SHA256SUMS)

# 2. Host name and time zone, as plain files: this runs before D-Bus on Bookworm's first boot.
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
if ! getent passwd "$SERVICE_USER" >/dev/null; then
    useradd ${ROOT:+--prefix "$ROOT"} --system --user-group --groups video \
        --home-dir "$STATE" --no-create-home --shell /usr/sbin/nologin "$SERVICE_USER"
    log "created service user $SERVICE_USER"
fi

# 4. Config and credentials (0600, owned by the service user), then off the boot partition.
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
[ -s "$ROOT$CREDS/@@CREDENTIAL@@" ] || { log "no MQTT password in $CREDS"; false; }
if [ -d "$PAYLOAD/tls" ]; then
    install -d -m 0755 "$ROOT$TLS"
    for cert in "$PAYLOAD"/tls/*; do
        [ -f "$cert" ] && install -m 0644 "$cert" "$ROOT$TLS/$(basename "$cert")"
    done
fi

# 5. The model, read-only to the service, checked against the bundle's manifest.
BUNDLE="$PAYLOAD/bundle"
if [ -d "$BUNDLE" ]; then
    install -d -m 0755 "$ROOT$MODELS"
    for model in "$BUNDLE"/models/*; do
        [ -f "$model" ] && install -m 0644 "$model" "$ROOT$MODELS/$(basename "$model")"
    done

    # 6. A venv that sees apt's picamera2 and numpy, and anoncam installed offline into it.
    #    --without-pip plus the bundled pip wheel: no ensurepip (python3-venv) and no network.
    if [ ! -x "$ROOT$VENV/bin/python" ]; then
        python3 -m venv --system-site-packages --without-pip "$ROOT$VENV"
        log "created venv $VENV"
    fi
    TAG=$("$ROOT$VENV/bin/python" -c 'import sys; print("cp%d%d" % sys.version_info[:2])')
    if [ ! -f "$BUNDLE/constraints-$TAG.txt" ]; then
        log "the bundle has no wheels for this Python ($TAG); rebuild it with 'anoncam provision bundle --python'"
        false
    fi
    PIP_WHEELS=("$BUNDLE"/wheels/pip-*.whl)
    # A clean pip environment: only the bundle, never an index or a pip.conf of this system.
    for var in $(compgen -e); do
        case "$var" in PIP_*) unset "$var" ;; esac
    done
    PIP_CONFIG_FILE=/dev/null PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1 \
        "$ROOT$VENV/bin/python" "${PIP_WHEELS[0]}/pip" install --no-index --no-cache-dir \
        --find-links "$BUNDLE/wheels" --constraint "$BUNDLE/constraints-$TAG.txt" \
        --upgrade --upgrade-strategy only-if-needed anoncam 2>&1 | tee -a "$LOG"
    log "installed $("$ROOT$VENV/bin/anoncam" --version)"
fi
"$ROOT$VENV/bin/python" -c 'import sys; import firmware.config.settings as c; c.load(sys.argv[1])' "$ROOT$ETC/config.toml"

# 7. The service: installed, enabled, and started now when the system is already up (cloud-init).
install -D -m 0644 "$PAYLOAD/@@SERVICE_NAME@@" "$ROOT$UNIT"
systemctl ${ROOT:+--root="$ROOT"} enable @@SERVICE_NAME@@
if [ "${ANONCAM_START_NOW:-0}" = 1 ]; then
    systemctl daemon-reload
    systemctl start --no-block @@SERVICE_NAME@@
fi

# 8. Free the boot partition (kernel updates need the room); leave a note of what happened.
rm -rf "$BUNDLE"
printf 'installed %s on %s\n' "$ANONCAM_SITE/$ANONCAM_DEVICE" "$(date -u +%Y-%m-%dT%H:%M:%SZ)" >"$PAYLOAD/INSTALLED"
sync
log "done: @@SERVICE_NAME@@ is enabled; follow it with: journalctl -u @@SERVICE_NAME@@ -f"
