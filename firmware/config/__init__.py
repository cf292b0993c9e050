"""The device's configuration: typed, frozen, extra keys forbidden, every field bounded.

- :mod:`~firmware.config.settings`: the schema and reading a TOML file into it, with every
  problem listed by dotted path;
- :mod:`~firmware.config.edit`: rewriting the ``[counter]`` section in place (the preview page's
  line editor), every other byte of the file kept.
"""
