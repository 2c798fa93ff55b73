"""The per-room forwarder (media/router.py): bytes in, bytes out, time passed in."""

from __future__ import annotations

import struct

from hypothesis import given, settings
from hypothesis import strategies as st

from media.router import (
    RESEND_GUARD,
    RETRANSMIT_BURST_SECONDS,
    RETRANSMIT_MIN_BYTES_PER_SECOND,
    RETRANSMIT_RATE_SHARE,
    VIEWER_RTCP_PER_SECOND,
    QualityChange,
    Router,
)
from media.rtcp import (
    Nack,
    Pli,
    ReceiverReport,
    Remb,
    SenderReport,
    build_fir,
    build_nack,
    build_pli,
    build_remb,
    build_rr,
    build_sr,
    nack_pairs,
    parse_rtcp_untrusted,
)
from media.rtp import AUDIO_LEVEL_URI, MID_URI, RtpHeader, parse_rtp_untrusted
from media.streams import SinkStream, SourceStream
from media.vp8 import read_picture_id
from tests.rtp_packets import build_rtp_packet

TWCC_URI = "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01"
ABS_SEND_URI = "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time"
HOST_EXT = {1: MID_URI, 2: ABS_SEND_URI, 3: TWCC_URI, 4: AUDIO_LEVEL_URI}
VP8, OPUS = 96, 111
RTCP_SSRC = 0xC0FFEE
BITRATE = 1_500_000


def sources() -> list[SourceStream]:
    return [
        SourceStream(kind="video", payload_type=VP8, clock_rate=90000, extensions=HOST_EXT),
        SourceStream(kind="audio", payload_type=OPUS, clock_rate=48000, extensions=HOST_EXT),
    ]


def sinks(base: int, *, mid_v: str = "1", mid_a: str = "0") -> list[SinkStream]:
    ext = {MID_URI: 9, AUDIO_LEVEL_URI: 10, TWCC_URI: 3}
    return [
        SinkStream(kind="video", ssrc=base, payload_type=120, clock_rate=90000, extensions=ext, mid=mid_v),
        SinkStream(kind="audio", ssrc=base + 1, payload_type=109, clock_rate=48000, extensions=ext, mid=mid_a),
    ]


class Host:
    """Makes a browser-like host's packets: VP8 with a 15-bit picture id, Opus."""

    def __init__(self, vssrc: int = 0xA1, assrc: int = 0xA2, seq: int = 1000, ts: int = 5000, pid: int = 100) -> None:
        self.vssrc, self.assrc = vssrc, assrc
        self.vseq, self.aseq = seq, seq + 7000
        self.vts, self.ats = ts, ts * 3
        self.pid = pid

    def video(self, *, key: bool = False, start: bool = True, marker: bool = True) -> bytes:
        desc = bytes([0x90 if start else 0x80, 0x80, 0x80 | (self.pid >> 8), self.pid & 0xFF])
        body = (b"\x00\x9d\x01\x2a" if key else b"\x01\x02\x03") + bytes([self.vseq & 0xFF]) * 50
        data = build_rtp_packet(
            payload_type=VP8,
            sequence_number=self.vseq,
            timestamp=self.vts,
            ssrc=self.vssrc,
            payload=desc + body,
            marker=marker,
            extensions=[(1, b"v"), (2, b"\x01\x02\x03"), (3, b"\x00\x01")],
        )
        self.vseq = (self.vseq + 1) & 0xFFFF
        if marker:
            self.vts = (self.vts + 3000) & 0xFFFFFFFF
            self.pid = (self.pid + 1) & 0x7FFF
        return data

    def audio(self) -> bytes:
        data = build_rtp_packet(
            payload_type=OPUS,
            sequence_number=self.aseq,
            timestamp=self.ats,
            ssrc=self.assrc,
            payload=b"OPUS" + bytes([self.aseq & 0xFF]) * 20,
            marker=False,
            extensions=[(1, b"a"), (4, b"\x90"), (3, b"\x00\x02")],
        )
        self.aseq = (self.aseq + 1) & 0xFFFF
        self.ats = (self.ats + 960) & 0xFFFFFFFF
        return data


