"""anoncam firmware: the runtime of a privacy-first store camera.

Importing this package touches no hardware, model or network; it only exposes the version.
"""

__version__ = "0.1.0"
