"""Per viewer and kind: how the host's seq/ts/picture ids become the viewer's.

Like mediasoup's SeqManager + RtpStreamSend, reduced to what a single-source
forwarder needs. Within one *source epoch* (one host SSRC of one publisher)
the mapping is a pure offset: ``out = in + offset`` (mod 2^16 for seq, 2^32
for ts). The offsets are chosen when the viewer starts on an epoch (at a
keyframe for video), so that:

- the output seq continues at ``last_out_seq + 1``, whatever the host's seq
  is and however many packets were dropped while waiting for a keyframe;
- the output ts advances by the wall time elapsed since the last output
  packet, in the clock rate, at least 1 tick;
- VP8 picture ids continue at ``last_out_pid + 1``.

A new viewer starts with zero offsets (it sees the host's numbers).
Without drops inside an epoch, a NACKed output seq maps back to the host seq
with the same offset (:meth:`SeqMap.input`). Two things change the offset
within an epoch, each starting a new *segment* (its first output seq, its seq
and picture id offsets), and an output seq is mapped with the offsets of its
segment: padding the router inserts to probe a viewer's link
(:meth:`SeqMap.pad`: a larger seq offset; padding seqs map to nothing), and
packets of a temporal layer above the viewer's that it does not send
(:meth:`SeqMap.skip`: a smaller seq offset, and for a skipped frame a smaller
picture id offset, so that both go on without a gap). A simulcast layer
switch is a new epoch on another source; the epoch before it is remembered
(:attr:`SeqMap.previous`) so that NACKs for its last packets are still served.

The timestamp of a new epoch advances by the wall time elapsed since the last
output packet, unless the caller knows better: for a layer switch the router
bridges the layers' RTP clocks through their sender reports (``out_ts``).

This class keeps the offsets and moves them between epochs (``start``,
``end``); the forward mapping of each packet is applied by the router, inline
in its per-viewer loop (``Router._fan_out``: ``(seq + seq_offset) & 0xFFFF``,
``(ts + ts_offset) & 0xFFFFFFFF``, and "older than ``first_in_seq``" is
``(seq - first_in_seq) & 0xFFFF >= 0x8000``): there, calling methods for these
three cost ~90 ns per packet per viewer, +18 % (bench/forwarder_micro.py, 50
viewers). tests/test_media_seqmap.py checks the mapping as the router applies it.
"""

from __future__ import annotations

__all__ = ["SeqMap"]

#: Segments remembered per epoch (NACKs for packets before them go unanswered): dropping a
#: temporal layer starts one for every frame dropped, 64 are two seconds of that at 30 fps.
MAX_SEGMENTS = 64


