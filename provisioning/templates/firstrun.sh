#!/bin/bash
# anoncam first boot for Raspberry Pi OS Bookworm, written by 'anoncam provision image'.
#
# cmdline.txt starts it once, as Raspberry Pi Imager's firstrun.sh is started:
#   systemd.run=@@BOOT_MOUNT@@/firstrun.sh systemd.run_success_action=reboot
#   systemd.unit=kernel-command-line.target
# It sets up the admin login (SSH key only) and optional Wi-Fi with Raspberry Pi OS's own tools,
# runs the anoncam install, then removes itself from cmdline.txt and the boot partition.
#
# Output goes to @@FIRSTBOOT_LOG@@ and to stdout, which systemd-run-generator's
# kernel-command-line.service sends to the journal and the console (StandardOutput=
# journal+console): a monitor on the Pi shows a failure as it happens. install.sh appends its own
# lines to the same log, so its output bypasses this script's copy (fd 3): once in each.
#
# When the install fails, this script still exits 0 and still takes itself out of cmdline.txt,
# so the Pi reboots into a normal system that a field tech can reach over SSH (the admin login is
# set up before the install). Staying in cmdline.txt would retry nothing useful:
# systemd.unit=kernel-command-line.target boots into this script alone and the success action
# reboots, so a card whose install cannot succeed (a wrong or incomplete bundle, a full disk)
# would reboot in a loop, out of reach; a non-zero exit would take systemd.run's failure action
# instead of the reboot. It removes itself from the boot partition either way: it holds the
# Wi-Fi key. The reason and what to do are in @@PAYLOAD_DIR@@/INSTALL-FAILED.txt on the boot
# partition (readable with the card in a laptop) and in the log. Then either
#   - fix the cause on the camera and run: sudo bash @@BOOT_MOUNT@@/@@PAYLOAD_DIR@@/install.sh
#   - or put the card in a laptop and run 'anoncam provision image' on it again: it rewrites
#     @@PAYLOAD_DIR@@/ and this script and re-arms cmdline.txt, so the next boot runs this script
#     once more.
set +e

BOOT=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
NOTE="$BOOT/@@PAYLOAD_DIR@@/INSTALL-FAILED.txt"

firstrun() {
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

    bash "$BOOT/@@PAYLOAD_DIR@@/install.sh" >&3 2>&3
    STATUS=$?
    echo "anoncam firstrun: install exit code $STATUS"
    if [ "$STATUS" != 0 ]; then
        echo "anoncam firstrun: the install FAILED; the reason and what to do: $NOTE (on the boot partition)"
        if [ ! -f "$NOTE" ]; then
            # install.sh did not get as far as its own note (missing, damaged, killed).
            mkdir -p "$(dirname "$NOTE")"
            printf '%s\n' \
                "anoncam: the first-boot install FAILED (exit code $STATUS) before it could say why." \
                "" \
                "When:     $(date -u +%Y-%m-%dT%H:%M:%SZ)" \
                "" \
                "What to do:" \
                "  See @@FIRSTBOOT_LOG@@ on the camera. If @@PAYLOAD_DIR@@/install.sh is missing or damaged," \
                "  write the card again on your laptop and boot it again:" \
                "      anoncam provision image CARD --inventory INVENTORY --device SITE/DEVICE --bundle DIR" \
                "  Otherwise fix the cause and run: sudo bash @@BOOT_MOUNT@@/@@PAYLOAD_DIR@@/install.sh" >"$NOTE"
        fi
    fi

    # Run once: take ourselves out of cmdline.txt (it stays one line) and off the boot partition.
    sed -i 's| systemd\.run=[^ ]*||g; s| systemd\.run_success_action=[^ ]*||g; s| systemd\.unit=kernel-command-line\.target||g' "$BOOT/cmdline.txt"
    rm -f "$BOOT/firstrun.sh"
    sync
    echo "anoncam firstrun: done $(date -u +%Y-%m-%dT%H:%M:%SZ)"
}

# --output-error=warn: a log that cannot be written never stops the copy to the journal.
exec 3>&1
firstrun 2>&1 | tee -a --output-error=warn @@FIRSTBOOT_LOG@@
exit 0
