"""The fleet inventory: one TOML file describing the broker, the sites and every camera.

- :mod:`~provisioning.inventory.schema`: the typed model, no I/O;
- :mod:`~provisioning.inventory.checks`: every problem at once, including each camera's own
  config validation (through :mod:`provisioning.device_config`);
- :mod:`~provisioning.inventory.loader`: reading the file.

Nothing is imported here: ``device_config`` needs the schema and the checks need
``device_config``, so a package that re-exported the loader would import itself in a circle.
"""
