"""Full-body people in the synthetic scene (``bodies=True``, issue 9): the default scene still
renders exactly as before, and the ground truth of bodies (faces, body boxes, crossings by the
feet) matches what is drawn."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest

from firmware.frames import Image
from firmware.sources.synthetic.bodies import (
    BODY_PER_FACE,
    GAIT_PHASES,
    body_layout,
    build_body_sprite,
    facing_source,
    gait_phase,
)
from firmware.sources.synthetic.faces import load_faces
from firmware.sources.synthetic.people import LINE_Y, Walk
from firmware.sources.synthetic.scene import _SWAY, SyntheticScene
from firmware.sources.synthetic.sprites import build_sprite, layout_for, mirror_layout

W, H = 640, 360


def _old_render(scene: SyntheticScene, index: int) -> Image:
    """A frame as the scene rendered it before bodies existed (main at 54dcbd1), rebuilt from
    the public pieces: one head-and-torso sprite per person (mirrored when flipped), placed with
    its face centre on the path plus the sway, lower people drawn over higher ones."""
    t = index / scene.fps
    img = scene.background
    placed = []
    for p in scene.people:
        if not p.t_start <= t <= p.t_end:
            continue
        sprite = build_sprite(load_faces()[p.identity], p)
        lay = layout_for(load_faces()[p.identity], p.face_px)
        image, mask = sprite.image, sprite.mask
        if p.flip:
            lay = mirror_layout(lay)
            image, mask = image[:, ::-1], mask[:, ::-1]
        y = float(np.interp(t, p.times, p.ys))
        lane_w = (W - 2 * (0.04 * W + 2)) / 3
        sway = _SWAY * lane_w * math.sin(2 * math.pi * t / p.sway_period_s + p.sway_phase)
        placed.append((y, round(p.x + sway - lay.anchor[0]), round(y - lay.anchor[1]), image, mask))
    for _y, x0, y0, image, mask in sorted(placed, key=lambda q: q[0]):
        sh, sw = mask.shape
        fx0, fy0, fx1, fy1 = max(0, x0), max(0, y0), min(W, x0 + sw), min(H, y0 + sh)
        if fx1 > fx0 and fy1 > fy0:
            sub = np.s_[fy0 - y0 : fy1 - y0, fx0 - x0 : fx1 - x0]
            np.copyto(img[fy0:fy1, fx0:fx1], image[sub], where=mask[sub][:, :, None])
    return img


def test_the_default_scene_renders_exactly_as_before() -> None:
    """Regression guard for the opt-in: ``bodies=False`` (the default) draws the same pixels as
    the old code path, frame by frame, and the same truth; bodies draw something else.
    (Checked against main's own code too, before the change: sha256 of 3 scenes' frames and
    truth identical.)"""
    default = SyntheticScene(W, H, fps=10.0, duration_s=20.0, seed=5, back_share=0.3)
    off = SyntheticScene(W, H, fps=10.0, duration_s=20.0, seed=5, back_share=0.3, bodies=False)
    on = SyntheticScene(W, H, fps=10.0, duration_s=20.0, seed=5, back_share=0.3, bodies=True)
    assert default.people == off.people and default.crossings == off.crossings
    drawn = 0
    for i in range(0, default.frame_count, 7):
        frame = default.render(i)
        assert np.array_equal(frame, _old_render(default, i)), i
        assert np.array_equal(frame, off.render(i))
        assert np.array_equal(default.truth(i, heads=True), off.truth(i, heads=True))
        drawn += bool(len(default.truth(i, heads=True)))
    assert drawn > 5
    assert any(not np.array_equal(default.render(i), on.render(i)) for i in range(0, 200, 7))


def test_body_sprites_have_the_stated_proportions_and_one_anchor() -> None:
    """Standing height ~9.6 face heights; every gait phase has the same size and anchor (the
    feet), and the lowest drawn pixel is on the anchor's row whatever the pose."""
    faces = load_faces()
    scene = SyntheticScene(W, H, people=[Walk("entry", 0.0, lane=0)], bodies=True)
    person = scene.people[0]
    for identity in (0, 1, 7):
        for flip in (False, True):
            p = replace(person, identity=identity, flip=flip, face_px=24.0)
            src = facing_source(faces[identity], flip)
            layouts = [body_layout(src, p.face_px, k) for k in range(GAIT_PHASES)]
            assert len({(lay.width, lay.height, lay.anchor) for lay in layouts}) == 1
            for k in (0, 2, 5):
                sprite = build_body_sprite(faces[identity], p, k)
                assert sprite.layout == body_layout(src, p.face_px, k)
                rows = np.flatnonzero(sprite.mask.any(axis=1))
                assert abs(rows[-1] + 1 - sprite.layout.anchor[1]) <= 1.0
                _x1, fy1, _x2, fy2 = sprite.layout.face
                assert fy2 - fy1 == pytest.approx(p.face_px, rel=0.05)
                crown = fy1 - 0.17 / 0.78 * p.face_px
                stature = sprite.layout.anchor[1] - crown
                assert stature == pytest.approx(BODY_PER_FACE * p.face_px, rel=0.03)


