"""The per-room forwarder: one publisher's RTP fanned out to every viewer, no decoding.

Data path (``on_publisher_rtp``), per incoming packet, done once:
parse the header, find the source by payload type, learn/switch its SSRC,
update receive statistics and NACK gap detection, store the packet in the
source's cache. Then per viewer (see ``_fan_out``), ordered early-return checks
each counted by reason (mediasoup's SimpleConsumer): not started on this
source epoch -> start at a keyframe (video) or now (audio), else
``waiting_keyframe``; older than the start -> ``too_old``. A started viewer
gets the fixed 12-byte header packed with its ssrc/pt/seq/ts, prepended to a
body (extension block + payload) built once per packet per distinct
extension plan (viewers that negotiated the same ids share it).

Control path: host SRs are translated per viewer; viewer NACKs are served
from the cache; viewer PLI/FIR become PLIs to the host (at most one per
second, except the one sent when a viewer joins); ``tick`` sends RR + REMB and
NACKs to the host. Nothing here does I/O: everything goes through the
callables given by the caller, and ``now`` is passed in.

What one viewer's RTCP may cost (a viewer is an untrusted client; docs/SECURITY.md):
at most :data:`VIEWER_RTCP_PER_SECOND` datagrams a second are read (a burst of
twice that), the rest dropped unparsed (``rtcp_rate_limited``); a NACK names at
most :data:`media.rtcp.MAX_NACK_SEQS` distinct packets; a packet is resent to a
viewer at most once per :data:`RESEND_GUARD` seconds (``nack_repeat``); and a
viewer's retransmissions are paid from a byte budget that refills at the
source's own byte rate (:data:`RETRANSMIT_RATE_SHARE`) and holds at most
:data:`RETRANSMIT_BURST_SECONDS` of it (``retransmit_limited``): a viewer can
at most double what it receives, whatever it sends (mediasoup's RtpStreamSend
guards a packet's resends by RTT; Pion's responder bounds its buffer).
"""

from __future__ import annotations

from collections.abc import Callable

import msgspec

from media.errors import MalformedPacket
from media.packet_cache import PacketCache
from media.receive_stats import NackTracker, ReceiveStats
from media.rtcp import (
    Fir,
    Nack,
    Pli,
    ReceiverReport,
    Remb,
    ReportBlock,
    RtcpPacket,
    SenderReport,
    build_nack,
    build_pli,
    build_remb,
    build_rr,
    build_sr,
    parse_rtcp_untrusted,
)
from media.rtp import FIXED_HEADER, ExtensionPlan, RtpHeader, build_body, make_extension_plan, parse_rtp_untrusted
from media.seqmap import SeqMap
from media.streams import MediaKind, SinkStream, SourceStream
from media.vp8 import descriptor_length, is_keyframe_start, read_picture_id, rewrite_picture_id

__all__ = ["DROP_REASONS", "Router", "RouterStatistics"]

SendFn = Callable[[bytes], None]

PLI_INTERVAL = 1.0  # at most one (non-urgent) keyframe request per second to the host
REPORT_INTERVAL = 1.0  # RR + REMB to the host
CACHE_SIZE = 512
RATE_WINDOW = 1.0  # a source's byte rate is measured over this many seconds (by tick)
#: A viewer's retransmissions may add at most this share of the stream's own byte rate...
RETRANSMIT_RATE_SHARE = 1.0
#: ... saved up for at most this long (a lost keyframe is resent whole)...
RETRANSMIT_BURST_SECONDS = 1.0
#: ... and at least this budget a second (a stream that only starts, or audio).
RETRANSMIT_MIN_BYTES_PER_SECOND = 64_000
#: One packet is resent to one viewer at most once in this many seconds (the viewer asks
#: again only after a round trip).
RESEND_GUARD = 0.1
#: RTCP datagrams read from one viewer a second (a burst of twice as many); browsers send a
#: few (RR, REMB, a NACK per loss).
VIEWER_RTCP_PER_SECOND = 100

