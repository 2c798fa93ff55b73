"""Simulcast in the router (media/router.py, media/bwe.py, media/layers.py): bytes in, bytes
out, time passed in. A host sends three VP8 layers as a browser does (one SSRC each, the rid
header extension on their packets, its own picture ids and TL0PICIDX per layer, sender
reports on each layer's own RTP clock); a viewer has one SSRC whatever the layer."""

from __future__ import annotations

import itertools

from media.bwe import (
    AUDIO_ONLY,
    HOLD_AFTER_DOWN,
    MIN_LAYER_SECONDS,
    PROBE_INTERVAL,
    PROBE_RAMP_SECONDS,
    QUEUE_HEAVY_SECONDS,
    REMB_GRACE,
    LayerPolicy,
    ViewerBandwidth,
)
from media.layers import layer_names, quality_cap
from media.router import ALLOCATE_INTERVAL, FLOWING_SECONDS, PAUSE_AFTER, QualityChange, Router
from media.rtcp import Pli, ReportBlock, SenderReport, build_nack, build_remb, build_rr, build_sr, parse_rtcp_untrusted
from media.rtp import MID_URI, RID_URI, RtpHeader, parse_rtp_untrusted
from media.streams import SinkStream, SourceStream
from media.vp8 import parse_vp8_descriptor_untrusted
from tests.rtp_packets import build_rtp_packet

VP8, OPUS = 96, 111
RID_ID, MID_ID = 10, 1
SIZES = {"q": (320, 180), "h": (640, 360), "f": (1280, 720)}
SSRCS = {"q": 0x100, "h": 0x200, "f": 0x300}
NTP_EPOCH = 3_900_000_000 << 32  # an NTP time (seconds << 32)


class Layer:
    """One simulcast layer of a browser host: its own SSRC, seq, RTP clock, picture ids."""

    def __init__(self, rid: str, ts_base: int, seq: int, pid: int, tl0: int, *, temporal: bool = False) -> None:
        self.rid, self.ssrc, self.size = rid, SSRCS[rid], SIZES[rid]
        self.seq, self.ts_base, self.pid, self.tl0 = seq, ts_base, pid, tl0
        self.frames = 0
        self.temporal = temporal  # L1T3 as libwebrtc: TIDs 0, 2, 1, 2 from each keyframe on
        self.in_pattern = 0
        self.body_size = {"q": 40, "h": 160, "f": 640}[rid]  # layers' rates differ

    def ts(self, at: float) -> int:
        return (self.ts_base + round(at * 90000)) & 0xFFFFFFFF

    def frame(self, at: float, *, key: bool = False, packets: int = 2, with_rid: bool = True) -> list[bytes]:
        """One frame taken at `at` (seconds since the host started), in `packets` packets."""
        out = []
        if key:
            self.in_pattern = 0
        tid, sync = 0, True
        if self.temporal:  # the first TID 2 and TID 1 frames after a TID 0 one are layer-sync frames
            tid, sync = TL_PATTERN[self.in_pattern % 4], self.in_pattern % 4 in (1, 2)
            self.in_pattern += 1
        if self.frames and tid == 0:
            self.tl0 = (self.tl0 + 1) & 0xFF
        for k in range(packets):
            first = k == 0
            tk = (tid << 6) | (0x20 if sync else 0)
            descriptor = bytes([0x90 if first else 0x80, 0xE0, 0x80 | (self.pid >> 8), self.pid & 0xFF, self.tl0, tk])
            body = b""
            if first and key:
                w, h = self.size
                body = b"\x10\x02\x00\x9d\x01\x2a" + w.to_bytes(2, "little") + h.to_bytes(2, "little")
            elif first:
                body = b"\x11\x02\x00"
            body += bytes([self.frames & 0xFF]) * self.body_size
            extensions = [(MID_ID, b"1")] + ([(RID_ID, self.rid.encode())] if with_rid else [])
            out.append(
                build_rtp_packet(
                    payload_type=VP8,
                    sequence_number=self.seq,
                    timestamp=self.ts(at),
                    ssrc=self.ssrc,
                    payload=descriptor + body,
                    marker=k == packets - 1,
                    extensions=extensions,
                )
            )
            self.seq = (self.seq + 1) & 0xFFFF
        self.pid = (self.pid + 1) & 0x7FFF
        self.frames += 1
        return out

    def sender_report(self, at: float) -> bytes:
        return build_sr(self.ssrc, NTP_EPOCH + round(at * 2**32), self.ts(at), 0, 0)


