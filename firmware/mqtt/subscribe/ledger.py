"""De-duplication and gap detection for count windows: the contract's at-least-once, made exact.

Delivery is at least once, so the same window can arrive twice (after a device reconnects):
:class:`WindowLedger` drops repeats of ``(site, device, seq)``. ``seq`` grows by one per window;
a jump says windows are missing, unless the new row carries ``merged`` (it then stands for the
``merged`` windows ending at its ``seq``).
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass, field
from typing import Literal

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Verdict:
    """What the ledger thinks of one window.

    ``kind``: ``new`` (first time, newest so far), ``late`` (first time, older than the newest:
    fills an earlier gap) or ``dup`` (seen before, or too old to tell: skipped).
    ``missing``: windows neither received nor accounted for between the previous newest and this
    one (0: no gap).
    """

    kind: Literal["new", "late", "dup"]
    missing: int = 0

    @property
    def accepted(self) -> bool:
        return self.kind != "dup"


@dataclass
class _Stream:
    highest: int
    recent: deque[int] = field(default_factory=deque)
    seen: set[int] = field(default_factory=set)


class WindowLedger:
    """De-duplication and gap detection per ``(site, device)`` in bounded memory.

    Per device it keeps the highest ``seq`` and the last ``recent`` seqs received. Trade-off of
    ``recent``: a repeat older than that many windows cannot be recognised, so it is treated as a
    duplicate (a consumer double-counting is worse than one missing a very late window); resends
    after an outage are at most a few in-flight windows old, far inside the default.
    """

    def __init__(self, recent: int = 256) -> None:
        if recent < 1:
            raise ValueError("recent must be >= 1")
        self._recent = recent
        self._streams: dict[tuple[str, str], _Stream] = {}
        self.accepted = 0
        self.duplicates = 0
        self.gaps = 0
        self.missing = 0

    def observe(self, site: str, device: str, seq: int, merged: int = 1) -> Verdict:
        """Record window ``seq`` (standing for ``merged`` windows ending at ``seq``)."""
        stream = self._streams.get((site, device))
        if stream is None:
            stream = self._streams[(site, device)] = _Stream(highest=seq)
            verdict = Verdict("new")
        elif seq in stream.seen or seq <= stream.highest - self._recent:
            self.duplicates += 1
            return Verdict("dup")
        elif seq > stream.highest:
            missing = max(0, (seq - max(merged, 1)) - stream.highest)
            stream.highest = seq
            verdict = Verdict("new", missing)
        else:
            verdict = Verdict("late")
            self.missing = max(0, self.missing - 1)  # it was counted missing when the gap showed
        self._remember(stream, seq)
        self.accepted += 1
        if verdict.missing:
            self.gaps += 1
            self.missing += verdict.missing
        return verdict

    def _remember(self, stream: _Stream, seq: int) -> None:
        stream.recent.append(seq)
        stream.seen.add(seq)
        while len(stream.recent) > self._recent:
            stream.seen.discard(stream.recent.popleft())

    def state_size(self) -> int:
        """Seqs held in memory over all devices (bounded by devices x ``recent``)."""
        return sum(len(s.seen) for s in self._streams.values())
