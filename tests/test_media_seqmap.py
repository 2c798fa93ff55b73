"""Per-viewer seq/ts/picture-id mapping (media/seqmap.py), as the router applies it.

The offsets live in `SeqMap`; the per-packet arithmetic (shift by the offsets,
drop what is older than the viewer's start) is inlined in `Router._fan_out`,
so these tests feed host packets to a `Router` and read the viewers' packets.
"""

from __future__ import annotations

from itertools import pairwise

import pytest
from hypothesis import given
from hypothesis import strategies as st

from media.router import Router
from media.rtp import RtpHeader, parse_rtp_untrusted
from media.seqmap import SeqMap
from media.streams import MediaKind, SinkStream, SourceStream
from media.vp8 import read_picture_id
from tests.rtp_packets import build_rtp_packet, vp8_packet


def _in(mapped: tuple[int, int] | None) -> int | None:
    """The host seq of SeqMap.input's answer."""
    return None if mapped is None else mapped[0]


VP8, OPUS = 96, 111
CLOCK = {"video": 90000, "audio": 48000}


class Viewer:
    def __init__(self, router: Router, name: str, kind: MediaKind, now: float) -> None:
        self.ssrc = 0x5000 + len(name)
        self.packets: list[tuple[RtpHeader, bytes]] = []
        sink = SinkStream(kind=kind, ssrc=self.ssrc, payload_type=100, clock_rate=CLOCK[kind])
        router.add_viewer(name, [sink], lambda d: self.packets.append((parse_rtp_untrusted(d), d)), lambda d: None, now)

    @property
    def seqs(self) -> list[int]:
        return [h.sequence_number for h, _ in self.packets]

    @property
    def last(self) -> RtpHeader:
        return self.packets[-1][0]


def forwarder(kind: MediaKind) -> Router:
    router = Router(rtcp_ssrc=1, target_bitrate_bps=1_500_000)
    pt = VP8 if kind == "video" else OPUS
    router.attach_publisher([SourceStream(kind=kind, payload_type=pt, clock_rate=CLOCK[kind])], lambda d: None, 0.0)
    return router


def opus(seq: int, ts: int, ssrc: int = 0xA2) -> bytes:
    return build_rtp_packet(payload_type=OPUS, sequence_number=seq, timestamp=ts, ssrc=ssrc, payload=b"OPUS")


@pytest.mark.parametrize("first", [500, 65534])  # the second one across the wrap
def test_new_viewer_sees_host_numbers_and_drops_what_is_older_than_its_start(first: int) -> None:
    seqs = [first, (first + 2) & 0xFFFF, (first + 1) & 0xFFFF, (first + 3) & 0xFFFF]  # one reordered
    router = forwarder("audio")
    early = Viewer(router, "early", "audio", 0.0)
    router.on_publisher_rtp(opus(seqs[0], 9000), 0.0)  # early starts here
    late = Viewer(router, "late", "audio", 0.01)
    router.on_publisher_rtp(opus(seqs[1], 9000 + 960 * 2), 0.04)  # late starts here
    router.on_publisher_rtp(opus(seqs[2], 9000 + 960), 0.05)  # before late's start
    router.on_publisher_rtp(opus(seqs[3], 9000 + 960 * 3), 0.06)
    assert early.seqs == seqs
    assert late.seqs == [seqs[1], seqs[3]]
    assert [h.timestamp for h, _ in early.packets] == [9000, 9000 + 960 * 2, 9000 + 960, 9000 + 960 * 3]
    assert router.statistics().drops["too_old"] == 1


def test_switch_is_continuous_through_every_wrap() -> None:
    router = forwarder("video")
    viewer = Viewer(router, "v", "video", 0.0)
    router.on_publisher_rtp(vp8_packet(seq=65530, ts=4_294_960_000, ssrc=0xA1, pid=0x7FFE, key=True), 0.0)
    # last packet of the old source: seq 5 (wrapped), ts 4_294_963_000, pid 0x7FFF
    router.on_publisher_rtp(vp8_packet(seq=5, ts=4_294_963_000, ssrc=0xA1, pid=0x7FFF), 10.0)
    assert viewer.last.sequence_number == 5  # the viewer still sees the host's numbers
    # the host's SSRC changes: a new source epoch, numbered from scratch, starting at a keyframe
    router.on_publisher_rtp(vp8_packet(seq=1000, ts=777, ssrc=0xB1, pid=42, key=True), 10.5)
    router.on_publisher_rtp(vp8_packet(seq=1001, ts=3777, ssrc=0xB1, pid=43), 10.53)
    (first, data), (second, _) = viewer.packets[-2:]
    assert (first.sequence_number, second.sequence_number) == (6, 7)
    # 0.5 s since the last packet sent, in 90 kHz ticks, past the 32-bit wrap
    assert first.timestamp == (4_294_963_000 + 45000) & 0xFFFFFFFF
    assert second.timestamp == (first.timestamp + 3000) & 0xFFFFFFFF
    assert read_picture_id(data, first.payload_offset) == (0, 15)  # 0x7FFF + 1 wraps to 0