def test_front_views_show_the_face_back_views_hair_only() -> None:
    """A front view's face box holds the (tinted) photo, a back view's the same box holds no
    skin-coloured photo pixel: all of it is one hair colour, shaded by row."""
    walks = [Walk("entry", 0.0, lane=0, facing="front"), Walk("entry", 0.0, lane=2, facing="back")]
    scene = SyntheticScene(W, H, fps=10.0, duration_s=12.0, people=walks, bodies=True)
    i = next(i for i in range(scene.frame_count) if len(scene.truth(i, min_visible=1.0)) == 1)
    img = scene.render(i)
    front = scene.truth(i, min_visible=1.0)[0]
    both = scene.truth(i, heads=True)
    assert len(both) == 2
    back = next(b for b in both if not np.array_equal(b, front))
    crop = _middle(img, back)
    # hair: every pixel a scaled copy of one colour (shading), no face texture
    assert crop.std(axis=0).max() < 25
    assert _middle(img, front).std(axis=0).max() > 25


def _middle(img: Image, box: np.ndarray) -> np.ndarray:
    """The pixels of the middle half (each way) of ``box``, as (N, 3) ints."""
    x1, y1, x2, y2 = (float(v) for v in box)
    qw, qh = (x2 - x1) / 4, (y2 - y1) / 4
    crop = img[round(y1 + qh) : round(y2 - qh), round(x1 + qw) : round(x2 - qw)]
    out: np.ndarray = crop.reshape(-1, 3).astype(int)
    return out


def test_body_boxes_contain_the_faces_and_bodies_stay_in_their_lanes() -> None:
    """At 4 in view people never overlap (the lanes hold the widest pose), the face of every
    front view lies inside its body, and bodies are 95-145 px at 360 rows (190-290 at 720)."""
    scene = SyntheticScene(
        W, H, fps=5.0, duration_s=60.0, seed=2, max_in_view=4, mean_gap_s=0.3, bodies=True
    )
    crowded = 0
    heights = []
    for i in range(0, scene.frame_count, 2):
        bodies = scene.people_boxes(i)
        faces = scene.truth(i, min_visible=1.0)
        crowded += len(bodies) == 4
        for a in range(len(bodies)):
            for b in range(a + 1, len(bodies)):
                assert bodies[a, 2] <= bodies[b, 0] or bodies[b, 2] <= bodies[a, 0]
        for f in faces:
            assert any(
                b[0] <= f[0] and b[1] <= f[1] and f[2] <= b[2] and f[3] <= b[3] for b in bodies
            )
        whole = bodies[(bodies[:, 1] > 0) & (bodies[:, 3] < H)]
        heights.extend((whole[:, 3] - whole[:, 1]).tolist())
    assert crowded > 0
    assert min(heights) >= 95 - 3 and max(heights) <= 145 + 8


