"""The synthetic scene: determinism, ground-truth faces and crossings that match what is drawn."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from firmware.config.settings import SourceConfig
from firmware.errors import SourceError
from firmware.sources import FrameSource, open_source
from firmware.sources.synthetic.people import LINE_Y, Crossing, Walk
from firmware.sources.synthetic.scene import SyntheticScene

W, H = 640, 360


@pytest.fixture(scope="module")
def scene() -> SyntheticScene:
    return SyntheticScene(width=W, height=H, fps=10.0, duration_s=40.0, seed=3)


def _track_crossings(scene: SyntheticScene, max_jump: float) -> list[tuple[int, str]]:
    """Crossings seen in the rendered truth boxes alone: faces are linked frame to frame by
    nearest centre (lanes keep people far apart) and a sign change of (cy - line) is a crossing.
    Returns ``(frame index, direction)``; independent of how the scene computes its own list."""
    line = LINE_Y * scene.size[1]
    prev: list[tuple[float, float]] = []
    found: list[tuple[int, str]] = []
    for i in range(scene.frame_count):
        boxes = scene.truth(i)
        centres = [
            ((b[0] + b[2]) / 2, (b[1] + b[3]) / 2)
            for b in boxes
            if b[1] > 0 and b[3] < scene.size[1]
        ]
        for cx, cy in centres:
            near = [p for p in prev if abs(p[0] - cx) < max_jump and abs(p[1] - cy) < max_jump]
            if len(near) == 1:
                py = near[0][1]
                if py <= line < cy:
                    found.append((i, "entry"))
                elif cy < line <= py:
                    found.append((i, "exit"))
        prev = centres
    return found


def test_is_a_frame_source(scene: SyntheticScene) -> None:
    assert isinstance(scene, FrameSource)
    assert scene.size == (W, H) and scene.fps == 10.0 and not scene.live and scene.dropped == 0
    assert scene.frame_count == 400
    frames = scene.frames()
    f0, f1 = next(frames), next(frames)
    assert (f0.index, f0.t_ns, f1.index, f1.t_ns) == (0, 0, 1, 100_000_000)
    assert (
        f0.image.shape == (H, W, 3) and f0.image.dtype == np.uint8 and f0.image.flags.c_contiguous
    )


def test_same_seed_same_scene_other_seed_other_scene() -> None:
    """Determinism is what makes counting benchmarks comparable from run to run."""
    a = SyntheticScene(width=W, height=H, fps=10.0, duration_s=20.0, seed=7)
    b = SyntheticScene(width=W, height=H, fps=10.0, duration_s=20.0, seed=7)
    c = SyntheticScene(width=W, height=H, fps=10.0, duration_s=20.0, seed=8)
    assert a.crossings == b.crossings and a.people == b.people
    for i in (0, 37, 80, 123, 199):
        assert np.array_equal(a.render(i), b.render(i))
        assert np.array_equal(a.truth(i), b.truth(i))
    # Out-of-order access renders the same pixels as sequential access.
    assert np.array_equal(
        a.render(37),
        SyntheticScene(width=W, height=H, fps=10.0, duration_s=20.0, seed=7).render(37),
    )
    assert a.people != c.people


def test_truth_boxes_are_inside_the_frame_and_sized_as_specified(scene: SyntheticScene) -> None:
    """Faces are 60-160 px tall at 720 rows, scaled with the frame (30-80 px at 360 rows)."""
    heights = []
    for i in range(0, scene.frame_count, 3):
        boxes = scene.truth(i)
        assert boxes.dtype == np.float32 and boxes.shape[1] == 4
        assert np.all(boxes[:, [0, 1]] >= 0)
        assert np.all(boxes[:, 2] <= W) and np.all(boxes[:, 3] <= H)
        assert np.all(boxes[:, 2] - boxes[:, 0] >= 1) and np.all(boxes[:, 3] - boxes[:, 1] >= 1)
        assert len(boxes) <= 3  # max_in_view
        full = scene.truth(i, min_visible=0.999)
        heights.extend((full[:, 3] - full[:, 1]).tolist())
    assert heights, "no fully visible face in the scene"
    assert min(heights) >= 30 - 1 and max(heights) <= 80 + 1


def test_truth_moves_with_the_drawn_face() -> None:
    """The pixels inside a person's truth box are the same face wherever the person is, and
    they differ from the empty floor: the box is where the face is drawn, frame after frame."""
    scene = SyntheticScene(
        width=W, height=H, fps=10.0, duration_s=12.0, people=[Walk("entry", 0.0, lane=1, speed=0.2)]
    )
    bg = scene.background
    crops = []
    for i in range(scene.frame_count):
        boxes = scene.truth(i, min_visible=0.999)
        if len(boxes) != 1:
            continue
        x1, y1 = np.floor(boxes[0, :2]).astype(int)
        x2, y2 = x1 + 20, y1 + 20  # the top-left 20x20 of the face box (box is >= 30 px)
        crop = scene.render(i)[y1:y2, x1:x2]
        assert np.mean(np.any(crop != bg[y1:y2, x1:x2], axis=2)) > 0.9
        crops.append(crop)
    assert len(crops) > 10
    assert all(np.array_equal(crops[0], c) for c in crops[1:])


def test_scripted_walks_give_the_crossings_they_describe() -> None:
    walks = [
        Walk("entry", 0.5, lane=0),
        Walk("exit", 1.0, lane=1),
        Walk("turn_back_top", 0.2, lane=2),
        Walk("turn_back_bottom", 9.0, lane=2),
        Walk("linger_entry", 11.0, lane=0, pause_s=3.0),
        Walk("linger_exit", 11.0, lane=1, pause_s=2.0),
    ]
    scene = SyntheticScene(width=W, height=H, fps=10.0, duration_s=40.0, people=walks)
    directions = sorted((c.person, c.direction) for c in scene.crossings)
    by_kind = {p.index: p.kind for p in scene.people}
    assert sorted(by_kind[i] + ":" + d for i, d in directions) == sorted(
        ["entry:entry", "exit:exit", "linger_entry:entry", "linger_exit:exit"]
    )
    # Crossing times agree with the drawn faces to within a frame.
    seen = _track_crossings(scene, max_jump=60)
    assert [d for _, d in seen] == [c.direction for c in scene.crossings]
    for (frame, _), c in zip(seen, scene.crossings, strict=True):
        assert c.t_s * scene.fps <= frame < c.t_s * scene.fps + 1


def test_random_scene_crossings_match_paths_and_pixels(scene: SyntheticScene) -> None:
    """Every entry-type walk crosses once downwards, every exit-type walk once upwards,
    turn-backs never; and tracking the truth boxes finds exactly the listed crossings."""
    kinds = [p.kind for p in scene.people]
    entries = sum(k in ("entry", "linger_entry") for k in kinds)
    exits = sum(k in ("exit", "linger_exit") for k in kinds)
    assert entries > 0 and exits > 0 and any(k.startswith("turn_back") for k in kinds)
    assert [c.direction for c in scene.crossings].count("entry") == entries
    assert [c.direction for c in scene.crossings].count("exit") == exits
    assert all(isinstance(c, Crossing) for c in scene.crossings)
    assert [c.t_s for c in scene.crossings] == sorted(c.t_s for c in scene.crossings)
    seen = _track_crossings(scene, max_jump=60)
    assert [d for _, d in seen] == [c.direction for c in scene.crossings]


def test_several_people_in_view_at_once() -> None:
    scene = SyntheticScene(
        width=W, height=H, fps=5.0, duration_s=60.0, seed=1, max_in_view=4, mean_gap_s=0.5
    )
    counts = [len(scene.truth(i)) for i in range(scene.frame_count)]
    assert max(counts) == 4


def test_fixed_number_of_people_and_long_scenes_repeat() -> None:
    assert len(SyntheticScene(width=W, height=H, duration_s=120.0, people=10).people) == 10
    long = SyntheticScene(width=W, height=H, fps=1.0, duration_s=7300.0, seed=2)
    first_hour = [c for c in long.crossings if c.t_s < 3600]
    second_hour = [c for c in long.crossings if 3600 <= c.t_s < 7200]
    assert [c.direction for c in first_hour] == [c.direction for c in second_hour]
    assert second_hour[0].t_s == pytest.approx(first_hour[0].t_s + 3600)


def test_bad_arguments_are_rejected() -> None:
    with pytest.raises(ValueError, match="cannot hold faces"):
        SyntheticScene(width=W, height=H, max_in_view=12)
    with pytest.raises(ValueError, match="overlaps another person"):
        SyntheticScene(
            width=W, height=H, people=[Walk("entry", 0.0, lane=0), Walk("exit", 1.0, lane=0)]
        )
    with pytest.raises(ValueError, match="do not fit"):
        SyntheticScene(width=W, height=H, duration_s=10.0, people=50)
    with pytest.raises(IndexError):
        SyntheticScene(width=W, height=H, duration_s=1.0).render(10_000)


def test_missing_scikit_image_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    """scikit-image is a dev/demo dependency; without it the scene fails with the pip hint."""
    monkeypatch.setitem(sys.modules, "skimage", None)
    with pytest.raises(SourceError, match="scikit-image") as info:
        SyntheticScene(width=W, height=H)
    assert "anoncam[dev]" in info.value.hint


def test_open_source_builds_the_scene_from_config() -> None:
    cfg = SourceConfig(kind="synthetic", width=320, height=240, fps=5.0, duration_s=3.0)
    with open_source(cfg) as src:
        assert isinstance(src, SyntheticScene)
        assert src.size == (320, 240) and src.fps == 5.0 and src.frame_count == 15
        assert "synthetic scene" in src.describe()