def test_switch_ts_advances_at_least_one_tick() -> None:
    router = forwarder("audio")
    viewer = Viewer(router, "v", "audio", 0.0)
    router.on_publisher_rtp(opus(10, 100, ssrc=1), 5.0)
    router.on_publisher_rtp(opus(0, 0, ssrc=2), 5.0)  # a new source at the same instant
    assert [(h.sequence_number, h.timestamp) for h, _ in viewer.packets] == [(10, 100), (11, 101)]


def test_reverse_mapping() -> None:
    """A NACKed output seq back to the host's (what `Router._serve_nack` looks up)."""
    m = SeqMap(90000)
    m.start(1, 100, 0, now=0.0)
    m.end(150, 0, 1.0)  # the viewer was last sent seq 150
    m.start(2, 65500, 0, now=1.1)  # so host seq 65500 is sent as 151, 65535 as 186, 3 as 190
    assert _in(m.input(186, 2, highest_in_seq=3)) == 65535
    assert _in(m.input(190, 2, highest_in_seq=3)) == 3
    assert _in(m.input(191, 2, highest_in_seq=3)) is None  # not received yet
    assert _in(m.input(150, 2, highest_in_seq=3)) is None  # before start
    assert _in(m.input(186, 1, highest_in_seq=3)) is None  # another epoch


@given(
    st.lists(
        st.tuples(st.integers(0, 65535), st.integers(0, 2**32 - 1), st.integers(1, 300)),
        min_size=1,
        max_size=8,
    )
)
def test_output_seq_is_continuous_across_switches(epochs: list[tuple[int, int, int]]) -> None:
    """Whatever each source's numbering, the viewer sees seq +1 per packet and ts increasing."""
    router = forwarder("audio")
    viewer = Viewer(router, "v", "audio", 0.0)
    now = 0.0
    sent = 0
    for ssrc, (first_seq, first_ts, count) in enumerate(epochs, start=1):
        for k in range(count):
            router.on_publisher_rtp(opus((first_seq + k) & 0xFFFF, (first_ts + 960 * k) & 0xFFFFFFFF, ssrc), now)
            now += 0.02
        sent += count
    assert len(viewer.packets) == sent
    first = viewer.packets[0][0]
    assert (first.sequence_number, first.timestamp) == (epochs[0][0], epochs[0][1])
    for (before, _), (after, _) in pairwise(viewer.packets):
        assert after.sequence_number == (before.sequence_number + 1) & 0xFFFF
        assert 0 < (after.timestamp - before.timestamp) & 0xFFFFFFFF < 0x80000000


def test_skipped_packets_take_no_output_seq_and_nacks_map_back_with_their_picture_id_offset() -> None:
    m = SeqMap(90000)
    m.start(epoch=1, in_seq=1000, in_ts=0, now=0.0)
    out = {}
    for in_seq in range(1000, 1020):
        if in_seq in (1004, 1005, 1010):  # a frame of two packets, then one more frame, not sent
            m.skip(in_seq, frame_start=in_seq != 1005, pid_mask=0x7FFF)
            continue
        out[in_seq] = ((in_seq + m.seq_offset) & 0xFFFF, m.pid_offset)
    out_seqs = [seq for seq, _ in out.values()]
    assert out_seqs == list(range(out_seqs[0], out_seqs[0] + 17))  # no gap where packets were skipped
    for in_seq, (out_seq, pid_offset) in out.items():
        assert m.input(out_seq, 1, highest_in_seq=1019) == (in_seq, pid_offset)
    assert {pid for _, pid in out.values()} == {0, 0x7FFF, 0x7FFE}  # one less per skipped frame