DROP_REASONS = (
    "malformed",  # host RTP that does not parse
    "no_source",  # host RTP while no publisher is attached
    "unknown_payload_type",  # host RTP whose PT is none of the publisher's streams
    "stale_ssrc",  # host RTP from an SSRC the stream already switched away from
    "duplicate",  # host RTP already received (seq in the cache)
    "waiting_keyframe",  # per viewer: video before this viewer's first keyframe
    "too_old",  # per viewer: reordered packet older than this viewer's start
    "cache_miss",  # per viewer: NACKed packet no longer (or never) in the cache
    "malformed_rtcp",  # host or viewer RTCP that does not parse
    "unknown_viewer",  # RTCP for a viewer id that is not added
    "rtcp_rate_limited",  # per viewer: RTCP datagrams beyond VIEWER_RTCP_PER_SECOND (not parsed)
    "nack_repeat",  # per viewer: NACKed packet already resent to it within RESEND_GUARD
    "retransmit_limited",  # per viewer: NACKed packet beyond its retransmission byte budget
)

_pack_fixed = FIXED_HEADER.pack
_KINDS: tuple[MediaKind, ...] = ("video", "audio")


class RouterStatistics(msgspec.Struct, frozen=True):
    has_publisher: bool
    viewer_count: int
    packets_in: int  # host RTP packets handed to on_publisher_rtp
    bytes_in: int  # their bytes (RTP, after SRTP unprotect)
    packets_out: int  # RTP packets handed to viewers' send_rtp (retransmissions included)
    bytes_out: int  # their bytes (RTP header + payload, before SRTP)
    retransmissions: int  # viewer NACKs served from the cache
    keyframe_requests_sent: int  # PLIs sent to the host
    nacks_sent: int  # NACK packets sent to the host
    nacked_seqs: int  # sequence numbers in those NACKs
    reports_sent: int  # RR+REMB compounds sent to the host
    sender_reports_sent: int  # translated SRs sent to viewers
    drops: dict[str, int]  # by reason, see DROP_REASONS


class _Variant:
    """An interned (extension plan, picture id delta) pair: viewers sharing one
    share the body built for each packet (compared by identity)."""

    __slots__ = ("pid_delta", "plan")

    def __init__(self, plan: ExtensionPlan | None, pid_delta: int) -> None:
        self.plan = plan
        self.pid_delta = pid_delta


class _Track(SeqMap):
    """One viewer's stream of one kind: its sink, its rewriting state and its retransmissions."""

    __slots__ = (
        "octets",
        "packets",
        "plan",
        "pt",
        "resent",
        "retransmit_at",
        "retransmit_budget",
        "send_rtp",
        "sink",
        "ssrc",
        "variant",
        "viewer",
    )

    def __init__(self, viewer: _Viewer, sink: SinkStream, send_rtp: SendFn) -> None:
        super().__init__(sink.clock_rate)
        self.viewer = viewer
        self.sink = sink
        self.ssrc = sink.ssrc
        self.pt = sink.payload_type & 0x7F
        self.send_rtp = send_rtp
        self.plan: ExtensionPlan | None = None
        self.variant: _Variant | None = None
        self.packets = 0
        self.octets = 0
        self.resent: dict[int, float] = {}  # host seq -> when it was last resent to this viewer
        self.retransmit_budget = -1.0  # bytes; negative: full, set at the first NACK
        self.retransmit_at = 0.0


class _Viewer:
    __slots__ = ("id", "receiver_reports", "remb_bps", "rtcp_at", "rtcp_budget", "send_rtcp", "send_rtp", "tracks")

    def __init__(self, viewer_id: str, send_rtp: SendFn, send_rtcp: SendFn, now: float) -> None:
        self.id = viewer_id
        self.send_rtp = send_rtp
        self.send_rtcp = send_rtcp
        self.tracks: dict[MediaKind, _Track] = {}
        self.receiver_reports: dict[int, ReportBlock] = {}  # by our sink ssrc
        self.remb_bps: int | None = None
        self.rtcp_budget = 2.0 * VIEWER_RTCP_PER_SECOND  # datagrams
        self.rtcp_at = now

    def take_rtcp(self, now: float) -> bool:
        """Whether one more RTCP datagram of this viewer may be read now (a token bucket)."""
        burst = 2.0 * VIEWER_RTCP_PER_SECOND
        budget = min(burst, self.rtcp_budget + (now - self.rtcp_at) * VIEWER_RTCP_PER_SECOND)
        self.rtcp_at = now
        if budget < 1.0:
            self.rtcp_budget = budget
            return False
        self.rtcp_budget = budget - 1.0
        return True


