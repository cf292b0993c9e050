"""The running camera: the frame loop, the service that wires it, health, systemd.

- :mod:`~firmware.runtime.pipeline`: the one-way frame loop (source -> stage -> tracker ->
  counter -> windows, and the sinks);
- :mod:`~firmware.runtime.health`: the figures of health messages;
- :mod:`~firmware.runtime.sdnotify`: ``READY=1`` and the watchdog;
- :mod:`~firmware.runtime.preflight`: what run refuses, checked before it starts (and by
  ``config check``);
- :mod:`~firmware.runtime.service`: the composition root, wiring only.
"""
