"""Sans-IO SDP answerer for the server's own transport: offer text in, answer text out.

The server answers every offer itself: one UDP port for every peer, an ICE-lite
agent of its own, DTLS done by itself. No trio or asyncio here.
:func:`answer_offer_untrusted` takes a client's offer and an
:class:`AnswerParams` (local ICE credentials, certificate fingerprint, host
candidates, role, media settings, the viewer's SSRCs) and returns an
:class:`Answer`: the answer text, what the forwarder needs
(:class:`~media.streams.SourceStream` for a host,
:class:`~media.streams.SinkStream` for a viewer) and what the transport needs
from the offer (remote ICE credentials, DTLS fingerprints and role, remote
candidates, the BUNDLE group).

The offer is parsed once (:func:`media.sdp.parse_sdp_untrusted`) and read once
(:func:`media.sdp_offer.read_offer_untrusted`: the sections answered, each cut
down to its codec, the rejected ones, the bundle, the offerer's transport).
The answer is then decided as values (one :class:`AnsweredSection` per
accepted m= line, the sources and sinks read from them) and written as text
once, at the end.

What the answer says, and why:

- Session level: ``a=ice-lite`` (the server only answers checks, RFC 8445
  section 2.5), ``a=group:BUNDLE`` (only as offered, see below),
  ``a=extmap-allow-mixed`` if the offer has it there, and for a viewer
  ``a=msid-semantic:WMS *``.
- Every accepted m= section: the port of the candidates, ``c=`` with the first
  candidate's address, ``a=mid``, the direction, ``a=ice-ufrag`` /
  ``a=ice-pwd`` / ``a=fingerprint`` / ``a=setup`` / ``a=rtcp-mux``. RFC 8843
  section 7.1.3 would have the transport attributes in the tagged section only;
  they are written in each accepted section as Chrome and aiortc write them,
  since aiortc refuses an answer section without ICE credentials and every
  browser takes them.
- DTLS role: the server is the DTLS client, ``a=setup:active``, unless the
  offer says ``setup:active``: then ``passive``. An offer with ``actpass`` or
  ``passive`` gets ``active``; an offer without ``a=setup`` (or
  ``holdconn``) is refused (JSEP: the offerer says ``actpass``).
- One codec per kind, under the OFFER's payload type: VP8/90000 for video,
  Opus/48000 for audio (rtx, red, ulpfec, H264, VP9... are gone, with their
  ``a=rtpmap`` / ``a=fmtp`` / ``a=rtcp-fb`` lines). A payload type in
  64-95 (it would collide with RTCP under rtcp-mux, RFC 5761 section 4) or
  above 127 is refused.
- ``a=rtcp-fb``: video copies what the offer lists among ``nack``,
  ``nack pli``, ``ccm fir`` and ``goog-remb`` for the codec (or ``*``);
  ``transport-cc`` and anything else are dropped (the server has no
  transport-wide congestion control). Audio gets none.
- What a host is asked for (not a viewer): ``b=AS`` / ``b=TIAS`` (the video or
  audio bitrate), VP8 ``a=fmtp`` ``max-fr``, Opus ``a=fmtp``
  ``maxaveragebitrate`` (bps) and ``useinbandfec=1`` where the offer asks.
- ``a=extmap``: only the header extensions the forwarder uses are kept, with
  the offer's ids: sdes:mid, ssrc-audio-level and urn:3gpp:video-orientation
  (:data:`KEPT_EXTENSION_URIS`), a simulcast host's sdes:rtp-stream-id, and a
  viewer's abs-send-time (stamped by the server as it sends: the viewer's REMB
  then measures the server->viewer hop, padding included). transport-cc,
  toffset, playout-delay... are dropped. Ids 1-14 are kept; 15-255 only where
  the offer has ``a=extmap-allow-mixed`` (two-byte headers). A direction on the offer's
  extmap (``a=extmap:2/recvonly``) is not repeated in the answer.
- Direction: host sections the client sends on (``sendonly``/``sendrecv``) are
  answered ``recvonly``, the others ``inactive``. For a viewer, the first
  ``recvonly``/``sendrecv`` section of each kind is answered ``sendonly`` with
  ``a=msid`` and ``a=ssrc:<ssrc> cname:<cname>`` (the SSRCs the caller chose,
  one per kind); any other section ``inactive``.
- Candidates: one ``a=candidate`` per configured address (UDP, host, all on
  the one port, priorities from RFC 8445 section 5.1.2.1 with local
  preference 65535, 65534, ...), then ``a=end-of-candidates`` (a lite agent
  does not trickle). With BUNDLE they are written in the answerer-tagged
  section only, the first m= section of the answer's group (what JSEP does;
  the other bundled sections share its transport); without BUNDLE, in every
  accepted section. No ``a=ice-options:trickle``: a lite agent has nothing to
  trickle and does not need the client's candidates (it learns the client's
  address from its checks); the offer's candidates are returned for
  information only.
- Rejected m= sections (port 0, ``c=IN IP4 0.0.0.0`` and the offer's
  ``a=mid``; format ``0`` for audio/video, the offer's formats otherwise):
  anything but audio/video (data channels, ``text``...), a transport other than
  ``UDP/TLS/RTP/SAVPF``, a section the offerer disabled (port 0 without
  ``a=bundle-only``), a section outside the BUNDLE group when the offer has
  one, and for a viewer a kind without its codec (video without VP8, audio
  without Opus). For a host, a bundled audio/video section without its codec
  is not rejected: :class:`~media.streams.UnsupportedCodecError` is raised
  (``unsupported_codec``).

BUNDLE (RFC 8843):

- The answer has ``a=group:BUNDLE`` only if the offer has one, with the
  accepted mids of the offer's FIRST BUNDLE group (an answerer may accept or
  reject offered groups, never invent one). Sections of other groups, and
  sections outside the group, are rejected: the server has one transport per
  peer. Mids of the group that no m= section has are ignored (ffmpeg's WHIP
  muxer writes one).
- ``a=bundle-only`` sections at port 0 (Firefox's max-bundle, JSEP) are part
  of the bundle: answered like any other, on the server's port.
- The answerer-tagged section (RFC 8843 section 7.3.1) is the first mid of the
  offer's group that is accepted and has a non-zero port in the offer (a
  bundle-only section cannot be it); it is written first in the answer's
  group. Its ICE credentials, fingerprints, setup and candidates (media level,
  else session level) are the offerer's transport parameters; other bundled
  sections may carry different ones (RFC 8843 allows it) and are ignored.
  Rejecting the offerer's own tag is allowed for an initial offer (RFC 8843
  section 7.3.3 forbids it only for a subsequent one); Chromium 156 applies
  such an answer (checked: a viewer whose video offers only H264), older
  browsers are reported not to, so clients should put a section the server
  accepts first.
- An offer without BUNDLE is answered without a group. The server still has a
  single ICE-lite session and DTLS association per peer, so the transport
  uses the first accepted section's transport (its remote candidates are the
  ones returned): that works for the usual case, where every m= line shares
  one ufrag/pwd and certificate and the client sends everything on one
  5-tuple. If accepted m= lines carry different ICE credentials or
  fingerprints, :class:`~media.streams.SdpError` is raised, asking for BUNDLE.

Errors: :class:`~media.streams.SdpError` for an offer that cannot be answered
(unparseable, no ICE credentials, no fingerprint, no setup, no rtcp-mux,
ICE-lite offerer, duplicate or malformed mids, malformed candidates, nothing
to send/receive) and :class:`~media.streams.UnsupportedCodecError` for a host
section without VP8/Opus. Nothing else escapes for any offer text. Bad
:class:`AnswerParams` (trusted, from the server's config) raise ``ValueError``
when built.
"""

