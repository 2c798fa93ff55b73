"""Forwarding delay as counts in fixed buckets (sans-IO).

The media port records, for every RTP packet it handles, the time from the
kernel's receive timestamp (``SO_TIMESTAMPNS``) to the end of its handling,
that is after the router has protected and sent it to every viewer. Counts in
fixed buckets cost one bisect per packet, can be subtracted (a benchmark's
window is ``end - start``) and map one to one onto a Prometheus histogram.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence

import msgspec

#: Upper bounds of the buckets, in microseconds (the last bucket is everything above).
BOUNDS_US: tuple[int, ...] = (
    25, 50, 100, 150, 200, 300, 500, 750, 1_000, 1_500, 2_000, 3_000, 5_000, 7_500,
    10_000, 15_000, 20_000, 30_000, 50_000, 100_000, 250_000, 1_000_000,
)  # fmt: skip
_BOUNDS_NS = tuple(bound * 1000 for bound in BOUNDS_US)


class DelaySnapshot(msgspec.Struct, frozen=True):
    """Counts per bucket (``counts[i]`` = delays <= ``bounds_us[i]``, the last = above them all)."""

    bounds_us: tuple[int, ...]
    counts: tuple[int, ...]
    total: int
    sum_us: float  # the sum of every delay counted (a mean, or Prometheus's ``_sum``)
    max_us: float

    def since(self, earlier: DelaySnapshot) -> DelaySnapshot:
        """What was counted between ``earlier`` and this snapshot (``max_us`` is this one's)."""
        if earlier.bounds_us != self.bounds_us:
            raise ValueError("snapshots of different buckets")
        counts = tuple(now - then for now, then in zip(self.counts, earlier.counts, strict=True))
        total = self.total - earlier.total
        return DelaySnapshot(self.bounds_us, counts, total, self.sum_us - earlier.sum_us, self.max_us)

    def quantile_us(self, q: float) -> float:
        """The upper bound of the bucket holding quantile ``q`` (an over-estimate, never under);
        ``inf`` when it lies above the last bound, ``nan`` when nothing was counted."""
        return quantile_us(self.bounds_us, self.counts, q)


def quantile_us(bounds_us: Sequence[int], counts: Sequence[int], q: float) -> float:
    if not 0.0 <= q <= 1.0:
        raise ValueError("quantile outside 0..1")
    total = sum(counts)
    if total == 0:
        return math.nan
    rank = max(1, math.ceil(q * total))
    seen = 0
    for index, count in enumerate(counts):
        seen += count
        if seen >= rank:
            return float(bounds_us[index]) if index < len(bounds_us) else math.inf
    return math.inf  # not reached: the counts add up to total


class DelayHistogram:
    """Written by one thread (the media thread), read as a :class:`DelaySnapshot`."""

    __slots__ = ("_counts", "_max_ns", "_sum_ns", "_total")

    def __init__(self) -> None:
        self._counts = [0] * (len(_BOUNDS_NS) + 1)
        self._total = 0
        self._sum_ns = 0
        self._max_ns = 0

    def record(self, delay_ns: int) -> None:
        """Count one delay (negative ones, from a clock step, count as 0)."""
        if delay_ns < 0:
            delay_ns = 0
        self._counts[bisect.bisect_left(_BOUNDS_NS, delay_ns)] += 1
        self._total += 1
        self._sum_ns += delay_ns
        if delay_ns > self._max_ns:
            self._max_ns = delay_ns

    def snapshot(self) -> DelaySnapshot:
        """Safe to take from another thread without a lock: the counts are copied in one step
        and the total is theirs (the sum and max may include a packet more or less)."""
        counts = tuple(self._counts)
        return DelaySnapshot(BOUNDS_US, counts, sum(counts), self._sum_ns / 1000, self._max_ns / 1000)
