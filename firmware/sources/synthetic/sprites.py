"""A synthetic person's sprite (head from a real photo on a plain body) and the floor.

Pure rendering, done once per person: a frame is then a copy of the background plus one masked
``np.copyto`` per visible person.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from firmware.frames import Image
from firmware.sources.synthetic.faces import FaceSource, resize_image
from firmware.sources.synthetic.people import LINE_Y, Person

logger = logging.getLogger(__name__)


_BODY_WIDTH = 1.9  # shoulder width / face height


_TORSO_HEIGHT = 1.6  # visible torso / face height


_CLOTHES_BGR = (
    (60, 60, 170),
    (150, 90, 40),
    (50, 120, 50),
    (40, 40, 40),
    (200, 200, 200),
    (30, 140, 200),
    (120, 60, 110),
    (90, 90, 90),
    (160, 130, 60),
    (70, 40, 120),
)


_HAIR_BGR = ((25, 30, 40), (20, 45, 80), (35, 35, 35), (60, 90, 130), (150, 150, 150))


# Tints that give the grey photos a plausible range of skin tones (B, G, R multipliers).
SKIN_TINTS = ((0.80, 0.92, 1.06), (0.70, 0.82, 0.98), (0.86, 0.93, 1.02), (0.62, 0.74, 0.90))


@dataclass(frozen=True, slots=True)
class SpriteLayout:
    """Where things sit in a person's sprite, for a given face height (pure arithmetic)."""

    width: int
    height: int
    head_x: int  # top-left of the scaled head crop
    head_y: int
    head_w: int
    head_h: int
    face: tuple[float, float, float, float]  # face box in sprite coordinates
    anchor: tuple[float, float]  # face centre in sprite coordinates


@dataclass(frozen=True, slots=True)
class Sprite:
    image: Image
    mask: NDArray[np.bool_]
    layout: SpriteLayout


def ellipse_mask(h: int, w: int, cx: float, cy: float, ax: float, ay: float) -> NDArray[np.bool_]:
    yy, xx = np.ogrid[:h, :w]
    mask: NDArray[np.bool_] = ((xx + 0.5 - cx) / ax) ** 2 + ((yy + 0.5 - cy) / ay) ** 2 <= 1.0
    return mask


def layout_for(src: FaceSource, face_px: float) -> SpriteLayout:
    fx1, fy1, fx2, fy2 = src.face
    s = face_px / (fy2 - fy1)
    ch, cw = src.head.shape[:2]
    head_w, head_h = max(2, round(cw * s)), max(2, round(ch * s))
    sx, sy = head_w / cw, head_h / ch  # the exact scale after rounding to whole pixels
    face = (fx1 * sx, fy1 * sy, fx2 * sx, fy2 * sy)
    f = face_px
    face_cx = (face[0] + face[2]) / 2
    # The body is centred under the face; the sprite is as wide as head or shoulders need.
    half_body = _BODY_WIDTH * f / 2
    left = max(face_cx, half_body) + 1
    right = max(head_w - face_cx, half_body) + 1
    width = math.ceil(left + right)
    head_x = round(left - face_cx)
    # Heads without a real outline get a hair ellipse reaching half a face above the box.
    head_y = 0 if src.outline else max(0, round(0.5 * f - face[1]))
    face_abs = (head_x + face[0], head_y + face[1], head_x + face[2], head_y + face[3])
    torso_top = face_abs[3] + 0.22 * f
    height = max(head_y + head_h, math.ceil(torso_top + _TORSO_HEIGHT * f))
    anchor = ((face_abs[0] + face_abs[2]) / 2, (face_abs[1] + face_abs[3]) / 2)
    return SpriteLayout(width, height, head_x, head_y, head_w, head_h, face_abs, anchor)


