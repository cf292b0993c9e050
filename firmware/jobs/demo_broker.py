"""A throwaway MQTT broker for ``anoncam demo``: Mosquitto when installed, else an embedded one.

Mosquitto is what stores run, so the demo prefers it (any user can start it on a loopback port;
no root, no system service). On a machine without it, the demo embeds amqtt, a pure-Python
broker from PyPI (the ``demo`` extra), so the demo still runs on a fresh machine without root.
amqtt speaks MQTT 3.1.1 only, so the demo's clients are told to use 3.1.1 with it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

from firmware.errors import BrokerError

logger = logging.getLogger(__name__)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_listening(port: int, timeout: float, alive: Any = None) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if alive is not None and not alive():
            return False
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return True
        except OSError:
            time.sleep(0.05)
    return False


def mosquitto_path() -> str | None:
    for candidate in (shutil.which("mosquitto"), "/usr/sbin/mosquitto"):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


class DemoBroker:
    """``kind`` is "mosquitto" or "embedded"; ``protocol`` what clients should speak."""

    def __init__(self, workdir: Path, *, prefer: str = "auto") -> None:
        self.workdir = workdir
        self.host = "127.0.0.1"
        self.port = free_port()
        self.kind = ""
        self.protocol = "auto"
        self._proc: subprocess.Popen[bytes] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._broker: Any = None
        self.prefer = prefer

    def start(self) -> DemoBroker:
        binary = mosquitto_path() if self.prefer in ("auto", "mosquitto") else None
        if binary:
            self._start_mosquitto(binary)
        elif self.prefer in ("auto", "embedded"):
            self._start_embedded()
        else:
            raise BrokerError(
                "mosquitto is not installed",
                hint="apt-get install mosquitto, or use the embedded broker",
            )
        return self

    def _start_mosquitto(self, binary: str) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        conf = self.workdir / "mosquitto.conf"
        lines = [f"listener {self.port} 127.0.0.1", "allow_anonymous true", "persistence false"]
        if os.geteuid() == 0:
            lines.append(
                "user root"
            )  # stay root: mosquitto would switch to a user that cannot read conf
        conf.write_text("\n".join(lines) + "\n")
        log = (self.workdir / "mosquitto.log").open("wb")
        self._proc = subprocess.Popen(
            [binary, "-c", str(conf)], stdout=log, stderr=subprocess.STDOUT
        )
        log.close()
        if not _wait_listening(
            self.port, 10.0, lambda: self._proc is not None and self._proc.poll() is None
        ):
            self.stop()
            raise BrokerError(
                f"mosquitto did not start: see {self.workdir / 'mosquitto.log'}",
                hint="run 'mosquitto -v' to see why, or pass --mqtt-host",
            )
        self.kind = "mosquitto"
        logger.info("demo broker: mosquitto on %s:%d", self.host, self.port)

    def _start_embedded(self) -> None:
        try:
            from amqtt.broker import Broker
        except ImportError:
            raise BrokerError(
                "no MQTT broker: mosquitto is not installed and the embedded broker (amqtt) "
                "is missing",
                hint="apt-get install mosquitto, or pip install 'anoncam[demo]', "
                "or pass --mqtt-host",
            ) from None
        config = {
            "listeners": {"default": {"type": "tcp", "bind": f"{self.host}:{self.port}"}},
            "plugins": {
                "amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}
            },
        }
        loop = asyncio.new_event_loop()
        broker = Broker(config, loop=loop)

        def serve() -> None:
            asyncio.set_event_loop(loop)
            loop.run_until_complete(broker.start())
            loop.run_forever()

        threading.Thread(target=serve, name="demo-broker", daemon=True).start()
        self._loop, self._broker = loop, broker
        if not _wait_listening(self.port, 10.0):
            raise BrokerError("the embedded MQTT broker did not start", hint="pass --mqtt-host")
        self.kind = "embedded"
        self.protocol = "3.1.1"
        logger.info("demo broker: embedded amqtt on %s:%d", self.host, self.port)

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(timeout=5)
        if self._loop is not None and self._broker is not None:
            future = asyncio.run_coroutine_threadsafe(self._broker.shutdown(), self._loop)
            try:
                future.result(timeout=3)
            except Exception as exc:  # amqtt's shutdown can hang or raise; the thread is a daemon
                logger.debug("embedded broker shutdown: %s", exc)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._loop = None
