"""Face detectors: the :class:`FaceDetector` protocol and its implementations.

Importing this package loads no model; ``CenterFace`` opens onnxruntime when constructed.
"""

from firmware.detect.base import FaceDetector

__all__ = ["FaceDetector"]