class _Source:
    """One stream of the current publisher."""

    __slots__ = (
        "byte_rate",
        "bytes_in",
        "cache",
        "epoch",
        "highest_seq",
        "highest_time",
        "highest_ts",
        "is_video",
        "kind",
        "nack",
        "old_ssrcs",
        "rate_bytes",
        "rate_since",
        "ssrc",
        "stats",
        "stream",
        "tracks",
    )

    def __init__(self, stream: SourceStream, epoch: int) -> None:
        self.stream = stream
        self.kind: MediaKind = stream.kind
        self.is_video = stream.kind == "video"
        self.ssrc: int | None = None
        self.old_ssrcs: set[int] = set()
        self.epoch = epoch
        self.stats: ReceiveStats | None = None
        self.nack = NackTracker()
        self.cache: PacketCache[tuple[RtpHeader, bytes]] = PacketCache(CACHE_SIZE)
        self.highest_seq = 0
        self.highest_ts = 0
        self.highest_time = 0.0
        self.tracks: list[_Track] = []
        self.bytes_in = 0  # RTP bytes received (all SSRCs of the stream)
        self.byte_rate = 0.0  # bytes a second over the last RATE_WINDOW (see Router.tick)
        self.rate_bytes = 0  # bytes_in at rate_since
        self.rate_since: float | None = None

    def measure_rate(self, now: float) -> None:
        """Update byte_rate once a RATE_WINDOW has passed since the last measure."""
        if self.rate_since is None:
            self.rate_since, self.rate_bytes = now, self.bytes_in
        elif now - self.rate_since >= RATE_WINDOW:
            self.byte_rate = (self.bytes_in - self.rate_bytes) / (now - self.rate_since)
            self.rate_since, self.rate_bytes = now, self.bytes_in