from __future__ import annotations

import ipaddress
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

import msgspec

from media.h264 import H264Format, host_answer_fmtp
from media.rtp import ABS_SEND_TIME_URI, ALLOWED_EXTENSION_URIS, MID_URI, RID_URI
from media.sdp import (
    FINGERPRINT,
    FINGERPRINT_ALGORITHMS,
    ICE_PWD,
    ICE_UFRAG,
    SERVER_CODECS,
    TOKEN,
    VIDEO_FEEDBACK,
    Direction,
    MediaSection,
    RtpMap,
    SessionDescription,
    parse_sdp_untrusted,
)
from media.sdp_offer import OfferReading, RemoteCandidate, parse_candidate_untrusted, read_offer_untrusted
from media.streams import MediaKind, SdpError, SinkStream, SourceStream

__all__ = [
    "KEPT_EXTENSION_URIS",
    "Answer",
    "AnswerParams",
    "RemoteCandidate",
    "answer_offer_untrusted",
    "parse_candidate_untrusted",
    "random_ssrcs",
]

Role = Literal["host", "viewer"]
Setup = Literal["active", "passive"]

#: Simulcast layers a host may send (RFC 8853): more are answered as if not offered.
MAX_SIMULCAST_LAYERS = 3
_RID_RE = re.compile(r"[A-Za-z0-9_-]{1,16}")  # RFC 8851 rid-id, bounded

