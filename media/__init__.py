"""Sans-IO media core: RTP/RTCP parsing and rewriting, VP8 keyframe logic, the
per-room forwarder (router), recording, SDP offers and answers and the ICE-lite
responder.

Nothing in this package imports trio or asyncio (``ice_lite`` uses aioice's
STUN codec, ``aioice.stun``, whose module imports asyncio but runs nothing of
it). Time is passed in as ``now`` (seconds, monotonic). Outputs go through
plain callables handed in by the caller (``send_rtp(bytes)``,
``send_rtcp(bytes)``), so tests can pass ``list.append`` and look at the
bytes. Parsers of network bytes end in ``_untrusted`` and raise only
:class:`media.errors.MalformedPacket` (the SDP parsers:
:class:`media.streams.SdpError`).

Modules: ``errors`` (MalformedPacket), ``rtp`` (RTP header parse, extension
plans, outgoing header/body), ``rtcp`` (compound RTCP parse and builders),
``vp8`` (payload descriptor, keyframe start, picture id rewrite),
``packet_cache`` (recent packets by seq, for NACKs), ``seqmap`` (per-viewer
seq/ts/picture-id offsets), ``receive_stats`` (RR statistics and NACK gap
tracking toward the host), ``router`` (the forwarder), ``delay_histogram``
(forwarding delay buckets), ``streams`` (the transport/forwarder boundary),
``sdp`` (the SDP parser and line model), ``sdp_offer`` (what the server reads
from an offer), ``sdp_answer`` (the answer), ``ice_lite`` (answering
connectivity checks, consent), ``recorder`` and ``webm`` (recording to WebM, or Matroska for H.264),
``thumbnail`` (a keyframe to a JPEG, with PyAV).
"""