TL_PATTERN = (0, 2, 1, 2)


class Host:
    def __init__(self, *, temporal: bool = False) -> None:
        # every layer on its own random-looking RTP clock, seq and picture ids (as Chromium)
        self.layers = {
            "q": Layer("q", 1_000_000, 100, 5, 10, temporal=temporal),
            "h": Layer("h", 77_000_000, 30_000, 900, 200, temporal=temporal),
            "f": Layer("f", 3_000_000_000, 60_000, 20_000, 250, temporal=temporal),
        }


def stream() -> SourceStream:
    return SourceStream(
        kind="video",
        payload_type=VP8,
        clock_rate=90000,
        extensions={MID_ID: MID_URI, RID_ID: RID_URI},
        rids=("q", "h", "f"),
    )


def sink(ssrc: int = 0x5000) -> list[SinkStream]:
    return [SinkStream(kind="video", ssrc=ssrc, payload_type=120, clock_rate=90000, extensions={MID_URI: 3}, mid="1")]


class Viewer:
    def __init__(self) -> None:
        self.rtp: list[bytes] = []
        self.rtcp: list[bytes] = []

    def headers(self) -> list[RtpHeader]:
        return [parse_rtp_untrusted(d) for d in self.rtp]

    def media(self) -> list[tuple[RtpHeader, bytes]]:
        """The packets that are not padding."""
        return [(h, d) for d in self.rtp if not (h := parse_rtp_untrusted(d)).padding]


def start(*, at: float = 0.0) -> tuple[Router, Host, list[bytes], Viewer]:
    router = Router(rtcp_ssrc=7, target_bitrate_bps=1_500_000)
    host, to_host, viewer = Host(), [], Viewer()
    router.attach_publisher([stream()], to_host.append, at)
    router.add_viewer("v", sink(), viewer.rtp.append, viewer.rtcp.append, at)
    return router, host, to_host, viewer


def send(
    router: Router, host: Host, at: float, *, keys: tuple[str, ...] = (), rids: tuple[str, ...] = ("q", "h", "f")
) -> None:
    for rid in rids:
        for packet in host.layers[rid].frame(at, key=rid in keys):
            router.on_publisher_rtp(packet, at)


def run(router: Router, host: Host, start_at: float, seconds: float, *, keys_every: float = 1.0) -> float:
    """30 frames a second of every layer (a keyframe of each every `keys_every` s), ticking."""
    at = start_at
    while at < start_at + seconds:
        keyed = round(at * 30) % round(keys_every * 30) == 0
        send(router, host, at, keys=("q", "h", "f") if keyed else ())
        if round(at * 30) % 3 == 0:
            router.tick(at)
        if round(at * 30) % 30 == 0:
            for layer in host.layers.values():
                router.on_publisher_rtcp(layer.sender_report(at), at)
        at = round(at + 1 / 30, 6)
    return at


def test_layer_names_and_quality_caps() -> None:
    assert layer_names(3) == ("low", "medium", "high") and layer_names(2) == ("low", "high")
    assert layer_names(1) == ("high",)
    assert quality_cap("auto", 3) is None and quality_cap("audio_only", 3) == AUDIO_ONLY
    assert [quality_cap(q, 3) for q in ("low", "medium", "high")] == [0, 1, 2]
    assert [quality_cap(q, 2) for q in ("low", "medium", "high")] == [0, 0, 1]


