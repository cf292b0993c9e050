"""Pixels in and out, with PyAV: shared by sources, jobs and the preview.

- :mod:`~firmware.media.avio`: opening containers and converting decoded frames to BGR;
- :mod:`~firmware.media.image`: single images (JPEG/PNG) without metadata, one JPEG quality scale;
- :mod:`~firmware.media.video_writer`: encoding videos atomically;
- :mod:`~firmware.media.yuv`: camera YUV buffers to BGR;
- :mod:`~firmware.media.resize`: the detector's resizing;
- :mod:`~firmware.media.workers`: decode-ahead and write-behind threads.
"""
