"""Anonymizer: covers exactly the grown boxes, in every mode and shape."""

from __future__ import annotations

import numpy as np
import pytest

from firmware.anonymize.cover import Anonymizer, blur, mosaic


def _noise(h: int = 120, w: int = 160, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


@pytest.mark.parametrize("mode", ["mosaic", "blur", "solid"])
@pytest.mark.parametrize("shape", ["ellipse", "box"])
def test_covers_box_and_leaves_the_rest(mode: str, shape: str) -> None:
    img = _noise()
    box = np.array([[60, 40, 100, 80]], np.float32)
    a = Anonymizer(mode, shape, 1.5)  # type: ignore[arg-type]
    out = a.apply(img, box)
    x1, y1, x2, y2 = a.mask_regions(img, box)[0]
    assert (x1, y1, x2, y2) == (50, 30, 110, 90)
    outside = np.ones(img.shape[:2], bool)
    outside[y1:y2, x1:x2] = False
    assert np.array_equal(out[outside], img[outside]), "pixels outside the mask changed"
    # the original face box (centre region) is entirely altered
    inner = out[42:78, 62:98].astype(int) - img[42:78, 62:98].astype(int)
    assert (np.abs(inner).sum(axis=2) > 0).mean() > 0.95
    assert out is not img and np.array_equal(img, _noise()), "input was modified in place"
    if shape == "ellipse":
        assert np.array_equal(out[y1, x1], img[y1, x1]), "ellipse must leave the mask's corners"


def test_mosaic_cells_are_uniform_means() -> None:
    region = _noise(10, 10)
    out = mosaic(region, 5)
    for ys in (slice(0, 5), slice(5, 10)):
        for xs in (slice(0, 5), slice(5, 10)):
            block = out[ys, xs].reshape(-1, 3)
            assert np.all(block == block[0])
            np.testing.assert_allclose(block[0], region[ys, xs].reshape(-1, 3).mean(0), atol=1)


def test_blur_removes_detail() -> None:
    region = _noise(64, 64)
    out = blur(region, 21)
    assert out.std() < region.std() / 4


def test_mask_all_leaves_no_original_detail() -> None:
    img = _noise(240, 320)
    out = Anonymizer().mask_all(img)
    assert out.shape == img.shape
    # cells of at least 13 px: neighbouring pixels inside a cell are identical
    assert np.array_equal(out[0:13:1, 0], np.repeat(out[0:1, 0], 13, axis=0))
    assert (out != img).any(axis=2).mean() > 0.95


def test_boxes_outside_the_frame_are_clipped() -> None:
    img = _noise()
    out = Anonymizer(shape="box").apply(
        img, np.array([[-50, -50, 10, 10], [150, 110, 400, 400]], np.float32)
    )
    assert out.shape == img.shape
    assert not np.array_equal(out[0:5, 0:5], img[0:5, 0:5])


def test_rejects_bad_parameters() -> None:
    with pytest.raises(ValueError, match="mask_scale"):
        Anonymizer(mask_scale=0.5)
    with pytest.raises(ValueError, match="mode"):
        Anonymizer(mode="pixelate")  # type: ignore[arg-type]


def test_scrambled_mosaic_keeps_colours_but_not_layout() -> None:
    """The default mosaic shuffles its cells: the same cell colours, in another order, so the
    face's layout (what a detector and a de-pixelation attack use) is gone; stable per size."""
    from firmware.anonymize.cover import scrambled_mosaic

    region = np.zeros((60, 60, 3), np.uint8)
    region[:30] = 255  # a layout: bright top half, dark bottom half
    plain = mosaic(region, 10)
    shuffled = scrambled_mosaic(region, 10)
    cells = lambda a: sorted(map(tuple, a[::10, ::10].reshape(-1, 3).tolist()))  # noqa: E731
    assert cells(shuffled) == cells(plain)
    assert not np.array_equal(shuffled, plain)
    assert np.array_equal(shuffled, scrambled_mosaic(region, 10)), "same size, same pattern"
    assert (shuffled[:30] == 255).all(axis=2).mean() < 0.9, "the top half should mix"