def test_layers_are_learned_by_rid_and_ordered_by_size() -> None:
    router, host, _to_host, viewer = start()
    send(router, host, 0.0, keys=("q", "h", "f"), rids=("f", "h", "q"))
    layers = router.layers(0.0)
    assert [(layer.name, layer.rid, layer.width) for layer in layers] == [
        ("low", "q", 320),
        ("medium", "h", 640),
        ("high", "f", 1280),
    ]
    # a new viewer starts on the top layer: only its packets, on the viewer's one SSRC
    assert {h.ssrc for h in viewer.headers()} == {0x5000}
    assert len(viewer.rtp) == 2
    # packets of an SSRC without a known rid are dropped, counted
    router.on_publisher_rtp(
        build_rtp_packet(payload_type=VP8, sequence_number=1, timestamp=1, ssrc=0x999, payload=b"\x10x"), 0.0
    )
    assert router.statistics().drops["unknown_rid"] == 1
    # later packets of a learned SSRC need no rid
    for packet in host.layers["f"].frame(0.034, with_rid=False):
        router.on_publisher_rtp(packet, 0.034)
    assert len(viewer.rtp) == 4


def test_a_switch_waits_for_the_target_keyframe_and_the_stream_stays_continuous() -> None:
    router, host, to_host, viewer = start()
    at = run(router, host, 0.0, 2.0)  # on "high"; sender reports of every layer known
    assert router.take_quality_changes() == [QualityChange("v", "high", 1280, 720, "requested")]
    before = viewer.media()
    to_host.clear()
    router.set_quality("v", "low", at)
    # the target layer is asked for a keyframe at once
    plis = [p for d in to_host for p in parse_rtcp_untrusted(d) if isinstance(p, Pli)]
    assert plis == [Pli(7, SSRCS["q"])]
    send(router, host, at)  # no keyframe yet: the viewer keeps getting "high"
    assert all(len(d) > 0 for d in viewer.rtp)
    at = round(at + 1 / 30, 6)
    send(router, host, at, keys=("q",))  # the low layer's keyframe: the switch
    packets = viewer.media()
    last_high, first_low = packets[len(before) + 1], packets[len(before) + 2]
    (h_high, d_high), (h_low, d_low) = last_high, first_low
    assert h_low.ssrc == h_high.ssrc == 0x5000
    assert h_low.sequence_number == (h_high.sequence_number + 1) & 0xFFFF  # no gap, no jump back
    # the timestamps were bridged through the sender reports: one frame (3000 ticks) later
    assert (h_low.timestamp - h_high.timestamp) & 0xFFFFFFFF == 3000
    desc_high = parse_vp8_descriptor_untrusted(d_high[h_high.payload_offset :])
    desc_low = parse_vp8_descriptor_untrusted(d_low[h_low.payload_offset :])
    assert desc_low.picture_id == (desc_high.picture_id or 0) + 1  # picture ids continue
    assert desc_low.tl0_pic_idx == ((desc_high.tl0_pic_idx or 0) + 1) & 0xFF
    assert desc_low.keyframe
    # from now on only "low" (its payload bytes), never "high" again
    for rid in ("q", "h", "f"):
        for packet in host.layers[rid].frame(at + 0.04):
            router.on_publisher_rtp(packet, at + 0.04)
    newest = viewer.media()[-2:]
    assert [len(d) for _, d in newest] == [len(p) for p in host.layers["q"].frame(at + 0.08)]
    assert router.take_quality_changes() == []  # told at the next tick
    router.tick(at + 0.1)
    changes = router.take_quality_changes()
    assert changes[-1] == QualityChange("v", "low", 320, 180, "requested")


def test_a_nack_for_the_old_layer_after_a_switch_is_served_from_it() -> None:
    router, host, _to_host, viewer = start()
    at = run(router, host, 0.0, 1.0)
    router.set_quality("v", "low", at)
    send(router, host, at, keys=("q",))
    headers = [h for h, _ in viewer.media()]
    last_high = headers[-3]  # the low keyframe is 2 packets: the one before them is high's last
    viewer.rtp.clear()
    router.on_viewer_rtcp("v", build_nack(1, 0x5000, [last_high.sequence_number]), at + 0.01)
    (resent,) = viewer.headers()
    assert resent.sequence_number == last_high.sequence_number and resent.timestamp == last_high.timestamp


