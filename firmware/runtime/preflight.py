"""What ``anoncam run`` refuses, checked before anything starts: one validation for both
``anoncam config check`` and ``run``.

The config types check each value on its own (no I/O); this adds what needs the files the
config names: the preview token (required beyond loopback, readable, long enough) and the MQTT
password and TLS files. ``run`` calls it first, so a config it would refuse never publishes
``online`` and then fails; ``config check`` calls it, so it never says OK to such a config.
"""

from __future__ import annotations

from collections.abc import Callable

from firmware.config.settings import Config
from firmware.errors import ConfigError
from firmware.mqtt.connect import read_password, tls_context
from firmware.preview.server import read_token


def problems(config: Config) -> list[tuple[str, str]]:
    """Every problem with the files ``config`` names, as ``(dotted path, message)`` pairs."""
    checks: list[tuple[str, Callable[[], object]]] = [
        ("mqtt.password_file", lambda: read_password(config.mqtt))
    ]
    if config.mqtt.tls is not None:
        tls = config.mqtt.tls
        checks.append(("mqtt.tls", lambda: tls_context(tls)))
    if config.preview.enabled:
        checks.append(("preview.token_file", lambda: read_token(config.preview)))
    found: list[tuple[str, str]] = []
    for field, check in checks:
        try:
            check()
        except ConfigError as err:
            # The first line is the error itself (the rest lists its problems); with its fix.
            summary = str(err).splitlines()[0]
            found.append((field, f"{summary} (fix: {err.hint})" if err.hint else summary))
    return found


def check(config: Config, *, origin: str) -> None:
    """Raise :class:`ConfigError` listing every problem :func:`problems` finds."""
    found = problems(config)
    if found:
        raise ConfigError(
            f"{origin}: {len(found)} problem(s)",
            problems=found,
            hint="fix each listed field, then run 'anoncam config check FILE'",
        )
