"""Field diagnostics: ``anoncam diagnose`` and the support bundle's diagnosis.

Each check family is one module (camera, model, mqtt, clock, power, storage, systemd) with a
``run(ctx) -> list[Check]`` and the ``NAMES`` it reports. Hardware and OS facts are read through
:class:`~firmware.device.host.Host` (a root directory and a command runner), so the parsing
is tested against recorded outputs of real Pi 4, Pi 5 and x86 machines
(:mod:`firmware.device.recorded`); the network, model and storage checks run for real.

Importing this package touches no hardware, model or network; the checks do, when run::

    from firmware.diagnostics import Context, Host, diagnose, resolve_config
    choice = resolve_config(None)
    report = diagnose(Context(choice.config, Host(), choice.path, timeout_s=5.0))
"""

from __future__ import annotations

from firmware.device.host import CommandRunner, Host, subprocess_runner
from firmware.diagnostics.base import Check, Context, Status
from firmware.diagnostics.suite import (
    DEFAULT_CONFIG,
    FAMILIES,
    ConfigChoice,
    Report,
    check_names,
    diagnose,
    exit_code,
    host_facts,
    parse_only,
    resolve_config,
    run_checks,
)

__all__ = [
    "DEFAULT_CONFIG",
    "FAMILIES",
    "Check",
    "CommandRunner",
    "ConfigChoice",
    "Context",
    "Host",
    "Report",
    "Status",
    "check_names",
    "diagnose",
    "exit_code",
    "host_facts",
    "parse_only",
    "resolve_config",
    "run_checks",
    "subprocess_runner",
]
