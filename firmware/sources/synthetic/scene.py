"""A synthetic store entrance: people with real face photos walking across a counting line.

Used by the demo, the tests and the counting benchmarks, so it must be deterministic (same seed,
same frames) and must know its ground truth: the face box of every visible person in every frame
and every crossing of the line, with its direction.

The faces are real photographs shipped inside the scikit-image wheel, read from its data folder
(no network, no download): ``astronaut.png`` (Eileen Collins, frontal, colour), ``camera.png``
(the cameraman, grey) and ``lfw_subset.npy`` (100 Labeled-Faces-in-the-Wild faces, 25x25 grey).
Each person is a head cut from one of them, scaled, maybe mirrored, with its brightness and tint
varied, on a plain body of a clothing colour. The floor comes from scikit-image's gravel texture.

Geometry: the camera looks along the walking direction; y grows downwards and the counting line
is the horizontal line y = 0.5 (the default ``counter.line``). The store is the bottom half
(``counter.inside`` = (0.5, 1.0)): walking down across the line is an entry, walking up an exit.
With ``back_share`` > 0 some people walk with their back to the camera and never show a face
(hair only): counting must not depend on faces. The others show a face whichever way they
walk. People keep to lanes, so faces never overlap and every ground-truth face is unoccluded.

Speed: the background and each person's sprite are rendered once; a frame is a copy of the
background plus one masked ``np.copyto`` per visible person.

Full bodies (``bodies=True``, opt-in; the default renders exactly as before): every person is a
complete walking figure (:mod:`~firmware.sources.synthetic.bodies`) that a person detector sees
as a person, with the gait pose chosen per frame from the distance walked. Faces are then
smaller (a body is about 9.6 face heights: 20-30 px faces, 190-290 px bodies at 720 rows, so a
body is at most 0.4 of the frame high and is seen whole well before and after the line). The
path a person follows is then the path of their feet, not of their face centre, and a true
crossing is the feet crossing the line: what the counter tests on a person box with the default
``counter.anchor = "bottom"`` (the box's bottom centre). Faces cross about a body height
earlier or later, which is why the face-centre convention of the default scene does not carry
over.
"""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Iterator, Sequence
from fractions import Fraction
from pathlib import Path
from typing import get_args

import numpy as np
from numpy.typing import NDArray

from firmware.frames import Frame, Image
from firmware.sources.base import SourceBase
from firmware.sources.synthetic.bodies import (
    BODY_WIDTH_PER_FACE,
    GAIT_PHASES,
    body_layout,
    build_body_sprite,
    facing_source,
    gait_phase,
)
from firmware.sources.synthetic.faces import load_faces, skimage_data_dir
from firmware.sources.synthetic.people import LINE_Y, Crossing, Person, Walk, WalkKind
from firmware.sources.synthetic.sprites import (
    _BODY_WIDTH,
    _CLOTHES_BGR,
    _HAIR_BGR,
    SKIN_TINTS,
    Sprite,
    SpriteLayout,
    build_sprite,
    layout_for,
    mirror_layout,
    render_background,
)

logger = logging.getLogger(__name__)

_KINDS: tuple[WalkKind, ...] = get_args(WalkKind)

_KIND_WEIGHTS = np.array([0.32, 0.28, 0.1, 0.1, 0.1, 0.1])

_REFERENCE_HEIGHT = 720

_FACE_PX = (60.0, 160.0)  # face heights at 720 rows; scaled with the frame height

# Face heights of full bodies at 720 rows: bodies of 190-290 px. NanoDet at 448x256 finds ~100 %
# of drawn bodies from about 200 px (fewer below 150 px in some colours); above 0.4 of the frame
# an entering person would be seen whole only once the feet are nearly on the line.
_BODY_FACE_PX = (20.0, 30.0)

_SWAY = 0.03  # side-to-side sway amplitude / lane width

_PERIOD_S = 3600.0  # longer scenes repeat their first hour


