"""A real Mosquitto broker for tests, on a free loopback port, started and stopped by pid."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from firmware.jobs.demo_broker import free_port, mosquitto_path


def mosquitto_binary() -> str:
    path = mosquitto_path()
    if path is None:
        raise RuntimeError(
            "mosquitto not installed: run 'apt-get install mosquitto' (bash .ci/run does)"
        )
    return path


@dataclass
class Broker:
    host: str
    port: int
    conf: Path
    log: Path
    proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 10.0) -> None:
        """Start (or restart) the broker on the same port and wait until it accepts connections."""
        assert self.proc is None or self.proc.poll() is not None, "already running"
        logf = open(self.log, "ab")  # noqa: SIM115 - the broker owns it until stop()
        self.proc = subprocess.Popen(
            [mosquitto_binary(), "-c", str(self.conf)], stdout=logf, stderr=subprocess.STDOUT
        )
        logf.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mosquitto exited: {self.log.read_text(errors='replace')}")
            try:
                with socket.create_connection((self.host, self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"mosquitto did not listen on {self.port}: {self.log.read_text()}")

    def stop(self) -> None:
        """Stop by pid (SIGTERM, then SIGKILL) and wait for the port to be free."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)

    def kill(self) -> None:
        """Abrupt broker death (SIGKILL), as in a crash or power cut of the broker host."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=5)


def make_broker(
    directory: Path, extra_conf: str = "", *, anonymous: bool = True, port: int | None = None
) -> Broker:
    """Write a mosquitto.conf into ``directory`` for a loopback listener; the caller starts it.

    ``extra_conf`` is appended after the listener line, e.g. ``password_file``, ``acl_file`` or
    TLS settings (``certfile``, ``keyfile``, ``cafile``).
    """
    directory.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    conf = directory / "mosquitto.conf"
    lines = [
        "per_listener_settings false",
        f"listener {port} 127.0.0.1",
        f"allow_anonymous {'true' if anonymous else 'false'}",
        "persistence false",
        "log_dest stdout",
        "log_type error",
        "log_type warning",
        "log_type notice",
    ]
    if os.geteuid() == 0:
        lines.append(
            "user root"
        )  # Mosquitto 2 drops to 'mosquitto' otherwise and cannot read tmp files
    conf.write_text("\n".join(lines) + "\n" + extra_conf + "\n")
    return Broker("127.0.0.1", port, conf, directory / "mosquitto.log")