class Router:
    def __init__(self, *, rtcp_ssrc: int, target_bitrate_bps: int) -> None:
        self.rtcp_ssrc = rtcp_ssrc
        self.target_bitrate_bps = target_bitrate_bps
        self._viewers: dict[str, _Viewer] = {}
        self._publisher = False
        self._send_rtcp_to_host: SendFn | None = None
        self._sources: dict[MediaKind, _Source] = {}
        self._by_pt: dict[int, _Source] = {}
        self._epochs = 0
        self._plans: dict[ExtensionPlan, ExtensionPlan] = {}
        self._variants: dict[tuple[ExtensionPlan | None, int], _Variant] = {}
        # keyframe requests
        self._last_pli = float("-inf")
        self._kf_pending = False
        self._kf_urgent = False
        self._next_report = float("inf")
        # counters
        self._packets_in = 0
        self._bytes_in = 0
        self._packets_out = 0
        self._bytes_out = 0
        self._retransmissions = 0
        self._plis_sent = 0
        self._nacks_sent = 0
        self._nacked_seqs = 0
        self._reports_sent = 0
        self._srs_sent = 0
        self._drops: dict[str, int] = dict.fromkeys(DROP_REASONS, 0)

    # ------------------------------------------------------------ properties

    @property
    def has_publisher(self) -> bool:
        return self._publisher

    @property
    def viewer_count(self) -> int:
        return len(self._viewers)

    def has_viewer(self, viewer_id: str) -> bool:
        return viewer_id in self._viewers

    def viewer_ids(self) -> list[str]:
        return list(self._viewers)

    def publisher_streams(self) -> list[SourceStream]:
        """The streams of the attached publisher the router forwards (one per kind)."""
        return [src.stream for src in self._sources.values()]

    def latest_keyframe(self) -> bytes | None:
        """The newest whole VP8 keyframe still in the video cache (its payloads without the
        VP8 descriptors, ready to decode), or None. Looks back at most the cache's size; costs
        nothing until asked (GET /room/{id}/thumbnail.jpg)."""
        src = self._sources.get("video")
        if src is None or src.stats is None or not src.stats.received:
            return None
        cache = src.cache
        for back in range(cache.size):
            start = (src.highest_seq - back) & 0xFFFF
            entry = cache.get(start)
            if entry is None:
                continue
            hdr, data = entry
            if not is_keyframe_start(data[hdr.payload_offset : hdr.payload_end]):
                continue
            frame = vp8_frame(cache, start, hdr.timestamp)
            if frame is not None:
                return frame
        return None

    def viewer_bytes_sent(self, viewer_id: str) -> int:
        """RTP payload bytes forwarded to this viewer so far (its RTCP octet counts; 0 if unknown)."""
        viewer = self._viewers.get(viewer_id)
        return sum(track.octets for track in viewer.tracks.values()) if viewer is not None else 0

    def publisher_ssrc(self, kind: MediaKind) -> int | None:
        """The SSRC learned for the publisher's stream of ``kind``, if any yet."""
        src = self._sources.get(kind)
        return None if src is None else src.ssrc

    @property
    def packets_in(self) -> int:
        """Host RTP packets received so far (cheap: the room's live check reads it 10 times a second)."""
        return self._packets_in

    def statistics(self) -> RouterStatistics:
        return RouterStatistics(
            has_publisher=self._publisher,
            viewer_count=len(self._viewers),
            packets_in=self._packets_in,
            bytes_in=self._bytes_in,
            packets_out=self._packets_out,
            bytes_out=self._bytes_out,
            retransmissions=self._retransmissions,
            keyframe_requests_sent=self._plis_sent,
            nacks_sent=self._nacks_sent,
            nacked_seqs=self._nacked_seqs,
            reports_sent=self._reports_sent,
            sender_reports_sent=self._srs_sent,
            drops=dict(self._drops),
        )

    # ------------------------------------------------------------ host side

    def attach_publisher(self, streams: list[SourceStream], send_rtcp_to_host: SendFn, now: float) -> None:
        """A (new) host starts publishing; replaces any previous one."""
        if self._publisher:
            self._end_sources()
        self._publisher = True
        self._send_rtcp_to_host = send_rtcp_to_host
        self._sources = {}
        self._by_pt = {}
        for stream in streams:
            if stream.kind in self._sources:
                continue  # one stream per kind
            src = _Source(stream, self._new_epoch())
            self._sources[stream.kind] = src
            self._by_pt[stream.payload_type & 0x7F] = src
            for viewer in self._viewers.values():
                track = viewer.tracks.get(stream.kind)
                if track is not None:
                    self._bind(src, track)
        self._last_pli = float("-inf")
        self._kf_pending = False
        self._kf_urgent = False
        if "video" in self._sources and self._sources["video"].tracks:
            # no SSRC yet: the PLI goes out with the first video packet unless
            # that packet already starts a keyframe
            self._kf_pending = True
            self._kf_urgent = True
        self._next_report = now

    def detach_publisher(self, now: float) -> None:
        if self._publisher:
            self._end_sources()
        self._publisher = False
        self._send_rtcp_to_host = None
        self._sources = {}
        self._by_pt = {}
        self._kf_pending = False
        self._kf_urgent = False
        self._next_report = float("inf")

    def on_publisher_rtp(self, data: bytes, now: float) -> None:
        """Decrypted RTP from the host: fanned out synchronously to every viewer."""
        self._packets_in += 1
        self._bytes_in += len(data)
        try:
            hdr = parse_rtp_untrusted(data, parse_extensions=False)
        except MalformedPacket:
            self._drops["malformed"] += 1
            return
        src = self._by_pt.get(hdr.payload_type)
        if src is None:
            self._drops["unknown_payload_type" if self._publisher else "no_source"] += 1
            return
        src.bytes_in += len(data)
        if hdr.ssrc != src.ssrc:
            if hdr.ssrc in src.old_ssrcs:
                self._drops["stale_ssrc"] += 1
                return
            self._switch_ssrc(src, hdr, data, now)
        seq = hdr.sequence_number
        stats = src.stats
        assert stats is not None
        prev_max = stats.cycles + stats.max_seq if stats.received else -1
        ext = stats.update(seq, hdr.timestamp, now)
        if ext > prev_max:
            src.highest_seq = seq
            src.highest_ts = hdr.timestamp
            src.highest_time = now
        elif src.cache.get(seq) is not None:
            self._drops["duplicate"] += 1
            return
        src.cache.store(seq, (hdr, data))
        if src.is_video:
            nack = src.nack
            nack.on_packet(ext, now)
            if now >= nack.next_due:
                self._send_nacks(src, now)
            if self._kf_pending and is_keyframe_start(data[hdr.payload_offset : hdr.payload_end]):
                self._kf_pending = False
                self._kf_urgent = False
        if src.tracks:
            self._fan_out(src, hdr, data, now)

    def _parse_rtcp(self, data: bytes) -> list[RtcpPacket]:
        """The packets of a compound RTCP datagram; none (counted) if it is malformed."""
        try:
            return parse_rtcp_untrusted(data)
        except MalformedPacket:
            self._drops["malformed_rtcp"] += 1
            return []

    def on_publisher_rtcp(self, data: bytes, now: float) -> None:
        """Decrypted RTCP from the host: SRs are kept (LSR) and translated to viewers."""
        for p in self._parse_rtcp(data):
            if isinstance(p, SenderReport):
                for src in self._sources.values():
                    if src.ssrc == p.ssrc and src.stats is not None:
                        src.stats.on_sender_report(p.ntp, now)
                        self._translate_sr(src, p)
            # RR/BYE/feedback from the host are of no use to the forwarder

    # ------------------------------------------------------------ viewer side

    def add_viewer(
        self,
        viewer_id: str,
        sinks: list[SinkStream],
        send_rtp: SendFn,
        send_rtcp: SendFn,
        now: float,
    ) -> None:
        """Add (or replace) a viewer. Call when its transport can send."""
        if viewer_id in self._viewers:
            self.remove_viewer(viewer_id)
        viewer = _Viewer(viewer_id, send_rtp, send_rtcp, now)
        for sink in sinks:
            if sink.kind in viewer.tracks:
                continue  # one stream per kind
            track = _Track(viewer, sink, send_rtp)
            viewer.tracks[sink.kind] = track
            src = self._sources.get(sink.kind)
            if src is not None:
                self._bind(src, track)
        self._viewers[viewer_id] = viewer
        if "video" in viewer.tracks and "video" in self._sources:
            self._request_keyframe(now, urgent=True)

    def remove_viewer(self, viewer_id: str) -> None:
        viewer = self._viewers.pop(viewer_id, None)
        if viewer is None:
            return
        for kind, track in viewer.tracks.items():
            src = self._sources.get(kind)
            if src is not None and track in src.tracks:
                src.tracks.remove(track)

    def on_viewer_rtcp(self, viewer_id: str, data: bytes, now: float) -> None:
        """NACK -> retransmit from the cache; PLI/FIR -> keyframe request; RR/REMB kept."""
        viewer = self._viewers.get(viewer_id)
        if viewer is None:
            self._drops["unknown_viewer"] += 1
            return
        if not viewer.take_rtcp(now):
            self._drops["rtcp_rate_limited"] += 1
            return
        for p in self._parse_rtcp(data):
            if isinstance(p, Nack):
                self._serve_nack(viewer, p, now)
            elif isinstance(p, Pli):
                if self._viewer_video_ssrc(viewer) == p.media_ssrc:
                    self._request_keyframe(now, urgent=False)
            elif isinstance(p, Fir):
                vssrc = self._viewer_video_ssrc(viewer)
                if any(e.ssrc == vssrc for e in p.entries):
                    self._request_keyframe(now, urgent=False)
            elif isinstance(p, (ReceiverReport, SenderReport)):
                for block in p.reports:
                    viewer.receiver_reports[block.ssrc] = block
            elif isinstance(p, Remb):
                viewer.remb_bps = p.bitrate_bps

    # ------------------------------------------------------------ timers

    def tick(self, now: float) -> None:
        """Call every 0.1-0.25 s: RR+REMB to the host (~1/s), NACK retries, keyframe retries,
        the sources' byte rates."""
        if not self._publisher:
            return
        for src in self._sources.values():
            src.measure_rate(now)
        if now >= self._next_report and self._send_report(now):
            self._next_report = now + REPORT_INTERVAL - 0.05  # tolerate tick jitter
        video = self._sources.get("video")
        if video is not None and video.ssrc is not None:
            if now >= video.nack.next_due:
                self._send_nacks(video, now)
            waiting = any(t.epoch != video.epoch for t in video.tracks)
            if (self._kf_pending or waiting) and now - self._last_pli >= PLI_INTERVAL:
                self._send_pli(video, now)

    def request_keyframe(self, now: float) -> None:
        """Ask the host for a keyframe (throttled to one PLI per second)."""
        self._request_keyframe(now, urgent=False)

    # ------------------------------------------------------------ internals

    def _new_epoch(self) -> int:
        self._epochs += 1
        return self._epochs

    def _intern_plan(self, plan: ExtensionPlan) -> ExtensionPlan:
        return self._plans.setdefault(plan, plan)

    def _variant(self, plan: ExtensionPlan | None, pid_delta: int) -> _Variant:
        key = (plan, pid_delta)
        v = self._variants.get(key)
        if v is None:
            if len(self._variants) > 4096:  # bounded: stale variants are only a cache
                self._variants.clear()
            v = self._variants[key] = _Variant(plan, pid_delta)
        return v

    def _bind(self, src: _Source, track: _Track) -> None:
        plan = make_extension_plan(src.stream.extensions, track.sink.extensions, track.sink.mid)
        track.plan = None if plan.is_empty else self._intern_plan(plan)
        track.variant = self._variant(track.plan, track.pid_offset if src.is_video else 0)
        src.tracks.append(track)

    def _end_epoch(self, src: _Source) -> None:
        """The source's current epoch ends: tracks on it remember their last output."""
        if src.ssrc is None:
            return
        pid: int | None = None
        bits = 0
        if src.is_video:
            entry = src.cache.get(src.highest_seq)
            if entry is not None:
                hdr, data = entry
                pid, bits = read_picture_id(data, hdr.payload_offset)
        for t in src.tracks:
            if t.epoch == src.epoch:
                t.end(src.highest_seq, src.highest_ts, src.highest_time, pid, bits)

    def _end_sources(self) -> None:
        for src in self._sources.values():
            self._end_epoch(src)
            src.tracks = []

    def _switch_ssrc(self, src: _Source, hdr: RtpHeader, data: bytes, now: float) -> None:
        if src.ssrc is not None:
            self._end_epoch(src)
            src.old_ssrcs.add(src.ssrc)
            if len(src.old_ssrcs) > 16:
                src.old_ssrcs = {src.ssrc}
        src.old_ssrcs.discard(hdr.ssrc)
        src.ssrc = hdr.ssrc
        src.epoch = self._new_epoch()
        src.stats = ReceiveStats(hdr.ssrc, src.stream.clock_rate, hdr.sequence_number)
        src.nack.reset()
        src.cache.clear()
        if src.is_video and src.tracks and not is_keyframe_start(data[hdr.payload_offset : hdr.payload_end]):
            # every viewer now waits for a keyframe of the new source: ask at once
            self._request_keyframe(now, urgent=True)

    def _start_track(self, t: _Track, src: _Source, hdr: RtpHeader, data: bytes, now: float) -> None:
        pid: int | None = None
        if src.is_video and t.has_history:
            pid, _bits = read_picture_id(data, hdr.payload_offset)
        t.start(src.epoch, hdr.sequence_number, hdr.timestamp, now, pid)
        t.variant = self._variant(t.plan, t.pid_offset if src.is_video else 0)

    def _fan_out(self, src: _Source, hdr: RtpHeader, data: bytes, now: float) -> None:
        epoch = src.epoch
        seq = hdr.sequence_number
        ts = hdr.timestamp
        mark = 0x80 if hdr.marker else 0
        payload_len = hdr.payload_end - hdr.payload_offset
        pack = _pack_fixed
        last_variant: _Variant | None = None
        bodies: dict[_Variant, tuple[int, bytes]] = {}
        b0 = 0
        body = b""
        keyframe = -1  # not computed yet
        sent = 0
        sent_bytes = 0
        waiting = 0
        too_old = 0
        for t in src.tracks:
            if t.epoch != epoch:
                if src.is_video:
                    if keyframe < 0:
                        payload = data[hdr.payload_offset : hdr.payload_end]
                        keyframe = 1 if is_keyframe_start(payload) else 0
                    if not keyframe:
                        waiting += 1
                        continue
                self._start_track(t, src, hdr, data, now)
            # The track's SeqMap mapping, inlined (media/seqmap.py says why): older than
            # its start is dropped, then seq/ts are shifted by its offsets.
            elif (seq - t.first_in_seq) & 0xFFFF >= 0x8000:
                too_old += 1
                continue
            variant = t.variant
            if variant is not last_variant:
                assert variant is not None
                pair = bodies.get(variant)
                if pair is None:
                    pair = bodies[variant] = _build_body(variant, hdr, data)
                b0, body = pair
                last_variant = variant
            out = (
                pack(
                    b0,
                    mark | t.pt,
                    (seq + t.seq_offset) & 0xFFFF,
                    (ts + t.ts_offset) & 0xFFFFFFFF,
                    t.ssrc,
                )
                + body
            )
            t.packets += 1
            t.octets += payload_len
            sent += 1
            sent_bytes += len(out)
            t.send_rtp(out)
        self._packets_out += sent
        self._bytes_out += sent_bytes
        if waiting:
            self._drops["waiting_keyframe"] += waiting
        if too_old:
            self._drops["too_old"] += too_old

    def _serve_nack(self, viewer: _Viewer, nack: Nack, now: float) -> None:
        track: _Track | None = None
        for t in viewer.tracks.values():
            if t.ssrc == nack.media_ssrc:
                track = t
                break
        if track is None:
            return
        src = self._sources.get(track.sink.kind)
        if src is None:
            self._drops["cache_miss"] += len(nack.lost)
            return
        budget = _refill_retransmit_budget(track, src, now)
        resent = track.resent
        misses = repeats = limited = 0
        for out_seq in nack.lost:
            in_seq = track.input_seq(out_seq, src.epoch, src.highest_seq)
            entry = src.cache.get(in_seq) if in_seq is not None else None
            if entry is None or in_seq is None:
                misses += 1
                continue
            last = resent.get(in_seq)
            if last is not None and now - last < RESEND_GUARD:
                repeats += 1
                continue
            hdr, data = entry
            if len(data) > budget:
                limited += 1
                continue
            budget -= len(data)
            resent[in_seq] = now
            assert track.variant is not None
            b0, body = _build_body(track.variant, hdr, data)
            out = (
                _pack_fixed(
                    b0,
                    (0x80 if hdr.marker else 0) | track.pt,
                    out_seq & 0xFFFF,
                    (hdr.timestamp + track.ts_offset) & 0xFFFFFFFF,
                    track.ssrc,
                )
                + body
            )
            self._retransmissions += 1
            self._packets_out += 1
            self._bytes_out += len(out)
            track.send_rtp(out)
        track.retransmit_budget = budget
        if len(resent) > CACHE_SIZE:  # forget what the guard no longer needs
            track.resent = {seq: at for seq, at in resent.items() if now - at < RESEND_GUARD}
        if repeats:
            self._drops["nack_repeat"] += repeats
        if limited:
            self._drops["retransmit_limited"] += limited
        if misses:
            self._drops["cache_miss"] += misses
            if track.sink.kind == "video":
                self._request_keyframe(now, urgent=False)

    def _translate_sr(self, src: _Source, sr: SenderReport) -> None:
        epoch = src.epoch
        for t in src.tracks:
            if t.epoch != epoch:
                continue
            packet = build_sr(
                t.ssrc,
                sr.ntp,
                (sr.rtp_ts + t.ts_offset) & 0xFFFFFFFF,
                t.packets,
                t.octets,
            )
            self._srs_sent += 1
            t.viewer.send_rtcp(packet)

    @staticmethod
    def _viewer_video_ssrc(viewer: _Viewer) -> int | None:
        t = viewer.tracks.get("video")
        return None if t is None else t.ssrc

    def _request_keyframe(self, now: float, *, urgent: bool) -> None:
        src = self._sources.get("video")
        if src is None:
            return
        if src.ssrc is None:  # no video packet yet: ask when the SSRC is known
            self._kf_pending = True
            self._kf_urgent = self._kf_urgent or urgent
            return
        if urgent or now - self._last_pli >= PLI_INTERVAL:
            self._send_pli(src, now)
        else:
            self._kf_pending = True

    def _send_pli(self, src: _Source, now: float) -> None:
        send = self._send_rtcp_to_host
        if send is None or src.ssrc is None:
            return
        self._last_pli = now
        self._kf_pending = False
        self._kf_urgent = False
        self._plis_sent += 1
        send(build_pli(self.rtcp_ssrc, src.ssrc))

    def _send_nacks(self, src: _Source, now: float) -> None:
        seqs = src.nack.due(now)
        send = self._send_rtcp_to_host
        if seqs and send is not None and src.ssrc is not None:
            self._nacks_sent += 1
            self._nacked_seqs += len(seqs)
            send(build_nack(self.rtcp_ssrc, src.ssrc, seqs))
        if src.nack.gave_up or src.nack.overflowed:
            # lost for good: the viewers' decoders need a keyframe
            src.nack.gave_up = 0
            src.nack.overflowed = 0
            self._request_keyframe(now, urgent=False)

    def _send_report(self, now: float) -> bool:
        send = self._send_rtcp_to_host
        if send is None:
            return False
        blocks: list[ReportBlock] = []
        ssrcs: list[int] = []
        for kind in _KINDS:
            src = self._sources.get(kind)
            if src is not None and src.ssrc is not None and src.stats is not None:
                blocks.append(src.stats.report_block(now))
                ssrcs.append(src.ssrc)
        if not ssrcs:
            return False
        self._reports_sent += 1
        send(build_rr(self.rtcp_ssrc, blocks) + build_remb(self.rtcp_ssrc, self.target_bitrate_bps, ssrcs))
        return True