class Sink:
    def __init__(self) -> None:
        self.rtp: list[bytes] = []
        self.rtcp: list[bytes] = []

    def of(self, ssrc: int) -> list[tuple[RtpHeader, bytes]]:
        out = []
        for d in self.rtp:
            h = parse_rtp_untrusted(d)
            if h.ssrc == ssrc:
                out.append((h, d))
        return out

    def rtcp_packets(self) -> list[object]:
        return [p for d in self.rtcp for p in parse_rtcp_untrusted(d)]


def payload(h: RtpHeader, d: bytes) -> bytes:
    return d[h.payload_offset : h.payload_end]


def setup(now: float = 0.0) -> tuple[Router, Host, Sink, Sink]:
    router = Router(rtcp_ssrc=RTCP_SSRC, target_bitrate_bps=BITRATE)
    host, to_host, viewer = Host(), Sink(), Sink()
    router.attach_publisher(sources(), to_host.rtcp.append, now)
    router.add_viewer("v1", sinks(0x5000), viewer.rtp.append, viewer.rtcp.append, now)
    return router, host, to_host, viewer


def test_forwarding_rewrites_header_and_keeps_payload() -> None:
    router, host, _to_host, viewer = setup()
    sent = [host.video(key=True), host.video(), host.audio(), host.audio()]
    for i, d in enumerate(sent):
        router.on_publisher_rtp(d, 0.01 * i)
    video, audio = viewer.of(0x5000), viewer.of(0x5001)
    assert len(video) == 2 and len(audio) == 2
    for (h, d), orig in zip(video + audio, sent, strict=True):
        o = parse_rtp_untrusted(orig)
        assert payload(h, d) == payload(o, orig)  # byte for byte
        assert h.sequence_number == o.sequence_number  # a new viewer sees the host's numbers
        assert h.timestamp == o.timestamp
        assert h.marker == o.marker
        assert h.csrc_count == 0
    assert {h.payload_type for h, _ in video} == {120}
    assert {h.payload_type for h, _ in audio} == {109}
    # MID carries the viewer's value; audio level mapped to the viewer's id;
    # transport-cc and abs-send-time dropped
    assert video[0][0].extensions == {9: b"1"}
    assert audio[0][0].extensions == {10: b"\x90", 9: b"0"}
    s = router.statistics()
    assert (s.packets_in, s.packets_out) == (4, 4)
    assert s.bytes_in == sum(map(len, sent))
    assert s.bytes_out == sum(map(len, viewer.rtp))
    assert router.viewer_count == 1 and router.has_publisher


def test_viewer_without_extensions_gets_none() -> None:
    router = Router(rtcp_ssrc=1, target_bitrate_bps=BITRATE)
    host, viewer = Host(), Sink()
    router.attach_publisher(sources(), lambda b: None, 0.0)
    plain = [SinkStream(kind="audio", ssrc=77, payload_type=111, clock_rate=48000)]
    router.add_viewer("v", plain, viewer.rtp.append, viewer.rtcp.append, 0.0)
    router.on_publisher_rtp(host.audio(), 0.0)
    ((h, d),) = viewer.of(77)
    assert not h.extension
    assert d[:12] == d[:12] and len(d) == 12 + 24


def test_late_viewer_waits_for_keyframe_and_pli_is_immediate() -> None:
    router, host, to_host, _v1 = setup()
    router.on_publisher_rtp(host.video(key=True), 0.0)
    for i in range(5):
        router.on_publisher_rtp(host.video(), 0.1 + i * 0.03)
    to_host.rtcp.clear()
    late = Sink()
    router.add_viewer("late", sinks(0x6000), late.rtp.append, late.rtcp.append, 0.3)
    assert to_host.rtcp_packets() == [Pli(RTCP_SSRC, 0xA1)]  # at once
    router.on_publisher_rtp(host.video(), 0.31)
    router.on_publisher_rtp(host.audio(), 0.31)
    assert late.of(0x6000) == []  # video gated
    assert len(late.of(0x6001)) == 1  # audio flows at once
    assert router.statistics().drops["waiting_keyframe"] == 1
    # a second viewer joining right after shares that keyframe: a join storm costs the host
    # at most one request per URGENT_PLI_INTERVAL
    router.add_viewer("late2", sinks(0x7000), Sink().rtp.append, lambda b: None, 0.35)
    assert len(to_host.rtcp_packets()) == 1
    # the keyframe starts the late viewer's video
    key = host.video(key=True)
    router.on_publisher_rtp(key, 0.4)
    after = host.video()
    router.on_publisher_rtp(after, 0.43)
    got = late.of(0x6000)
    assert len(got) == 2
    assert [h.sequence_number for h, _ in got] == [
        parse_rtp_untrusted(key).sequence_number,
        parse_rtp_untrusted(after).sequence_number,
    ]
    assert router.statistics().keyframe_requests_sent == 1


