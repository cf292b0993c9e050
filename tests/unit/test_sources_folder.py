"""Single images and image folders, read and written with PyAV for real."""

from __future__ import annotations

import logging
import struct
from pathlib import Path

import numpy as np
import pytest

from firmware.config.settings import SourceConfig
from firmware.errors import InputError, OutputError
from firmware.media.image import encode_image, jpeg_qscale
from firmware.sources import FrameSource, open_source
from firmware.sources.folder import ImageFolderSource, read_image, write_image


def _picture(w: int = 96, h: int = 64, seed: int = 0) -> np.ndarray:
    """A picture with smooth gradients and a red left half (JPEG-friendly, orientation-visible)."""
    yy, xx = np.mgrid[:h, :w]
    img = np.empty((h, w, 3), np.uint8)
    img[..., 0] = (xx * 255 // (w - 1) + seed) % 256
    img[..., 1] = yy * 255 // (h - 1)
    img[..., 2] = 128
    img[:, : w // 2] = (0, 0, 255)
    return img


def test_png_round_trip_is_exact(tmp_path: Path) -> None:
    img = _picture()
    write_image(tmp_path / "a.png", img)
    assert np.array_equal(read_image(tmp_path / "a.png"), img)


def test_jpeg_round_trip_keeps_colours_and_writes_no_metadata(tmp_path: Path) -> None:
    """BGR order survives (red stays in channel 2), quality ~92 is close to the original, and
    the file holds no EXIF/APP1 segment and no encoder comment (P1: nothing but pixels)."""
    img = _picture()
    path = tmp_path / "a.jpg"
    write_image(path, img)
    back = read_image(path)
    assert back.shape == img.shape
    assert np.abs(back[10:50, 5:40].astype(int) - [0, 0, 255]).max() <= 12
    assert np.mean(np.abs(back.astype(int) - img.astype(int))) < 4
    data = path.read_bytes()
    assert data[:2] == b"\xff\xd8"
    assert b"Exif" not in data and b"\xff\xe1" not in data and b"Lavc" not in data
    assert not list(tmp_path.glob(".*.tmp"))


def test_jpeg_quality_scale() -> None:
    assert jpeg_qscale(92) == 2 and jpeg_qscale(100) == 1 and jpeg_qscale(1) == 31
    assert len(encode_image(_picture(), ".jpg", quality=50)) < len(
        encode_image(_picture(), ".jpg", quality=95)
    )
    with pytest.raises(ValueError):
        jpeg_qscale(0)


def test_exif_orientation_is_applied_on_read(tmp_path: Path) -> None:
    """A phone JPEG stored sideways with EXIF orientation 6 (rotate 90 degrees clockwise to
    view) is read upright, so the anonymized copy, which carries no EXIF, is upright too."""
    img = _picture(96, 64)
    data = encode_image(img, ".jpg")
    tiff = (
        b"MM\x00\x2a\x00\x00\x00\x08"
        + struct.pack(">H", 1)
        + struct.pack(">HHIHH", 0x0112, 3, 1, 6, 0)
    )
    exif = b"Exif\x00\x00" + tiff + b"\x00\x00\x00\x00"
    app1 = b"\xff\xe1" + struct.pack(">H", len(exif) + 2) + exif
    path = tmp_path / "phone.jpg"
    path.write_bytes(data[:2] + app1 + data[2:])
    back = read_image(path)
    assert back.shape == (96, 64, 3)
    # The red left half of the stored picture is the top half once turned clockwise.
    assert np.abs(back[5:40, 10:54].astype(int) - [0, 0, 255]).max() <= 12


def test_read_image_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"missing\.png: file not found"):
        read_image(tmp_path / "missing.png")
    bad = tmp_path / "notes.png"
    bad.write_text("this is not a picture\n" * 20)
    with pytest.raises(InputError, match=r"notes\.png: not a readable image"):
        read_image(bad)


def test_write_image_errors(tmp_path: Path) -> None:
    with pytest.raises(OutputError, match=r"'\.gif'"):
        write_image(tmp_path / "a.gif", _picture())
    with pytest.raises(OutputError, match="cannot write image") as info:
        write_image(tmp_path / "no-such-dir" / "a.png", _picture())
    assert "folder exists" in info.value.hint


def test_folder_source_reads_images_in_natural_order(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """img2 comes before img10; hidden files are ignored; other files are skipped with one
    warning; timestamps follow the nominal fps."""
    for n in (10, 2, 1):
        write_image(tmp_path / f"img{n}.png", _picture(seed=n))
    write_image(tmp_path / "img3.JPG", _picture(seed=3))
    (tmp_path / "readme.txt").write_text("not an image")
    (tmp_path / ".hidden.png").write_bytes(b"garbage")
    with caplog.at_level(logging.WARNING, logger="firmware.sources.folder"):
        src = ImageFolderSource(tmp_path, fps=4.0)
    assert [p.name for p in src.paths] == ["img1.png", "img2.png", "img3.JPG", "img10.png"]
    assert "readme.txt" in caplog.text and ".hidden" not in caplog.text
    assert isinstance(src, FrameSource)
    assert src.size == (96, 64) and src.fps == 4.0 and not src.live and src.frame_count == 4
    frames = list(src.frames())
    assert [f.t_ns for f in frames] == [0, 250_000_000, 500_000_000, 750_000_000]
    assert np.array_equal(frames[1].image, _picture(seed=2))
    assert "4 images" in src.describe()


def test_folder_source_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no JPEG or PNG images"):
        ImageFolderSource(tmp_path)
    with pytest.raises(InputError, match="folder not found"):
        ImageFolderSource(tmp_path / "nope")
    write_image(tmp_path / "a.png", _picture())
    (tmp_path / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)  # a header, then nothing
    src = ImageFolderSource(tmp_path)
    it = src.frames()
    next(it)
    with pytest.raises(InputError, match=r"b\.png: not a readable image"):
        next(it)


def test_open_source_picks_the_folder_source(tmp_path: Path) -> None:
    write_image(tmp_path / "a.jpg", _picture())
    with open_source(SourceConfig(kind="file", path=tmp_path, fps=2.0)) as src:
        assert isinstance(src, ImageFolderSource) and src.fps == 2.0
