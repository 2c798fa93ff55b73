"""What the server, as the receiver of a host stream, tracks to report on it.

:class:`ReceiveStats`: RFC 3550 A.1 (extended highest seq with cycles), A.3
(expected / lost / fraction lost), A.8 (interarrival jitter) and LSR/DLSR from
the host's last SR, producing an RR report block.

:class:`NackTracker`: gap detection for NACKs toward the host. Each missing
seq is NACKed at most ``max_retries`` times, ``retry_interval`` apart, and
given up after ``max_age`` seconds (counted in ``gave_up``, so that the
caller can ask for a keyframe instead).
"""

from __future__ import annotations

from media.rtcp import ReportBlock

__all__ = ["NackTracker", "ReceiveStats"]

MAX_DROPOUT = 3000
MAX_MISORDER = 100
SEQ_MOD = 1 << 16


class ReceiveStats:
    __slots__ = (
        "bad_seq",
        "base_seq",
        "clock_rate",
        "cycles",
        "expected_prior",
        "jitter",
        "last_sr_lsr",
        "last_sr_time",
        "last_transit",
        "max_seq",
        "received",
        "received_prior",
        "ssrc",
    )

    def __init__(self, ssrc: int, clock_rate: int, first_seq: int) -> None:
        self.ssrc = ssrc
        self.clock_rate = clock_rate
        self.jitter = 0.0
        self.last_transit: float | None = None
        self.last_sr_lsr = 0
        self.last_sr_time = 0.0
        self._init_seq(first_seq)

    def _init_seq(self, seq: int) -> None:
        self.base_seq = seq
        self.max_seq = seq
        self.bad_seq = SEQ_MOD + 1
        self.cycles = 0
        self.received = 0
        self.received_prior = 0
        self.expected_prior = 0

    @property
    def extended_max(self) -> int:
        return self.cycles + self.max_seq

    def update(self, seq: int, ts: int, arrival: float) -> int:
        """Account for one packet; returns its extended seq (-1 if it looks bogus)."""
        max_seq = self.max_seq
        udelta = (seq - max_seq) & 0xFFFF
        if self.received == 0 and seq == self.base_seq:
            ext = self.cycles + seq
            self._jitter(ts, arrival)
        elif 0 < udelta < MAX_DROPOUT:  # in order, with a permissible gap
            if seq < max_seq:
                self.cycles += SEQ_MOD
            self.max_seq = seq
            ext = self.cycles + seq
            self._jitter(ts, arrival)
        elif udelta == 0:  # duplicate of the highest
            ext = self.cycles + seq
        elif udelta <= SEQ_MOD - MAX_MISORDER:  # a very large jump
            if seq == self.bad_seq:  # two sequential packets: the source restarted
                self._init_seq(seq)
                self.last_transit = None
                self._jitter(ts, arrival)
                ext = self.cycles + seq
            else:
                self.bad_seq = (seq + 1) & 0xFFFF
                return -1
        else:  # duplicate or reordered
            ext = self.cycles + seq
            if seq > max_seq:  # reordered across the wrap
                ext -= SEQ_MOD
        self.received += 1
        return ext

    def _jitter(self, ts: int, arrival: float) -> None:
        transit = arrival * self.clock_rate - ts
        last = self.last_transit
        self.last_transit = transit
        if last is None:
            return
        d = transit - last
        if d < 0:
            d = -d
        if d > 0x7FFFFFFF:  # ts wrapped between the two packets
            d = abs(d - 0x100000000)
        self.jitter += (d - self.jitter) / 16.0

    def on_sender_report(self, ntp: int, now: float) -> None:
        self.last_sr_lsr = (ntp >> 16) & 0xFFFFFFFF
        self.last_sr_time = now

    def report_block(self, now: float) -> ReportBlock:
        extended_max = self.cycles + self.max_seq
        expected = extended_max - self.base_seq + 1
        lost = expected - self.received
        lost = max(-0x800000, min(0x7FFFFF, lost))
        expected_interval = expected - self.expected_prior
        self.expected_prior = expected
        received_interval = self.received - self.received_prior
        self.received_prior = self.received
        lost_interval = expected_interval - received_interval
        if expected_interval == 0 or lost_interval <= 0:
            fraction = 0
        else:
            fraction = min(255, (lost_interval << 8) // expected_interval)
        dlsr = 0
        if self.last_sr_lsr:
            dlsr = max(0, int((now - self.last_sr_time) * 65536)) & 0xFFFFFFFF
        return ReportBlock(
            ssrc=self.ssrc,
            fraction_lost=fraction,
            cumulative_lost=lost,
            highest_seq=extended_max & 0xFFFFFFFF,
            jitter=int(self.jitter),
            lsr=self.last_sr_lsr,
            dlsr=dlsr,
        )


class NackTracker:
    """Missing extended seqs of one host stream and when to NACK them next."""

    __slots__ = (
        "_missing",
        "gave_up",
        "highest",
        "max_age",
        "max_missing",
        "max_retries",
        "next_due",
        "overflowed",
        "retry_interval",
    )

    def __init__(
        self,
        *,
        max_retries: int = 3,
        retry_interval: float = 0.04,
        max_age: float = 1.0,
        max_missing: int = 300,
    ) -> None:
        self.max_retries = max_retries
        self.retry_interval = retry_interval
        self.max_age = max_age
        self.max_missing = max_missing
        # ext seq -> [first_seen, tries, next_time]
        self._missing: dict[int, list[float]] = {}
        self.highest = -1
        self.next_due = float("inf")
        # counters the caller reads and resets (it asks for a keyframe instead):
        self.gave_up = 0  # seqs given up on (never recovered)
        self.overflowed = 0  # gaps too large to NACK

    def __len__(self) -> int:
        return len(self._missing)

    def missing(self) -> list[int]:
        return sorted(self._missing)

    def on_packet(self, ext_seq: int, now: float) -> None:
        if ext_seq < 0:
            return
        highest = self.highest
        if highest < 0:
            self.highest = ext_seq
            return
        if ext_seq < highest - 2 * MAX_DROPOUT:  # the source restarted its numbering
            self.reset()
            self.highest = ext_seq
            return
        if ext_seq > highest:
            gap = ext_seq - highest - 1
            if gap:
                if gap + len(self._missing) > self.max_missing:
                    # too much to recover by NACK: forget it, a keyframe will fix it
                    self._missing.clear()
                    self.overflowed += 1
                    self.next_due = float("inf")
                else:
                    missing = self._missing
                    for s in range(highest + 1, ext_seq):
                        missing[s] = [now, 0.0, now]
                    self.next_due = now
            self.highest = ext_seq
        else:
            self._missing.pop(ext_seq, None)

    def due(self, now: float) -> list[int]:
        """Seqs (16-bit, in order) to NACK now; forgets those too old."""
        if now < self.next_due:
            return []
        out: list[int] = []
        next_due = float("inf")
        expired: list[int] = []
        for s, entry in self._missing.items():
            first, tries, next_time = entry
            if now - first >= self.max_age:
                expired.append(s)
                continue
            if tries < self.max_retries:
                if now >= next_time:
                    out.append(s & 0xFFFF)
                    entry[1] = tries + 1
                    next_time = now + self.retry_interval
                    entry[2] = next_time
                if entry[1] < self.max_retries:
                    next_due = min(next_due, next_time)
                    continue
            next_due = min(next_due, first + self.max_age)
        for s in expired:
            del self._missing[s]
        self.gave_up += len(expired)
        self.next_due = next_due
        return out

    def reset(self) -> None:
        self._missing.clear()
        self.highest = -1
        self.next_due = float("inf")
