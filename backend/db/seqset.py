"""Sets of sequence numbers as sorted half-open ranges (pure; no I/O).

``SeqSet`` mirrors an ``int8multirange`` of ``ingest_seen``: membership for dropping duplicates,
and the ranges of newly committed numbers to add. ``GapTracker`` follows, per (gateway, boot),
the numbers committed by this process to report the ones still missing below the highest.
"""

from __future__ import annotations

from bisect import bisect_right
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field


def runs(seqs: Iterable[int]) -> list[tuple[int, int]]:
    """Distinct numbers as sorted half-open runs: [1, 2, 3, 7] -> [(1, 4), (7, 8)]."""
    out: list[tuple[int, int]] = []
    for s in sorted(set(seqs)):
        if out and out[-1][1] == s:
            out[-1] = (out[-1][0], s + 1)
        else:
            out.append((s, s + 1))
    return out


@dataclass(slots=True)
class SeqSet:
    """Disjoint, non-adjacent half-open ranges, sorted."""

    lows: list[int] = field(default_factory=list)
    highs: list[int] = field(default_factory=list)

    @classmethod
    def of(cls, ranges: Iterable[tuple[int, int]]) -> SeqSet:
        s = cls()
        for lo, hi in ranges:
            s.add_range(lo, hi)
        return s

    def __contains__(self, seq: int) -> bool:
        i = bisect_right(self.lows, seq) - 1
        return i >= 0 and seq < self.highs[i]

    def __len__(self) -> int:
        return sum(h - lo for lo, h in zip(self.lows, self.highs, strict=True))

    def ranges(self) -> list[tuple[int, int]]:
        return list(zip(self.lows, self.highs, strict=True))

    def add_range(self, lo: int, hi: int) -> int:
        """Add [lo, hi); return how many numbers were not in the set before."""
        if hi <= lo:
            return 0
        # Ranges touching or overlapping [lo, hi) are i..j-1.
        i = bisect_right(self.highs, lo - 1)
        j = i
        covered = 0
        new_lo, new_hi = lo, hi
        while j < len(self.lows) and self.lows[j] <= hi:
            covered += max(0, min(self.highs[j], hi) - max(self.lows[j], lo))
            new_lo = min(new_lo, self.lows[j])
            new_hi = max(new_hi, self.highs[j])
            j += 1
        self.lows[i:j] = [new_lo]
        self.highs[i:j] = [new_hi]
        return (hi - lo) - covered

    def missing(self) -> int:
        """Numbers between the lowest and the highest that are not in the set."""
        if not self.lows:
            return 0
        return (self.highs[-1] - self.lows[0]) - len(self)


class GapTracker:
    """Committed sequence numbers per (gateway, boot), for the gap metrics.

    ``add`` returns (holes opened, numbers now missing in total). A hole is opened when a
    number arrives above the highest seen plus one; it may fill later (events travel ahead of
    a telemetry backlog), so the total missing is the figure to watch. At most ``max_keys``
    (gateway, boot) pairs are followed; the least recently seen is forgotten first.
    """

    def __init__(self, *, max_keys: int = 50_000, max_ranges: int = 1_000) -> None:
        self._sets: OrderedDict[tuple[str, str], SeqSet] = OrderedDict()
        self._max_keys = max_keys
        self._max_ranges = max_ranges
        self.total_missing = 0

    def add(self, gateway_id: str, boot_id: str, seqs: Iterable[int]) -> int:
        key = (gateway_id, boot_id)
        s = self._sets.get(key)
        if s is None:
            s = self._sets[key] = SeqSet()
            if len(self._sets) > self._max_keys:
                _, old = self._sets.popitem(last=False)
                self.total_missing -= old.missing()
        else:
            self._sets.move_to_end(key)
        before = s.missing()
        opened = 0
        for lo, hi in runs(seqs):
            if s.highs and lo > s.highs[-1]:
                opened += 1
            s.add_range(lo, hi)
        if len(s.lows) > self._max_ranges:
            # Too many holes: write off the oldest ones (they stay counted as opened).
            keep = self._max_ranges // 2
            s.lows, s.highs = s.lows[-keep:], s.highs[-keep:]
        self.total_missing += s.missing() - before
        return opened