def test_viewer_pli_and_fir_are_throttled_and_coalesced() -> None:
    router, host, to_host, _viewer = setup()
    router.on_publisher_rtp(host.video(key=True), 0.0)

    def plis() -> list[object]:
        return [p for p in to_host.rtcp_packets() if isinstance(p, Pli)]

    to_host.rtcp.clear()
    router.tick(0.0)  # RR/REMB only, no PLI
    assert plis() == []
    router.on_viewer_rtcp("v1", build_pli(0x5000, 0x5000), 2.0)
    assert plis() == [Pli(RTCP_SSRC, 0xA1)]
    router.on_viewer_rtcp("v1", build_pli(0x5000, 0x5000), 2.3)
    router.on_viewer_rtcp("v1", build_fir(0x5000, 0x5000, 1), 2.5)
    assert len(plis()) == 1  # throttled
    router.tick(2.9)
    assert len(plis()) == 1
    router.tick(3.05)
    assert len(plis()) == 2  # the two held-back requests coalesced into one
    router.tick(4.5)
    assert len(plis()) == 2
    # a PLI for an SSRC that is not the viewer's video is ignored
    router.on_viewer_rtcp("v1", build_pli(0x5000, 0x1234), 10.0)
    assert len(plis()) == 2


def test_nack_served_from_cache_with_viewers_numbers() -> None:
    router, host, _to_host, viewer = setup()
    for i in range(10):
        router.on_publisher_rtp(host.video(key=i == 0), i * 0.01)
    sent = viewer.of(0x5000)
    wanted = [sent[3][0].sequence_number, sent[7][0].sequence_number]
    viewer.rtp.clear()
    router.on_viewer_rtcp("v1", build_nack(0x5000, 0x5000, wanted), 0.2)
    again = viewer.of(0x5000)
    assert [d for _, d in again] == [sent[3][1], sent[7][1]]  # identical bytes
    s = router.statistics()
    assert s.retransmissions == 2
    assert s.drops["cache_miss"] == 0


def test_nack_cache_miss_counts_and_asks_keyframe() -> None:
    router, host, to_host, viewer = setup()
    router.on_publisher_rtp(host.video(key=True), 0.0)
    to_host.rtcp.clear()
    first = viewer.of(0x5000)[0][0].sequence_number
    router.on_viewer_rtcp("v1", build_nack(0x5000, 0x5000, [first + 5, first - 1]), 5.0)
    s = router.statistics()
    assert s.drops["cache_miss"] == 2
    assert s.retransmissions == 0
    assert to_host.rtcp_packets() == [Pli(RTCP_SSRC, 0xA1)]


