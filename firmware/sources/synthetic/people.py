"""Who walks through the synthetic scene: the scripted walks, the people drawn from them, and the
ground-truth line crossings they make."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal

logger = logging.getLogger(__name__)


WalkKind = Literal[
    "entry", "exit", "turn_back_top", "turn_back_bottom", "linger_entry", "linger_exit"
]

"""How a person moves.

- ``entry``: in at the top, out at the bottom (one entry).
- ``exit``: in at the bottom, out at the top (one exit).
- ``turn_back_top`` / ``turn_back_bottom``: come in, stop short of the line, leave the way they
  came (no crossing).
- ``linger_entry`` / ``linger_exit``: like entry / exit, with a stop of a few seconds on one side.
"""


LINE_Y = 0.5

"""The counting line, as a fraction of the frame height."""


@dataclass(frozen=True, slots=True)
class Crossing:
    """A ground-truth crossing of the line, ``t_s`` seconds into the scene: by a face centre,
    or by the feet in a scene of full bodies (``SyntheticScene(bodies=True)``)."""

    t_s: float
    direction: Literal["entry", "exit"]
    person: int = -1


@dataclass(frozen=True, slots=True)
class Walk:
    """A scripted person for :class:`SyntheticScene`; ``None`` fields are drawn from the seed.

    ``start_s``: when the person starts walking in (they are off-frame at that moment).
    ``lane``: 0 .. max_in_view-1 from the left. ``face_px``: face height in pixels.
    ``speed``: frame heights per second. ``identity``: index into ``SyntheticScene.identities``.
    ``stop_y``: where a turn-back or lingering person stops (fraction of the height; the face
    centre, or the feet with full bodies).
    ``pause_s``: how long they stop. ``facing``: ``"back"`` walks with the back of the head
    to the camera (no face is ever visible: hair only), ``None`` draws it from the scene's
    ``back_share``.
    """

    kind: WalkKind
    start_s: float
    lane: int | None = None
    face_px: float | None = None
    speed: float | None = None
    identity: int | None = None
    stop_y: float | None = None
    pause_s: float | None = None
    facing: Literal["front", "back"] | None = None


@dataclass(frozen=True, slots=True)
class Person:
    """One scheduled person: who, where and the piecewise-linear path of their face centre (of
    their feet in a scene of full bodies)."""

    index: int
    kind: WalkKind
    lane: int
    x: float
    face_px: float
    identity: int
    times: tuple[float, ...]
    ys: tuple[float, ...]
    flip: bool
    brightness: float
    tint: int
    clothes: int
    hair: int
    sway_period_s: float
    sway_phase: float
    facing: Literal["front", "back"] = "front"

    @property
    def t_start(self) -> float:
        return self.times[0]

    @property
    def t_end(self) -> float:
        return self.times[-1]
