"""Frame sources: the :class:`FrameSource` protocol and :func:`open_source`.

Implementations sit next to the protocol, one module each, and are imported only when asked
for, so ``import firmware.sources`` needs neither picamera2 nor a camera (nor PyAV's decoders
to be touched):

- ``camera.Picamera2Source``: the Pi camera (main stream + low-resolution stream)
- ``video.VideoFileSource``: a video file, decoded with PyAV
- ``folder.ImageFolderSource``: a folder of JPEG/PNG files, decoded with PyAV
- ``synthetic.scene.SyntheticScene``: people with real face photos crossing a counting line
"""

from __future__ import annotations

from firmware.config.settings import SourceConfig
from firmware.errors import InputError
from firmware.sources.base import FrameSource

__all__ = ["FrameSource", "open_source"]


def open_source(config: SourceConfig) -> FrameSource:
    """Build the source ``config`` describes. Nothing heavy is imported until needed.

    ``kind = "file"`` opens an image folder when ``path`` is a directory and a video otherwise.
    Raises :class:`InputError` for a missing or unreadable file, :class:`SourceError` for a
    camera that cannot be opened.
    """
    if config.kind == "picamera2":
        from firmware.sources.camera import Picamera2Source

        return Picamera2Source(config)
    if config.kind == "synthetic":
        from firmware.sources.synthetic.scene import SyntheticScene

        return SyntheticScene(
            width=config.width,
            height=config.height,
            fps=config.fps,
            duration_s=config.duration_s,
            bodies=config.bodies,
        )
    path = config.path
    if path is None:  # the config validator already forbids this; keep the type checker honest
        raise InputError(
            "source.kind = 'file' needs source.path", hint="set source.path to a video or folder"
        )
    if path.is_dir():
        from firmware.sources.folder import ImageFolderSource

        return ImageFolderSource(path, fps=config.fps)
    from firmware.sources.video import VideoFileSource

    return VideoFileSource(path)