def _repeated_nack(media_ssrc: int, seqs: list[int], times: int) -> bytes:
    """One NACK whose FCI names the same packets `times` times over (~1.2 KB for 17 x 290)."""
    fci = b"".join(struct.pack("!HH", pid, blp) for pid, blp in nack_pairs(seqs)) * times
    body = struct.pack("!II", 0x5000, media_ssrc) + fci
    return struct.pack("!BBH", 0x81, 205, len(body) // 4) + body


def test_a_nack_naming_packets_many_times_resends_each_once() -> None:
    """Security review row 1: 17 packets named 290 times in one NACK were resent 4,930 times."""
    router, host, _to_host, viewer = setup()
    for i in range(40):
        router.on_publisher_rtp(host.video(key=i == 0), i * 0.01)
    wanted = [h.sequence_number for h, _ in viewer.of(0x5000)[:34:2]]  # 17 packets, BLP-packed
    viewer.rtp.clear()
    router.on_viewer_rtcp("v1", _repeated_nack(0x5000, wanted, 290), 1.0)
    assert sorted(h.sequence_number for h, _ in viewer.of(0x5000)) == sorted(wanted)
    assert router.statistics().retransmissions == 17
    # the same NACK again within the resend guard resends nothing
    router.on_viewer_rtcp("v1", _repeated_nack(0x5000, wanted, 290), 1.0 + RESEND_GUARD / 2)
    s = router.statistics()
    assert s.retransmissions == 17 and s.drops["nack_repeat"] == 17


def test_a_viewer_retransmissions_are_capped_by_the_stream_rate() -> None:
    """A NACK flood costs the viewer's link at most about the stream's own rate, and its RTCP
    beyond VIEWER_RTCP_PER_SECOND is not even parsed."""
    router, host, _to_host, viewer = setup()
    t = 0.0
    for i in range(300):  # 10 s at 30 packets a second: a known byte rate
        t = i / 30
        router.on_publisher_rtp(host.video(key=i == 0), t)
        router.tick(t)
    rate = router._layers[0].byte_rate
    assert 1000 < rate < 10_000
    viewer.rtp.clear()
    seqs = [(host.vseq - 1 - k) & 0xFFFF for k in range(200)]
    start = t
    for k in range(100):  # 20 NACKs a second of the 200 newest packets, for 5 s
        router.on_viewer_rtcp("v1", build_nack(0x5000, 0x5000, seqs), start + k / 20)
    resent_bytes = sum(len(d) for d in viewer.rtp)
    budget = max(rate * RETRANSMIT_RATE_SHARE, RETRANSMIT_MIN_BYTES_PER_SECOND)
    assert resent_bytes <= budget * (RETRANSMIT_BURST_SECONDS + 5.0) * 1.05
    assert router.statistics().drops["retransmit_limited"] > 0
    # RTCP flood: 1,000 datagrams in one second, at most 3 x VIEWER_RTCP_PER_SECOND read
    before = router.statistics().drops["rtcp_rate_limited"]
    for k in range(1000):
        router.on_viewer_rtcp("v1", build_nack(0x5000, 0x5000, seqs[:1]), 20.0 + k / 1000)
    limited = router.statistics().drops["rtcp_rate_limited"] - before
    assert 1000 - 3 * VIEWER_RTCP_PER_SECOND <= limited < 1000


def test_host_change_keeps_seq_ts_and_picture_id_continuous() -> None:
    router, host, to_host, viewer = setup()
    for i in range(6):
        router.on_publisher_rtp(host.video(key=i == 0), i / 30)
        router.on_publisher_rtp(host.audio(), i / 30)
    last_v = viewer.of(0x5000)[-1]
    last_a = viewer.of(0x5001)[-1]
    router.detach_publisher(0.3)
    assert not router.has_publisher
    router.on_publisher_rtp(host.video(), 0.31)  # stray packet after leaving
    assert router.statistics().drops["no_source"] == 1
    # the host comes back with new SSRCs and numbering
    to_host.rtcp.clear()
    host2 = Host(vssrc=0xB1, assrc=0xB2, seq=40000, ts=123456, pid=9000)
    router.attach_publisher(sources(), to_host.rtcp.append, 1.0)
    viewer.rtp.clear()
    router.on_publisher_rtp(host2.video(), 1.0)  # not a keyframe: the viewer waits
    assert to_host.rtcp_packets() == [Pli(RTCP_SSRC, 0xB1)]  # immediately
    router.on_publisher_rtp(host2.audio(), 1.0)
    router.on_publisher_rtp(host2.video(key=True), 1.5)
    router.on_publisher_rtp(host2.video(), 1.53)
    v = viewer.of(0x5000)
    a = viewer.of(0x5001)
    assert [h.sequence_number for h, _ in v] == [
        (last_v[0].sequence_number + 1) & 0xFFFF,
        (last_v[0].sequence_number + 2) & 0xFFFF,
    ]
    # the wall time since the last packet sent (at 5/30 s), in 90 kHz ticks
    assert v[0][0].timestamp == (last_v[0].timestamp + round((1.5 - 5 / 30) * 90000)) & 0xFFFFFFFF
    assert v[1][0].timestamp == (v[0][0].timestamp + 3000) & 0xFFFFFFFF
    pid_before = read_picture_id(last_v[1], last_v[0].payload_offset)[0]
    pid_after = read_picture_id(v[0][1], v[0][0].payload_offset)[0]
    assert pid_before is not None and pid_after == pid_before + 1
    # the VP8 payload after the descriptor is untouched
    assert payload(*v[0])[4:7] == b"\x00\x9d\x01"
    assert a[0][0].sequence_number == (last_a[0].sequence_number + 1) & 0xFFFF
    assert a[0][0].timestamp == (last_a[0].timestamp + round((1.0 - 5 / 30) * 48000)) & 0xFFFFFFFF


def test_ssrc_change_within_a_publisher_is_a_source_switch() -> None:
    router, host, _to_host, viewer = setup()
    for i in range(3):
        router.on_publisher_rtp(host.video(key=i == 0), i / 30)
    last = viewer.of(0x5000)[-1][0].sequence_number
    host.vssrc = 0xA9
    host.vseq = 5
    router.on_publisher_rtp(host.video(key=True), 0.2)
    assert viewer.of(0x5000)[-1][0].sequence_number == last + 1
    # a late packet of the old SSRC is dropped
    host.vssrc = 0xA1
    router.on_publisher_rtp(host.video(), 0.21)
    assert router.statistics().drops["stale_ssrc"] == 1
    assert router.publisher_ssrc("video") == 0xA9


def test_viewer_before_publisher() -> None:
    router = Router(rtcp_ssrc=RTCP_SSRC, target_bitrate_bps=BITRATE)
    viewer, to_host, host = Sink(), Sink(), Host()
    router.add_viewer("v", sinks(0x5000), viewer.rtp.append, viewer.rtcp.append, 0.0)
    router.on_publisher_rtp(host.video(key=True), 0.0)
    assert router.statistics().drops["no_source"] == 1
    router.attach_publisher(sources(), to_host.rtcp.append, 1.0)
    router.on_publisher_rtp(host.video(key=True), 1.0)  # first packet is a keyframe: no PLI
    assert to_host.rtcp == []
    assert len(viewer.of(0x5000)) == 1


def test_sender_report_translation() -> None:
    router, host, to_host, viewer = setup()
    for i in range(4):
        router.on_publisher_rtp(host.video(key=i == 0), i / 30)
    router.detach_publisher(0.2)
    host2 = Host(vssrc=0xB1, seq=1, ts=10)
    router.attach_publisher(sources(), to_host.rtcp.append, 0.5)
    router.on_publisher_rtp(host2.video(key=True), 0.5)
    router.on_publisher_rtp(host2.video(), 0.53)
    v = viewer.of(0x5000)
    ts_offset = (v[-1][0].timestamp - 3010) & 0xFFFFFFFF  # host2's second packet had ts 3010
    viewer.rtcp.clear()
    ntp = 0xE000000080000000
    router.on_publisher_rtcp(build_sr(0xB1, ntp, 7000, 2, 100), 0.6)
    (sr,) = viewer.rtcp_packets()
    assert isinstance(sr, SenderReport)
    assert sr.ssrc == 0x5000
    assert sr.ntp == ntp
    assert sr.rtp_ts == (7000 + ts_offset) & 0xFFFFFFFF
    assert sr.packet_count == 6
    assert sr.octet_count == sum(h.payload_end - h.payload_offset for h, _ in v)
    # and the SR is kept for LSR/DLSR in the next RR
    router.tick(1.1)
    rr = next(p for p in to_host.rtcp_packets() if isinstance(p, ReceiverReport))
    block = next(b for b in rr.reports if b.ssrc == 0xB1)
    assert block.lsr == (ntp >> 16) & 0xFFFFFFFF
    assert block.dlsr == round(0.5 * 65536)


def test_tick_sends_rr_and_remb_about_once_a_second() -> None:
    router, host, to_host, _viewer = setup()
    router.tick(0.0)
    assert to_host.rtcp == []  # no SSRC known yet
    router.on_publisher_rtp(host.video(key=True), 0.1)
    router.on_publisher_rtp(host.audio(), 0.1)
    router.tick(0.25)
    assert len(to_host.rtcp) == 1
    rr, remb = parse_rtcp_untrusted(to_host.rtcp[0])
    assert isinstance(rr, ReceiverReport) and rr.ssrc == RTCP_SSRC
    assert {b.ssrc for b in rr.reports} == {0xA1, 0xA2}
    assert isinstance(remb, Remb)
    assert remb.ssrcs == (0xA1, 0xA2)
    assert BITRATE - BITRATE / 2**17 <= remb.bitrate_bps <= BITRATE
    router.tick(0.5)
    router.tick(0.75)
    assert len(to_host.rtcp) == 1
    router.tick(1.25)
    assert len(to_host.rtcp) == 2
    assert router.statistics().reports_sent == 2


def test_nacks_to_host_for_its_losses() -> None:
    router, host, to_host, _viewer = setup()
    router.on_publisher_rtp(host.video(key=True), 0.0)
    first = host.vseq
    host.video()
    host.video()  # two packets lost on the way
    router.on_publisher_rtp(host.video(), 0.01)
    nacks = [p for p in to_host.rtcp_packets() if isinstance(p, Nack)]
    assert nacks == [Nack(RTCP_SSRC, 0xA1, (first, first + 1))]  # at once
    router.tick(0.02)  # too early for a retry
    assert len([p for p in to_host.rtcp_packets() if isinstance(p, Nack)]) == 1
    for t in (0.1, 0.2, 0.3, 0.4):
        router.tick(t)
    nacks = [p for p in to_host.rtcp_packets() if isinstance(p, Nack)]
    assert len(nacks) == 3  # at most three times
    s = router.statistics()
    assert (s.nacks_sent, s.nacked_seqs) == (3, 6)


def test_retransmitted_packet_from_host_is_forwarded_once() -> None:
    router, host, _to_host, viewer = setup()
    router.on_publisher_rtp(host.video(key=True), 0.0)
    lost = host.video()
    router.on_publisher_rtp(host.video(), 0.01)
    router.on_publisher_rtp(lost, 0.05)  # the retransmission (same ssrc, same seq)
    router.on_publisher_rtp(lost, 0.06)  # a duplicate
    seqs = [h.sequence_number for h, _ in viewer.of(0x5000)]
    assert seqs == [1000, 1002, 1001]
    assert router.statistics().drops["duplicate"] == 1


def test_seq_wraparound() -> None:
    router = Router(rtcp_ssrc=1, target_bitrate_bps=BITRATE)
    host, viewer = Host(seq=65533), Sink()
    router.attach_publisher(sources(), lambda b: None, 0.0)
    router.add_viewer("v", sinks(0x5000), viewer.rtp.append, viewer.rtcp.append, 0.0)
    for i in range(6):
        router.on_publisher_rtp(host.video(key=i == 0), i / 30)
    got = viewer.of(0x5000)
    assert [h.sequence_number for h, _ in got] == [65533, 65534, 65535, 0, 1, 2]
    viewer.rtp.clear()
    router.on_viewer_rtcp("v", build_nack(0x5000, 0x5000, [65535, 0]), 1.0)
    assert [d for _, d in viewer.of(0x5000)] == [got[2][1], got[3][1]]


def test_remove_viewer_and_rtcp_from_unknown_viewer() -> None:
    router, host, _to_host, viewer = setup()
    router.on_publisher_rtp(host.video(key=True), 0.0)
    router.remove_viewer("v1")
    router.remove_viewer("v1")
    router.on_publisher_rtp(host.video(), 0.1)
    assert len(viewer.rtp) == 1
    assert router.viewer_count == 0
    router.on_viewer_rtcp("v1", build_pli(1, 0x5000), 0.2)
    assert router.statistics().drops["unknown_viewer"] == 1


def test_viewer_rr_and_remb_are_consumed() -> None:
    router, host, to_host, viewer = setup()
    router.on_publisher_rtp(host.video(key=True), 0.0)
    to_host.rtcp.clear()
    router.on_viewer_rtcp("v1", build_rr(0x99) + build_remb(0x99, 500_000, [0x5000]), 0.5)
    assert to_host.rtcp == []
    assert viewer.rtp and len(viewer.rtp) == 1


def test_unknown_payload_type_and_malformed_input_are_counted() -> None:
    router, _host, _to_host, _viewer = setup()
    router.on_publisher_rtp(
        build_rtp_packet(payload_type=97, sequence_number=1, timestamp=1, ssrc=5, payload=b"x"),
        0.0,
    )
    router.on_publisher_rtp(b"\x00garbage", 0.0)
    router.on_publisher_rtcp(b"\x80\xc8\x00\x09", 0.0)
    router.on_viewer_rtcp("v1", b"\xff" * 7, 0.0)
    d = router.statistics().drops
    assert d["unknown_payload_type"] == 1
    assert d["malformed"] == 1
    assert d["malformed_rtcp"] == 2


@settings(max_examples=200)
@given(st.lists(st.binary(max_size=64), max_size=8), st.binary(max_size=64))
def test_random_bytes_never_raise(rtp: list[bytes], rtcp: bytes) -> None:
    router, host, _to_host, _viewer = setup()
    router.on_publisher_rtp(host.video(key=True), 0.0)
    for i, d in enumerate(rtp):
        # make some of them parse as RTP of a known payload type
        if len(d) >= 12 and i % 2:
            d = struct.pack("!BB", 0x80, VP8 if i % 4 == 1 else OPUS) + d[2:]
        router.on_publisher_rtp(d, 0.1 + i)
        router.on_viewer_rtcp("v1", d, 0.1 + i)
    router.on_publisher_rtcp(rtcp, 9.0)
    router.on_viewer_rtcp("v1", rtcp, 9.0)
    router.tick(10.0)
    s = router.statistics()
    assert s.packets_in == len(rtp) + 1


def test_a_viewer_without_the_hosts_codec_gets_its_audio_alone() -> None:
    """An H.264 host (issue 22): a viewer that negotiated VP8 alone gets no video at all (never
    H.264 under its VP8 payload type), and its audio as ever."""
    router = Router(rtcp_ssrc=RTCP_SSRC, target_bitrate_bps=BITRATE)
    router.attach_publisher(
        [SourceStream("audio", 111, 48000, codec="opus"), SourceStream("video", 102, 90000, codec="H264")],
        lambda data: None,
        0.0,
    )
    sent: list[bytes] = []
    sinks = [
        SinkStream("audio", 0xA, 109, 48000, payload_types={"opus": 109}),
        SinkStream("video", 0xB, 96, 90000, payload_types={"VP8": 96}),
    ]
    router.add_viewer("v", sinks, sent.append, lambda data: None, 0.0)
    idr = b"\x80\xe6\x00\x01" + (0).to_bytes(4, "big") + (0x1234).to_bytes(4, "big") + b"\x65\x88\x84\x00"
    opus = b"\x80\xef\x00\x01" + (0).to_bytes(4, "big") + (0x5678).to_bytes(4, "big") + b"\xfc\x00"
    router.on_publisher_rtp(idr, 0.1)
    router.on_publisher_rtp(opus, 0.1)
    assert [packet[1] & 0x7F for packet in sent] == [109]  # the audio alone
    assert router.take_quality_changes() == [QualityChange("v", "audio_only", None, None, "codec")]
    router.tick(1.0)
    assert router.take_quality_changes() == []  # told once


def test_an_h264_hosts_video_and_audio_are_recorded() -> None:
    """Recordings of H.264 rooms are Matroska (issue 22): the router hands the recording the
    host's H.264 packets as well as its audio."""
    router = Router(rtcp_ssrc=RTCP_SSRC, target_bitrate_bps=BITRATE)
    router.attach_publisher(
        [SourceStream("audio", 111, 48000, codec="opus"), SourceStream("video", 102, 90000, codec="H264")],
        lambda data: None,
        0.0,
    )
    idr = b"\x80\xe6\x00\x01" + (0).to_bytes(4, "big") + (0x1234).to_bytes(4, "big") + b"\x65\x88\x84\x00"
    opus = b"\x80\xef\x00\x01" + (0).to_bytes(4, "big") + (0x5678).to_bytes(4, "big") + b"\xfc\x00"
    router.on_publisher_rtp(idr, 0.1)
    router.on_publisher_rtp(opus, 0.1)
    router.tick(0.2)
    assert router.recordable(idr) and router.recordable(opus)
    assert not router.recordable(idr[:8] + (0x9999).to_bytes(4, "big") + idr[12:])  # an SSRC it never had
