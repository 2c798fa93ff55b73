"""The per-room forwarder: one publisher's RTP fanned out to every viewer, no decoding.

Data path (``on_publisher_rtp``), per incoming packet, done once: parse the header, find the
source by SSRC (a new SSRC is learned by payload type, or for a simulcast layer by the rid
header extension it carries), update receive statistics and NACK gap detection, store the
packet in the source's cache. Then per viewer (see ``_fan_out``), ordered early-return checks
each counted by reason (mediasoup's SimpleConsumer): not started on this source epoch ->
start at a keyframe (video) or now (audio), else ``waiting_keyframe``; older than the start
-> ``too_old``. A started viewer gets the fixed 12-byte header packed with its ssrc/pt/seq/ts,
prepended to a body (extension block + payload) built once per packet per distinct
extension plan and VP8 rewrite (viewers that share them share the body).

**Simulcast** (``media/layers.py``, ``media/bwe.py``): a host may publish up to three video
layers, each a source of its own. A viewer's video track is bound to one layer at a time and
keeps one SSRC whatever the layer. The layer it should get is decided once per
``ALLOCATE_INTERVAL`` in ``tick`` (its quality request, its link's estimate from REMB and
receiver-report loss, hysteresis); a switch waits for a keyframe of the target layer (asked
for at once, throttled per layer), and happens on that keyframe: the sequence numbers go on
where the old layer left them, the timestamps are bridged through the layers' sender reports
(wall time when a layer has none yet), VP8 picture ids and TL0PICIDX continue. Until the
keyframe the viewer keeps the old layer: a switch never freezes it. NACKs for the last packets
of the old layer are still served from it. To let a viewer's estimate grow toward the next
layer, the router pads its stream (``_pad``): RTP padding packets between frames, whose
sequence numbers the track's map skips. Layers nobody needs for ``PAUSE_AFTER`` seconds are
named in ``needed_rids`` so the host can pause them (dynacast).

Control path: host SRs are translated per viewer; viewer NACKs are served from the cache;
viewer PLI/FIR become PLIs to the host for the viewer's layer (at most one per second per
layer, except the urgent ones sent when a viewer joins or switches, at most one per
``URGENT_PLI_INTERVAL``); ``tick`` sends RR + REMB and NACKs to the host. Nothing here does
I/O: everything goes through the callables given by the caller, and ``now`` is passed in.

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

import struct
from collections.abc import Callable

import msgspec

from media import h264
from media.bwe import ALLOCATION_STEP, LayerPolicy, ViewerBandwidth
from media.errors import MalformedPacket
from media.layers import (
    AUDIO_ONLY,
    TID_ALL,
    LayerName,
    Quality,
    QualityReason,
    layer_names,
    layer_of_step,
    quality_cap,
    step_of,
)
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
from media.rtp import (
    FIXED_HEADER,
    RID_URI,
    ExtensionPlan,
    RtpHeader,
    abs_send_time,
    build_body,
    encode_extensions,
    make_extension_plan,
    parse_extensions_untrusted,
    parse_rtp_untrusted,
)
from media.seqmap import SeqMap
from media.streams import MediaKind, SinkStream, SourceStream
from media.vp8 import (
    descriptor_length,
    keyframe_size,
    keyframe_start_in,
    read_picture_id,
    rewrite_picture_id,
    rewrite_tl0_pic_idx,
    temporal_of,
    tl0_pic_idx_location,
)

__all__ = ["DROP_REASONS", "LayerInfo", "QualityChange", "Router", "RouterStatistics"]

SendFn = Callable[[bytes], None]

PLI_INTERVAL = 1.0  # at most one (non-urgent) keyframe request per second per layer to the host
URGENT_PLI_INTERVAL = 0.3  # a join's or a switch's request: at once, but not more often than this per layer
REPORT_INTERVAL = 1.0  # RR + REMB to the host
CACHE_SIZE = 512
RATE_WINDOW = 1.0  # a source's byte rate is measured over this many seconds (by tick)
RATE_SMOOTHING = 0.3  # the weight of the latest window in a layer's smoothed rate
#: A viewer's retransmissions may add at most this share of the stream's own byte rate...
RETRANSMIT_RATE_SHARE = 1.0
#: ... saved up for at most this long (a lost keyframe is resent whole)...
RETRANSMIT_BURST_SECONDS = 1.0
#: ... and at least this budget a second (a stream that only starts, or audio).
RETRANSMIT_MIN_BYTES_PER_SECOND = 64_000
#: ... and, for a viewer of a simulcast room, at most this share of its link's estimate.
RETRANSMIT_LINK_SHARE = 0.25
#: One packet is resent to one viewer at most once in this many seconds (the viewer asks
#: again only after a round trip).
RESEND_GUARD = 0.1
SR_TIMES_KEPT = 8  # sender reports remembered per viewer track, to time the round trip
#: RTCP datagrams read from one viewer a second (a burst of twice as many); browsers send a
#: few (RR, REMB, a NACK per loss).
VIEWER_RTCP_PER_SECOND = 100
ALLOCATE_INTERVAL = ALLOCATION_STEP  # how often each viewer's layer is chosen again (in tick)
FLOWING_SECONDS = 2.0  # a layer with no packet for this long is not flowing (paused, or gone)
PAUSE_AFTER = 10.0  # a layer nobody needed for this long may be paused at the host (dynacast)
#: A viewer's estimate before its link said anything: a new viewer of a simulcast room starts
#: on the best layer under it (usually the middle one) and climbs from there (media/bwe.py).
INITIAL_VIEWER_BPS = 700_000
#: The REMB sent to a simulcast host, as a multiple of the target bitrate of its top layer:
#: room for the lower layers too (a third and an eighth of it, at the usual ratios).
SIMULCAST_REMB_FACTOR = 1.5
MAX_PADDING = 255  # bytes of padding one RTP packet may carry (its length is one byte)
#: Padding packets one viewer gets after one frame at most: 4 Mbit/s at 30 frames a second.
MAX_PADDING_PACKETS_AT_ONCE = 64

DROP_REASONS = (
    "malformed",  # host RTP that does not parse
    "no_source",  # host RTP while no publisher is attached
    "unknown_payload_type",  # host RTP whose PT is none of the publisher's streams
    "unknown_rid",  # host RTP of a new SSRC whose rid names no layer the host announced
    "stale_ssrc",  # host RTP from an SSRC the stream already switched away from
    "duplicate",  # host RTP already received (seq in the cache)
    "waiting_keyframe",  # per viewer: video before this viewer's first keyframe
    "too_old",  # per viewer: reordered packet older than this viewer's start
    "cache_miss",  # per viewer: NACKed packet no longer (or never) in the cache
    "malformed_rtcp",  # host or viewer RTCP that does not parse
    "unknown_viewer",  # RTCP for a viewer id that is not added
    "rtcp_rate_limited",  # per viewer: RTCP datagrams beyond VIEWER_RTCP_PER_SECOND (not parsed)
    "nack_repeat",  # per viewer: NACKed packet already resent to it within RESEND_GUARD
    "temporal_layer",  # per viewer: video of a temporal layer above the one it gets (VP8 TID)
    "retransmit_limited",  # per viewer: NACKed packet beyond its retransmission byte budget
)
KEYFRAME_CAUSES = ("join", "switch", "viewer", "loss", "publisher", "recording", "relay")

_pack_fixed = FIXED_HEADER.pack
_PADDING_HEADER = struct.Struct("!BBHII")


class LayerInfo(msgspec.Struct, frozen=True):
    """One video layer of the publisher, as room stats show it."""

    name: str  # low, medium, high (by size)
    rid: str | None  # the host's name for it (None: a host without simulcast)
    width: int | None
    height: int | None
    bitrate_bps: int  # over the last second
    flowing: bool  # a packet in the last FLOWING_SECONDS
    viewers: int  # viewers it is sent to now
    packets_in: int
    temporal_layers: int = 1  # VP8 temporal layers (TIDs) seen in it lately


class QualityChange(msgspec.Struct, frozen=True):
    """What a viewer now gets (the `quality` message of PROTOCOL.md)."""

    viewer_id: str
    layer: LayerName | None  # None before any video
    width: int | None
    height: int | None
    reason: QualityReason


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
    layers: list[LayerInfo] = msgspec.field(default_factory=list)  # the host's video layers, lowest first
    layer_switches: dict[str, int] = msgspec.field(default_factory=dict)  # by reason
    keyframe_requests: dict[str, int] = msgspec.field(default_factory=dict)  # PLIs by cause
    padding_bytes: int = 0  # sent to probe viewers' links
    audio_only_viewers: int = 0  # viewers getting no video now (asked, or their link carries none)


def _smoothed(average: float, sample: float) -> float:
    """A rate's running average (RATE_SMOOTHING of each new window; the first one as is)."""
    return sample if not average else average + RATE_SMOOTHING * (sample - average)