def _refill_retransmit_budget(track: _Track, src: _Source, now: float) -> float:
    """The track's retransmission byte budget now: refilled at the source's byte rate times
    RETRANSMIT_RATE_SHARE (at least RETRANSMIT_MIN_BYTES_PER_SECOND), capped at
    RETRANSMIT_BURST_SECONDS of it; full at the first NACK."""
    rate = max(src.byte_rate * RETRANSMIT_RATE_SHARE, RETRANSMIT_MIN_BYTES_PER_SECOND)
    burst = rate * RETRANSMIT_BURST_SECONDS
    budget = track.retransmit_budget
    budget = burst if budget < 0 else min(burst, budget + (now - track.retransmit_at) * rate)
    track.retransmit_at = now
    return budget


def _build_body(variant: _Variant, hdr: RtpHeader, data: bytes) -> tuple[int, bytes]:
    b0, body = build_body(hdr, data, variant.plan)
    if variant.pid_delta:
        buf = bytearray(body)
        rewrite_picture_id(buf, variant.pid_delta, len(body) - (len(data) - hdr.payload_offset))
        body = bytes(buf)
    return b0, body


def vp8_frame(cache: PacketCache[tuple[RtpHeader, bytes]], first_seq: int, timestamp: int) -> bytes | None:
    """The VP8 frame of the packets from `first_seq` through the one with the marker bit, all of
    `timestamp` and contiguous; None if one is missing (lost, or not arrived yet)."""
    parts = []
    seq = first_seq
    for _ in range(cache.size):
        entry = cache.get(seq)
        if entry is None:
            return None
        hdr, data = entry
        if hdr.timestamp != timestamp:
            return None
        payload = data[hdr.payload_offset : hdr.payload_end]
        skip = descriptor_length(payload)
        if skip < 0:
            return None
        parts.append(payload[skip:])
        if hdr.marker:
            return b"".join(parts)
        seq = (seq + 1) & 0xFFFF
    return None
