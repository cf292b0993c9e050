#!/bin/bash
# anoncam first boot for Raspberry Pi OS Bookworm, written by 'anoncam provision image'.
#
# cmdline.txt starts it once, as Raspberry Pi Imager's firstrun.sh is started:
#   systemd.run=@@BOOT_MOUNT@@/firstrun.sh systemd.run_success_action=reboot
#   systemd.unit=kernel-command-line.target
# It sets up the admin login (SSH key only) and optional Wi-Fi with Raspberry Pi OS's own tools,
# runs the anoncam install, then removes itself from cmdline.txt and the boot partition. It
# always exits 0 so the Pi reboots into a normal system that a field tech can reach over SSH, even
# when the install failed (the reason is in @@FIRSTBOOT_LOG@@).
set +e

BOOT=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
exec >>@@FIRSTBOOT_LOG@@ 2>&1
echo "anoncam firstrun: start $(date -u +%Y-%m-%dT%H:%M:%SZ) from $BOOT"

ADMIN_USER=@@ADMIN_USER@@
SSH_KEYS=(
@@SSH_KEYS@@
)
WIFI_SSID=@@WIFI_SSID@@
WIFI_PSK=@@WIFI_PSK@@
WIFI_COUNTRY=@@WIFI_COUNTRY@@
WIFI_HIDDEN=@@WIFI_HIDDEN@@
IMAGER_CUSTOM=/usr/lib/raspberrypi-sys-mods/imager_custom

# The admin user takes over the first user (uid 1000), as Imager does; '!' means no password:
# login with the SSH key only. userconf also stops the first-boot user wizard.
if [ -x /usr/lib/userconf-pi/userconf ]; then
    /usr/lib/userconf-pi/userconf "$ADMIN_USER" '!'
else
    FIRSTUSER=$(getent passwd 1000 | cut -d: -f1)
    if [ -z "$FIRSTUSER" ]; then
        useradd -m -u 1000 -s /bin/bash -G sudo,video,adm "$ADMIN_USER"
    elif [ "$FIRSTUSER" != "$ADMIN_USER" ]; then
        usermod -l "$ADMIN_USER" "$FIRSTUSER"
        usermod -m -d "/home/$ADMIN_USER" "$ADMIN_USER"
        groupmod -n "$ADMIN_USER" "$FIRSTUSER"
    fi
    usermod -p '!' "$ADMIN_USER"
    systemctl disable userconfig.service 2>/dev/null
    systemctl enable getty@tty1.service 2>/dev/null
fi
printf '%s ALL=(ALL) NOPASSWD: ALL\n' "$ADMIN_USER" >/etc/sudoers.d/010_anoncam-admin
chmod 0440 /etc/sudoers.d/010_anoncam-admin

ADMIN_HOME=$(getent passwd "$ADMIN_USER" | cut -d: -f6)
install -d -m 0700 -o "$ADMIN_USER" -g "$ADMIN_USER" "$ADMIN_HOME/.ssh"
printf '%s\n' "${SSH_KEYS[@]}" >"$ADMIN_HOME/.ssh/authorized_keys"
chown "$ADMIN_USER:$ADMIN_USER" "$ADMIN_HOME/.ssh/authorized_keys"
chmod 0600 "$ADMIN_HOME/.ssh/authorized_keys"
install -d -m 0755 /etc/ssh/sshd_config.d
printf 'PasswordAuthentication no\nKbdInteractiveAuthentication no\n' >/etc/ssh/sshd_config.d/10-anoncam.conf
systemctl enable ssh

if [ -n "$WIFI_SSID" ]; then
    if [ -x "$IMAGER_CUSTOM" ]; then
        if [ "$WIFI_HIDDEN" = 1 ]; then
            "$IMAGER_CUSTOM" set_wlan -h "$WIFI_SSID" "$WIFI_PSK" "$WIFI_COUNTRY"
        else
            "$IMAGER_CUSTOM" set_wlan "$WIFI_SSID" "$WIFI_PSK" "$WIFI_COUNTRY"
        fi
    else
        CONN=/etc/NetworkManager/system-connections/anoncam-wifi.nmconnection
        HIDDEN=false
        [ "$WIFI_HIDDEN" = 1 ] && HIDDEN=true
        printf '[connection]\nid=anoncam-wifi\ntype=wifi\n[wifi]\nmode=infrastructure\nssid=%s\nhidden=%s\n[wifi-security]\nkey-mgmt=wpa-psk\npsk=%s\n[ipv4]\nmethod=auto\n[ipv6]\nmethod=auto\n' \
            "$WIFI_SSID" "$HIDDEN" "$WIFI_PSK" >"$CONN"
        chmod 0600 "$CONN"
        raspi-config nonint do_wifi_country "$WIFI_COUNTRY"
    fi
    rfkill unblock wifi
    for f in /var/lib/systemd/rfkill/*:wlan; do
        [ -e "$f" ] && echo 0 >"$f"
    done
fi

bash "$BOOT/@@PAYLOAD_DIR@@/install.sh"
echo "anoncam firstrun: install exit code $?"

# Run once: take ourselves out of cmdline.txt (it stays one line) and off the boot partition.
sed -i 's| systemd\.run=[^ ]*||g; s| systemd\.run_success_action=[^ ]*||g; s| systemd\.unit=kernel-command-line\.target||g' "$BOOT/cmdline.txt"
rm -f "$BOOT/firstrun.sh"
sync
echo "anoncam firstrun: done $(date -u +%Y-%m-%dT%H:%M:%SZ)"
exit 0