class _Variant:
    """An interned (extension plan, picture id delta, TL0PICIDX delta): viewers sharing one
    share the body built for each packet (compared by identity)."""

    __slots__ = ("pid_delta", "plan", "tl0_delta")

    def __init__(self, plan: ExtensionPlan | None, pid_delta: int, tl0_delta: int) -> None:
        self.plan = plan
        self.pid_delta = pid_delta
        self.tl0_delta = tl0_delta


class _Track(SeqMap):
    """One viewer's stream of one kind: its sink, its rewriting state and its retransmissions.
    A video track is bound to one source (a layer) at a time, and may wait for a keyframe of
    another (``target``) to switch to it."""

    __slots__ = (
        "bridge_ts",
        "last_out_tl0",
        "octets",
        "packets",
        "plan",
        "previous_variant",
        "pt",
        "resent",
        "retransmit_at",
        "retransmit_budget",
        "send_rtp",
        "sink",
        "source",
        "srs_sent",
        "ssrc",
        "target",
        "target_tid",
        "tid_cap",
        "tid_want",
        "tl0_offset",
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
        self.previous_variant: _Variant | None = None  # of the epoch before (a NACK may reach back)
        self.source: _Source | None = None  # the source whose packets it gets (in its `tracks`)
        self.target: _Source | None = None  # the layer it switches to at that layer's next keyframe
        self.tl0_offset = 0
        self.last_out_tl0: int | None = None
        self.bridge_ts: int | None = None  # the output timestamp of its first packet on a new layer
        #: temporal layers (VP8 TID): the highest sent now, the one wanted (down at the next
        #: frame, up at the next layer-sync frame), and the one wanted on ``target``
        self.tid_cap = TID_ALL
        self.tid_want = TID_ALL
        self.target_tid = TID_ALL
        self.packets = 0
        self.octets = 0
        self.resent: dict[int, float] = {}  # host seq -> when it was last resent to this viewer
        self.srs_sent: dict[int, float] = {}  # compact NTP time of a sender report -> when sent
        self.retransmit_budget = -1.0  # bytes; negative: full, set at the first NACK
        self.retransmit_at = 0.0


class _Viewer:
    __slots__ = (
        "announced",
        "bandwidth",
        "id",
        "padded_at",
        "padding_bps",
        "padding_credit",
        "policy",
        "quality",
        "reason",
        "receiver_reports",
        "remb_bps",
        "rtcp_at",
        "rtcp_budget",
        "send_rtcp",
        "send_rtp",
        "tracks",
    )

    def __init__(self, viewer_id: str, send_rtp: SendFn, send_rtcp: SendFn, now: float) -> None:
        self.id = viewer_id
        self.send_rtp = send_rtp
        self.send_rtcp = send_rtcp
        self.tracks: dict[MediaKind, _Track] = {}
        self.receiver_reports: dict[int, ReportBlock] = {}  # by our sink ssrc
        self.remb_bps: int | None = None
        self.rtcp_budget = 2.0 * VIEWER_RTCP_PER_SECOND  # datagrams
        self.rtcp_at = now
        self.quality: Quality = "auto"
        self.bandwidth = ViewerBandwidth(INITIAL_VIEWER_BPS, now)
        self.policy = LayerPolicy()
        self.padding_bps = 0
        self.padding_credit = 0.0  # bytes of padding owed
        self.padded_at = now  # when padding was last owed up to
        self.reason: QualityReason = "requested"  # why its layer last changed
        self.announced: QualityChange | None = None  # the quality last told

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
    """One stream of the current publisher: audio, video, or one simulcast layer of video."""

    __slots__ = (
        "byte_rate",
        "bytes_in",
        "cache",
        "epoch",
        "highest_marker",
        "highest_seq",
        "highest_time",
        "highest_ts",
        "index",
        "is_video",
        "is_vp8",
        "keyframe_start_in",
        "kf_pending",
        "kf_urgent",
        "kind",
        "last_pli",
        "nack",
        "needed_at",
        "old_ssrcs",
        "packets",
        "pending",
        "rate_bytes",
        "rate_since",
        "rid",
        "size",
        "smooth_bps",
        "sr",
        "ssrc",
        "stats",
        "stream",
        "tid_bps",
        "tid_bytes",
        "tid_rate_bytes",
        "tracks",
    )

    def __init__(self, stream: SourceStream, epoch: int, now: float, rid: str | None = None) -> None:
        self.stream = stream
        self.kind: MediaKind = stream.kind
        self.is_video = stream.kind == "video"
        # VP8's descriptor (temporal layers, picture ids to rewrite, the frame size) or H.264's
        # NAL units (media/h264.py: keyframes only)
        self.is_vp8 = self.is_video and stream.codec != "H264"
        self.keyframe_start_in: Callable[[bytes, int, int], bool] = (
            h264.keyframe_start_in if stream.codec == "H264" else keyframe_start_in
        )
        self.rid = rid
        self.index = 0  # its place among the video layers, lowest first (Router._number_layers)
        self.ssrc: int | None = None
        self.old_ssrcs: set[int] = set()
        self.epoch = epoch
        self.stats: ReceiveStats | None = None
        self.nack = NackTracker()
        self.cache: PacketCache[tuple[RtpHeader, bytes]] = PacketCache(CACHE_SIZE)
        self.highest_seq = 0
        self.highest_ts = 0
        self.highest_time = float("-inf")
        self.highest_marker = True
        self.tracks: list[_Track] = []
        self.pending: list[_Track] = []  # video tracks switching to this layer at its next keyframe
        self.packets = 0
        self.bytes_in = 0  # RTP bytes received (all SSRCs of the stream)
        self.byte_rate = 0.0  # bytes a second over the last RATE_WINDOW (see Router.tick)
        #: bits a second, smoothed over a few windows: what a viewer of this layer receives on
        #: average (a keyframe's burst is not its rate; the layer policy compares this)
        self.smooth_bps = 0.0
        self.tid_bytes = [0, 0, 0, 0]  # RTP bytes received per VP8 temporal layer (TID)
        self.tid_rate_bytes = [0, 0, 0, 0]  # tid_bytes at rate_since
        self.tid_bps = [0.0, 0.0, 0.0, 0.0]  # smoothed like smooth_bps, per TID
        self.rate_bytes = 0  # bytes_in at rate_since
        self.rate_since: float | None = None
        self.size: tuple[int, int] | None = None  # of its last keyframe (video)
        self.sr: tuple[int, int] | None = None  # (NTP, RTP timestamp) of its last sender report
        self.last_pli = float("-inf")
        self.kf_pending = False  # a keyframe request waits for its throttle (or for an SSRC)
        self.kf_urgent = False
        self.needed_at = now  # the last time a viewer wanted it (dynacast): all are, at first

    def measure_rate(self, now: float) -> None:
        """Update byte_rate once a RATE_WINDOW has passed since the last measure."""
        if self.rate_since is None:
            self.rate_since, self.rate_bytes = now, self.bytes_in
            self.tid_rate_bytes = list(self.tid_bytes)
        elif now - self.rate_since >= RATE_WINDOW:
            elapsed = now - self.rate_since
            self.byte_rate = (self.bytes_in - self.rate_bytes) / elapsed
            self.rate_since, self.rate_bytes = now, self.bytes_in
            self.smooth_bps = _smoothed(self.smooth_bps, self.byte_rate * 8)
            for tid in range(4):
                window = (self.tid_bytes[tid] - self.tid_rate_bytes[tid]) / elapsed * 8
                self.tid_bps[tid] = _smoothed(self.tid_bps[tid], window)
            self.tid_rate_bytes = list(self.tid_bytes)

    def flowing(self, now: float) -> bool:
        return now - self.highest_time < FLOWING_SECONDS


class _Relay:
    """Another worker's (or node's) edge of this room: it gets the host's RTP and RTCP as they
    arrive (decrypted, unchanged) and feeds its own router with them, as if the host were
    there; its keyframe requests and NACKs come back through ``on_relay_rtcp``."""

    __slots__ = ("needed", "resent", "send_rtcp", "send_rtp")

    def __init__(self, send_rtp: SendFn, send_rtcp: SendFn) -> None:
        self.send_rtp = send_rtp
        self.send_rtcp = send_rtcp
        self.resent: dict[tuple[int, int], float] = {}  # (ssrc, seq) -> when it was last resent
        self.needed: list[str] | None = None  # the rids the edge's viewers need; None: not said yet (all)


class Router:
    def __init__(self, *, rtcp_ssrc: int, target_bitrate_bps: int) -> None:
        self.rtcp_ssrc = rtcp_ssrc
        self.target_bitrate_bps = target_bitrate_bps
        self._viewers: dict[str, _Viewer] = {}
        self._relays: dict[str, _Relay] = {}
        self._rid_by_ssrc: dict[int, str] = {}  # an edge's: the origin's layers (learn_layer_ssrcs)
        self._publisher = False
        self._send_rtcp_to_host: SendFn | None = None
        self._audio: _Source | None = None
        self._layers: list[_Source] = []  # video: one source, or the simulcast layers, lowest first
        self._by_pt: dict[int, _Source] = {}  # a payload type of one source (not a simulcast one)
        self._by_ssrc: dict[int, _Source] = {}
        self._simulcast_pt: int | None = None
        self._rid_ext_id: int | None = None
        self._by_rid: dict[str, _Source] = {}
        self._ordered = False  # the layers are in size order (set once)
        self._recorded: _Source | None = None  # the video layer a recording takes
        self._epochs = 0
        self._plans: dict[ExtensionPlan, ExtensionPlan] = {}
        self._variants: dict[tuple[ExtensionPlan | None, int, int], _Variant] = {}
        self._next_report = float("inf")
        self._next_allocation = float("-inf")
        self._quality_changes: list[QualityChange] = []
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
        self._padding_bytes = 0
        self._drops: dict[str, int] = dict.fromkeys(DROP_REASONS, 0)
        self._switches: dict[str, int] = {"bandwidth": 0, "requested": 0, "host": 0}
        self._keyframe_causes: dict[str, int] = dict.fromkeys(KEYFRAME_CAUSES, 0)

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
        streams = [src.stream for src in self._sources()]
        return list({id(s): s for s in streams}.values())  # a simulcast stream once

    def _sources(self) -> list[_Source]:
        return self._layers + ([self._audio] if self._audio is not None else [])

    def _latest(self, now: float | None) -> float:
        """``now``, or (for a caller without a clock) the arrival of the newest packet."""
        if now is not None:
            return now
        return max((src.highest_time for src in self._sources()), default=float("-inf"))

    def _top_layer(self, now: float | None) -> _Source | None:
        """The highest video layer that flows (the recording's and the thumbnail's)."""
        now = self._latest(now)
        flowing = [src for src in self._layers if src.flowing(now)]
        return flowing[-1] if flowing else (self._layers[-1] if self._layers else None)

    def latest_keyframe(self, now: float | None = None) -> bytes | None:
        """The newest whole keyframe still in the top layer's cache, ready to decode: VP8's
        payloads without their descriptors, or an H.264 access unit in Annex B (each NAL unit
        after a 00 00 00 01 start code); None if there is none. Looks back at most the cache's
        size; costs nothing until asked (GET /room/{id}/thumbnail.jpg)."""
        src = self._top_layer(now)
        if src is None or src.stats is None or not src.stats.received:
            return None
        cache = src.cache
        for back in range(cache.size):
            start = (src.highest_seq - back) & 0xFFFF
            entry = cache.get(start)
            if entry is None:
                continue
            hdr, data = entry
            if not src.keyframe_start_in(data, hdr.payload_offset, hdr.payload_end):
                continue
            frame = (
                vp8_frame(cache, start, hdr.timestamp) if src.is_vp8 else h264_access_unit(cache, start, hdr.timestamp)
            )
            if frame is not None:
                return frame
        return None

    def viewer_bytes_sent(self, viewer_id: str) -> int:
        """RTP payload bytes forwarded to this viewer so far (its RTCP octet counts; 0 if unknown)."""
        viewer = self._viewers.get(viewer_id)
        return sum(track.octets for track in viewer.tracks.values()) if viewer is not None else 0

    def viewer_layer(self, viewer_id: str) -> LayerName | None:
        """The layer the viewer was last told it gets (None: not a viewer, or no video yet)."""
        viewer = self._viewers.get(viewer_id)
        return viewer.announced.layer if viewer is not None and viewer.announced is not None else None

    def viewer_estimate(self, viewer_id: str) -> int | None:
        """What the router estimates the viewer's link carries, bits a second (None: no viewer)."""
        viewer = self._viewers.get(viewer_id)
        return viewer.bandwidth.bps if viewer is not None else None

    def publisher_ssrc(self, kind: MediaKind) -> int | None:
        """The SSRC learned for the publisher's stream of ``kind`` (the top layer's for video)."""
        src = self._audio if kind == "audio" else self._top_layer(None)
        return None if src is None else src.ssrc

    @property
    def recorded_epoch(self) -> int | None:
        """Changes when a recording must take another video layer (it starts a new segment)."""
        return None if self._recorded is None else self._recorded.epoch

    def recordable(self, data: bytes) -> bool:
        """Whether a host RTP packet goes into a recording: audio, and the video layer being
        recorded (the top one that flows, chosen by ``tick``; the only one without simulcast)."""
        src = self._by_ssrc.get(int.from_bytes(data[8:12], "big")) if len(data) >= 12 else None
        return src is not None and (not src.is_video or src is self._recorded)

    @property
    def packets_in(self) -> int:
        """Host RTP packets received so far (cheap: the room's live check reads it 10 times a second)."""
        return self._packets_in

    def statistics(self, now: float | None = None) -> RouterStatistics:
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
            layers=self.layers(now),
            layer_switches=dict(self._switches),
            keyframe_requests=dict(self._keyframe_causes),
            padding_bytes=self._padding_bytes,
            audio_only_viewers=sum(
                1 for v in self._viewers.values() if v.announced is not None and v.announced.layer == "audio_only"
            ),
        )

    def layers(self, now: float | None = None) -> list[LayerInfo]:
        """The host's video layers, lowest first (one without simulcast)."""
        now = self._latest(now)
        names = layer_names(len(self._layers))
        return [
            LayerInfo(
                name=name,
                rid=src.rid,
                width=src.size[0] if src.size else None,
                height=src.size[1] if src.size else None,
                bitrate_bps=int(src.byte_rate * 8),
                flowing=src.flowing(now),
                viewers=len(src.tracks),
                packets_in=src.packets,
                temporal_layers=1 + max((tid for tid in range(4) if src.tid_bps[tid] > 0), default=0),
            )
            for name, src in zip(names, self._layers, strict=False)
        ]

    # ------------------------------------------------------------ host side

    def attach_publisher(self, streams: list[SourceStream], send_rtcp_to_host: SendFn, now: float) -> None:
        """A (new) host starts publishing; replaces any previous one."""
        if self._publisher:
            self._end_sources()
        self._publisher = True
        self._send_rtcp_to_host = send_rtcp_to_host
        self._audio = None
        self._layers = []
        self._by_pt = {}
        self._by_ssrc = {}
        self._by_rid = {}
        self._rid_by_ssrc = {}
        self._simulcast_pt = None
        self._rid_ext_id = None
        self._ordered = False
        for stream in streams:
            if stream.kind == "audio" and self._audio is None:
                self._audio = src = _Source(stream, self._new_epoch(), now)
                self._by_pt[stream.payload_type & 0x7F] = src
            elif stream.kind == "video" and not self._layers:
                self._add_video(stream, now)
        for viewer in self._viewers.values():
            self._bind_viewer(viewer, now)
        for src in self._layers:
            if src.tracks:  # no SSRC yet: the PLI goes out with its first packet, unless it starts a keyframe
                src.kf_pending = src.kf_urgent = True
        self._next_report = now
        self._next_allocation = now + ALLOCATE_INTERVAL

    def _add_video(self, stream: SourceStream, now: float) -> None:
        rid_ext = next((i for i, uri in stream.extensions.items() if uri == RID_URI), None)
        if len(stream.rids) > 1 and rid_ext is not None:
            self._simulcast_pt = stream.payload_type & 0x7F
            self._rid_ext_id = rid_ext
            for rid in stream.rids[:3]:
                src = _Source(stream, self._new_epoch(), now, rid)
                self._layers.append(src)
                self._by_rid[rid] = src
        else:
            src = _Source(stream, self._new_epoch(), now)
            self._layers.append(src)
            self._by_pt[stream.payload_type & 0x7F] = src
        self._number_layers()

    def _number_layers(self) -> None:
        for index, src in enumerate(self._layers):
            src.index = index

    def detach_publisher(self, now: float) -> None:
        if self._publisher:
            self._end_sources()
        self._publisher = False
        self._send_rtcp_to_host = None
        self._audio = None
        self._layers = []
        self._by_pt = {}
        self._by_ssrc = {}
        self._by_rid = {}
        self._rid_by_ssrc = {}
        self._simulcast_pt = None
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
        src = self._by_ssrc.get(hdr.ssrc)
        if src is None:
            src = self._learn_ssrc(hdr, data, now)
            if src is None:
                return
        elif hdr.payload_type != src.stream.payload_type & 0x7F:
            self._drops["unknown_payload_type"] += 1
            return
        src.bytes_in += len(data)
        src.packets += 1
        seq = hdr.sequence_number
        stats = src.stats
        assert stats is not None
        prev_max = stats.cycles + stats.max_seq if stats.received else -1
        ext = stats.update(seq, hdr.timestamp, now)
        in_order = ext > prev_max
        if in_order:
            src.highest_seq = seq
            src.highest_ts = hdr.timestamp
            src.highest_time = now
            src.highest_marker = hdr.marker
        elif src.cache.get(seq) is not None:
            self._drops["duplicate"] += 1
            return
        src.cache.store(seq, (hdr, data))
        for relay in self._relays.values():
            relay.send_rtp(data)
        temporal = 0
        if src.is_video:
            temporal = temporal_of(data, hdr.payload_offset) if src.is_vp8 else 4  # H.264: one layer
            src.tid_bytes[temporal & 3] += len(data)
            nack = src.nack
            nack.on_packet(ext, now)
            if now >= nack.next_due:
                self._send_nacks(src, now)
            if src.keyframe_start_in(data, hdr.payload_offset, hdr.payload_end):
                src.kf_pending = src.kf_urgent = False
                self._on_keyframe(src, hdr, data)
        if src.tracks:
            self._fan_out(src, hdr, data, now, temporal, in_order)
            if hdr.marker and in_order and src.is_video:  # a frame ended: the probes' padding follows
                for track in src.tracks:
                    if track.viewer.padding_bps:
                        self._pad(track.viewer, now)

    def _learn_ssrc(self, hdr: RtpHeader, data: bytes, now: float) -> _Source | None:
        """The source of a packet from an SSRC not seen yet: by payload type, or for a simulcast
        layer by the rid it carries. Counted drop (None) if it has none."""
        src = self._by_pt.get(hdr.payload_type)
        if src is None and hdr.payload_type == self._simulcast_pt:
            rid = parse_extensions_untrusted(data, hdr).get(self._rid_ext_id or 0)
            name = rid.decode("ascii", "replace") if rid else self._rid_by_ssrc.get(hdr.ssrc)
            src = self._by_rid.get(name) if name else None
            if src is None:
                self._drops["unknown_rid"] += 1
                return None
        if src is None:
            self._drops["unknown_payload_type" if self._publisher else "no_source"] += 1
            return None
        if hdr.ssrc in src.old_ssrcs:
            self._drops["stale_ssrc"] += 1
            return None
        self._switch_ssrc(src, hdr, data, now)
        return src

    def _parse_rtcp(self, data: bytes) -> list[RtcpPacket]:
        """The packets of a compound RTCP datagram; none (counted) if it is malformed."""
        try:
            return parse_rtcp_untrusted(data)
        except MalformedPacket:
            self._drops["malformed_rtcp"] += 1
            return []

    def on_publisher_rtcp(self, data: bytes, now: float) -> None:
        """Decrypted RTCP from the host: SRs are kept (LSR, the layer's clock) and translated
        to the viewers of that source."""
        for relay in self._relays.values():
            relay.send_rtcp(data)
        for p in self._parse_rtcp(data):
            if isinstance(p, SenderReport):
                src = self._by_ssrc.get(p.ssrc)
                if src is not None and src.stats is not None:
                    src.stats.on_sender_report(p.ntp, now)
                    src.sr = (p.ntp, p.rtp_ts)
                    self._translate_sr(src, p, now)
            # RR/BYE/feedback from the host are of no use to the forwarder

    # ------------------------------------------------------------ relays (rooms across workers)

    def add_relay(self, relay_id: str, send_rtp: SendFn, send_rtcp: SendFn) -> None:
        """Send the host's RTP and RTCP to an edge from now on (replaces one of that id)."""
        self._relays[relay_id] = _Relay(send_rtp, send_rtcp)

    def remove_relay(self, relay_id: str) -> None:
        self._relays.pop(relay_id, None)

    def set_relay_needs(self, relay_id: str, rids: list[str]) -> None:
        """The rids an edge's viewers need now (its own ``needed_rids``): dynacast counts them."""
        relay = self._relays.get(relay_id)
        if relay is not None:
            relay.needed = list(rids)

    @property
    def relay_count(self) -> int:
        return len(self._relays)

    def layer_ssrcs(self) -> dict[int, str]:
        """The simulcast layers' SSRCs learned so far, with their rids (for an edge's router)."""
        return {src.ssrc: src.rid for src in self._layers if src.ssrc is not None and src.rid is not None}

    def learn_layer_ssrcs(self, layers: dict[int, str]) -> None:
        """An edge: the origin's layer SSRCs, for packets that no longer carry their rid (a host
        stops sending it once it has a report on that SSRC)."""
        self._rid_by_ssrc = dict(layers)

    def on_relay_rtcp(self, relay_id: str, data: bytes, now: float) -> None:
        """RTCP from an edge's router, which takes us for the host: its keyframe requests join
        this room's (throttled per layer: however many edges ask, the host sees at most one
        urgent request per URGENT_PLI_INTERVAL), its NACKs are served from the cache here (the
        packet as the host sent it, at most once per RESEND_GUARD), its reports and REMB are
        the edge's business."""
        relay = self._relays.get(relay_id)
        if relay is None:
            return
        for p in self._parse_rtcp(data):
            if isinstance(p, Pli):
                src = self._by_ssrc.get(p.media_ssrc)
                if src is not None:
                    self._request_keyframe(src, now, urgent=True, cause="relay")
            elif isinstance(p, Fir):
                for entry in p.entries:
                    if (src := self._by_ssrc.get(entry.ssrc)) is not None:
                        self._request_keyframe(src, now, urgent=True, cause="relay")
            elif isinstance(p, Nack):
                self._serve_relay_nack(relay, p, now)

    def _serve_relay_nack(self, relay: _Relay, nack: Nack, now: float) -> None:
        src = self._by_ssrc.get(nack.media_ssrc)
        if src is None:
            return
        resent = relay.resent
        for seq in nack.lost:
            entry = src.cache.get(seq)
            if entry is None:
                self._drops["cache_miss"] += 1
                continue
            key = (nack.media_ssrc, seq)
            last = resent.get(key)
            if last is not None and now - last < RESEND_GUARD:
                self._drops["nack_repeat"] += 1
                continue
            resent[key] = now
            self._retransmissions += 1
            relay.send_rtp(entry[1])
        if len(resent) > CACHE_SIZE:
            relay.resent = {key: at for key, at in resent.items() if now - at < RESEND_GUARD}

    # ------------------------------------------------------------ viewer side

    def add_viewer(
        self,
        viewer_id: str,
        sinks: list[SinkStream],
        send_rtp: SendFn,
        send_rtcp: SendFn,
        now: float,
        quality: Quality = "auto",
    ) -> None:
        """Add (or replace) a viewer, with the quality it asked for so far. Call when its
        transport can send."""
        if viewer_id in self._viewers:
            self.remove_viewer(viewer_id)
        viewer = _Viewer(viewer_id, send_rtp, send_rtcp, now)
        viewer.quality = quality
        for sink in sinks:
            if sink.kind in viewer.tracks:
                continue  # one stream per kind
            viewer.tracks[sink.kind] = _Track(viewer, sink, send_rtp)
        self._viewers[viewer_id] = viewer
        self._bind_viewer(viewer, now)
        video = viewer.tracks.get("video")
        if video is not None and video.source is not None:
            self._request_keyframe(video.source, now, urgent=True, cause="join")

    def remove_viewer(self, viewer_id: str) -> None:
        viewer = self._viewers.pop(viewer_id, None)
        if viewer is None:
            return
        for track in viewer.tracks.values():
            self._unbind(track)

    def set_quality(self, viewer_id: str, quality: Quality, now: float) -> None:
        """The viewer's choice (`set_quality`): applied at once (a switch still waits for the
        target layer's keyframe)."""
        viewer = self._viewers.get(viewer_id)
        if viewer is None or viewer.quality == quality:
            return
        viewer.quality = quality
        viewer.policy.reset()
        self._allocate(viewer, now)

    def on_viewer_rtcp(self, viewer_id: str, data: bytes, now: float) -> None:
        """NACK -> retransmit from the cache; PLI/FIR -> keyframe request; RR/REMB feed the
        viewer's bandwidth estimate."""
        viewer = self._viewers.get(viewer_id)
        if viewer is None:
            self._drops["unknown_viewer"] += 1
            return
        if not viewer.take_rtcp(now):
            self._drops["rtcp_rate_limited"] += 1
            return
        video = viewer.tracks.get("video")
        for p in self._parse_rtcp(data):
            if isinstance(p, Nack):
                self._serve_nack(viewer, p, now)
            elif isinstance(p, Pli):
                if video is not None and video.ssrc == p.media_ssrc and video.source is not None:
                    self._request_keyframe(video.source, now, urgent=False, cause="viewer")
            elif isinstance(p, Fir):
                if video is not None and video.source is not None and any(e.ssrc == video.ssrc for e in p.entries):
                    self._request_keyframe(video.source, now, urgent=False, cause="viewer")
            elif isinstance(p, (ReceiverReport, SenderReport)):
                for block in p.reports:
                    viewer.receiver_reports[block.ssrc] = block
                    self._round_trip(viewer, block, now)
                    if video is not None and block.ssrc == video.ssrc:
                        viewer.bandwidth.on_loss(block.fraction_lost, now)
            elif isinstance(p, Remb):
                viewer.remb_bps = p.bitrate_bps
                viewer.bandwidth.on_remb(p.bitrate_bps, now)
        if viewer.padding_bps and viewer.bandwidth.last_sign_at == now:  # a probe meets congestion: stop now
            viewer.padding_bps = 0

    def _round_trip(self, viewer: _Viewer, block: ReportBlock, now: float) -> None:
        """A report block naming a sender report we sent: the round trip to the viewer (RFC
        3550 6.4.1), whose growth is the queue on its link (media/bwe.py)."""
        for track in viewer.tracks.values():
            if track.ssrc == block.ssrc:
                sent = track.srs_sent.get(block.lsr) if block.lsr else None
                if sent is not None:
                    viewer.bandwidth.on_round_trip(now - sent - block.dlsr / 65536, now)
                return

    # ------------------------------------------------------------ timers and events

    def tick(self, now: float) -> None:
        """Call every 0.1-0.25 s: RR+REMB to the host (~1/s), NACK retries, keyframe retries,
        the sources' byte rates, the viewers' layers and their padding."""
        if not self._publisher:
            return
        for src in self._sources():
            src.measure_rate(now)
        self._recorded = self._top_layer(now)
        if now >= self._next_report and self._send_report(now):
            self._next_report = now + REPORT_INTERVAL - 0.05  # tolerate tick jitter
        for src in self._layers:
            if src.ssrc is None:
                continue
            if now >= src.nack.next_due:
                self._send_nacks(src, now)
            waiting = src.pending or any(t.epoch != src.epoch for t in src.tracks)
            if src.kf_pending or waiting:
                self._request_keyframe(src, now, urgent=False, cause=None)
        if len(self._layers) > 1 and now >= self._next_allocation:
            self._next_allocation = now + ALLOCATE_INTERVAL
            for viewer in self._viewers.values():
                self._allocate(viewer, now)
        for viewer in self._viewers.values():
            video = viewer.tracks.get("video")
            if not viewer.padding_bps:
                viewer.padded_at = now
            elif video is not None and video.source is None:  # audio only: no frames to pad after
                self._pad(viewer, now)
            self._note_quality(viewer, now)

    def take_quality_changes(self) -> list[QualityChange]:
        """What viewers now get, for those whose layer changed since the last call (their
        `quality` message)."""
        changes, self._quality_changes = self._quality_changes, []
        return changes

    def needed_rids(self, now: float) -> list[str]:
        """The host's rids some viewer needs now or needed within PAUSE_AFTER seconds (the
        `layers` message; [] without simulcast): a viewer needs the layer it gets, the one it
        switches to, the ones it may step to (one below, and one above unless it asked for no
        more), and what it asked for by name."""
        if self._simulcast_pt is None:
            return []
        for relay in self._relays.values():  # what the edges' viewers need (all, until an edge says)
            for layer in self._layers:
                if relay.needed is None or layer.rid in relay.needed:
                    layer.needed_at = now
        for viewer in self._viewers.values():
            track = viewer.tracks.get("video")
            if track is None:
                continue
            for src in (track.source, track.target):
                if src is not None:
                    src.needed_at = now
            cap = quality_cap(viewer.quality, len(self._layers))
            if cap == AUDIO_ONLY:
                continue
            if cap is not None and viewer.quality != "auto":
                self._layers[min(cap, len(self._layers) - 1)].needed_at = now
            current = track.target or track.source
            if current is not None:  # and the layers it may step to: one below, one above
                index = current.index
                if index > 0:
                    self._layers[index - 1].needed_at = now
                if index + 1 < len(self._layers) and (cap is None or index + 1 <= cap):
                    self._layers[index + 1].needed_at = now
        return [src.rid for src in self._layers if src.rid is not None and now - src.needed_at < PAUSE_AFTER]

    def request_keyframe(self, now: float) -> None:
        """Ask the host for a keyframe of its top layer (throttled to one PLI per second)."""
        src = self._top_layer(now)
        if src is not None:
            self._request_keyframe(src, now, urgent=False, cause="recording")

    # ------------------------------------------------------------ layers of a viewer

    def _step_rates(self, now: float) -> list[int]:
        """What a viewer receives on each step (media.layers: the lowest layer at TID 0, at
        TIDs 0-1, whole, then each higher layer), bits a second, its audio included (a viewer's
        estimate covers all it receives); 0 for a step that is not there: a layer that does not
        flow, or a temporal step that saves less than a tenth of the step above it (a host
        without temporal layers)."""
        audio = int(self._audio.smooth_bps) if self._audio is not None and self._audio.flowing(now) else 0
        rates = [int(src.smooth_bps) + audio if src.flowing(now) and src.smooth_bps else 0 for src in self._layers]
        lowest = self._layers[0]
        t0 = int(lowest.tid_bps[0]) + audio
        t1 = t0 + int(lowest.tid_bps[1])
        temporal = [t0 if t0 < 0.9 * t1 else 0, t1 if t1 < 0.9 * rates[0] else 0]
        return [rate if rates[0] else 0 for rate in temporal] + rates

    def _choose(self, viewer: _Viewer, now: float) -> tuple[int, int, int, QualityReason | None]:
        """The viewer's layer index (or AUDIO_ONLY), TID cap, padding and the reason it changed
        (None: it did not)."""
        cap = quality_cap(viewer.quality, len(self._layers))
        if len(self._layers) == 1:  # one layer: video unless the viewer asked for none
            return (AUDIO_ONLY if cap == AUDIO_ONLY else 0), TID_ALL, 0, None
        step_cap = cap if cap is None or cap == AUDIO_ONLY else step_of(cap)
        decision = viewer.policy.choose(now, viewer.bandwidth, self._step_rates(now), step_cap)
        if decision.layer == AUDIO_ONLY:
            return AUDIO_ONLY, TID_ALL, decision.padding_bps, decision.reason
        layer, tid = layer_of_step(decision.layer)
        return layer, tid, decision.padding_bps, decision.reason

    def _bind_viewer(self, viewer: _Viewer, now: float) -> None:
        """Bind a viewer's tracks to the publisher's sources: audio to audio, video to the layer
        its policy starts it on (the best one under its initial estimate; the one it asked for,
        or the top one, before any rate is known)."""
        for kind, track in viewer.tracks.items():
            if kind == "audio":
                if self._audio is not None:
                    self._bind(self._audio, track)
            elif self._layers and not _receives(track, self._layers[0]):
                if viewer.announced is None or viewer.announced.reason != "codec":  # told once per host
                    viewer.announced = change = QualityChange(viewer.id, "audio_only", None, None, "codec")
                    self._quality_changes.append(change)
            elif self._layers:
                layer, tid, _padding, _reason = self._choose(viewer, now)
                if layer != AUDIO_ONLY:
                    track.tid_want = track.tid_cap = tid
                    self._bind(self._layers[layer], track)

    def _allocate(self, viewer: _Viewer, now: float) -> None:
        """Choose the viewer's step again; start the switch if its layer changed, move its
        temporal cap if that changed."""
        track = viewer.tracks.get("video")
        if track is None or not self._layers:
            return
        layer, tid, viewer.padding_bps, reason = self._choose(viewer, now)
        if reason is not None:
            viewer.reason = reason
        target = None if layer == AUDIO_ONLY else self._layers[layer]
        wanted = track.target or track.source
        if target is wanted:
            if target is not None and (track.target_tid if track.target else track.tid_want) != tid:
                self._count_switch(viewer)
                if track.target is not None:
                    track.target_tid = tid
                else:
                    track.tid_want = tid
            return
        self._count_switch(viewer)
        if target is None:  # audio only: no more video
            self._unbind(track)
            return
        if track.target is not None and track.target is not target:
            track.target.pending.remove(track)
            track.target = None
        if track.source is None or track.epoch != track.source.epoch:
            # not started anywhere yet: simply bind it there (it starts at that layer's keyframe)
            self._unbind(track)
            track.tid_want = track.tid_cap = tid
            self._bind(target, track)
            self._request_keyframe(target, now, urgent=True, cause="switch")
            return
        if target is track.source:  # back to the layer it is on: the switch is off
            track.tid_want = tid
            return
        if target.index < track.source.index:
            track.tid_want = 0  # going down: only the base temporal layer until the keyframe comes
        track.target = target
        track.target_tid = tid
        target.pending.append(track)
        self._request_keyframe(target, now, urgent=True, cause="switch")

    def _count_switch(self, viewer: _Viewer) -> None:
        self._switches[viewer.reason] = self._switches.get(viewer.reason, 0) + 1

    def _on_keyframe(self, src: _Source, hdr: RtpHeader, data: bytes) -> None:
        """A keyframe of ``src`` starts: note its size, and switch the tracks waiting for it."""
        size = keyframe_size(data[hdr.payload_offset : hdr.payload_end]) if src.is_vp8 else None
        if size is not None and size != src.size:
            src.size = size
            self._order_layers()
        pending, src.pending = src.pending, []
        for track in pending:
            old = track.source
            track.target = None
            track.tid_want = track.target_tid
            if old is not None:
                self._end_track(old, track)
                old.tracks.remove(track)
            bridged = self._bridge_ts(old, src, track, hdr.timestamp)
            track.source = src
            src.tracks.append(track)
            track.bridge_ts = bridged

    def _order_layers(self) -> None:
        """Order the layers by frame size, once, when each has shown its size (the rid order
        until then); the viewers' policies follow their layer to its new index."""
        if self._ordered or len(self._layers) < 2 or any(src.size is None for src in self._layers):
            return
        self._ordered = True
        before = list(self._layers)
        self._layers.sort(key=lambda src: src.size[0] * src.size[1] if src.size else 0)
        self._number_layers()
        if before == self._layers:
            return
        for viewer in self._viewers.values():
            step = viewer.policy.layer
            if step is not None and step != AUDIO_ONLY:
                layer, tid = layer_of_step(step)
                viewer.policy.layer = step_of(before[layer].index, tid)

    def _bridge_ts(self, old: _Source | None, new: _Source, track: _Track, new_ts: int) -> int | None:
        """The output timestamp the packet ``new_ts`` of layer ``new`` gets, bridged from the old
        layer through both layers' sender reports (None: a layer has none yet; wall time then)."""
        if old is None or old.sr is None or new.sr is None:
            return None
        old_ntp, old_rtp = old.sr
        new_ntp, new_rtp = new.sr
        clock = new.stream.clock_rate
        # the old layer's RTP time of the moment new_ts was taken, then mapped as the old layer was
        ntp_delta = ((new_ntp - old_ntp) / 2**32) * clock
        old_equivalent = (new_ts - new_rtp + old_rtp + round(ntp_delta)) & 0xFFFFFFFF
        return (old_equivalent + track.ts_offset) & 0xFFFFFFFF

    def _note_quality(self, viewer: _Viewer, now: float) -> None:
        """Queue a QualityChange when what the viewer gets is not what it was last told."""
        track = viewer.tracks.get("video")
        if track is None or not self._layers or not _receives(track, self._layers[0]):
            return
        src = track.source
        if src is None:
            audio_only = viewer.announced is not None or viewer.quality == "audio_only"
            layer: LayerName | None = "audio_only" if audio_only else None
            size: tuple[int, int] | None = None
        elif track.epoch != src.epoch:
            return  # waiting for its first keyframe there: nothing shown yet
        else:
            layer, size = layer_names(len(self._layers))[src.index], src.size
        if layer is None:
            return
        width, height = size if size else (None, None)
        announced = viewer.announced
        if announced is None or (announced.layer, announced.width, announced.height) != (layer, width, height):
            viewer.announced = change = QualityChange(viewer.id, layer, width, height, viewer.reason)
            self._quality_changes.append(change)

    def _pad(self, viewer: _Viewer, now: float) -> None:
        """The padding owed since the last: RTP packets of padding only, on the viewer's video
        SSRC, right after a frame of its layer (the track's map skips their sequence numbers):
        spread over the frames, as a pacer would, not in bursts a receiver would read as a
        queue growing; while it gets audio only, every tick after its last video packet, so
        that its estimate can grow back to a layer."""
        track = viewer.tracks.get("video")
        if track is None:
            return
        src = track.source
        if src is not None and (track.epoch != src.epoch or not src.highest_marker):
            return  # not started, or in the middle of a frame: after the next one
        if src is None and not track.has_history:
            return  # never sent video: nothing to continue
        elapsed = min(0.5, now - viewer.padded_at)
        viewer.padded_at = now
        credit = viewer.padding_credit + viewer.padding_bps / 8 * elapsed
        count = min(int(credit // (MAX_PADDING + 12)), MAX_PADDING_PACKETS_AT_ONCE)
        viewer.padding_credit = min(credit - count * (MAX_PADDING + 12), 8 * (MAX_PADDING + 12))
        if count <= 0:
            return
        # the timestamp of the last frame sent, moved on by the time since (libwebrtc's padding):
        # a receiver estimating its link from RTP timestamps (REMB without abs-send-time) sees
        # the padding as sent when it was, not as a frame arriving ever later (which it would
        # take for a growing queue, and cut its estimate)
        if src is not None:
            ticks = round((now - src.highest_time) * track.clock_rate)
            ts = (src.highest_ts + track.ts_offset + ticks) & 0xFFFFFFFF
            seqs = track.pad(src.highest_seq, count)
        else:  # audio only: continue after the last video packet sent
            ticks = round((now - track.last_out_time) * track.clock_rate)
            ts = (track.last_out_ts + ticks) & 0xFFFFFFFF
            seqs = [(track.last_out_seq + 1 + k) & 0xFFFF for k in range(count)]
            track.last_out_seq = seqs[-1]
        body = bytes(MAX_PADDING - 1) + bytes((MAX_PADDING,))
        first = 0xA0
        plan = track.plan
        if plan is not None and plan.send_time_id is not None:  # stamped like the media
            first, body = 0xB0, encode_extensions([(plan.send_time_id, abs_send_time(now))]) + body
        for seq in seqs:
            packet = _PADDING_HEADER.pack(first, track.pt, seq, ts, track.ssrc) + body
            self._padding_bytes += len(packet)
            track.send_rtp(packet)

    # ------------------------------------------------------------ internals

    def _new_epoch(self) -> int:
        self._epochs += 1
        return self._epochs

    def _intern_plan(self, plan: ExtensionPlan) -> ExtensionPlan:
        return self._plans.setdefault(plan, plan)

    def _variant(self, plan: ExtensionPlan | None, pid_delta: int, tl0_delta: int) -> _Variant:
        key = (plan, pid_delta, tl0_delta)
        v = self._variants.get(key)
        if v is None:
            if len(self._variants) > 4096:  # bounded: stale variants are only a cache
                self._variants.clear()
            v = self._variants[key] = _Variant(plan, pid_delta, tl0_delta)
        return v

    def _bind(self, src: _Source, track: _Track) -> None:
        plan = make_extension_plan(src.stream.extensions, track.sink.extensions, track.sink.mid)
        track.plan = None if plan.is_empty else self._intern_plan(plan)
        track.variant = self._variant(track.plan, track.pid_offset if src.is_vp8 else 0, track.tl0_offset)
        # the viewer's payload type for the host's codec (it negotiated each it can receive)
        track.pt = track.sink.payload_types.get(src.stream.codec, track.sink.payload_type) & 0x7F
        track.source = src
        src.tracks.append(track)

    def _unbind(self, track: _Track) -> None:
        """The track gets nothing more from the source it is on (or waits for)."""
        src = track.source
        if src is not None:
            self._end_track(src, track)
            if track in src.tracks:
                src.tracks.remove(track)
            track.source = None
        if track.target is not None:
            if track in track.target.pending:
                track.target.pending.remove(track)
            track.target = None

    def _end_track(self, src: _Source, track: _Track) -> None:
        """The track leaves the source's current epoch: it remembers its last output."""
        if src.ssrc is None or track.epoch != src.epoch:
            return
        pid: int | None = None
        bits = 0
        tl0: int | None = None
        if src.is_vp8:
            entry = src.cache.get(src.highest_seq)
            if entry is not None:
                hdr, data = entry
                pid, bits = read_picture_id(data, hdr.payload_offset)
                at = tl0_pic_idx_location(data, hdr.payload_offset)
                tl0 = data[at] if at >= 0 else None
        track.end(src.highest_seq, src.highest_ts, src.highest_time, pid, bits)
        track.previous_variant = track.variant
        if tl0 is not None:
            track.last_out_tl0 = (tl0 + track.tl0_offset) & 0xFF

    def _end_sources(self) -> None:
        for src in self._sources():
            for track in src.tracks:
                self._end_track(src, track)
                track.source = None
            for track in src.pending:
                track.target = None
            src.tracks = []
            src.pending = []

    def _switch_ssrc(self, src: _Source, hdr: RtpHeader, data: bytes, now: float) -> None:
        if src.ssrc is not None:
            for track in src.tracks:
                self._end_track(src, track)
            src.old_ssrcs.add(src.ssrc)
            self._by_ssrc.pop(src.ssrc, None)
            if len(src.old_ssrcs) > 16:
                src.old_ssrcs = {src.ssrc}
        src.old_ssrcs.discard(hdr.ssrc)
        src.ssrc = hdr.ssrc
        self._by_ssrc[hdr.ssrc] = src
        src.epoch = self._new_epoch()
        src.stats = ReceiveStats(hdr.ssrc, src.stream.clock_rate, hdr.sequence_number)
        src.sr = None
        src.nack.reset()
        src.cache.clear()
        if src.is_video and src.tracks and not src.keyframe_start_in(data, hdr.payload_offset, hdr.payload_end):
            # every viewer on it now waits for a keyframe of the new source: ask at once
            self._request_keyframe(src, now, urgent=True, cause="publisher")

    def _start_track(self, t: _Track, src: _Source, hdr: RtpHeader, data: bytes, now: float) -> None:
        pid: int | None = None
        tl0_at = -1
        if src.is_vp8 and t.has_history:
            pid, _bits = read_picture_id(data, hdr.payload_offset)
            tl0_at = tl0_pic_idx_location(data, hdr.payload_offset)
        t.start(src.epoch, hdr.sequence_number, hdr.timestamp, now, pid, t.bridge_ts)
        t.bridge_ts = None
        t.tid_cap = t.tid_want  # a keyframe: every temporal layer wanted may follow
        if tl0_at >= 0 and t.last_out_tl0 is not None:
            t.tl0_offset = (t.last_out_tl0 + 1 - data[tl0_at]) & 0xFF
        t.variant = self._variant(t.plan, t.pid_offset if src.is_vp8 else 0, t.tl0_offset)

    def _fan_out(self, src: _Source, hdr: RtpHeader, data: bytes, now: float, temporal: int, in_order: bool) -> None:
        """Send one host packet to every track on its source. ``temporal``: its VP8 temporal
        layer (media.vp8.temporal_of; 0 for audio); ``in_order``: it is the highest seq yet."""
        epoch = src.epoch
        tid = temporal & 3
        seq = hdr.sequence_number
        ts = hdr.timestamp
        mark = 0x80 if hdr.marker else 0
        payload_len = hdr.payload_end - hdr.payload_offset
        pack = _pack_fixed
        last_variant: _Variant | None = None
        bodies: dict[_Variant, tuple[int, bytes]] = {}
        b0 = 0
        body = b""
        send_time = b""  # abs-send-time, computed for the first body built
        keyframe = -1  # not computed yet
        sent = 0
        sent_bytes = 0
        waiting = 0
        too_old = 0
        skipped = 0
        for t in src.tracks:
            if t.epoch != epoch:
                if src.is_video:
                    if keyframe < 0:
                        keyframe = 1 if src.keyframe_start_in(data, hdr.payload_offset, hdr.payload_end) else 0
                    if not keyframe:
                        waiting += 1
                        continue
                self._start_track(t, src, hdr, data, now)
            # The track's SeqMap mapping, inlined (media/seqmap.py says why): older than
            # its start is dropped, then seq/ts are shifted by its offsets.
            elif (seq - t.first_in_seq) & 0xFFFF >= 0x8000:
                too_old += 1
                continue
            if (tid > t.tid_cap or t.tid_want != t.tid_cap or (t.segments and not in_order)) and self._holds_back(
                t, temporal, hdr, data, in_order
            ):
                skipped += 1
                continue
            variant = t.variant
            if variant is not last_variant:
                assert variant is not None
                pair = bodies.get(variant)
                if pair is None:
                    if not send_time:
                        send_time = abs_send_time(now)
                    pair = bodies[variant] = _build_body(variant, hdr, data, send_time)
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
        if skipped:
            self._drops["temporal_layer"] += skipped

    def _holds_back(self, t: _Track, temporal: int, hdr: RtpHeader, data: bytes, in_order: bool) -> bool:
        """Whether the packet is not for this track (the slow path of ``_fan_out``, taken when
        the track drops a temporal layer, changes the one it drops, or has moved its numbering):
        at a frame's start the TID cap moves toward the one wanted (down at once; up to the TID
        of a frame with the layer-sync bit, mediasoup's rule); a packet above the cap is
        skipped, its seq (and for a frame start its picture id) given to the next; a late
        packet from before the numbering moved is left to the viewer's NACK, which maps it
        right."""
        if not in_order:
            if t.segments:
                first_out, offset, _ = t.segments[-1]
                if ((hdr.sequence_number - (first_out - offset)) & 0xFFFF) >= 0x8000:
                    return True  # before the last move of the numbering
            return (temporal & 3) > t.tid_cap
        tid = temporal & 3
        if temporal & 8:  # a frame starts: the cap may move here
            if t.tid_want < t.tid_cap:
                t.tid_cap = t.tid_want
            elif temporal & 4 and t.tid_cap < tid <= t.tid_want:  # a sync frame of a layer wanted
                t.tid_cap = tid
        if tid <= t.tid_cap:
            return False
        frame_start = bool(temporal & 8)
        mask = 0x7FFF
        if frame_start:
            _pid, bits = read_picture_id(data, hdr.payload_offset)
            mask = 0x7FFF if bits != 7 else 0x7F
        t.skip(hdr.sequence_number, frame_start, mask)
        if frame_start:
            t.variant = self._variant(t.plan, t.pid_offset, t.tl0_offset)
        return True

    def _serve_nack(self, viewer: _Viewer, nack: Nack, now: float) -> None:
        track: _Track | None = None
        for t in viewer.tracks.values():
            if t.ssrc == nack.media_ssrc:
                track = t
                break
        if track is None:
            return
        src = track.source
        if src is None:
            self._drops["cache_miss"] += len(nack.lost)
            return
        link = viewer.bandwidth.bps if len(self._layers) > 1 else None
        budget = _refill_retransmit_budget(track, src, now, link)
        resent = track.resent
        misses = repeats = limited = 0
        for out_seq in nack.lost:
            origin, in_seq, ts_offset, variant = self._nacked_packet(track, src, out_seq)
            entry = origin.cache.get(in_seq) if in_seq is not None else None
            if entry is None or in_seq is None or variant is None:
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
            b0, body = _build_body(variant, hdr, data, abs_send_time(now))
            out = (
                _pack_fixed(
                    b0,
                    (0x80 if hdr.marker else 0) | track.pt,
                    out_seq & 0xFFFF,
                    (hdr.timestamp + ts_offset) & 0xFFFFFFFF,
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
                self._request_keyframe(src, now, urgent=False, cause="loss")

    def _nacked_packet(
        self, track: _Track, src: _Source, out_seq: int
    ) -> tuple[_Source, int | None, int, _Variant | None]:
        """Where the packet the viewer knows as ``out_seq`` came from, and how it was rewritten:
        the layer it is on, or the one it switched from (the packets sent just before)."""
        mapped = track.input(out_seq, src.epoch, src.highest_seq)
        if mapped is not None:
            in_seq, pid_offset = mapped
            variant = track.variant
            if src.is_vp8 and pid_offset != track.pid_offset:  # sent before a temporal skip
                variant = self._variant(track.plan, pid_offset, track.tl0_offset)
            return src, in_seq, track.ts_offset, variant
        previous = track.previous_input_seq(out_seq)
        if previous is not None:
            epoch, in_seq, ts_offset = previous
            for layer in self._sources():
                if layer.epoch == epoch and layer.kind == src.kind:
                    return layer, in_seq, ts_offset, track.previous_variant
        return src, None, 0, None

    def _translate_sr(self, src: _Source, sr: SenderReport, now: float) -> None:
        """The host's sender report, on each viewer track's own SSRC and timestamps; when it
        was sent is kept (by its compact NTP time) to measure the round trip when the viewer's
        report block names it."""
        epoch = src.epoch
        compact = (sr.ntp >> 16) & 0xFFFFFFFF
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
            t.srs_sent[compact] = now
            if len(t.srs_sent) > SR_TIMES_KEPT:
                del t.srs_sent[next(iter(t.srs_sent))]
            t.viewer.send_rtcp(packet)

    def _request_keyframe(self, src: _Source, now: float, *, urgent: bool, cause: str | None) -> None:
        """Ask the host for a keyframe of ``src``: an urgent request at most once per
        URGENT_PLI_INTERVAL, another at most once per PLI_INTERVAL; a held-back one is sent by
        the tick (or with the source's first packet)."""
        if cause is not None:
            src.kf_urgent = src.kf_urgent or urgent
        interval = URGENT_PLI_INTERVAL if src.kf_urgent else PLI_INTERVAL
        if src.ssrc is None or now - src.last_pli < interval:
            src.kf_pending = True
            return
        if cause is not None:
            self._keyframe_causes[cause] = self._keyframe_causes.get(cause, 0) + 1
        self._send_pli(src, now)

    def _send_pli(self, src: _Source, now: float) -> None:
        send = self._send_rtcp_to_host
        if send is None or src.ssrc is None:
            return
        src.last_pli = now
        src.kf_pending = False
        src.kf_urgent = False
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
            self._request_keyframe(src, now, urgent=False, cause="loss")

    def _send_report(self, now: float) -> bool:
        send = self._send_rtcp_to_host
        if send is None:
            return False
        blocks: list[ReportBlock] = []
        ssrcs: list[int] = []
        for src in self._sources():
            if src.ssrc is not None and src.stats is not None:
                blocks.append(src.stats.report_block(now))
                ssrcs.append(src.ssrc)
        if not ssrcs:
            return False
        self._reports_sent += 1
        target = self.target_bitrate_bps
        if len(self._layers) > 1:
            target = int(target * SIMULCAST_REMB_FACTOR)
        send(build_rr(self.rtcp_ssrc, blocks[:31]) + build_remb(self.rtcp_ssrc, target, ssrcs))
        return True


def _refill_retransmit_budget(track: _Track, src: _Source, now: float, link_bps: int | None) -> float:
    """The track's retransmission byte budget now: refilled at the source's byte rate times
    RETRANSMIT_RATE_SHARE (at least RETRANSMIT_MIN_BYTES_PER_SECOND), capped at
    RETRANSMIT_BURST_SECONDS of it; full at the first NACK. ``link_bps``: the viewer's
    estimate (simulcast), whose RETRANSMIT_LINK_SHARE bounds it too: resending on a link that
    is already full only delays what comes next (a layer switch's keyframe above all)."""
    rate = max(src.byte_rate * RETRANSMIT_RATE_SHARE, RETRANSMIT_MIN_BYTES_PER_SECOND)
    if link_bps is not None:
        rate = min(rate, link_bps / 8 * RETRANSMIT_LINK_SHARE)
    burst = rate * RETRANSMIT_BURST_SECONDS
    budget = track.retransmit_budget
    budget = burst if budget < 0 else min(burst, budget + (now - track.retransmit_at) * rate)
    track.retransmit_at = now
    return budget


def _build_body(variant: _Variant, hdr: RtpHeader, data: bytes, send_time: bytes) -> tuple[int, bytes]:
    b0, body = build_body(hdr, data, variant.plan, send_time)
    if variant.pid_delta or variant.tl0_delta:
        buf = bytearray(body)
        start = len(body) - (len(data) - hdr.payload_offset)
        if variant.pid_delta:
            rewrite_picture_id(buf, variant.pid_delta, start)
        if variant.tl0_delta:
            rewrite_tl0_pic_idx(buf, variant.tl0_delta, start)
        body = bytes(buf)
    return b0, body


def _receives(track: _Track, src: _Source) -> bool:
    """Whether the viewer negotiated the source's codec (a sink of no codec list takes VP8)."""
    codecs = track.sink.payload_types
    return src.stream.codec in codecs if codecs else src.stream.codec == "VP8"


def _frame_payloads(cache: PacketCache[tuple[RtpHeader, bytes]], first_seq: int, timestamp: int) -> list[bytes] | None:
    """The RTP payloads of the packets from `first_seq` through the one with the marker bit, all
    of `timestamp` and contiguous; None if one is missing (lost, or not arrived yet)."""
    payloads = []
    seq = first_seq
    for _ in range(cache.size):
        entry = cache.get(seq)
        if entry is None:
            return None
        hdr, data = entry
        if hdr.timestamp != timestamp:
            return None
        payloads.append(data[hdr.payload_offset : hdr.payload_end])
        if hdr.marker:
            return payloads
        seq = (seq + 1) & 0xFFFF
    return None


def h264_access_unit(cache: PacketCache[tuple[RtpHeader, bytes]], first_seq: int, timestamp: int) -> bytes | None:
    """The H.264 access unit of `timestamp` that holds packet `first_seq` (from its first packet
    of that timestamp: the parameter sets before an IDR's slice) through the one with the marker
    bit, contiguous, in Annex B; None if one is missing."""
    seq = first_seq
    for _ in range(cache.size):
        before = cache.get((seq - 1) & 0xFFFF)
        if before is None or before[0].timestamp != timestamp:
            break
        seq = (seq - 1) & 0xFFFF
    payloads = _frame_payloads(cache, seq, timestamp)
    units = h264.depacketize(payloads) if payloads is not None else []
    return h264.annex_b(units) if units else None


def vp8_frame(cache: PacketCache[tuple[RtpHeader, bytes]], first_seq: int, timestamp: int) -> bytes | None:
    """The VP8 frame of the packets from `first_seq` through the one with the marker bit, all of
    `timestamp` and contiguous, without their descriptors; None if one is missing."""
    payloads = _frame_payloads(cache, first_seq, timestamp)
    if payloads is None:
        return None
    parts = []
    for payload in payloads:
        skip = descriptor_length(payload)
        if skip < 0:
            return None
        parts.append(payload[skip:])
    return b"".join(parts)