class SeqMap:
    __slots__ = (
        "clock_rate",
        "epoch",
        "first_in_seq",
        "has_history",
        "last_out_pid",
        "last_out_seq",
        "last_out_time",
        "last_out_ts",
        "pid_offset",
        "previous",
        "segments",
        "seq_offset",
        "ts_offset",
    )

    def __init__(self, clock_rate: int) -> None:
        self.clock_rate = clock_rate
        self.epoch = -1  # the source epoch the offsets are for; -1 = not started
        self.first_in_seq = 0
        self.seq_offset = 0
        self.ts_offset = 0
        self.pid_offset = 0
        self.has_history = False
        self.last_out_seq = 0
        self.last_out_ts = 0
        self.last_out_time = 0.0
        self.last_out_pid: int | None = None
        #: after padding or a skip: (first output seq, seq offset, picture id offset) of each
        #: segment of this epoch, oldest first
        self.segments: list[tuple[int, int, int]] = []
        #: the epoch before this one, for NACKs: (epoch, seq offset, ts offset, first and last
        #: input seq)
        self.previous: tuple[int, int, int, int, int] | None = None

    def start(
        self, epoch: int, in_seq: int, in_ts: int, now: float, in_pid: int | None = None, out_ts: int | None = None
    ) -> None:
        """Start mapping source ``epoch`` at the packet (in_seq, in_ts[, in_pid]); ``out_ts``:
        the timestamp this packet gets, when the caller bridged the clocks (it is still moved
        forward of the last output timestamp if it would not be)."""
        self.epoch = epoch
        self.first_in_seq = in_seq
        self.segments = []
        if self.has_history:
            self.seq_offset = (self.last_out_seq + 1 - in_seq) & 0xFFFF
            ticks = max(1, round((now - self.last_out_time) * self.clock_rate))
            if out_ts is not None and 0 < (out_ts - self.last_out_ts) & 0xFFFFFFFF < 0x80000000:
                ticks = (out_ts - self.last_out_ts) & 0xFFFFFFFF
            self.ts_offset = (self.last_out_ts + ticks - in_ts) & 0xFFFFFFFF
            if self.last_out_pid is not None and in_pid is not None:
                self.pid_offset = (self.last_out_pid + 1 - in_pid) & 0x7FFF
            else:
                self.pid_offset = 0
        else:
            self.seq_offset = 0
            self.ts_offset = 0
            self.pid_offset = 0

    def end(
        self,
        highest_in_seq: int,
        highest_in_ts: int,
        highest_time: float,
        highest_pid: int | None = None,
        highest_pid_bits: int = 0,
    ) -> None:
        """The source epoch being mapped ended; remember what was last sent."""
        if self.epoch < 0:
            return
        self.previous = (self.epoch, self.seq_offset, self.ts_offset, self.first_in_seq, highest_in_seq)
        self.last_out_seq = (highest_in_seq + self.seq_offset) & 0xFFFF
        self.last_out_ts = (highest_in_ts + self.ts_offset) & 0xFFFFFFFF
        self.last_out_time = highest_time
        if highest_pid is not None:
            mask = 0x7FFF if highest_pid_bits == 15 else 0x7F
            self.last_out_pid = (highest_pid + self.pid_offset) & mask
        self.has_history = True
        self.epoch = -1

    def input(self, out_seq: int, epoch: int, highest_in_seq: int) -> tuple[int, int] | None:
        """The host seq that was sent as ``out_seq`` in the current ``epoch``, and the picture id
        offset it was sent with, if any."""
        if self.epoch != epoch or epoch < 0:
            return None
        offset, pid_offset = self.seq_offset, self.pid_offset
        segments = self.segments
        if segments:  # the offsets changed: those of the segment ``out_seq`` is in
            first_out = segments[0][0]
            age = (out_seq - first_out) & 0xFFFF
            if age >= 0x8000:  # before the oldest segment remembered
                return None
            for index in range(len(segments) - 1, -1, -1):
                start_out, offset, pid_offset = segments[index]
                if age >= (start_out - first_out) & 0xFFFF:
                    break
            if index + 1 < len(segments):  # padding between this segment and the next is no packet
                next_start, next_offset, _ = segments[index + 1]
                if not 0 < (next_start - next_offset - (out_seq - offset)) & 0xFFFF < 0x8000:
                    return None
        in_seq = (out_seq - offset) & 0xFFFF
        if ((in_seq - self.first_in_seq) & 0xFFFF) >= 0x8000:
            return None
        if ((highest_in_seq - in_seq) & 0xFFFF) >= 0x8000:
            return None
        return in_seq, pid_offset

    def previous_input_seq(self, out_seq: int) -> tuple[int, int, int] | None:
        """``(epoch, host seq, ts offset)`` of the packet sent as ``out_seq`` in the epoch before
        this one (its padding segments, if any, are not remembered: such a NACK goes unanswered)."""
        if self.previous is None:
            return None
        epoch, offset, ts_offset, first_in, last_in = self.previous
        in_seq = (out_seq - offset) & 0xFFFF
        if ((in_seq - first_in) & 0xFFFF) > ((last_in - first_in) & 0xFFFF):
            return None
        return epoch, in_seq, ts_offset

    def pad(self, last_in_seq: int, count: int) -> list[int]:
        """Insert ``count`` padding packets after the packet ``last_in_seq`` (the last sent):
        their output seqs; the packets after them are shifted by ``count``."""
        first = (last_in_seq + self.seq_offset + 1) & 0xFFFF
        self._open_segments()
        self.seq_offset = (self.seq_offset + count) & 0xFFFF
        self._new_segment((first + count) & 0xFFFF)
        return [(first + k) & 0xFFFF for k in range(count)]

    def skip(self, in_seq: int, frame_start: bool, pid_mask: int) -> None:
        """The packet ``in_seq`` is not sent (its temporal layer is above the viewer's): the
        packets after it take its output seq, and when it starts a frame, the frames after it
        take that frame's picture id (``pid_mask``: 0x7FFF or 0x7F, the ids' width)."""
        self._open_segments()
        self.seq_offset = (self.seq_offset - 1) & 0xFFFF
        if frame_start:
            self.pid_offset = (self.pid_offset - 1) & pid_mask
        self._new_segment((in_seq + 1 + self.seq_offset) & 0xFFFF)

    def _open_segments(self) -> None:
        """Before the first change of offsets in an epoch: its start is the first segment."""
        if not self.segments:
            self.segments.append(((self.first_in_seq + self.seq_offset) & 0xFFFF, self.seq_offset, self.pid_offset))

    def _new_segment(self, first_out_seq: int) -> None:
        """The offsets changed: they apply from the output seq ``first_out_seq`` on."""
        segments = self.segments
        entry = (first_out_seq, self.seq_offset, self.pid_offset)
        if segments[-1][0] == first_out_seq:  # nothing sent since the last change: one segment
            segments[-1] = entry
        else:
            segments.append(entry)
        if len(segments) > MAX_SEGMENTS:  # packets older than these are out of the cache anyway
            del segments[0]
