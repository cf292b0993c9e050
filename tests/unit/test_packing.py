"""The packed layout the int8 face model reads (firmware.models.packing), against its
definition written out index by index."""

from __future__ import annotations

import numpy as np
import pytest

from firmware.models.packing import PACKED_CHANNELS, is_packed, pack2x2


def _by_definition(image: np.ndarray, height: int, width: int) -> np.ndarray:
    padded = np.zeros((height, width, 3), np.uint8)
    padded[: image.shape[0], : image.shape[1]] = image
    out = np.zeros((1, height // 2, width // 2, PACKED_CHANNELS), np.uint8)
    for i in range(height // 2):
        for j in range(width // 2):
            for dy in range(2):
                for dx in range(2):
                    first = (dy * 2 + dx) * 3
                    out[0, i, j, first : first + 3] = padded[2 * i + dy, 2 * j + dx]
    return out


@pytest.mark.parametrize(("h", "w", "height", "width"), [(8, 12, 8, 12), (7, 9, 32, 32)])
def test_pack2x2_matches_the_definition(h: int, w: int, height: int, width: int) -> None:
    """Each 2x2 block's four pixels in row order, blue-green-red each; the padding is zero."""
    image = np.random.default_rng(h * w).integers(0, 256, (h, w, 3), dtype=np.uint8)
    packed = pack2x2(image, height, width)
    assert packed.shape == (1, height // 2, width // 2, PACKED_CHANNELS)
    assert packed.dtype == np.uint8 and packed.flags.c_contiguous
    assert np.array_equal(packed, _by_definition(image, height, width))


def test_pack2x2_reads_a_view_without_changing_it() -> None:
    """A cropped (non-contiguous) frame is packed as its pixels, and the frame is untouched."""
    frame = np.random.default_rng(1).integers(0, 256, (10, 14, 3), dtype=np.uint8)
    before = frame.copy()
    view = frame[1:7, 2:12]
    assert np.array_equal(pack2x2(view, 6, 10), _by_definition(view, 6, 10))
    assert np.array_equal(frame, before)


@pytest.mark.parametrize(("height", "width"), [(7, 8), (8, 7), (4, 8), (8, 6)])
def test_pack2x2_refuses_odd_or_too_small_targets(height: int, width: int) -> None:
    with pytest.raises(ValueError, match="cannot pack"):
        pack2x2(np.zeros((6, 8, 3), np.uint8), height, width)


def test_is_packed_reads_type_and_shape() -> None:
    assert is_packed("tensor(uint8)", ["N", "H_half", "W_half", 12])
    assert not is_packed("tensor(float)", ["N", "H_half", "W_half", 12])
    assert not is_packed("tensor(uint8)", ["N", 3, "H", "W"])
    assert not is_packed("tensor(uint8)", ["N", 12])