class SyntheticScene(SourceBase):
    """A deterministic scene of people with real faces crossing the line y = 0.5.

    ``max_in_view``: lanes across the frame, hence the most people in view at once; more lanes
    means narrower lanes and smaller faces (a face never overlaps another). ``mean_gap_s``: mean
    pause between people in one lane (smaller is busier). ``people``: ``None`` fills the scene,
    an int schedules exactly that many people, a sequence of :class:`Walk` scripts the scene.
    ``face_px``: range of face heights (default 60-160 px at 720 rows, scaled with ``height``;
    with ``bodies`` 20-30 px). ``bodies``: draw complete walking figures a person detector sees
    (see the module docstring: paths and crossings are then those of the feet); off, the
    default, renders the head-and-torso sprites exactly as before.
    """

    def __init__(
        self,
        width: int = 1280,
        height: int = 720,
        fps: float = 15.0,
        duration_s: float = 60.0,
        people: int | Sequence[Walk] | None = None,
        seed: int = 0,
        *,
        max_in_view: int = 3,
        mean_gap_s: float = 1.5,
        face_px: tuple[float, float] | None = None,
        back_share: float = 0.0,
        bodies: bool = False,
    ) -> None:
        if not 0.0 <= back_share <= 1.0:
            raise ValueError(f"back_share must be in 0..1, got {back_share}")
        self.back_share = float(back_share)
        self.bodies = bool(bodies)
        if width < 64 or height < 64:
            raise ValueError(f"the scene needs at least 64x64 pixels, got {width}x{height}")
        if fps <= 0 or duration_s <= 0:
            raise ValueError("fps and duration_s must be positive")
        if max_in_view < 1:
            raise ValueError("max_in_view must be at least 1")
        self._w, self._h = int(width), int(height)
        self._fps = float(fps)
        self._rate = Fraction(fps).limit_denominator(1001)
        self.duration_s = float(duration_s)
        self.seed = int(seed)
        self._frame_count = max(1, round(self.duration_s * self._fps))
        data = skimage_data_dir()
        self._faces = load_faces()
        k = self._h / _REFERENCE_HEIGHT
        default_px = _BODY_FACE_PX if self.bodies else _FACE_PX
        lo, hi = face_px if face_px is not None else (default_px[0] * k, default_px[1] * k)
        self._lanes = max_in_view
        margin = 0.04 * self._w + 2  # keep clear of the shelves
        self._lane_w = (self._w - 2 * margin) / max_in_view
        self._lane_x = tuple(margin + self._lane_w * (i + 0.5) for i in range(max_in_view))
        per_face = BODY_WIDTH_PER_FACE if self.bodies else _BODY_WIDTH + 0.02
        fit = self._lane_w * (1 - 2 * _SWAY - 0.04) / per_face
        if fit < lo:
            raise ValueError(
                f"{max_in_view} lanes of {self._lane_w:.0f} px cannot hold faces of {lo:.0f} px; "
                "lower max_in_view or face_px"
            )
        self._face_range = (float(lo), float(min(hi, fit)))
        self._period = min(self.duration_s, _PERIOD_S)
        self._people = self._schedule(people, mean_gap_s)
        self._starts = np.array([p.t_start for p in self._people], np.float64)
        self._ends = np.array([p.t_end for p in self._people], np.float64)
        self._layouts = [self._layout_of(p) for p in self._people]
        # With bodies, one layout per gait phase (the face bobs; size and anchor are the same).
        self._phases: list[tuple[SpriteLayout, ...]] = (
            [self._body_layouts(p) for p in self._people] if self.bodies else []
        )
        self._background = render_background(self._w, self._h, data)
        self._sprites: dict[tuple[int, int], Sprite] = {}
        self._crossings = self._all_crossings()

    # -- scheduling -------------------------------------------------------------------------
    def _path(
        self, walk: Walk, rng: np.random.Generator, face_px: float, identity: int
    ) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """Times and anchor ys (pixels; the face centre, or the feet with bodies) of a walk,
        starting and ending off-frame."""
        src = self._faces[identity]
        lay = body_layout(src, face_px, 0) if self.bodies else layout_for(src, face_px)
        h = self._h
        top = -(lay.height - lay.anchor[1]) - 1.0  # whole sprite above the frame
        bottom = h + lay.anchor[1] + 1.0  # whole sprite below the frame
        speed = (walk.speed if walk.speed is not None else rng.uniform(0.17, 0.3)) * h
        pause = walk.pause_s if walk.pause_s is not None else rng.uniform(0.4, 1.5)
        kind = walk.kind
        if kind in ("turn_back_top", "turn_back_bottom"):
            default = rng.uniform(0.2, 0.4) if kind == "turn_back_top" else rng.uniform(0.6, 0.8)
            stop = (walk.stop_y if walk.stop_y is not None else default) * h
            edge = top if kind == "turn_back_top" else bottom
            d = abs(stop - edge) / speed
            t0 = walk.start_s
            return (t0, t0 + d, t0 + d + pause, t0 + 2 * d + pause), (edge, stop, stop, edge)
        down = kind in ("entry", "linger_entry")
        a, b = (top, bottom) if down else (bottom, top)
        t0 = walk.start_s
        if kind in ("entry", "exit"):
            return (t0, t0 + abs(b - a) / speed), (a, b)
        # Lingering: a stop of a few seconds, before or after the line, well clear of it.
        if walk.pause_s is None:
            pause = rng.uniform(2.0, 6.0)
        side = rng.uniform(0.2, 0.38) if rng.random() < 0.5 else rng.uniform(0.62, 0.8)
        stop = (walk.stop_y if walk.stop_y is not None else side) * h
        t1 = t0 + abs(stop - a) / speed
        t2 = t1 + pause
        return (t0, t1, t2, t2 + abs(b - stop) / speed), (a, stop, stop, b)

    def _person(self, index: int, walk: Walk, lane: int) -> Person:
        rng = np.random.default_rng([self.seed, index])
        n_faces = len(self._faces)
        if walk.identity is not None:
            if not 0 <= walk.identity < n_faces:
                raise ValueError(f"identity must be in 0..{n_faces - 1}, got {walk.identity}")
            identity = walk.identity
        else:
            # The two big photos a little more often than any one LFW face; LFW gives variety.
            r = rng.random()
            identity = 0 if r < 0.12 else 1 if r < 0.2 else int(rng.integers(2, n_faces))
        lo, hi = self._face_range
        face_px = walk.face_px if walk.face_px is not None else float(rng.uniform(lo, hi))
        times, ys = self._path(walk, rng, face_px, identity)
        # Drawn from a stream of its own, so the people of an existing seed stay the same.
        facing = walk.facing
        if facing is None:
            back = np.random.default_rng([self.seed, index, 7]).random() < self.back_share
            facing = "back" if back else "front"
        jitter = rng.uniform(-0.05, 0.05) * self._lane_w
        return Person(
            index=index,
            kind=walk.kind,
            lane=lane,
            x=self._lane_x[lane] + jitter,
            face_px=face_px,
            identity=identity,
            times=tuple(float(t) for t in times),
            ys=tuple(float(y) for y in ys),
            flip=bool(rng.random() < 0.5),
            brightness=float(rng.uniform(0.85, 1.15)),
            tint=int(rng.integers(len(SKIN_TINTS))),
            clothes=int(rng.integers(len(_CLOTHES_BGR))),
            hair=int(rng.integers(len(_HAIR_BGR))),
            sway_period_s=float(rng.uniform(1.5, 3.0)),
            sway_phase=float(rng.uniform(0, 2 * math.pi)),
            facing=facing,
        )

    def _schedule(
        self, people: int | Sequence[Walk] | None, mean_gap_s: float
    ) -> tuple[Person, ...]:
        if people is not None and not isinstance(people, int):
            return self._scripted(people)
        if isinstance(people, int) and people < 0:
            raise ValueError(f"people must be >= 0, got {people}")
        gap = mean_gap_s
        if isinstance(people, int) and people > 0:
            # Spread a fixed number of people over the whole scene (about 7 s per walk).
            gap = max(0.3, (self._lanes * self._period - 7.0 * people) / people)
        for _attempt in range(6):
            scheduled = self._fill(people, gap)
            if people is None or len(scheduled) >= people:
                return scheduled
            gap /= 2
        raise ValueError(
            f"{people} people do not fit in {self._period:.0f} s with {self._lanes} lanes; "
            "raise duration_s or max_in_view"
        )

    def _fill(self, limit: int | None, mean_gap_s: float) -> tuple[Person, ...]:
        rng = np.random.default_rng([self.seed, 1_000_003])
        free_at = rng.uniform(0.0, min(mean_gap_s, 2.0), self._lanes)
        out: list[Person] = []
        index = 0
        while limit is None or len(out) < limit:
            lane = int(np.argmin(free_at))
            t0 = float(free_at[lane])
            if not math.isfinite(t0):
                break
            kind = _KINDS[int(rng.choice(len(_KINDS), p=_KIND_WEIGHTS))]
            person = self._person(index, Walk(kind, t0), lane)
            index += 1
            if person.t_end > self._period:
                free_at[lane] = math.inf  # this lane is full until the end of the scene
                continue
            out.append(person)
            free_at[lane] = person.t_end + 0.3 + rng.exponential(mean_gap_s)
        return tuple(sorted(out, key=lambda p: p.t_start))

    def _scripted(self, walks: Sequence[Walk]) -> tuple[Person, ...]:
        out: list[Person] = []
        busy: list[list[tuple[float, float]]] = [[] for _ in range(self._lanes)]
        for index, walk in enumerate(sorted(walks, key=lambda w: w.start_s)):
            if walk.kind not in _KINDS:
                raise ValueError(f"unknown walk kind {walk.kind!r}; use one of {_KINDS}")
            lanes = [walk.lane] if walk.lane is not None else list(range(self._lanes))
            for lane in lanes:
                if not 0 <= lane < self._lanes:
                    raise ValueError(f"lane must be in 0..{self._lanes - 1}, got {lane}")
                person = self._person(index, walk, lane)
                if all(person.t_end <= a or person.t_start >= b for a, b in busy[lane]):
                    busy[lane].append((person.t_start, person.t_end))
                    out.append(person)
                    break
            else:
                raise ValueError(
                    f"walk {index} ({walk.kind} at {walk.start_s} s) overlaps another person in "
                    "its lane; give it another lane or start time, or raise max_in_view"
                )
        return tuple(out)

    def _layout_of(self, person: Person) -> SpriteLayout:
        if self.bodies:
            return body_layout(
                facing_source(self._faces[person.identity], person.flip), person.face_px, 0
            )
        lay = layout_for(self._faces[person.identity], person.face_px)
        return mirror_layout(lay) if person.flip else lay

    def _body_layouts(self, person: Person) -> tuple[SpriteLayout, ...]:
        src = facing_source(self._faces[person.identity], person.flip)
        return tuple(body_layout(src, person.face_px, k) for k in range(GAIT_PHASES))

    def _phase_at(self, person: Person, tp: float) -> int:
        """The gait pose at time ``tp``: from the distance walked, so a standing person (a
        lingering or turning pause) holds pose 0, feet together."""
        times = np.asarray(person.times)
        ys = np.asarray(person.ys)
        walked = np.concatenate([[0.0], np.cumsum(np.abs(np.diff(ys)))])
        seg = int(np.clip(np.searchsorted(times, tp, side="right") - 1, 0, len(times) - 2))
        if ys[seg + 1] == ys[seg]:
            return 0
        distance = float(np.interp(tp, times, walked))
        return gait_phase(distance, person.face_px)

    def _all_crossings(self) -> tuple[Crossing, ...]:
        one: list[Crossing] = []
        line = LINE_Y * self._h
        for p in self._people:
            points = list(zip(p.times, p.ys, strict=True))
            for (t0, y0), (t1, y1) in itertools.pairwise(points):
                if (y0 - line) * (y1 - line) < 0:
                    t = t0 + (line - y0) / (y1 - y0) * (t1 - t0)
                    one.append(Crossing(t, "entry" if y1 > y0 else "exit", p.index))
        one.sort(key=lambda c: c.t_s)
        ends = {p.index: p.t_end for p in self._people}
        out: list[Crossing] = []
        n = max((p.index for p in self._people), default=0) + 1
        repeats = math.ceil(self.duration_s / self._period)
        for k in range(repeats):
            for c in one:
                # A person is in the scene only if their whole walk fits before its end.
                if k * self._period + ends[c.person] <= self.duration_s:
                    out.append(Crossing(k * self._period + c.t_s, c.direction, c.person + k * n))
        return tuple(out)

    # -- ground truth -----------------------------------------------------------------------
    @property
    def people(self) -> tuple[Person, ...]:
        """The scheduled people of one period (the first hour; longer scenes repeat it)."""
        return self._people

    @property
    def crossings(self) -> tuple[Crossing, ...]:
        """Every crossing of the line by a face centre (with bodies: by the feet), in time
        order."""
        return self._crossings

    @property
    def identities(self) -> tuple[str, ...]:
        """Names of the face photos: ``astronaut``, ``cameraman``, ``lfw-000`` .. ``lfw-099``."""
        return tuple(f.name for f in self._faces)

    @property
    def background(self) -> Image:
        """A copy of the empty scene."""
        return self._background.copy()

    def _placements(self, index: int) -> list[tuple[int, int, int, int]]:
        """``(person slot, x0, y0, gait phase)`` of each person in frame ``index``, back to
        front (phase 0 without bodies)."""
        t = index / self._fps
        k = int(t // self._period)
        tp = t - k * self._period
        end_limit = self.duration_s - k * self._period
        active = np.nonzero((self._starts <= tp) & (self._ends >= tp) & (self._ends <= end_limit))[
            0
        ]
        out: list[tuple[float, int, int, int, int]] = []
        for slot in active.tolist():
            p = self._people[slot]
            lay = self._layouts[slot]
            y = float(np.interp(tp, p.times, p.ys))
            sway = (
                _SWAY * self._lane_w * math.sin(2 * math.pi * tp / p.sway_period_s + p.sway_phase)
            )
            x0 = round(p.x + sway - lay.anchor[0])
            y0 = round(y - lay.anchor[1])
            phase = self._phase_at(p, tp) if self.bodies else 0
            out.append((y, slot, x0, y0, phase))
        out.sort()
        return [(slot, x0, y0, phase) for _y, slot, x0, y0, phase in out]

    def truth(
        self, index: int, *, min_visible: float = 0.0, heads: bool = False
    ) -> NDArray[np.float32]:
        """Face boxes ``(N, 4)`` (x1, y1, x2, y2 pixels) visible in frame ``index``.

        Boxes are clipped to the frame; a face partly outside is included when at least
        ``min_visible`` of its area (and at least one pixel each way) is inside. People walking
        with their back to the camera show no face and are left out, unless ``heads``: then the
        box is where the head is, for everyone (what head masking must cover).
        """
        boxes: list[tuple[float, float, float, float]] = []
        for slot, x0, y0, phase in self._placements(index):
            if not heads and self._people[slot].facing == "back":
                continue
            lay = self._phases[slot][phase] if self.bodies else self._layouts[slot]
            fx1, fy1, fx2, fy2 = lay.face
            x1, y1, x2, y2 = x0 + fx1, y0 + fy1, x0 + fx2, y0 + fy2
            cx1, cy1 = max(0.0, x1), max(0.0, y1)
            cx2, cy2 = min(float(self._w), x2), min(float(self._h), y2)
            if cx2 - cx1 < 1 or cy2 - cy1 < 1:
                continue
            if (cx2 - cx1) * (cy2 - cy1) < min_visible * (x2 - x1) * (y2 - y1):
                continue
            boxes.append((cx1, cy1, cx2, cy2))
        return np.array(boxes, np.float32).reshape(-1, 4)

    def people_boxes(self, index: int) -> NDArray[np.float32]:
        """Body boxes ``(N, 4)`` (x1, y1, x2, y2 pixels, clipped to the frame) of the people
        visible in frame ``index``: the bounding box of every drawn pixel of a person, what a
        person detector should find. Renders the sprites it needs (they are cached)."""
        boxes: list[tuple[float, float, float, float]] = []
        for slot, x0, y0, phase in self._placements(index):
            mask = self._sprite(slot, phase).mask
            rows = np.flatnonzero(mask.any(axis=1))
            cols = np.flatnonzero(mask.any(axis=0))
            x1 = max(0.0, float(x0 + cols[0]))
            y1 = max(0.0, float(y0 + rows[0]))
            x2 = min(float(self._w), float(x0 + cols[-1] + 1))
            y2 = min(float(self._h), float(y0 + rows[-1] + 1))
            if x2 - x1 >= 1 and y2 - y1 >= 1:
                boxes.append((x1, y1, x2, y2))
        return np.array(boxes, np.float32).reshape(-1, 4)

    # -- rendering --------------------------------------------------------------------------
    def _sprite(self, slot: int, phase: int = 0) -> Sprite:
        sprite = self._sprites.get((slot, phase))
        if sprite is not None:
            return sprite
        p = self._people[slot]
        if self.bodies:
            sprite = build_body_sprite(self._faces[p.identity], p, phase)
        else:
            sprite = build_sprite(self._faces[p.identity], p)
            if p.flip:
                sprite = Sprite(
                    np.ascontiguousarray(sprite.image[:, ::-1]),
                    np.ascontiguousarray(sprite.mask[:, ::-1]),
                    mirror_layout(sprite.layout),
                )
        self._sprites[(slot, phase)] = sprite
        return sprite

    def render(self, index: int) -> Image:
        """Frame ``index`` (any order; sequential access is fastest)."""
        if not 0 <= index < self._frame_count:
            raise IndexError(f"frame {index} is outside 0..{self._frame_count - 1}")
        img = self._background.copy()
        placements = self._placements(index)
        visible = {slot for slot, _x, _y, _phase in placements}
        # Sprites of people who have left are dropped, so memory stays flat on long runs.
        for key in [k for k in self._sprites if k[0] not in visible]:
            del self._sprites[key]
        for slot, x0, y0, phase in placements:
            sprite = self._sprite(slot, phase)
            sh, sw = sprite.mask.shape
            fx0, fy0 = max(0, x0), max(0, y0)
            fx1, fy1 = min(self._w, x0 + sw), min(self._h, y0 + sh)
            if fx1 <= fx0 or fy1 <= fy0:
                continue
            sub = np.s_[fy0 - y0 : fy1 - y0, fx0 - x0 : fx1 - x0]
            np.copyto(img[fy0:fy1, fx0:fx1], sprite.image[sub], where=sprite.mask[sub][:, :, None])
        return img

    # -- FrameSource ------------------------------------------------------------------------
    @property
    def size(self) -> tuple[int, int]:
        return (self._w, self._h)

    @property
    def fps(self) -> float:
        return self._fps

    @property
    def rate(self) -> Fraction:
        return self._rate

    @property
    def frame_count(self) -> int:
        return self._frame_count

    def describe(self) -> str:
        return (
            f"synthetic scene {self._w}x{self._h} @ {self._fps:g} fps, {self.duration_s:g} s, "
            f"{len(self._people)} people, {len(self._crossings)} crossings, seed {self.seed}"
            + (", full bodies" if self.bodies else "")
        )

    def frames(self) -> Iterator[Frame]:
        step_ns = 1e9 / self._fps
        for index in range(self._frame_count):
            yield Frame(self.render(index), round(index * step_ns), index)

    def close(self) -> None:
        self._sprites.clear()


def write_video(
    scene: SyntheticScene,
    path: Path | str,
    *,
    codec: str | None = None,
    crf: int = 18,
    preset: str = "veryfast",
    max_frames: int | None = None,
) -> str:
    """Render ``scene`` into a video file; returns the encoder used (libx264, else mpeg4).

    ``crf`` 18 keeps faces crisp enough that a detector sees the same faces in the file as in
    the rendered frames.
    """
    from itertools import islice

    from firmware.media.video_writer import write_video as encode

    frames = scene.frames() if max_frames is None else islice(scene.frames(), max_frames)
    used, n = encode(
        frames, path, fps=scene.rate, size=scene.size, codec=codec, crf=crf, preset=preset
    )
    logger.info("wrote %d frames of the synthetic scene to %s with %s", n, path, used)
    return used
