#!/usr/bin/env bash
# Makes a bare Debian arm64 rootfs look like Raspberry Pi OS Bookworm Lite where anoncam's
# first boot cares, and bootable on qemu's "virt" machine. Run as root with the rootfs
# directory as $1, after the packages are installed (an mmdebstrap --customize-hook of
# lib.sh's build_rootfs). Commands inside the rootfs run through qemu-user (binfmt).
#
# What Raspberry Pi OS has and this rootfs mimics:
#   - the FAT boot partition mounted at /boot/firmware (fstab by PARTUUID, as pi-gen writes it)
#   - a first user with uid 1000 (pi-gen's FIRST_USER_NAME, "pi"), which firstrun.sh renames
#   - ssh installed but disabled until first boot enables it (Imager's "enable SSH")
#   - host name "raspberrypi"
# What differs (no Raspberry Pi packages exist in Debian):
#   - no raspberrypi-sys-mods (so no init=/usr/lib/raspberrypi-sys-mods/firstboot, no
#     imager_custom), no userconf-pi, no raspi-config, no NetworkManager: firstrun.sh takes
#     its fallback branches (useradd/usermod, NetworkManager keyfile)
#   - networking is systemd-networkd with DHCP on any wired interface (qemu's user network)
set -euo pipefail
ROOT=${1:?usage: rootfs-customize.sh ROOTFS_DIR}
# The disk identifier of the card image (the boot path writes it into the MBR): PARTUUIDs are
# DISKID-01 (boot) and DISKID-02 (root), as on a flashed Raspberry Pi OS card.
DISKID=${ANONCAM_PI_DISKID:-414e4f4e}

in_root() { chroot "$ROOT" "$@"; }

# The initramfs, made once. lib.sh (build_rootfs) diverts update-initramfs to a no-op while the packages
# install: otherwise mkinitramfs runs twice under qemu-user (the kernel's postinst, then
# initramfs-tools' trigger), about 8 minutes each with MODULES=most on a 2-core machine.
# INITRD_MODULES=list (default) puts only what qemu's virt machine needs to mount the root
# filesystem into it; =most is Debian's default (every storage/fs driver, ~900 modules, 35 MB).
INITRD_MODULES=${INITRD_MODULES:-list}
if in_root dpkg-divert --list /usr/sbin/update-initramfs | grep -q .; then
    rm -f "$ROOT/usr/sbin/update-initramfs"
    in_root dpkg-divert --quiet --local --rename --remove /usr/sbin/update-initramfs
fi
regenerate=0
if [ "$INITRD_MODULES" = list ] && ! grep -q '^virtio_blk' "$ROOT/etc/initramfs-tools/modules"; then
    printf 'MODULES=list\n' >"$ROOT/etc/initramfs-tools/conf.d/pi-emulate.conf"
    # virtio (PCI and MMIO transports), the disk, ext4 and the checksum its metadata uses.
    printf '%s\n' virtio_pci virtio_mmio virtio_blk ext4 crc32c_generic \
        >>"$ROOT/etc/initramfs-tools/modules"
    regenerate=1
fi
if ! compgen -G "$ROOT/boot/initrd.img-*" >/dev/null; then
    in_root update-initramfs -c -k all
elif [ "$regenerate" = 1 ]; then
    in_root update-initramfs -u -k all # the packages' scripts already made one
fi

echo raspberrypi >"$ROOT/etc/hostname"
printf '127.0.0.1\tlocalhost\n::1\t\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\traspberrypi\n' \
    >"$ROOT/etc/hosts"

install -d "$ROOT/boot/firmware"
cat >"$ROOT/etc/fstab" <<EOF
# As on Raspberry Pi OS Bookworm: the FAT partition at /boot/firmware, root by PARTUUID.
proc                  /proc           proc    defaults          0       0
PARTUUID=$DISKID-01  /boot/firmware  vfat    defaults          0       2
PARTUUID=$DISKID-02  /               ext4    defaults,noatime  0       1
EOF

# DHCP on the first wired interface (qemu user networking hands out 10.0.2.15).
install -d "$ROOT/etc/systemd/network"
cat >"$ROOT/etc/systemd/network/20-wired.network" <<'EOF'
[Match]
Name=en* eth*

[Network]
DHCP=ipv4
EOF
in_root systemctl enable systemd-networkd.service
# qemu's slirp DNS; there is no internet anyway, this only avoids resolver timeouts.
rm -f "$ROOT/etc/resolv.conf"
echo 'nameserver 10.0.2.3' >"$ROOT/etc/resolv.conf"

# Raspberry Pi OS ships ssh disabled; Imager's firstrun.sh (and ours) enables it.
in_root systemctl disable ssh.service 2>/dev/null || true

# The first user, as pi-gen creates it (locked password: firstrun.sh takes it over).
if ! in_root getent passwd 1000 >/dev/null; then
    in_root useradd -m -u 1000 -s /bin/bash -G sudo,video,adm pi
    in_root usermod -p '!' pi
fi
# Emulation only: root logs in on the serial console without a password, for debugging.
in_root passwd -d root >/dev/null

# network-online.target (anoncam.service and systemd.run= units wait for it) is reached as soon
# as any interface is up, and never blocks boot for more than 30 s.
install -d "$ROOT/etc/systemd/system/systemd-networkd-wait-online.service.d"
printf '[Service]\nExecStart=\nExecStart=/lib/systemd/systemd-networkd-wait-online --any --timeout=30\n' \
    >"$ROOT/etc/systemd/system/systemd-networkd-wait-online.service.d/any.conf"

# No apt lists or downloaded .debs in the cache tarball (they are ~60 MB).
rm -rf "$ROOT"/var/lib/apt/lists/* "$ROOT"/var/cache/apt/*.bin "$ROOT"/var/cache/apt/archives/*.deb