def test_bandwidth_moves_a_viewer_down_at_once_and_up_only_after_a_hold_with_padding_to_probe() -> None:
    router, host, _to_host, viewer = start()
    at = run(router, host, 0.0, REMB_GRACE + 1)
    assert router.take_quality_changes()[-1].layer == "high"
    # the viewer's REMB says its link carries little: down to a layer that fits
    rates = [layer.bitrate_bps for layer in router.layers(at)]
    assert rates[0] < rates[1] < rates[2]
    router.on_viewer_rtcp("v", build_remb(1, rates[0] + 1000, [0x5000]), at)
    at = run(router, host, at, 2.0)
    assert router.take_quality_changes()[-1] == QualityChange("v", "low", 320, 180, "bandwidth")
    # the link is fine again: no step up within the hold; then padding probes the next layer
    padded_at = None
    remb = 3 * rates[0]
    changes: list[QualityChange] = []
    while at < 30:
        router.on_viewer_rtcp(
            "v", build_rr(1, [ReportBlock(0x5000, 0, 0, 0, 0, 0, 0)]) + build_remb(1, remb, [0x5000]), at
        )
        at = run(router, host, at, 0.5)
        if padded_at is None and any(h.padding for h in viewer.headers()):
            padded_at = at
            remb = 2 * rates[2]  # a viewer's estimate grows with what it receives: now the next layer fits
        changes = router.take_quality_changes() or changes
        if changes and changes[-1].layer != "low":
            break
    assert padded_at is not None and padded_at >= 5.0 + HOLD_AFTER_DOWN - 1
    assert changes[-1].layer == "medium" and changes[-1].reason == "bandwidth"  # one step at a time
    # padding packets are padding only, between frames, and the media seqs skip them
    seqs = [h.sequence_number for h in viewer.headers()]
    assert all((b - a) & 0xFFFF == 1 for a, b in itertools.pairwise(seqs))
    assert all(len(d) == 12 + 255 and d[0] & 0x20 for d in viewer.rtp if parse_rtp_untrusted(d).padding)
    assert router.statistics().padding_bytes > 0


def test_audio_only_is_a_request_and_video_comes_back_on_request() -> None:
    router, host, _to_host, viewer = start()
    at = run(router, host, 0.0, 1.0)
    router.set_quality("v", "audio_only", at)
    count = len(viewer.rtp)
    at = run(router, host, at, 1.0)
    assert len(viewer.rtp) == count
    assert router.take_quality_changes()[-1].layer == "audio_only"
    router.set_quality("v", "medium", at)
    at = run(router, host, at, 1.5)
    assert router.take_quality_changes()[-1] == QualityChange("v", "medium", 640, 360, "requested")
    assert len(viewer.rtp) > count


def test_dynacast_names_the_layers_someone_needs() -> None:
    router, host, _to_host, _viewer = start()
    at = run(router, host, 0.0, 1.0)
    assert router.needed_rids(at) == ["q", "h", "f"]
    router.set_quality("v", "low", at)
    at = run(router, host, at, 1.0)
    assert router.needed_rids(at) == ["q", "h", "f"]  # not yet: PAUSE_AFTER must pass
    at = run(router, host, at, PAUSE_AFTER + 1)
    assert router.needed_rids(at) == ["q"]
    router.set_quality("v", "high", at)  # asked for by name: needed at once
    assert router.needed_rids(at) == ["q", "h", "f"]  # and the one below the target is kept
    router.set_quality("v", "auto", at)
    at = run(router, host, at, PAUSE_AFTER + 1)
    assert router.needed_rids(at) == ["h", "f"]  # on high: the one below (to step down to), not low


def test_keyframe_requests_for_a_switch_storm_are_bounded_per_layer() -> None:
    router, host, to_host, _viewer = start()
    sinks = [Viewer() for _ in range(50)]
    for n, extra in enumerate(sinks):
        router.add_viewer(f"x{n}", sink(0x6000 + n), extra.rtp.append, extra.rtcp.append, 0.0)
    at = run(router, host, 0.0, 1.0)
    to_host.clear()
    for n in range(50):  # every viewer asks for "low" within 50 ms
        router.set_quality(f"x{n}", "low", at + n * 0.001)
    plis = [p for d in to_host for p in parse_rtcp_untrusted(d) if isinstance(p, Pli)]
    assert plis == [Pli(7, SSRCS["q"])]
    assert router.statistics().keyframe_requests["switch"] == 1


