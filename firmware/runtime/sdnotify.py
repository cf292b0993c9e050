"""systemd notifications (READY=1, WATCHDOG=1, STOPPING=1, STATUS=...) without a dependency.

The unit is ``Type=notify`` with ``WatchdogSec``: the service says READY once the camera,
model and outbox are up, then pings the watchdog from the frame loop, so a hung camera or
detector gets the service restarted. Outside systemd (no ``$NOTIFY_SOCKET``) every call is a
no-op.
"""

from __future__ import annotations

import logging
import os
import socket
import time

logger = logging.getLogger(__name__)


class Notifier:
    def __init__(self, address: str | None = None) -> None:
        self.address = address if address is not None else os.environ.get("NOTIFY_SOCKET", "")
        usec = os.environ.get("WATCHDOG_USEC", "")
        # ping at half the watchdog period, as sd_watchdog_enabled(3) recommends
        self.watchdog_interval_s = int(usec) / 2e6 if usec.isdigit() and int(usec) > 0 else None
        self._last_ping = 0.0
        self._sock: socket.socket | None = None
        if self.address:
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)

    @property
    def enabled(self) -> bool:
        return self._sock is not None

    def notify(self, message: str) -> None:
        if self._sock is None:
            return
        addr = self.address
        if addr.startswith("@"):  # abstract namespace socket
            addr = "\0" + addr[1:]
        try:
            self._sock.sendto(message.encode(), addr)
        except OSError as exc:
            logger.warning("systemd notify failed (%s): %s", message.split("=")[0], exc)

    def ready(self, status: str = "") -> None:
        self.notify("READY=1" + (f"\nSTATUS={status}" if status else ""))

    def watchdog(self) -> None:
        """Ping the watchdog, at most at half its period (cheap enough for every frame)."""
        if self._sock is None:
            return
        now = time.monotonic()
        interval = self.watchdog_interval_s or 1.0
        if now - self._last_ping >= interval:
            self._last_ping = now
            self.notify("WATCHDOG=1")

    def stopping(self) -> None:
        self.notify("STOPPING=1")

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