#: Header extensions the answer keeps (with the offer's ids); every other one is dropped.
KEPT_EXTENSION_URIS: frozenset[str] = frozenset({MID_URI, *ALLOWED_EXTENSION_URIS})
_HOST_TYPE_PREFERENCE = 126


# ------------------------------------------------------------------ parameters


class AnswerParams(msgspec.Struct, frozen=True, kw_only=True):
    """What the server puts in an answer (trusted: from its config and its own state).

    ``fingerprint``: ``("sha-256", "AB:CD:...")`` of the server's DTLS
    certificate. ``candidates``: ``(address, port)`` of the UDP host
    candidates, one per configured (or announced) address, all on the one
    media port. The media settings go to a host's answer (``b=AS``,
    ``max-fr``, ``maxaveragebitrate``). For a viewer, ``ssrcs`` gives the
    SSRC the server sends with, per kind (both kinds, non-zero, distinct; see
    :func:`random_ssrcs`), ``cname`` the RTCP CNAME and ``stream_id`` the
    ``a=msid`` stream id (track ids are ``<stream_id>-video`` / ``-audio``).
    ``session_id``: the ``o=`` line's session id (random by default).
    """

    role: Role
    ice_ufrag: str
    ice_pwd: str
    fingerprint: tuple[str, str]
    candidates: list[tuple[str, int]]
    video_bitrate_kbps: int
    max_framerate: int
    audio_bitrate_kbps: int
    ssrcs: dict[MediaKind, int] = msgspec.field(default_factory=dict)
    cname: str = "bitbasel-media"
    stream_id: str = "bitbasel-media"
    session_id: int = msgspec.field(default_factory=lambda: secrets.randbits(62))
    #: a host's video codecs in the server's preference (``[video] codecs``): "VP8", "H264"
    video_codecs: tuple[str, ...] = ("VP8",)

    def __post_init__(self) -> None:
        if self.role not in ("host", "viewer"):
            raise ValueError(f"role must be 'host' or 'viewer', not {self.role!r}")
        if not ICE_UFRAG.fullmatch(self.ice_ufrag):
            raise ValueError("ice_ufrag must be 4 to 256 ice-chars")
        if not ICE_PWD.fullmatch(self.ice_pwd):
            raise ValueError("ice_pwd must be 22 to 256 ice-chars")
        algorithm, value = self.fingerprint
        if algorithm.lower() not in FINGERPRINT_ALGORITHMS or not FINGERPRINT.fullmatch(value):
            raise ValueError(f"fingerprint must be (hash, 'AB:CD:...'), not {self.fingerprint!r}")
        if not self.candidates:
            raise ValueError("an ICE-lite answer needs at least one host candidate")
        for address, port in self.candidates:
            ipaddress.ip_address(address)  # ValueError if not an IP address
            if not 1 <= port <= 65535:
                raise ValueError(f"candidate port {port} out of range")
        if len({port for _, port in self.candidates}) != 1:
            raise ValueError("all candidates must be on the one media port")
        for name in ("video_bitrate_kbps", "max_framerate", "audio_bitrate_kbps"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")
        if not 0 <= self.session_id < 2**63:
            raise ValueError("session_id must be in 0..2**63-1")
        for name in ("cname", "stream_id"):
            if not TOKEN.fullmatch(getattr(self, name)):
                raise ValueError(f"{name} must be 1 to 64 token characters")
        if self.role == "viewer":
            if set(self.ssrcs) != {"audio", "video"}:
                raise ValueError("a viewer's answer needs ssrcs for 'audio' and 'video'")
            if not all(1 <= ssrc <= 0xFFFFFFFF for ssrc in self.ssrcs.values()):
                raise ValueError("SSRCs must be 32-bit and non-zero")
            if self.ssrcs["audio"] == self.ssrcs["video"]:
                raise ValueError("the audio and video SSRCs must differ")


def random_ssrcs() -> dict[MediaKind, int]:
    """Two distinct random non-zero SSRCs, for :attr:`AnswerParams.ssrcs`."""
    video = secrets.randbelow(0xFFFFFFFF) + 1
    audio = video
    while audio == video:
        audio = secrets.randbelow(0xFFFFFFFF) + 1
    return {"video": video, "audio": audio}


# ------------------------------------------------------------------ results


class Answer(msgspec.Struct, frozen=True, kw_only=True):
    """The answer and what was negotiated.

    ``sources`` (host) / ``sinks`` (viewer): for the forwarder; the other list
    is empty. ``remote_*``: the offerer's transport parameters (of the
    answerer-tagged section with BUNDLE, of the first accepted section
    without). ``setup``: the server's DTLS role in the answer (``active`` =
    DTLS client). ``bundle_mids``: the answer's BUNDLE group, tagged mid
    first (``[]`` without BUNDLE). ``remote_candidates`` may be empty (trickle
    ICE); ``remote_end_of_candidates`` says the offer had
    ``a=end-of-candidates``. ``rejected``: (m-line index, reason) of each
    section answered with port 0, for logs.
    """

    sdp: str
    sources: list[SourceStream]
    sinks: list[SinkStream]
    setup: Setup
    remote_ufrag: str
    remote_pwd: str
    remote_fingerprints: list[tuple[str, str]]
    remote_setup: str
    bundle_mids: list[str]
    remote_candidates: list[RemoteCandidate]
    remote_end_of_candidates: bool
    rejected: list[tuple[int, str]]


def answer_offer_untrusted(offer: str, params: AnswerParams) -> Answer:
    """Answer a client's offer as the ICE-lite, DTLS-client server (see the module docstring).

    Raises :class:`SdpError` for an offer that cannot be answered and
    :class:`UnsupportedCodecError` for a host offering video without VP8 or
    audio without Opus; nothing else, whatever the text.
    """
    reading = read_offer_untrusted(parse_sdp_untrusted(offer), params.role, params.video_codecs)
    remote = reading.remote
    setup: Setup = "passive" if remote.setup == "active" else "active"
    sections = _answered_sections(reading, params)
    return Answer(
        sdp=_render(reading, sections, params, setup),
        sources=_sources(sections.values()),
        sinks=_sinks(sections.values()),
        setup=setup,
        remote_ufrag=remote.ufrag,
        remote_pwd=remote.pwd,
        remote_fingerprints=remote.fingerprints,
        remote_setup=remote.setup,
        bundle_mids=reading.bundle_mids,
        remote_candidates=remote.candidates,
        remote_end_of_candidates=remote.end_of_candidates,
        rejected=reading.rejected,
    )


# ------------------------------------------------------------------ the answer, as values


@dataclass(frozen=True)
class AnsweredSection:
    """One accepted m= section of the answer, before it is written.

    ``codec``: the server's codec under the offer's payload type. ``extensions``: the kept
    header extensions, id -> URI. ``echo_allow_mixed``: ``a=extmap-allow-mixed`` at media
    level (the offer has it there, not at session level). ``feedback``: ``a=rtcp-fb``
    values. ``fmtp`` and ``bandwidth_kbps``: what a host is asked for (empty / None for a
    viewer). ``ssrc``: the SSRC the server sends with on a viewer's ``sendonly`` section.
    ``candidates``: the section carries the server's candidates.
    """

    mid: str
    kind: MediaKind
    direction: Direction
    codec: RtpMap
    extensions: dict[int, str]
    echo_allow_mixed: bool
    feedback: list[str]
    fmtp: dict[str, str]
    bandwidth_kbps: int | None
    ssrc: int | None
    candidates: bool
    rids: tuple[str, ...] = ()  # a simulcast host's layers, in its a=simulcast order
    # a viewer's video: its other codec (H.264 beside VP8) and that one's a=fmtp, as offered
    more: tuple[tuple[RtpMap, dict[str, str]], ...] = ()


def _answered_sections(reading: OfferReading, params: AnswerParams) -> dict[int, AnsweredSection]:
    """The accepted sections of the answer, by m-line index, in m-line order."""
    directions = _directions(reading.answered, params.role)
    session_mixed = bool(reading.description.attributes("extmap-allow-mixed"))
    return {
        i: _answered_section(
            offered,
            directions[i],
            params,
            session_mixed=session_mixed,
            candidates=not reading.bundle_mids or i == reading.transport_index,
        )
        for i, offered in reading.answered.items()
    }


def _directions(answered: dict[int, MediaSection], role: Role) -> dict[int, Direction]:
    """Host: ``recvonly`` where the client sends, else ``inactive``. Viewer: ``sendonly`` on
    the first section of each kind the client receives on, else ``inactive``."""
    directions: dict[int, Direction] = {}
    served: set[str] = set()
    for i, section in answered.items():
        if role == "host":
            directions[i] = "recvonly" if section.direction in ("sendonly", "sendrecv") else "inactive"
        elif section.direction in ("recvonly", "sendrecv") and section.kind not in served:
            served.add(section.kind)
            directions[i] = "sendonly"
        else:
            directions[i] = "inactive"
    return directions


def _answered_section(
    offered: MediaSection, direction: Direction, params: AnswerParams, *, session_mixed: bool, candidates: bool
) -> AnsweredSection:
    """``offered``: the offer's section with only the server's codec left."""
    kind: MediaKind = "video" if offered.kind == "video" else "audio"
    codec, *others = _codecs(offered)
    media_mixed = bool(offered.attributes("extmap-allow-mixed"))
    offered_feedback = offered.rtcp_feedback(codec.payload_type) if kind == "video" else []
    host = params.role == "host"
    mixed = session_mixed or media_mixed
    extensions = _kept_extensions(offered, mixed, viewer=not host)
    rids = _simulcast_rids(offered) if host and kind == "video" and direction == "recvonly" else ()
    rid_ext = next((i for i, uri in offered.extmaps().items() if uri == RID_URI and (i <= 14 or mixed)), None)
    if rids and rid_ext is not None:
        extensions[rid_ext] = RID_URI
    else:
        rids = ()  # without the rid extension the layers cannot be told apart: one stream
    return AnsweredSection(
        mid=offered.mid or "",
        kind=kind,
        direction=direction,
        codec=RtpMap(codec.payload_type, _codec_name(kind, codec), codec.clock_rate, codec.channels),
        extensions=extensions,
        echo_allow_mixed=media_mixed and not session_mixed,
        feedback=[feedback for feedback in VIDEO_FEEDBACK if feedback in offered_feedback],
        fmtp=_host_fmtp(kind, offered, codec.payload_type, params) if host else {},
        bandwidth_kbps=(params.video_bitrate_kbps if kind == "video" else params.audio_bitrate_kbps) if host else None,
        ssrc=params.ssrcs[kind] if direction == "sendonly" else None,
        candidates=candidates,
        rids=rids,
        more=tuple(
            (RtpMap(other.payload_type, _codec_name(kind, other), other.clock_rate), offered.fmtp(other.payload_type))
            for other in others
        ),
    )


def _simulcast_rids(offered: MediaSection) -> tuple[str, ...]:
    """The layers of a host's ``a=simulcast:send`` (RFC 8853): in its order, the first of each
    set of alternatives, paused ones (``~``) too, each with its ``a=rid:<id> send`` line; at
    most MAX_SIMULCAST_LAYERS. Fewer than two: no simulcast."""
    declared = set()
    for value in offered.attributes("rid"):
        rid, _, rest = value.partition(" ")
        if rest.split(" ", 1)[0] == "send" and _RID_RE.fullmatch(rid):
            declared.add(rid)
    for value in offered.attributes("simulcast"):
        direction, _, streams = value.strip().partition(" ")
        if direction != "send":
            continue
        rids: list[str] = []
        for alternatives in streams.split(";"):
            rid = alternatives.split(",")[0].strip().removeprefix("~")
            if rid in declared and rid not in rids:
                rids.append(rid)
        return tuple(rids[:MAX_SIMULCAST_LAYERS]) if len(rids) >= 2 else ()
    return ()


def _codecs(section: MediaSection) -> list[RtpMap]:
    """The section's codecs (one; a viewer's video: one or two), with payload types RTP can
    carry."""
    codecs = section.rtpmaps()
    if not codecs or len(codecs) != len(section.formats):
        raise SdpError(f"{section.kind} section: unusable a=rtpmap for {SERVER_CODECS[section.kind][0]}")
    for codec in codecs:
        pt = codec.payload_type
        if pt > 127 or 64 <= pt <= 95:
            raise SdpError(f"{section.kind} payload type {pt} is not usable with rtcp-mux (RFC 5761: 96-127 or 0-63)")
    return codecs


def _kept_extensions(section: MediaSection, allow_mixed: bool, *, viewer: bool) -> dict[int, str]:
    """The offer's header extensions the forwarder uses, each URI once: ids 1-14, and up
    to 255 (two-byte headers) with ``a=extmap-allow-mixed``; for a viewer also abs-send-time
    (the server stamps its own send time: the viewer's REMB estimates the server->viewer hop)."""
    wanted = KEPT_EXTENSION_URIS | {ABS_SEND_TIME_URI} if viewer else KEPT_EXTENSION_URIS
    kept: dict[int, str] = {}
    for ext_id, uri in section.extmaps().items():
        usable = 1 <= ext_id <= 14 or (allow_mixed and ext_id <= 255)
        if uri in wanted and uri not in kept.values() and usable:
            kept[ext_id] = uri
    return kept


def _codec_name(kind: MediaKind, codec: RtpMap) -> str:
    if kind == "video":
        return "H264" if codec.name.upper() == "H264" else "VP8"
    return SERVER_CODECS[kind][0]


def _host_fmtp(kind: MediaKind, offered: MediaSection, payload_type: int, params: AnswerParams) -> dict[str, str]:
    """What a host is asked for: VP8 ``max-fr``; H.264 its own format (media/h264.py);
    Opus ``maxaveragebitrate`` (bps), and ``useinbandfec=1`` if the offer asks for it."""
    if kind == "video":
        codec = next(r for r in offered.rtpmaps() if r.payload_type == payload_type)
        if codec.name.upper() == "H264":
            return host_answer_fmtp(H264Format(payload_type, offered.fmtp(payload_type)))
        return {"max-fr": str(params.max_framerate)}
    fmtp = {"maxaveragebitrate": str(params.audio_bitrate_kbps * 1000)}
    if offered.fmtp(payload_type).get("useinbandfec") == "1":
        fmtp["useinbandfec"] = "1"
    return fmtp


def _sources(sections: Iterable[AnsweredSection]) -> list[SourceStream]:
    """What a host sends: one per section answered ``recvonly``."""
    return [
        SourceStream(
            kind=section.kind,
            payload_type=section.codec.payload_type,
            clock_rate=section.codec.clock_rate,
            extensions=dict(section.extensions),
            rids=section.rids,
            codec=section.codec.name,
        )
        for section in sections
        if section.direction == "recvonly"
    ]


def _sinks(sections: Iterable[AnsweredSection]) -> list[SinkStream]:
    """What the server sends to a viewer: one per section answered ``sendonly``."""
    return [
        SinkStream(
            kind=section.kind,
            ssrc=section.ssrc,
            payload_type=section.codec.payload_type,
            clock_rate=section.codec.clock_rate,
            extensions={uri: ext_id for ext_id, uri in section.extensions.items()},
            mid=section.mid,
            payload_types={
                codec.name: codec.payload_type for codec in [section.codec, *(other for other, _ in section.more)]
            },
        )
        for section in sections
        if section.ssrc is not None
    ]


# ------------------------------------------------------------------ the text


def _render(reading: OfferReading, sections: dict[int, AnsweredSection], params: AnswerParams, setup: Setup) -> str:
    """The answer's SDP, every m= line of the offer in its order."""
    media = []
    for i, offered in enumerate(reading.description.media):
        section = sections.get(i)
        if section is None:
            media.append(_rejected_section(offered, reading.mids[i]))
        else:
            media.append(
                MediaSection(
                    offered.kind,
                    params.candidates[0][1],
                    offered.proto,
                    [str(section.codec.payload_type), *(str(codec.payload_type) for codec, _ in section.more)],
                    _section_lines(section, params, setup),
                )
            )
    return SessionDescription(_session_lines(reading, params), media).to_text()


def _session_lines(reading: OfferReading, params: AnswerParams) -> list[str]:
    lines = ["v=0", f"o=- {params.session_id} 2 IN IP4 0.0.0.0", "s=-", "t=0 0", "a=ice-lite"]
    if reading.bundle_mids:
        lines.append("a=group:BUNDLE " + " ".join(reading.bundle_mids))
    if reading.description.attributes("extmap-allow-mixed"):
        lines.append("a=extmap-allow-mixed")
    if params.role == "viewer":
        lines.append("a=msid-semantic:WMS *")
    return lines


def _section_lines(section: AnsweredSection, params: AnswerParams, setup: Setup) -> list[str]:
    """An accepted section's lines in RFC 8866 order (``c=``, ``b=``, then attributes)."""
    address = params.candidates[0][0]
    lines = [f"c=IN IP{ipaddress.ip_address(address).version} {address}"]
    if section.bandwidth_kbps is not None:
        lines += [f"b=AS:{section.bandwidth_kbps}", f"b=TIAS:{section.bandwidth_kbps * 1000}"]
    lines += [f"a=mid:{section.mid}", f"a={section.direction}"]
    if section.echo_allow_mixed:
        lines.append("a=extmap-allow-mixed")
    lines += [
        f"a=ice-ufrag:{params.ice_ufrag}",
        f"a=ice-pwd:{params.ice_pwd}",
        f"a=fingerprint:{params.fingerprint[0].lower()} {params.fingerprint[1].upper()}",
        f"a=setup:{setup}",
        "a=rtcp-mux",
    ]
    lines += [f"a=extmap:{ext_id} {uri}" for ext_id, uri in section.extensions.items()]
    lines += _codec_lines(section)
    if section.rids:  # RFC 8853: the layers the server takes, as the host named them
        lines += [f"a=rid:{rid} recv" for rid in section.rids]
        lines.append("a=simulcast:recv " + ";".join(section.rids))
    if section.ssrc is not None:
        kind = section.kind
        lines += [f"a=msid:{params.stream_id} {params.stream_id}-{kind}", f"a=ssrc:{section.ssrc} cname:{params.cname}"]
    if section.candidates:
        lines += _candidate_lines(params.candidates)
    return lines


def _codec_lines(section: AnsweredSection) -> list[str]:
    codec = section.codec
    pt = codec.payload_type
    channels = f"/{codec.channels}" if codec.channels is not None else ""
    lines = [f"a=rtpmap:{pt} {codec.name}/{codec.clock_rate}{channels}"]
    lines += [f"a=rtcp-fb:{pt} {feedback}" for feedback in section.feedback]
    if section.fmtp:
        lines.append(f"a=fmtp:{pt} " + ";".join(f"{key}={value}" for key, value in section.fmtp.items()))
    for other, fmtp in section.more:
        lines.append(f"a=rtpmap:{other.payload_type} {other.name}/{other.clock_rate}")
        lines += [f"a=rtcp-fb:{other.payload_type} {feedback}" for feedback in section.feedback]
        if fmtp:
            lines.append(f"a=fmtp:{other.payload_type} " + ";".join(f"{key}={value}" for key, value in fmtp.items()))
    return lines


def _candidate_lines(candidates: list[tuple[str, int]]) -> list[str]:
    """One UDP host candidate per address (RFC 8445 section 5.1.2.1 priorities, local
    preference 65535, 65534...), then ``a=end-of-candidates``: a lite agent does not trickle."""
    lines = []
    for i, (address, port) in enumerate(candidates):
        local_preference = max(65535 - i, 0)
        priority = (_HOST_TYPE_PREFERENCE << 24) | (local_preference << 8) | (256 - 1)
        lines.append(f"a=candidate:{i + 1} 1 udp {priority} {address} {port} typ host")
    lines.append("a=end-of-candidates")
    return lines


def _rejected_section(offered: MediaSection, mid: str | None) -> MediaSection:
    """Port 0, ``c=IN IP4 0.0.0.0`` and the offer's mid; format ``0`` for audio/video."""
    formats = ["0"] if offered.kind in SERVER_CODECS or not offered.formats else list(offered.formats)
    lines = ["c=IN IP4 0.0.0.0"] + ([f"a=mid:{mid}"] if mid is not None else [])
    return MediaSection(offered.kind, 0, offered.proto, formats, lines)