def test_policy_alone() -> None:
    policy, bw = LayerPolicy(), ViewerBandwidth(5_000_000, 0.0)
    rates = [150_000, 500_000, 1_500_000]
    assert policy.choose(0.0, bw, rates, None).layer == 2
    bw.on_remb(400_000, 1.0)  # libwebrtc's initial guess: ignored
    assert policy.choose(1.0, bw, rates, None).layer == 2
    bw.on_remb(400_000, REMB_GRACE)
    decision = policy.choose(REMB_GRACE, bw, rates, None)
    assert (decision.layer, decision.reason) == (0, "bandwidth")  # the best that fits: low
    bw.on_remb(130_000, REMB_GRACE)  # a little under low: low stays
    assert policy.choose(REMB_GRACE + 10, bw, rates, None).layer == 0
    bw.on_remb(100_000, REMB_GRACE)  # clearly under, for long, but no loss: low stays (a REMB lags)
    assert policy.choose(REMB_GRACE + 11, bw, rates, None).layer == 0
    assert policy.choose(REMB_GRACE + 16, bw, rates, None).layer == 0
    for second in range(16, 23):  # and losing a third of its packets, report after report: audio only, after a while
        bw.on_loss(80, REMB_GRACE + second)
        if second == 17:
            assert policy.choose(REMB_GRACE + 17, bw, rates, None).layer == 0
    assert policy.choose(REMB_GRACE + 22, bw, rates, None).layer == AUDIO_ONLY


def test_a_quality_chosen_before_the_media_applies_from_the_first_frame() -> None:
    router = Router(rtcp_ssrc=7, target_bitrate_bps=1_500_000)
    host, viewer = Host(), Viewer()
    router.attach_publisher([stream()], [].append, 0.0)
    at = run(router, host, 0.0, 2.0)
    router.add_viewer("v", sink(), viewer.rtp.append, viewer.rtcp.append, at, quality="low")
    at = run(router, host, at, 1.5)
    assert router.take_quality_changes() == [QualityChange("v", "low", 320, 180, "requested")]


def test_a_step_up_that_fits_probes_the_next_one_at_once() -> None:
    policy, bw = LayerPolicy(), ViewerBandwidth(200_000, 0.0)
    rates = [150_000, 500_000, 1_500_000]
    at = REMB_GRACE
    bw.on_remb(200_000, at)
    assert policy.choose(at, bw, rates, None).layer == 0
    at += PROBE_INTERVAL
    probe = policy.choose(at, bw, rates, None)
    assert probe.layer == 0 and 0 < probe.padding_bps < rates[1] - rates[0]  # probing toward medium, slowly at first
    probe = policy.choose(at + PROBE_RAMP_SECONDS, bw, rates, None)
    assert probe.layer == 0 and probe.padding_bps >= rates[1] - rates[0]  # ... then all of it
    bw.on_remb(800_000, at + 1)  # the link carries it (and its receiver reports say no loss)
    for report in range(6):
        bw.on_loss(0, at + report / 3)
    at += MIN_LAYER_SECONDS
    up = policy.choose(at, bw, rates, None)
    assert (up.layer, up.reason) == (1, "bandwidth")
    nxt = policy.choose(at + ALLOCATE_INTERVAL, bw, rates, None)
    assert nxt.layer == 1 and nxt.padding_bps > 0  # and on toward high, no wait


def test_a_probe_stops_at_the_first_loss_and_the_next_waits_longer() -> None:
    policy, bw = LayerPolicy(), ViewerBandwidth(200_000, 0.0)
    rates = [150_000, 500_000, 1_500_000]
    at = REMB_GRACE
    bw.on_remb(200_000, at)
    policy.choose(at, bw, rates, None)
    at += PROBE_INTERVAL
    assert policy.choose(at, bw, rates, None).padding_bps > 0
    bw.on_loss(20, at + 0.5)  # the link is full
    assert policy.choose(at + 0.5, bw, rates, None).padding_bps == 0
    bw.on_loss(0, at + 1)
    # the next probe waits twice PROBE_INTERVAL after the stop
    assert policy.choose(at + 0.5 + PROBE_INTERVAL, bw, rates, None).padding_bps == 0
    assert policy.choose(at + 0.5 + 2 * PROBE_INTERVAL, bw, rates, None).padding_bps > 0


