"""anoncam firmware: the runtime of a privacy-first store camera.

Importing this package touches no hardware, model or network; it only exposes the version and
opts this process out of onnxruntime's telemetry (below).
"""

import os as _os

__version__ = "0.1.0"

# onnxruntime >= 1.29 on Linux ships Microsoft's 1DS telemetry, on by default: it writes a
# persistent device id under ~/.cache/Microsoft/DeveloperTools/.onnxruntime and uploads usage
# events. A device that promises nothing but counts leaves it (P1) must opt out before
# onnxruntime initializes; every entry point imports this package first. A user's explicit value
# is kept.
_os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
