"""Where things live on a provisioned camera and on its boot partition.

One module so the config writer, the systemd unit, the first-boot script and ``verify`` agree on
every path. The service reads its config from ``/etc/anoncam``, keeps state (the outbox) in
``/var/lib/anoncam`` (the only writable path under the unit's ``ProtectSystem=strict``), and runs
from a venv under ``/opt/anoncam``; the model sits next to it, read-only to the service.
"""

from __future__ import annotations

from typing import Final

from firmware.mqtt.connect import CREDENTIAL_NAME as FIRMWARE_CREDENTIAL_NAME
from firmware.mqtt.connect import INSTALLED_CREDENTIALS

SERVICE_USER: Final = "anoncam"
SERVICE_NAME: Final = "anoncam.service"

ETC_DIR: Final = "/etc/anoncam"
CONFIG_PATH: Final = "/etc/anoncam/config.toml"
CREDENTIALS_DIR: Final = str(INSTALLED_CREDENTIALS)  # one copy: firmware reads it too
PASSWORD_PATH: Final = f"{CREDENTIALS_DIR}/{FIRMWARE_CREDENTIAL_NAME}"
CLIENT_KEY_PATH: Final = "/etc/anoncam/credentials/mqtt-client.key"
TLS_DIR: Final = "/etc/anoncam/tls"
BROKER_CA_PATH: Final = "/etc/anoncam/tls/broker-ca.crt"
CLIENT_CERT_PATH: Final = "/etc/anoncam/tls/mqtt-client.crt"
STATE_DIR: Final = "/var/lib/anoncam"
OPT_DIR: Final = "/opt/anoncam"
VENV_DIR: Final = "/opt/anoncam/venv"
MODELS_DIR: Final = "/opt/anoncam/models"
UNIT_PATH: Final = "/etc/systemd/system/anoncam.service"
FIRSTBOOT_LOG: Final = "/var/log/anoncam-firstboot.log"

#: systemd credential name; firmware.mqtt.connect reads ``$CREDENTIALS_DIRECTORY/mqtt-password``.
CREDENTIAL_NAME: Final = FIRMWARE_CREDENTIAL_NAME

#: Where Raspberry Pi OS mounts the FAT boot partition since Bookworm.
BOOT_MOUNT: Final = "/boot/firmware"
#: The folder this tool writes on the boot partition.
PAYLOAD_DIR: Final = "anoncam"