def _foot_crossings(scene: SyntheticScene) -> list[tuple[int, str]]:
    """Crossings read from the drawn pixels alone: the bottom of each body box (the feet),
    linked frame to frame by lane, changing sides of the line."""
    line = LINE_Y * scene.size[1]
    prev: dict[int, float] = {}
    found: list[tuple[int, str]] = []
    lane_w = scene.size[0] / 3
    for i in range(scene.frame_count):
        now: dict[int, float] = {}
        for b in scene.people_boxes(i):
            if b[3] < scene.size[1]:  # feet in the frame
                now[int((b[0] + b[2]) / 2 // lane_w)] = float(b[3])
        for lane, y in now.items():
            if lane in prev:
                if prev[lane] <= line < y:
                    found.append((i, "entry"))
                elif y < line <= prev[lane]:
                    found.append((i, "exit"))
        prev = now
    return found


def test_crossings_of_bodies_are_the_feet_crossing_the_line() -> None:
    """With bodies a true crossing is the feet (the bottom of the drawn body, what
    ``counter.anchor = "bottom"`` tests on a person box) crossing the line, to a frame or so;
    turn-backs and lingering people stop where their feet are told to."""
    walks = [
        Walk("entry", 0.5, lane=0, speed=0.2),
        Walk("exit", 1.0, lane=1, facing="back"),
        Walk("turn_back_top", 0.2, lane=2, stop_y=0.4),
        Walk("turn_back_bottom", 9.0, lane=2, stop_y=0.6),
        Walk("linger_entry", 11.0, lane=0, pause_s=3.0),
        Walk("linger_exit", 11.0, lane=1, pause_s=2.0, facing="back"),
    ]
    scene = SyntheticScene(W, H, fps=10.0, duration_s=40.0, people=walks, bodies=True)
    assert sorted(c.direction for c in scene.crossings) == ["entry", "entry", "exit", "exit"]
    seen = _foot_crossings(scene)
    assert [d for _, d in seen] == [c.direction for c in scene.crossings]
    for (frame, _), c in zip(seen, scene.crossings, strict=True):
        # the box bottom is the last row drawn, within a pixel of the feet: a crossing a few ms
        # before a frame may show in the next one
        assert c.t_s * scene.fps - 1.5 <= frame <= c.t_s * scene.fps + 1.5


def test_walkers_change_pose_and_a_standing_person_holds_still() -> None:
    """The gait pose follows the distance walked: a walker shows several poses, a lingering
    person who stops stands in pose 0 (feet together) until they walk on."""
    assert gait_phase(0.0, 20.0) == 0
    assert len({gait_phase(d, 20.0) for d in np.linspace(0, 200, 40)}) == GAIT_PHASES
    scene = SyntheticScene(
        W,
        H,
        fps=10.0,
        duration_s=20.0,
        people=[Walk("linger_entry", 0.0, lane=1, stop_y=0.75, pause_s=4.0, speed=0.25)],
        bodies=True,
    )
    p = scene.people[0]
    t_walk = (p.times[0] + p.times[1]) / 2
    t_stop = (p.times[1] + p.times[2]) / 2
    walking = {scene._placements(round((t_walk + k * 0.1) * 10))[0][3] for k in range(8)}
    standing = {scene._placements(round((t_stop + k * 0.1) * 10))[0][3] for k in range(8)}
    assert len(walking) >= 4 and standing == {0}


def test_bodies_are_deterministic_and_reject_lanes_too_narrow() -> None:
    a = SyntheticScene(W, H, fps=10.0, duration_s=15.0, seed=4, bodies=True, back_share=0.5)
    b = SyntheticScene(W, H, fps=10.0, duration_s=15.0, seed=4, bodies=True, back_share=0.5)
    assert a.crossings == b.crossings
    for i in (60, 11, 99):
        assert np.array_equal(a.render(i), b.render(i))
        assert np.array_equal(a.people_boxes(i), b.people_boxes(i))
    with pytest.raises(ValueError, match="cannot hold faces"):
        SyntheticScene(W, H, max_in_view=16, bodies=True)
    assert "full bodies" in a.describe()