def test_after_a_lossy_spell_the_estimate_returns_to_the_remb_within_seconds() -> None:
    bw = ViewerBandwidth(1_000_000, 0.0)
    bw.on_remb(1_500_000, REMB_GRACE)
    for second in range(5):  # a third of the packets lost for 5 s
        bw.on_loss(85, REMB_GRACE + second)
    assert bw.bps < 500_000
    for second in range(10):  # the link is clear again: back to the REMB in well under 10 reports
        bw.on_loss(0, REMB_GRACE + 5 + second)
    assert bw.bps == 1_500_000


def descriptors(viewer: Viewer) -> list[tuple[int, int, int, int]]:
    """(seq, picture id, TL0PICIDX, TID) of the viewer's media packets that start a frame."""
    out = []
    for hdr, data in viewer.media():
        d = parse_vp8_descriptor_untrusted(data[hdr.payload_offset : hdr.payload_end])
        if d.start_of_partition and d.partition_id == 0:
            assert d.picture_id is not None and d.tl0_pic_idx is not None and d.tid is not None
            out.append((hdr.sequence_number, d.picture_id, d.tl0_pic_idx, d.tid))
    return out


def test_a_link_that_carries_less_than_the_lowest_layer_gets_its_base_temporal_layer_without_gaps() -> None:
    router = Router(rtcp_ssrc=7, target_bitrate_bps=1_500_000)
    host, viewer = Host(temporal=True), Viewer()
    for rid, size in (("q", 300), ("h", 800), ("f", 1150)):  # ~160, 400 and 570 kbit/s
        host.layers[rid].body_size = size
    router.attach_publisher([stream()], [].append, 0.0)
    router.add_viewer("v", sink(), viewer.rtp.append, viewer.rtcp.append, 0.0)
    at = run(router, host, 0.0, REMB_GRACE + 1)
    low = router.layers(at)[0].bitrate_bps
    router.on_viewer_rtcp("v", build_remb(1, low // 3, [0x5000]), at)  # a third of the lowest layer
    at = run(router, host, at, 3.0)
    mark = len(viewer.rtp)
    at = run(router, host, at, 2.0)
    after = Viewer()
    after.rtp = viewer.rtp[mark:]
    frames = descriptors(after)
    assert {tid for *_, tid in frames} == {0}, "only the base temporal layer"
    assert len(frames) >= 13  # ~15 a second of 60: a quarter
    assert router.statistics().drops["temporal_layer"] > 0
    assert router.take_quality_changes()[-1].layer == "low"  # still video: not audio only

    # the link clears: back up through the temporal layers (at their sync frames) and beyond
    changes: list[QualityChange] = []
    while at < 60 and not (changes and changes[-1].layer == "high"):
        router.on_viewer_rtcp(
            "v", build_rr(1, [ReportBlock(0x5000, 0, 0, 0, 0, 0, 0)]) + build_remb(1, 5_000_000, [0x5000]), at
        )
        at = run(router, host, at, 0.5)
        changes = router.take_quality_changes() or changes
    assert changes[-1].layer == "high"
    # one stream all along: seqs without a gap, a picture id per frame, TL0PICIDX never jumping
    seqs = [h.sequence_number for h in viewer.headers()]
    assert all((b - a) & 0xFFFF == 1 for a, b in itertools.pairwise(seqs))
    frames = descriptors(viewer)
    assert all((b[1] - a[1]) & 0x7FFF == 1 for a, b in itertools.pairwise(frames))
    assert all((b[2] - a[2]) & 0xFF in (0, 1) for a, b in itertools.pairwise(frames))
    tids_seen = [tid for *_, tid in frames]
    assert 1 in tids_seen and 2 in tids_seen  # the upper temporal layers came back


def test_a_nack_after_skipped_frames_gets_the_packet_as_it_was_sent() -> None:
    router = Router(rtcp_ssrc=7, target_bitrate_bps=1_500_000)
    host, viewer = Host(temporal=True), Viewer()
    for rid, size in (("q", 300), ("h", 800), ("f", 1150)):
        host.layers[rid].body_size = size
    router.attach_publisher([stream()], [].append, 0.0)
    router.add_viewer("v", sink(), viewer.rtp.append, viewer.rtcp.append, 0.0)
    at = run(router, host, 0.0, REMB_GRACE + 1)
    low = router.layers(at)[0].bitrate_bps
    router.on_viewer_rtcp("v", build_remb(1, low // 3, [0x5000]), at)
    at = run(router, host, at, 3.0)
    media = [d for d in viewer.rtp if not parse_rtp_untrusted(d).padding]
    sent = {parse_rtp_untrusted(d).sequence_number: d for d in media}
    wanted = [parse_rtp_untrusted(d).sequence_number for d in media[-13:-10]]  # after several skipped frames
    count = len(viewer.rtp)
    router.on_viewer_rtcp("v", build_nack(1, 0x5000, wanted), at + 0.01)
    resent = viewer.rtp[count:]
    assert [parse_rtp_untrusted(d).sequence_number for d in resent] == wanted
    assert all(d == sent[parse_rtp_untrusted(d).sequence_number] for d in resent)  # byte for byte


def sender_reports(viewer: Viewer) -> list[SenderReport]:
    return [p for d in viewer.rtcp for p in parse_rtcp_untrusted(d) if isinstance(p, SenderReport) and p.ssrc == 0x5000]


def test_a_probe_stops_when_the_round_trip_of_the_viewers_reports_grows() -> None:
    """The round trip from a report block that names one of our sender reports (its LSR, less
    its DLSR) is the viewer's queue once its least is known: a probe's padding stops when it
    grows by more than QUEUE_HEAVY_SECONDS, with no loss and a REMB that still says yes."""
    router, host, _to_host, viewer = start()
    at = run(router, host, 0.0, REMB_GRACE + 1)
    rates = [layer.bitrate_bps for layer in router.layers(at)]
    router.on_viewer_rtcp("v", build_remb(1, rates[0] + 1000, [0x5000]), at)
    at = run(router, host, at, 2.0)
    assert router.take_quality_changes()[-1].layer == "low"
    sent_at: dict[int, float] = {}  # LSR -> when the viewer got that SR

    def report(queue: float) -> bytes:
        """An RR naming the newest SR, as if it had waited `queue` s on the way there and back."""
        sr = sender_reports(viewer)[-1]
        lsr = (sr.ntp >> 16) & 0xFFFFFFFF
        dlsr = round((at - sent_at[lsr] - queue) * 65536)
        block = ReportBlock(0x5000, 0, 0, 0, 0, lsr, dlsr)
        return build_rr(1, [block]) + build_remb(1, 3 * rates[0], [0x5000])

    padding_seen = False
    while at < 40 and not padding_seen:
        at = run(router, host, at, 0.1)
        for sr in sender_reports(viewer):
            sent_at.setdefault((sr.ntp >> 16) & 0xFFFFFFFF, at)
        if sent_at:
            router.on_viewer_rtcp("v", report(0.0), at)
        padding_seen = any(h.padding for h in viewer.headers())
    assert padding_seen, "the viewer never probed"
    viewer.rtp.clear()
    router.on_viewer_rtcp("v", report(QUEUE_HEAVY_SECONDS + 0.1), at)
    at = run(router, host, at, 0.5)
    assert not any(h.padding for h in viewer.headers()), "the probe went on into a growing queue"


def test_recordings_and_thumbnails_take_the_highest_layer_that_flows() -> None:
    router, host, _to_host, _viewer = start()
    at = run(router, host, 0.0, 2.0)
    first = router.recorded_epoch
    top = host.layers["f"].frame(at)
    assert router.recordable(top[0]) and not router.recordable(host.layers["h"].frame(at)[0])
    keyframe = router.latest_keyframe(at)
    assert keyframe is not None and keyframe[6:10] == b"\x00\x05\xd0\x02"  # 1280x720: the top layer's
    # the host pauses its top layer (dynacast, or its encoder): the recording moves to the next
    while at < 2.0 + FLOWING_SECONDS + 1:
        send(router, host, at, keys=("q", "h"), rids=("q", "h"))
        router.tick(at)
        at = round(at + 1 / 30, 6)
    assert router.recorded_epoch != first
    assert router.recordable(host.layers["h"].frame(at)[0]) and not router.recordable(host.layers["f"].frame(at)[0])
    keyframe = router.latest_keyframe(at)
    assert keyframe is not None and keyframe[6:10] == b"\x80\x02\x68\x01"  # 640x360