def build_sprite(src: FaceSource, person: Person) -> Sprite:
    lay = layout_for(src, person.face_px)
    f = person.face_px
    img = np.zeros((lay.height, lay.width, 3), np.uint8)
    mask = np.zeros((lay.height, lay.width), bool)
    fx1, fy1, fx2, fy2 = lay.face
    fcx = (fx1 + fx2) / 2

    head = resize_image(src.head, lay.head_w, lay.head_h).astype(np.float32)
    tint = np.array(SKIN_TINTS[person.tint] if src.grey else (1.0, 1.0, 1.0), np.float32)
    head = np.clip(head * tint * person.brightness, 0, 255).astype(np.uint8)
    # The skin colour for the neck: median of the middle of the face.
    hx1, hy1 = round(fx1 - lay.head_x), round(fy1 - lay.head_y)
    hx2, hy2 = round(fx2 - lay.head_x), round(fy2 - lay.head_y)
    cx1, cx2 = hx1 + (hx2 - hx1) // 3, hx2 - (hx2 - hx1) // 3
    cy1, cy2 = hy1 + (hy2 - hy1) // 3, hy2 - (hy2 - hy1) // 4
    skin = np.median(head[cy1:cy2, cx1:cx2].reshape(-1, 3), axis=0).astype(np.uint8)

    # Torso: shoulders (half ellipse) and a shaded trunk, in the clothing colour.
    torso_top = fy2 + 0.22 * f
    clothes = np.array(_CLOTHES_BGR[person.clothes], np.float32)
    shade = np.linspace(1.05, 0.75, lay.height, dtype=np.float32)[:, None, None]
    cloth = np.clip(clothes[None, None, :] * shade, 0, 255).astype(np.uint8)
    half_w = _BODY_WIDTH * f / 2
    shoulders = ellipse_mask(lay.height, lay.width, fcx, torso_top + 0.45 * f, half_w, 0.45 * f)
    yy, xx = np.ogrid[: lay.height, : lay.width]
    trunk = (yy >= torso_top + 0.45 * f) & (np.abs(xx + 0.5 - fcx) <= half_w * 0.97)
    body = shoulders | trunk
    np.copyto(img, np.broadcast_to(cloth, img.shape), where=body[:, :, None])
    mask |= body
    neck = (
        (np.abs(xx + 0.5 - fcx) <= 0.2 * f) & (yy >= fy2 - 0.15 * f) & (yy <= torso_top + 0.2 * f)
    )
    img[neck] = (skin.astype(np.float32) * 0.85).astype(np.uint8)
    mask |= neck

    if person.facing == "back":
        # The back of the head: a hair ellipse over the whole head, no face pixel at all.
        back = ellipse_mask(
            lay.height, lay.width, fcx, (fy1 + fy2) / 2 - 0.1 * f, 0.62 * f, 0.68 * f
        )
        hair_bgr = np.array(_HAIR_BGR[person.hair], np.float32)
        shade = np.linspace(1.15, 0.8, lay.height, dtype=np.float32)[:, None]
        img[back] = np.clip(hair_bgr[None, :] * shade[np.nonzero(back)[0]], 0, 255).astype(np.uint8)
        mask |= back
        img[~mask] = 0
        return Sprite(img, mask, lay)
    if not src.outline:
        hair = ellipse_mask(lay.height, lay.width, fcx, fy1 + 0.3 * f, (fx2 - fx1) * 0.66, 0.78 * f)
        img[hair] = np.array(_HAIR_BGR[person.hair], np.uint8)
        mask |= hair
    # The head crop, cut out with an ellipse inscribed in it.
    hmask = ellipse_mask(
        lay.head_h, lay.head_w, lay.head_w / 2, lay.head_h / 2, lay.head_w / 2, lay.head_h / 2
    )
    region = np.s_[lay.head_y : lay.head_y + lay.head_h, lay.head_x : lay.head_x + lay.head_w]
    np.copyto(img[region], head, where=hmask[:, :, None])
    mask[region] |= hmask
    img[~mask] = 0
    return Sprite(img, mask, lay)


def mirror_layout(layout: SpriteLayout) -> SpriteLayout:
    """The layout of a horizontally mirrored sprite (the face box flips around the centre)."""
    x1, y1, x2, y2 = layout.face
    w = layout.width
    face = (w - x2, y1, w - x1, y2)
    return SpriteLayout(
        layout.width,
        layout.height,
        w - layout.head_x - layout.head_w,
        layout.head_y,
        layout.head_w,
        layout.head_h,
        face,
        ((face[0] + face[2]) / 2, layout.anchor[1]),
    )


def render_background(width: int, height: int, data: Path) -> Image:
    """A tiled shop floor from scikit-image's gravel texture, a threshold strip on the line and
    shelves along both sides."""
    from firmware.media.image import read_image

    gravel = read_image(data / "gravel.png")[:, :, 0].astype(np.float32)
    tex = resize_image(np.repeat(gravel[:, :, None], 3, axis=2).astype(np.uint8), width, height)
    t = tex[:, :, 0].astype(np.float32) / 255.0
    floor = np.array([150, 170, 185], np.float32)  # warm beige, BGR
    depth = np.linspace(0.85, 1.05, height, dtype=np.float32)[:, None, None]
    img = floor[None, None, :] * (0.85 + 0.3 * (t[:, :, None] - 0.5)) * depth
    tile = max(8, height // 6)
    yy, xx = np.ogrid[:height, :width]
    grout = ((yy % tile) < 2) | ((xx % tile) < 2)
    img = np.where(grout[:, :, None], img * 0.7, img)
    band = max(2, height // 90)
    line = round(LINE_Y * height)
    img[line - band : line + band] = (120, 125, 130)  # a metal threshold strip on the line
    shelf = max(4, width // 28)
    shelves = np.array([40, 60, 95], np.float32) * (0.8 + 0.4 * t[:, :shelf, None])
    img[:, :shelf] = shelves
    img[:, width - shelf :] = shelves[:, ::-1]
    out: Image = np.clip(img, 0, 255).astype(np.uint8)
    return out
