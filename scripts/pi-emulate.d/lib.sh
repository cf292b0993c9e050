# shellcheck shell=bash
# shellcheck disable=SC2034  # settings used by scripts/pi-emulate, which sources this file
# Settings and steps of scripts/pi-emulate (sourced, not run): host tools, the cached arm64
# root filesystem, chroot mounts, and the disk image and qemu boot.
#
# Everything big lives in CACHE, outside the repository: a second run only unpacks the rootfs.

CACHE=${ANONCAM_PI_CACHE:-/var/cache/anoncam-pi-emulate}
WORK=$CACHE/work
D=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$D/../.." && pwd)
# Debian release and architecture of Raspberry Pi OS Bookworm 64-bit.
SUITE=bookworm
ARCH=arm64
MIRROR=${ANONCAM_PI_MIRROR:-http://deb.debian.org/debian}
SECURITY_MIRROR=${ANONCAM_PI_SECURITY_MIRROR:-http://deb.debian.org/debian-security}

# What Raspberry Pi OS Lite gives anoncam (python3 3.11, python3-venv, python3-numpy 1.24,
# systemd, ssh) plus a generic arm64 kernel for qemu's "virt" machine.
PACKAGES=(
    python3 python3-venv python3-numpy
    systemd systemd-sysv udev kmod dbus
    openssh-server sudo
    iproute2 e2fsprogs dosfstools
    linux-image-arm64
)
HOST_PACKAGES=(qemu-user-static qemu-system-arm binfmt-support mmdebstrap arch-test
    mtools dosfstools e2fsprogs fdisk zstd mosquitto socat openssh-client)

log() { printf '%s pi-emulate: %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() {
    log "error: $1"
    [ -z "${2:-}" ] || log "fix: $2"
    exit 1
}

# Run a command; log how long it took and record it in $WORK/timings.tsv.
timed() {
    local what=$1 start secs
    shift
    start=$(date +%s.%N)
    "$@"
    secs=$(awk -v s="$start" -v e="$(date +%s.%N)" 'BEGIN { printf "%.1f", e - s }')
    log "TIME $what: $secs s"
    printf '%s\t%s\n' "$what" "$secs" >>"$WORK/timings.tsv"
}

# The cache key: anything that changes the rootfs changes it. ANONCAM_PI_EPOCH forces a rebuild
# (e.g. to pick up security updates) without changing anything else.
cache_key() {
    {
        printf '%s\n' "$SUITE" "$ARCH" "$MIRROR" "${PACKAGES[@]}" "${ANONCAM_PI_EPOCH:-1}"
        declare -f build_rootfs
        cat "$D/rootfs-customize.sh"
    } | sha256sum | cut -c1-16
}
rootfs_tar() { printf '%s/rootfs-%s-%s-%s.tar.zst' "$CACHE" "$SUITE" "$ARCH" "$(cache_key)"; }

# Host tools (apt, only what is missing), binfmt_misc and qemu-aarch64 for the chroot.
host_setup() {
    [ "$(id -u)" = 0 ] || die "pi-emulate needs root (chroot, mounts, binfmt_misc)" \
        "run it as root: sudo scripts/pi-emulate $*"
    local missing=() p
    for p in "${HOST_PACKAGES[@]}"; do
        dpkg-query -W -f '${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        command -v apt-get >/dev/null || die "missing host tools: ${missing[*]}" \
            "install them with your package manager (pi-emulate expects Debian or Ubuntu)"
        log "installing host tools with apt: ${missing[*]}"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        # No recommends: qemu-system-arm would pull in a GUI and firmware (hundreds of MB).
        apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
    fi
    if [ ! -e /proc/sys/fs/binfmt_misc/status ]; then
        log "mounting binfmt_misc"
        mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc ||
            die "binfmt_misc is not available" \
                "run: mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc (a container needs --privileged)"
    fi
    if [ ! -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]; then
        log "registering qemu-aarch64 with binfmt_misc"
        update-binfmts --enable qemu-aarch64 2>/dev/null || update-binfmts --import qemu-aarch64 ||
            true
    fi
    grep -q '^enabled' /proc/sys/fs/binfmt_misc/qemu-aarch64 2>/dev/null ||
        die "qemu-aarch64 is not registered with binfmt_misc: arm64 programs cannot run" \
            "run: update-binfmts --enable qemu-aarch64 (package qemu-user-static)"
}

# mmdebstrap in root mode: one apt run, only the package scripts run under qemu-user. The
# essential hooks divert update-initramfs (the kernel's postinst and the initramfs trigger would
# each run mkinitramfs for minutes under emulation); rootfs-customize.sh builds it once.
build_rootfs() {
    local dir=$1 include
    include=$(IFS=,; echo "${PACKAGES[*]}")
    # shellcheck disable=SC2016  # $1 is expanded by mmdebstrap's hook shell
    mmdebstrap --mode=root --arch="$ARCH" --variant=minbase --include="$include" \
        --aptopt='Acquire::Languages "none"' \
        --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/doc/*' \
        --dpkgopt='path-include=/usr/share/doc/*/copyright' \
        --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-exclude=/usr/share/info/*' \
        --essential-hook='chroot "$1" dpkg-divert --quiet --local --rename --add /usr/sbin/update-initramfs' \
        --essential-hook='printf "#!/bin/sh\necho pi-emulate: update-initramfs deferred\n" >"$1/usr/sbin/update-initramfs"; chmod 755 "$1/usr/sbin/update-initramfs"' \
        --customize-hook="\"$D/rootfs-customize.sh\" \"\$1\"" \
        "$SUITE" "$dir" \
        "deb $MIRROR $SUITE main" "deb $MIRROR $SUITE-updates main" \
        "deb $SECURITY_MIRROR $SUITE-security main"
}

# The rootfs tarball: built once (a cache miss), then reused. Prints nothing; sets TAR.
ensure_rootfs() {
    TAR=$(rootfs_tar)
    if [ -s "$TAR" ]; then
        log "rootfs cache hit: $TAR"
        return
    fi
    log "rootfs cache miss: building $TAR (Debian $SUITE $ARCH, about 7-10 min on 2 cores)"
    local build=$WORK/build-$$
    rm -rf "$build"
    timed "rootfs build (mmdebstrap)" build_rootfs "$build" >"$WORK/rootfs-build.log" 2>&1 ||
        { tail -20 "$WORK/rootfs-build.log" >&2; rm -rf "$build"; die "the rootfs build failed (log: $WORK/rootfs-build.log)" "check access to $MIRROR, then run again"; }
    # Numeric owners and xattrs (file capabilities) must survive the round trip.
    tar -C "$build" --numeric-owner --xattrs --xattrs-include='*' -I 'zstd -T0 -3' \
        -cf "$TAR.tmp" .
    mv "$TAR.tmp" "$TAR"
    rm -rf "$build"
    log "cached $TAR ($(du -h "$TAR" | cut -f1))"
}

# A fresh copy of the cached rootfs in $1 (about 3 s).
unpack_rootfs() {
    rm -rf "$1"
    mkdir -p "$1"
    tar -C "$1" --numeric-owner --xattrs --xattrs-include='*' -I zstd -xpf "$TAR"
}

# Chroot mounts: /proc and /dev only. NOT /sys: with the host's /sys (x86 CPU topology) and
# /proc/cpuinfo, onnxruntime's cpuinfo crashes at import under qemu-user (SIGSEGV); without it
# onnxruntime only warns. umount_all undoes them (the trap calls it whatever happens).
MOUNTS=()
mount_chroot() {
    mount -t proc proc "$1/proc" && MOUNTS+=("$1/proc")
    mount --bind /dev "$1/dev" && MOUNTS+=("$1/dev")
}
umount_all() {
    local i
    for ((i = ${#MOUNTS[@]} - 1; i >= 0; i--)); do umount -l "${MOUNTS[$i]}" || true; done
    MOUNTS=()
}
