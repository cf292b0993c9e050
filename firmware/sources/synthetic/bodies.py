"""Full-body people for the synthetic scene: a real face photo on a drawn body that walks.

Why: a person detector trained on photographs (NanoDet) does not see the default sprite, a head
on a torso without legs, as a person. A complete figure with the proportions of a person (head,
neck, torso, two arms, two legs, shoes) in plain clothes is detected at 448x256 in nearly every
frame once it is about 1/4 of the frame high (research run, 2026-12-04: median score 0.68-0.78 at
200-350 px of 720 rows), and CenterFace still finds the face when it is large enough.

Proportions are in head units ``u`` (standing height, crown to sole, is ``7.5 u``, a common
figure-drawing canon), measured down from the crown and out from the body axis:

- face box 0.17-0.95 u (0.78 u high): the body is :data:`BODY_PER_FACE` (about 9.6) face
  heights tall, so a 200-300 px person at 720 rows has a 21-31 px face (the default scene's
  faces are 60-160 px, on bodies that are not people to a person detector);
- neck to 1.5 u, shoulders at 1.45 u (half-width 0.98 u), belt at 3.25 u, hips at 3.55 u;
- legs from the hips to the soles at 7.5 u; arms from the shoulders to below the hips.

Gait: :data:`GAIT_PHASES` poses per stride pair. Legs alternate: the forward foot lands lower in
the image, the rear one is lifted and its knee bends; arms swing opposite to the legs; the upper
body bobs a little. Whatever the pose, the lowest sole touches the same row, the sprite's
*anchor*: where the person stands, the point the counter tests (``counter.anchor = "bottom"``,
the bottom centre of a person box). The phase is chosen per frame from the distance walked
(:func:`gait_phase`), so a person who stops stands still.

Why plain colours: in the research run, clothes textured from photos lowered the detection rate
of small people (54 % against 100 % at 120 px), and colours close to the beige floor, or the
light and mid greys of the threshold strip and the grout, made bodies blend into the floor
(2-30 % at 120 px). The palettes below are saturated or dark for that reason.

Front views show the photo's face; back views show hair only (no face pixel at all): counting
must not need faces. A flipped person has the head photo mirrored; bodies are symmetric.

Rendering is vectorized numpy, done once per person and pose (a frame is then one masked
``np.copyto`` per visible person): the body is painted at 2x and area-averaged down (smooth
limb edges), then the head photo is pasted at the final size, so the face is as sharp as in
the default sprites and its box is exact arithmetic (:func:`body_layout`, no rendering).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from firmware.frames import Image
from firmware.sources.synthetic.faces import FaceSource, resize_image
from firmware.sources.synthetic.people import Person
from firmware.sources.synthetic.sprites import SKIN_TINTS, Sprite, SpriteLayout, ellipse_mask

logger = logging.getLogger(__name__)


_HEIGHT_U = 7.5  # standing height, crown to sole, in head units

_FACE_U = 0.78  # face box height in head units

_FACE_TOP_U = 0.17  # face box top below the crown

BODY_PER_FACE = _HEIGHT_U / _FACE_U

"""Standing height / face height (about 9.6)."""

BODY_WIDTH_PER_FACE = 2.7 / _FACE_U

"""Widest extent of a body (swinging arms included) / face height: what a lane must hold."""

GAIT_PHASES = 8

"""Poses per stride pair. 8 at 10-15 fps: a walker shows a new pose in nearly every frame."""

STRIDE_BODIES = 0.9

"""Distance walked in the image per stride pair, in body heights (about 1.2 strides per second
at the scene's walking speeds)."""

_SS = 2  # the body is painted at this multiple of the final size, then area-averaged

_TOP_PAD_U = 0.45  # room above the crown: a head photo's hair may reach above it

_SIDE_PAD_U = 0.1


# Shirts: saturated or dark, none near the beige floor or the light/mid greys (see above).
_SHIRT_BGR: tuple[tuple[int, int, int], ...] = (
    (60, 60, 170),
    (150, 90, 40),
    (50, 120, 50),
    (40, 40, 40),
    (30, 140, 200),
    (120, 60, 110),
    (160, 130, 60),
    (70, 40, 120),
    (110, 50, 20),
    (40, 90, 160),
)

_PANTS_BGR: tuple[tuple[int, int, int], ...] = (
    (90, 60, 40),
    (40, 40, 45),
    (110, 70, 40),
    (30, 55, 85),
    (50, 70, 50),
    (70, 45, 35),
)

_SHOE_BGR: tuple[tuple[int, int, int], ...] = ((30, 30, 35), (20, 25, 45), (45, 40, 40))

# Dark hair only: a back view is hair over a body, and grey or light hair (the default sprites'
# palette has both) blends into the floor, which cost NanoDet a third of the back views of
# ~100 px people (measured at 640x360: 60-67 % found with grey hair, 100 % with dark).
_HAIR_BGR: tuple[tuple[int, int, int], ...] = (
    (25, 30, 40),
    (20, 45, 80),
    (35, 35, 35),
    (45, 60, 90),
    (15, 20, 25),
)


@dataclass(frozen=True, slots=True)
class _Pose:
    """Everything of one gait phase, in final sprite pixels (pure arithmetic)."""

    u: float
    width: int
    height: int
    cx: float  # body axis
    sole: float  # row where the lowest sole touches the floor (the anchor's y)
    bob: float  # how far the upper body sinks at this phase
    swing: float  # sin(phase): +1 left leg forward, -1 right leg forward


def height_for_face(face_px: float) -> float:
    """Standing height (crown to sole) of a person whose face box is ``face_px`` high."""
    return face_px * BODY_PER_FACE


def gait_phase(distance_px: float, face_px: float) -> int:
    """The pose (0 .. GAIT_PHASES-1) after walking ``distance_px`` image pixels."""
    stride = STRIDE_BODIES * height_for_face(face_px)
    return math.floor(distance_px / stride * GAIT_PHASES) % GAIT_PHASES


def _pose(face_px: float, phase: int) -> _Pose:
    u = face_px / _FACE_U
    width = math.ceil(BODY_WIDTH_PER_FACE * face_px + 2 * _SIDE_PAD_U * u)
    width += width % 2  # the axis falls between two pixels whatever the size
    sole = _TOP_PAD_U * u + _HEIGHT_U * u
    height = math.ceil(sole) + 1
    angle = 2 * math.pi * phase / GAIT_PHASES
    return _Pose(
        u=u,
        width=width,
        height=height,
        cx=width / 2,
        sole=sole,
        bob=0.04 * u * abs(math.cos(angle)),
        swing=math.sin(angle),
    )


def _head_geometry(src: FaceSource, pose: _Pose) -> tuple[int, int, int, int, float, float]:
    """``head_x, head_y, head_w, head_h`` of the scaled head crop and its scale ``sx, sy``."""
    fx1, fy1, fx2, fy2 = src.face
    k = _FACE_U * pose.u / (fy2 - fy1)
    ch, cw = src.head.shape[:2]
    head_w, head_h = max(2, round(cw * k)), max(2, round(ch * k))
    sx, sy = head_w / cw, head_h / ch
    head_x = round(pose.cx - (fx1 + fx2) / 2 * sx)
    head_y = round(_TOP_PAD_U * pose.u + _FACE_TOP_U * pose.u + pose.bob - fy1 * sy)
    return head_x, head_y, head_w, head_h, sx, sy


def facing_source(src: FaceSource, flip: bool) -> FaceSource:
    """``src`` mirrored when ``flip``: a flipped person has the head photo mirrored, not the
    body (bodies are symmetric), so its layout is the arithmetic of the mirrored photo."""
    if not flip:
        return src
    w = src.head.shape[1]
    x1, y1, x2, y2 = src.face
    head = np.ascontiguousarray(src.head[:, ::-1])
    return FaceSource(src.name, head, (w - x2, y1, w - x1, y2), src.outline, src.grey)


def body_layout(src: FaceSource, face_px: float, phase: int) -> SpriteLayout:
    """Where the head and face sit in the body sprite of one gait phase, without rendering.

    ``anchor`` is the feet (the body axis on the sole row), not the face centre as in the
    default sprites: the scene moves the anchor along the walk, and a crossing is the feet
    crossing the line. Every phase of one person has the same size and anchor. ``face`` is
    where the face is drawn (front) or would be (back views; what head masking must cover).
    """
    pose = _pose(face_px, phase)
    head_x, head_y, head_w, head_h, sx, sy = _head_geometry(src, pose)
    fx1, fy1, fx2, fy2 = src.face
    face = (head_x + fx1 * sx, head_y + fy1 * sy, head_x + fx2 * sx, head_y + fy2 * sy)
    return SpriteLayout(
        pose.width, pose.height, head_x, head_y, head_w, head_h, face, (pose.cx, pose.sole)
    )


class _Canvas:
    """A supersampled canvas with coverage, painted with whole-array masks (no pixel loops)."""

    def __init__(self, width: int, height: int) -> None:
        self.rgb = np.zeros((height, width, 3), np.float32)
        self.cov = np.zeros((height, width), bool)
        grid = np.mgrid[:height, :width].astype(np.float32) + 0.5
        self.yy, self.xx = grid[0], grid[1]

    def paint(self, mask: NDArray[np.bool_], colour: NDArray[np.float32]) -> None:
        """``colour``: one BGR triple, or an image of the canvas size."""
        self.rgb[mask] = colour[mask] if colour.ndim == 3 else colour
        self.cov |= mask

    def capsule(
        self,
        a: tuple[float, float],
        b: tuple[float, float],
        ra: float,
        rb: float,
        base: NDArray[np.float32],
        shade: float = 0.45,
    ) -> None:
        """A limb: a capsule from ``a`` to ``b`` tapering from radius ``ra`` to ``rb``, shaded
        as a cylinder (bright along its axis, darker at its rims), painted within its bounds."""
        h, w = self.cov.shape
        x0 = max(0, math.floor(min(a[0] - ra, b[0] - rb)) - 1)
        x1 = min(w, math.ceil(max(a[0] + ra, b[0] + rb)) + 1)
        y0 = max(0, math.floor(min(a[1] - ra, b[1] - rb)) - 1)
        y1 = min(h, math.ceil(max(a[1] + ra, b[1] + rb)) + 1)
        if x1 <= x0 or y1 <= y0:
            return
        xx, yy = self.xx[y0:y1, x0:x1], self.yy[y0:y1, x0:x1]
        dx, dy = b[0] - a[0], b[1] - a[1]
        length2 = dx * dx + dy * dy + 1e-6
        t = np.clip(((xx - a[0]) * dx + (yy - a[1]) * dy) / length2, 0.0, 1.0)
        d = np.hypot(xx - (a[0] + t * dx), yy - (a[1] + t * dy))
        r = ra + t * (rb - ra)
        inside = d <= r
        q = np.sqrt(np.clip(1.0 - (d / np.maximum(r, 1e-3)) ** 2, 0.0, 1.0))
        light = (1.0 - shade) + shade * q
        colour = base[None, None, :] * light[:, :, None]
        self.rgb[y0:y1, x0:x1][inside] = colour[inside]
        self.cov[y0:y1, x0:x1] |= inside


def _area_average(a: NDArray[np.float32], k: int) -> NDArray[np.float32]:
    h, w = a.shape[0] // k, a.shape[1] // k
    out: NDArray[np.float32] = (
        a[: h * k, : w * k].reshape((h, k, w, k, *a.shape[2:])).mean(axis=(1, 3))
    )
    return out


def _skin_of(head: Image, face: tuple[float, float, float, float]) -> NDArray[np.float32]:
    """The skin colour for neck and hands: median of the middle of the face."""
    x1, y1, x2, y2 = (round(v) for v in face)
    w, h = x2 - x1, y2 - y1
    core = head[y1 + h // 3 : y2 - h // 4, x1 + w // 3 : x2 - w // 3].reshape(-1, 3)
    if len(core) == 0:
        return np.array([120, 140, 180], np.float32)
    skin: NDArray[np.float32] = np.median(core, axis=0).astype(np.float32)
    return skin


def _paint_body(
    pose: _Pose, skin: NDArray[np.float32], person: Person
) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """Legs, torso, arms and neck at ``_SS`` times the size, area-averaged down: colour
    (premultiplied by coverage, then divided back) and coverage 0..1."""
    s = _SS
    u = pose.u * s
    cx = pose.cx * s
    sole = pose.sole * s
    top = _TOP_PAD_U * u
    bob = pose.bob * s
    cv = _Canvas(pose.width * s, pose.height * s)
    shirt = np.array(_SHIRT_BGR[person.clothes % len(_SHIRT_BGR)], np.float32)
    pants = np.array(_PANTS_BGR[(person.clothes * 7 + person.hair) % len(_PANTS_BGR)], np.float32)
    shoe = np.array(_SHOE_BGR[person.index % len(_SHOE_BGR)], np.float32)

    # Legs: the forward foot lands lower in the image, the rear one is lifted and its knee
    # bends. The feet are then moved together so the lowest sole touches ``sole`` exactly.
    hip_y = top + 3.55 * u + bob
    legs: list[tuple[float, tuple[float, float], tuple[float, float], tuple[float, float]]] = []
    for side in (-1.0, 1.0):
        step = -side * pose.swing  # +1: this foot forward
        ankle_y = sole - 0.62 * u - 0.18 * u * max(0.0, -step) + 0.12 * u * max(0.0, step)
        hip = (cx + side * 0.42 * u, hip_y)
        knee_lift = 0.1 * u * max(0.0, -step)
        knee = (
            cx + side * (0.40 * u + 0.05 * u * max(0.0, -step)),
            (hip_y + ankle_y) / 2 - knee_lift,
        )
        legs.append((step, hip, knee, (cx + side * 0.36 * u, ankle_y)))
    lowest = max(ankle[1] for _s, _h, _k, ankle in legs)
    drop = (sole - 0.4 * u) - lowest  # a shoe reaches 0.4 u below its ankle
    for _step, hip, knee, ankle in sorted(legs, key=lambda leg: leg[0]):  # rear leg first
        k2 = (knee[0], knee[1] + drop / 2)
        a2 = (ankle[0], ankle[1] + drop)
        cv.capsule(hip, k2, 0.34 * u, 0.25 * u, pants)
        cv.capsule(k2, a2, 0.25 * u, 0.17 * u, pants)
        shoe_y = a2[1] + 0.1 * u
        cv.capsule(
            (a2[0], shoe_y - 0.05 * u), (a2[0], shoe_y + 0.08 * u), 0.21 * u, 0.22 * u, shoe, 0.3
        )

    # Torso: a shaped half-width profile from the shoulders to the hips, shirt above the belt.
    sh_y = top + 1.45 * u + bob
    belt_y = top + 3.25 * u + bob
    prof_y = np.array([sh_y - 0.25 * u, sh_y, top + 2.3 * u + bob, belt_y, hip_y + 0.2 * u])
    prof_w = np.array([0.55, 0.98, 0.80, 0.74, 0.78], np.float32) * u
    yy, xx = cv.yy, cv.xx
    half = np.interp(yy, prof_y, prof_w).astype(np.float32)
    rounded = np.sqrt(np.clip((yy - (sh_y - 0.3 * u)) / (0.3 * u), 0.0, 1.0))
    torso = (
        (yy >= sh_y - 0.3 * u)
        & (yy <= hip_y + 0.2 * u)
        & (np.abs(xx - cx) <= half * np.maximum(rounded, 0.5))
    )
    nx = np.clip((xx - cx) / np.maximum(half, 1.0), -1.0, 1.0)
    tshade = (0.62 + 0.38 * np.sqrt(np.clip(1.0 - nx**2, 0.0, 1.0)) - 0.05 * nx)[:, :, None]
    cv.paint(torso & (yy < belt_y), shirt[None, None, :] * tshade)
    cv.paint(torso & (yy >= belt_y), pants[None, None, :] * tshade)
    cv.paint(torso & (np.abs(yy - belt_y) < 0.06 * u), pants * 0.45)

    # Arms swing opposite to the legs: a forward hand is lower and nearer the body axis.
    arm_top = sh_y + 0.12 * u
    hand = skin * 0.95
    for side in (-1.0, 1.0):
        swing = side * pose.swing
        shoulder = (cx + side * 0.86 * u, arm_top)
        elbow = (
            cx + side * (0.98 * u - 0.06 * u * swing),
            arm_top + 1.35 * u - 0.12 * u * abs(swing),
        )
        wrist = (
            cx + side * (0.98 * u - 0.12 * u * swing),
            elbow[1] + 1.25 * u - 0.25 * u * max(0.0, -swing) + 0.05 * u * max(0.0, swing),
        )
        cv.capsule(shoulder, elbow, 0.22 * u, 0.18 * u, shirt)
        cv.capsule(elbow, wrist, 0.17 * u, 0.13 * u, hand)
        cv.capsule(wrist, (wrist[0], wrist[1] + 0.28 * u), 0.14 * u, 0.12 * u, hand, 0.3)

    cv.capsule((cx, top + 0.85 * u + bob), (cx, sh_y + 0.05 * u), 0.24 * u, 0.26 * u, skin * 0.85)

    cov = cv.cov.astype(np.float32)
    alpha = _area_average(cov, s)
    premultiplied = _area_average(cv.rgb * cov[:, :, None], s)
    colour = (premultiplied / np.maximum(alpha, 1e-4)[:, :, None]).astype(np.float32)
    return colour, alpha


def build_body_sprite(src: FaceSource, person: Person, phase: int) -> Sprite:
    """The full-body sprite of ``person`` in gait ``phase``; its layout is :func:`body_layout`.

    ``src`` is the unflipped photo (``person.flip`` mirrors it here, as :func:`facing_source`).
    The mask keeps pixels at least half covered (the scene pastes with a boolean mask); the
    head photo (front) or a hair ellipse (back) goes on top at the final size.
    """
    src = facing_source(src, person.flip)
    tint = np.array(SKIN_TINTS[person.tint] if src.grey else (1.0, 1.0, 1.0), np.float32)
    lay = body_layout(src, person.face_px, phase)
    pose = _pose(person.face_px, phase)
    head = resize_image(src.head, lay.head_w, lay.head_h).astype(np.float32)
    head_u8 = np.clip(head * tint * person.brightness, 0, 255).astype(np.uint8)
    hx1, hy1 = lay.face[0] - lay.head_x, lay.face[1] - lay.head_y
    hx2, hy2 = lay.face[2] - lay.head_x, lay.face[3] - lay.head_y
    skin = _skin_of(head_u8, (hx1, hy1, hx2, hy2))

    colour, alpha = _paint_body(pose, skin, person)
    img = np.clip(colour, 0, 255).astype(np.uint8)
    mask = alpha >= 0.5
    x1, y1, x2, y2 = lay.face
    fcx, fcy = (x1 + x2) / 2, (y1 + y2) / 2
    f = y2 - y1
    hair = np.array(_HAIR_BGR[person.hair % len(_HAIR_BGR)], np.float32)
    if person.facing == "back":
        # The back of the head: a hair ellipse over the whole head, no face pixel at all.
        back = ellipse_mask(lay.height, lay.width, fcx, fcy - 0.1 * f, 0.52 * f, 0.68 * f)
        shade = np.linspace(1.15, 0.8, lay.height, dtype=np.float32)[np.nonzero(back)[0], None]
        img[back] = np.clip(hair[None, :] * shade, 0, 255).astype(np.uint8)
        mask |= back
    else:
        if not src.outline:
            behind = ellipse_mask(lay.height, lay.width, fcx, fcy - 0.15 * f, 0.55 * f, 0.7 * f)
            img[behind] = hair.astype(np.uint8)
            mask |= behind
        # The head crop, cut out with an ellipse inscribed in it, clipped to the sprite.
        hmask = ellipse_mask(
            lay.head_h, lay.head_w, lay.head_w / 2, lay.head_h / 2, lay.head_w / 2, lay.head_h / 2
        )
        px0, py0 = max(0, lay.head_x), max(0, lay.head_y)
        px1 = min(lay.width, lay.head_x + lay.head_w)
        py1 = min(lay.height, lay.head_y + lay.head_h)
        sub = np.s_[py0 - lay.head_y : py1 - lay.head_y, px0 - lay.head_x : px1 - lay.head_x]
        np.copyto(img[py0:py1, px0:px1], head_u8[sub], where=hmask[sub][:, :, None])
        mask[py0:py1, px0:px1] |= hmask[sub]
    img[~mask] = 0
    return Sprite(np.ascontiguousarray(img), mask, lay)
