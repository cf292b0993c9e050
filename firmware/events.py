"""What the counter tells the window aggregator about one processed frame.

Anonymous by construction: numbers only, no boxes, no track ids (P1, P3).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class FrameCounts:
    """Counts observed in one frame.

    ``t_ns``: the frame's timestamp (media time for files, wall clock for live sources).
    ``entries`` / ``exits``: line crossings completed in this frame.
    ``occupancy``: confirmed tracks currently on the inside of the line (or in the zones).
    ``new_visitors``: tracks confirmed in this frame (each track counts once, ever).
    ``dwell_s``: dwell times of tracks that ended in this frame, in seconds.
    ``zone_occupancy``: per zone name, confirmed tracks inside it now.
    ``dropped``: frames the source dropped since the previous observation.
    """

    t_ns: int
    entries: int = 0
    exits: int = 0
    occupancy: int = 0
    new_visitors: int = 0
    dwell_s: tuple[float, ...] = ()
    zone_occupancy: dict[str, int] = field(default_factory=dict)
    dropped: int = 0
