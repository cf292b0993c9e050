"""De-duplication and gap detection for count windows: the contract's at-least-once, made exact.

Delivery is at least once, so the same window can arrive twice (after a device reconnects):
:class:`WindowLedger` drops repeats of ``(site, device, stream, seq)``. ``stream`` is the
device's outbox identity (a new outbox starts a new stream at seq 1; ``""`` for devices that do
not send one), so a device whose outbox was replaced is not mistaken for a resend. A repeated
key whose content differs is a *conflict*: never dropped silently, the caller reports and keeps
it. ``seq`` grows by one per window;
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
    fills an earlier gap), ``dup`` (seen before with the same content, or too old to tell:
    skipped) or ``conflict`` (seen before with *different* content: reported and kept apart).
    ``missing``: windows neither received nor accounted for between the previous newest and this
    one (0: no gap).
    """

    kind: Literal["new", "late", "dup", "conflict"]
    missing: int = 0

    @property
    def accepted(self) -> bool:
        """True for a window to store as a window (``new`` or ``late``)."""
        return self.kind in ("new", "late")


@dataclass
class _Stream:
    highest: int
    recent: deque[int] = field(default_factory=deque)
    seen: dict[int, str] = field(default_factory=dict)  # seq -> content digest


class WindowLedger:
    """De-duplication and gap detection per ``(site, device, stream)`` in bounded memory.

    Per device it keeps the highest ``seq`` and the last ``recent`` seqs received. Trade-off of
    ``recent``: a repeat older than that many windows cannot be recognised, so it is treated as a
    duplicate (a consumer double-counting is worse than one missing a very late window); resends
    after an outage are at most a few in-flight windows old, far inside the default.
    """

    def __init__(self, recent: int = 256, *, gaps: bool = True) -> None:
        """``gaps=False`` for a member of a shared subscription: it sees only its share of each
        device's windows, so a jump in seq says nothing there (the database sees them all)."""
        if recent < 1:
            raise ValueError("recent must be >= 1")
        self._recent = recent
        self._gaps = gaps
        self._streams: dict[tuple[str, str, str], _Stream] = {}
        self.accepted = 0
        self.duplicates = 0
        self.conflicts = 0
        self.gaps = 0
        self.missing = 0

    def observe(
        self,
        site: str,
        device: str,
        seq: int,
        merged: int = 1,
        *,
        stream_id: str = "",
        digest: str = "",
    ) -> Verdict:
        """Record window ``seq`` of ``stream_id`` (standing for ``merged`` windows ending at
        ``seq``) whose content hashes to ``digest``."""
        key = (site, device, stream_id)
        stream = self._streams.get(key)
        if stream is None:
            stream = self._streams[key] = _Stream(highest=seq)
            verdict = Verdict("new")
        elif seq in stream.seen and stream.seen[seq] != digest:
            self.conflicts += 1
            return Verdict("conflict")
        elif seq in stream.seen or seq <= stream.highest - self._recent:
            self.duplicates += 1
            return Verdict("dup")
        elif seq > stream.highest:
            missing = max(0, (seq - max(merged, 1)) - stream.highest) if self._gaps else 0
            stream.highest = seq
            verdict = Verdict("new", missing)
        else:
            verdict = Verdict("late" if self._gaps else "new")
            self.missing = max(0, self.missing - 1)  # it was counted missing when the gap showed
        self._remember(stream, seq, digest)
        self.accepted += 1
        if verdict.missing:
            self.gaps += 1
            self.missing += verdict.missing
        return verdict

    def _remember(self, stream: _Stream, seq: int, digest: str) -> None:
        stream.recent.append(seq)
        stream.seen[seq] = digest
        while len(stream.recent) > self._recent:
            stream.seen.pop(stream.recent.popleft(), None)

    def override(self, verdict: Verdict) -> None:
        """Count a verdict the store gave instead of ours (it remembers more than we do): a
        window we thought new that the database already held (``dup``) or held with other
        content (``conflict``)."""
        self.accepted -= 1
        if verdict.kind == "dup":
            self.duplicates += 1
        elif verdict.kind == "conflict":
            self.conflicts += 1

    def state_size(self) -> int:
        """Seqs held in memory over all devices (bounded by devices x ``recent``)."""
        return sum(len(s.seen) for s in self._streams.values())
