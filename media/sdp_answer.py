"""Sans-IO SDP answerer for the server's own transport: text in, text out.

The server answers every offer itself: one UDP port for every peer, an ICE-lite
agent of its own, DTLS done by itself. No aiortc, asyncio or trio here.
:func:`answer_offer_untrusted` takes a client's offer and an
:class:`AnswerParams` (local ICE credentials, certificate fingerprint, host
candidates, role, media settings, the viewer's SSRCs) and returns an
:class:`Answer`: the answer text, what the forwarder needs
(:class:`~media.streams.SourceStream` for a host,
:class:`~media.streams.SinkStream` for a viewer) and what the transport needs
from the offer (remote ICE credentials, DTLS fingerprints and role, remote
candidates, the BUNDLE group).

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
  Opus/48000 for audio (:func:`media.sdp.restrict_offer_untrusted` cuts the
  offer down; rtx, red, ulpfec, H264, VP9... are gone). A payload type in
  64-95 (it would collide with RTCP under rtcp-mux, RFC 5761 section 4) or
  above 127 is refused.
- ``a=rtcp-fb``: video copies what the offer lists among ``nack``,
  ``nack pli``, ``ccm fir`` and ``goog-remb`` for the codec (or ``*``);
  ``transport-cc`` and anything else are dropped (the server has no
  transport-wide congestion control). Audio gets none. (This is
  :func:`media.sdp.decorate_host_answer` / :func:`~media.sdp.decorate_viewer_answer`,
  which also add, for a host, ``b=AS``/``b=TIAS``, VP8 ``max-fr`` and Opus
  ``maxaveragebitrate`` / ``useinbandfec``.)
- ``a=extmap``: only the header extensions the forwarder uses are kept, with
  the offer's ids: sdes:mid, ssrc-audio-level and urn:3gpp:video-orientation
  (:data:`KEPT_EXTENSION_URIS`). abs-send-time, transport-cc, toffset,
  playout-delay... are dropped. Ids 1-14 are kept; 15-255 only where the offer
  has ``a=extmap-allow-mixed`` (two-byte headers). A direction on the offer's
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
  (``unsupported_codec``), as :func:`~media.sdp.restrict_offer_untrusted` does.

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

import dataclasses
import ipaddress
import re
import secrets
from typing import Literal

import msgspec

from media.rtp import ALLOWED_EXTENSION_URIS, MID_URI
from media.sdp import (
    SERVER_CODECS,
    MediaSection,
    RtpMap,
    SessionDescription,
    _find_server_codec,
    decorate_host_answer,
    decorate_viewer_answer,
    parse_sdp_untrusted,
    restrict_offer_untrusted,
    sinks_from_answer,
    sources_from_answer,
)
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

#: Header extensions the answer keeps (with the offer's ids); every other one is dropped.
KEPT_EXTENSION_URIS: frozenset[str] = frozenset({MID_URI, *ALLOWED_EXTENSION_URIS})
#: The one RTP profile accepted (DTLS-SRTP over UDP, with feedback).
ACCEPTED_PROTO = "UDP/TLS/RTP/SAVPF"
#: Hash functions of RFC 8122 / RFC 4572 a fingerprint may use.
FINGERPRINT_ALGORITHMS: frozenset[str] = frozenset({"sha-1", "sha-224", "sha-256", "sha-384", "sha-512"})
MAX_REMOTE_CANDIDATES = 64

_ICE_CHARS = "A-Za-z0-9+/"
_UFRAG_RE = re.compile(f"[{_ICE_CHARS}]{{4,256}}")
_PWD_RE = re.compile(f"[{_ICE_CHARS}]{{22,256}}")
_FOUNDATION_RE = re.compile(f"[{_ICE_CHARS}]{{1,32}}")
_FINGERPRINT_RE = re.compile(r"[0-9A-Fa-f]{2}(?::[0-9A-Fa-f]{2}){15,63}")
# RFC 8866 token (mids, msid ids, cname), bounded
_TOKEN_RE = re.compile(r"[!#$%&'*+\-.0-9A-Z^_`a-z{|}~]{1,64}")
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

    def __post_init__(self) -> None:
        if self.role not in ("host", "viewer"):
            raise ValueError(f"role must be 'host' or 'viewer', not {self.role!r}")
        if not _UFRAG_RE.fullmatch(self.ice_ufrag):
            raise ValueError("ice_ufrag must be 4 to 256 ice-chars")
        if not _PWD_RE.fullmatch(self.ice_pwd):
            raise ValueError("ice_pwd must be 22 to 256 ice-chars")
        algorithm, value = self.fingerprint
        if algorithm.lower() not in FINGERPRINT_ALGORITHMS or not _FINGERPRINT_RE.fullmatch(value):
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
            if not _TOKEN_RE.fullmatch(getattr(self, name)):
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


class RemoteCandidate(msgspec.Struct, frozen=True):
    """One ``a=candidate`` of the offer (RFC 8839 section 5.1), as written.

    ``address`` is an IP address or an mDNS name (``....local``); ``transport``
    is lower case (``udp``, ``tcp``...): the caller keeps the ones it can use.
    """

    foundation: str
    component: int
    transport: str
    priority: int
    address: str
    port: int
    type: str
    related_address: str | None = None
    related_port: int | None = None
    tcptype: str | None = None


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


# ------------------------------------------------------------------ candidates


def _uint(text: str, maximum: int, what: str, line: str) -> int:
    if not (text.isascii() and text.isdigit() and len(text) <= 10):
        raise SdpError(f"malformed a=candidate (bad {what}): {line[:80]!r}")
    value = int(text)
    if value > maximum:
        raise SdpError(f"malformed a=candidate ({what} out of range): {line[:80]!r}")
    return value


def parse_candidate_untrusted(text: str) -> RemoteCandidate:
    """Parse one candidate: ``[a=][candidate:]foundation component transport priority
    address port typ type [raddr A] [rport P] [tcptype T] [name value]...``.

    Raises only :class:`SdpError`. Unknown extension pairs (``generation``,
    ``ufrag``, ``network-id``...) are skipped.
    """
    value = text.strip()
    value = value.removeprefix("a=").removeprefix("candidate:")
    fields = value.split()
    if len(fields) < 8 or fields[6] != "typ" or len(fields) % 2:
        raise SdpError(f"malformed a=candidate: {text[:80]!r}")
    foundation, component, transport, priority, address, port, _, cand_type = fields[:8]
    if not _FOUNDATION_RE.fullmatch(foundation):
        raise SdpError(f"malformed a=candidate (bad foundation): {text[:80]!r}")
    extras = dict(zip(fields[8::2], fields[9::2], strict=True))
    related_port = extras.get("rport")
    return RemoteCandidate(
        foundation=foundation,
        component=_uint(component, 256, "component", text),
        transport=transport.lower(),
        priority=_uint(priority, 0xFFFFFFFF, "priority", text),
        address=address,
        port=_uint(port, 65535, "port", text),
        type=cand_type,
        related_address=extras.get("raddr"),
        related_port=_uint(related_port, 65535, "rport", text) if related_port is not None else None,
        tcptype=extras.get("tcptype"),
    )


def _candidate_lines(candidates: list[tuple[str, int]]) -> list[str]:
    lines = []
    for i, (address, port) in enumerate(candidates):
        local_preference = max(65535 - i, 0)
        priority = (_HOST_TYPE_PREFERENCE << 24) | (local_preference << 8) | (256 - 1)
        lines.append(f"a=candidate:{i + 1} 1 udp {priority} {address} {port} typ host")
    lines.append("a=end-of-candidates")
    return lines


# ------------------------------------------------------------------ the offer


def _session_attributes(description: SessionDescription) -> MediaSection:
    """The session-level lines wrapped as a section, to read them with ``attributes()``."""
    return MediaSection("", 0, "", [], list(description.session_lines))


def _transport_values(section: MediaSection, session: MediaSection, name: str) -> list[str]:
    """Media-level values of a transport attribute, else the session-level ones."""
    return section.attributes(name) or session.attributes(name)


def _label(index: int, section: MediaSection, mid: str | None) -> str:
    return f"m-line {index} ({section.kind[:20]}" + (f", mid {mid})" if mid is not None else ")")


def _checked_mids(description: SessionDescription) -> list[str | None]:
    mids: list[str | None] = []
    for section in description.media:
        mid = section.mid
        if mid is not None:
            if not _TOKEN_RE.fullmatch(mid):
                raise SdpError(f"malformed a=mid:{mid[:40]!r}")
            if mid in mids:
                raise SdpError(f"two m= sections have a=mid:{mid}")
        mids.append(mid)
    return mids


def _offered_group(description: SessionDescription, mids: list[str | None]) -> list[str] | None:
    """The offer's first BUNDLE group (known mids, each once), or None without BUNDLE."""
    groups = [group for group in description.bundle_groups() if group]
    if not groups:
        return None
    group: list[str] = []
    for mid in groups[0]:
        if mid in mids and mid not in group:
            group.append(mid)
    return group


def _rejection(section: MediaSection, mid: str | None, group: list[str] | None, role: Role) -> str | None:
    """Why this offered section is answered with port 0 (None: it is answered)."""
    if section.kind not in SERVER_CODECS:
        return "not audio or video"
    if any(len(fmt) > 10 for fmt in section.formats):  # (also keeps int() in rtpmaps() bounded)
        raise SdpError(f"malformed m= line: format {section.formats[0][:20]!r}... too long")
    if section.proto.upper() != ACCEPTED_PROTO:
        return f"transport {section.proto[:40]!r} is not {ACCEPTED_PROTO}"
    in_group = group is not None and mid is not None and mid in group
    if section.port == 0 and not (in_group and section.attributes("bundle-only")):
        return "port 0 (disabled by the offerer)"
    if group is not None and not in_group:
        return "not in the offer's (first) BUNDLE group"
    if role == "viewer" and _find_server_codec(section) is None:
        return f"{section.kind} offered without {SERVER_CODECS[section.kind][0]}"
    return None


def _credentials(section: MediaSection, session: MediaSection) -> tuple[str, str, frozenset[tuple[str, str]]]:
    """(ufrag, pwd, fingerprints) as they stand in the offer, for comparing sections."""
    ufrag = next(iter(_transport_values(section, session, "ice-ufrag")), "").strip()
    pwd = next(iter(_transport_values(section, session, "ice-pwd")), "").strip()
    fingerprints = frozenset(_parse_fingerprints(_transport_values(section, session, "fingerprint")))
    return ufrag, pwd, fingerprints


def _parse_fingerprints(values: list[str]) -> list[tuple[str, str]]:
    out = []
    for value in values:
        parts = value.split()
        if len(parts) != 2 or not _FINGERPRINT_RE.fullmatch(parts[1]):
            raise SdpError(f"malformed a=fingerprint:{value[:80]!r}")
        algorithm = parts[0].lower()
        if algorithm in FINGERPRINT_ALGORITHMS and (algorithm, parts[1].upper()) not in out:
            out.append((algorithm, parts[1].upper()))
    return out


class _Transport(msgspec.Struct, frozen=True):
    ufrag: str
    pwd: str
    fingerprints: list[tuple[str, str]]
    setup: str
    candidates: list[RemoteCandidate]
    end_of_candidates: bool


def _remote_transport(section: MediaSection, session: MediaSection, where: str) -> _Transport:
    ufrags = _transport_values(section, session, "ice-ufrag")
    pwds = _transport_values(section, session, "ice-pwd")
    if not ufrags:
        raise SdpError(f"offer has no a=ice-ufrag (for {where})")
    if not pwds:
        raise SdpError(f"offer has no a=ice-pwd (for {where})")
    ufrag, pwd = ufrags[0].strip(), pwds[0].strip()
    if not _UFRAG_RE.fullmatch(ufrag):
        raise SdpError("offer's a=ice-ufrag must be 4 to 256 ice-chars (RFC 8839)")
    if not _PWD_RE.fullmatch(pwd):
        raise SdpError("offer's a=ice-pwd must be 22 to 256 ice-chars (RFC 8839)")
    fingerprint_values = _transport_values(section, session, "fingerprint")
    if not fingerprint_values:
        raise SdpError(f"offer has no a=fingerprint (for {where}): DTLS-SRTP needs the peer's certificate hash")
    fingerprints = _parse_fingerprints(fingerprint_values)
    if not fingerprints:
        raise SdpError("offer has no a=fingerprint with a supported hash (sha-1, sha-224, sha-256, sha-384, sha-512)")
    setups = _transport_values(section, session, "setup")
    if not setups:
        raise SdpError(f"offer has no a=setup (for {where}): an offer must say actpass, active or passive")
    setup = setups[0].strip().lower()
    if setup not in ("actpass", "active", "passive"):
        raise SdpError(f"offer's a=setup:{setup[:20]!r} is not actpass, active or passive")
    if not section.attributes("rtcp-mux"):
        raise SdpError(f"offer's {where} has no a=rtcp-mux: the server multiplexes RTP and RTCP (RFC 5761)")
    candidate_values = section.attributes("candidate")
    if len(candidate_values) > MAX_REMOTE_CANDIDATES:
        raise SdpError(f"offer has more than {MAX_REMOTE_CANDIDATES} candidates")
    candidates = [parse_candidate_untrusted(value) for value in candidate_values]
    end = bool(section.attributes("end-of-candidates") or session.attributes("end-of-candidates"))
    return _Transport(ufrag, pwd, fingerprints, setup, candidates, end)


# ------------------------------------------------------------------ the answer


def _codec(section: MediaSection) -> RtpMap:
    """The one codec restrict_offer_untrusted left, with a payload type RTP can carry."""
    codecs = section.rtpmaps()
    if len(codecs) != 1:
        raise SdpError(f"{section.kind} section: unusable a=rtpmap for {SERVER_CODECS[section.kind][0]}")
    pt = codecs[0].payload_type
    if pt > 127 or 64 <= pt <= 95:
        raise SdpError(f"{section.kind} payload type {pt} is not usable with rtcp-mux (RFC 5761: 96-127 or 0-63)")
    return codecs[0]


def _extmap_lines(section: MediaSection, allow_mixed: bool) -> list[str]:
    lines = []
    seen: set[str] = set()
    for ext_id, uri in section.extmaps().items():
        usable = 1 <= ext_id <= 14 or (allow_mixed and ext_id <= 255)
        if uri in KEPT_EXTENSION_URIS and uri not in seen and usable:
            seen.add(uri)
            lines.append(f"a=extmap:{ext_id} {uri}")
    return lines


def _rejected_section(offered: MediaSection, mid: str | None) -> MediaSection:
    formats = ["0"] if offered.kind in SERVER_CODECS or not offered.formats else list(offered.formats)
    lines = ["c=IN IP4 0.0.0.0"] + ([f"a=mid:{mid}"] if mid is not None else [])
    return MediaSection(offered.kind, 0, offered.proto, formats, lines)


def answer_offer_untrusted(offer: str, params: AnswerParams) -> Answer:
    """Answer a client's offer as the ICE-lite, DTLS-client server (see the module docstring).

    Raises :class:`SdpError` for an offer that cannot be answered and
    :class:`UnsupportedCodecError` for a host offering video without VP8 or
    audio without Opus; nothing else, whatever the text.
    """
    role = params.role
    description = parse_sdp_untrusted(offer)
    session = _session_attributes(description)
    if session.attributes("ice-lite"):
        raise SdpError("offer is ICE-lite: the server is ICE-lite too, and two lite agents cannot connect")
    mids = _checked_mids(description)
    group = _offered_group(description, mids)

    reasons = [_rejection(section, mid, group, role) for section, mid in zip(description.media, mids, strict=True)]
    accepted = [i for i, reason in enumerate(reasons) if reason is None]
    rejected = [(i, reason) for i, reason in enumerate(reasons) if reason is not None]
    if not accepted:
        verb = "send" if role == "host" else "receive"
        why = "; ".join(f"{_label(i, description.media[i], mids[i])}: {reason}" for i, reason in rejected[:4])
        raise SdpError(f"offer has no audio or video to {verb} ({why})")

    # restrict_offer_untrusted checks mids, codecs (UnsupportedCodecError for a host)
    # and directions, and keeps one codec per section. Bundle-only sections get a
    # placeholder port so that it does not take them for disabled ones.
    subset = [dataclasses.replace(description.media[i], port=description.media[i].port or 9) for i in accepted]
    restricted_text = restrict_offer_untrusted(
        SessionDescription(description.session_lines, subset).to_text(), role=role
    )
    restricted = dict(zip(accepted, parse_sdp_untrusted(restricted_text).media, strict=True))

    if group is not None:
        position = {mid: n for n, mid in enumerate(group)}
        in_order = sorted(accepted, key=lambda i: position[mids[i] or ""])
        tags = [i for i in in_order if description.media[i].port != 0]
        if not tags:
            raise SdpError(
                "the BUNDLE group has no accepted m= section with a port: "
                "a bundle-only section cannot carry the transport (RFC 8843 section 7.3.1)"
            )
        transport_index = tags[0]
        bundle_indexes = [transport_index] + [i for i in in_order if i != transport_index]
        bundle_mids = [mids[i] or "" for i in bundle_indexes]
    else:
        transport_index = accepted[0]
        bundle_mids = []
        first = _credentials(description.media[transport_index], session)
        for i in accepted[1:]:
            if _credentials(description.media[i], session) != first:
                raise SdpError(
                    f"offer without a=group:BUNDLE has m= sections with different ICE credentials or "
                    f"fingerprints ({_label(i, description.media[i], mids[i])}): the server has one transport "
                    "per peer, offer BUNDLE (bundlePolicy 'max-bundle', 'balanced' or 'max-compat'; "
                    "GStreamer's webrtcbin: 'max-bundle' or 'max-compat')"
                )
    where = _label(transport_index, description.media[transport_index], mids[transport_index])
    remote = _remote_transport(description.media[transport_index], session, where)
    if group is None:
        for i in accepted[1:]:
            if not description.media[i].attributes("rtcp-mux"):
                where_i = _label(i, description.media[i], mids[i])
                raise SdpError(f"offer's {where_i} has no a=rtcp-mux: the server multiplexes RTP and RTCP (RFC 5761)")
    setup: Setup = "passive" if remote.setup == "active" else "active"

    address, port = params.candidates[0]
    c_line = f"c=IN IP{ipaddress.ip_address(address).version} {address}"
    transport_lines = [
        f"a=ice-ufrag:{params.ice_ufrag}",
        f"a=ice-pwd:{params.ice_pwd}",
        f"a=fingerprint:{params.fingerprint[0].lower()} {params.fingerprint[1].upper()}",
        f"a=setup:{setup}",
        "a=rtcp-mux",
    ]
    candidate_lines = _candidate_lines(params.candidates)
    session_mixed = bool(session.attributes("extmap-allow-mixed"))
    served: set[str] = set()
    sections: list[MediaSection] = []
    aligned: list[MediaSection] = []  # the offer, restricted where answered, for decorate_*_answer
    for i, offered in enumerate(description.media):
        section = restricted.get(i)
        if section is None:
            sections.append(_rejected_section(offered, mids[i]))
            aligned.append(offered)
            continue
        aligned.append(section)
        kind: MediaKind = "video" if section.kind == "video" else "audio"
        codec = _codec(section)
        pt = codec.payload_type
        media_mixed = bool(section.attributes("extmap-allow-mixed"))
        sending = False
        if role == "host":
            direction = "recvonly" if section.direction in ("sendonly", "sendrecv") else "inactive"
        elif section.direction in ("recvonly", "sendrecv") and kind not in served:
            served.add(kind)
            direction, sending = "sendonly", True
        else:
            direction = "inactive"
        lines = [c_line, f"a=mid:{mids[i]}", f"a={direction}"]
        if media_mixed and not session_mixed:
            lines.append("a=extmap-allow-mixed")
        lines += transport_lines
        lines += _extmap_lines(section, session_mixed or media_mixed)
        channels = f"/{codec.channels}" if codec.channels is not None else ""
        lines.append(f"a=rtpmap:{pt} {SERVER_CODECS[kind][0]}/{codec.clock_rate}{channels}")
        if sending:
            lines += [
                f"a=msid:{params.stream_id} {params.stream_id}-{kind}",
                f"a=ssrc:{params.ssrcs[kind]} cname:{params.cname}",
            ]
        if group is None or i == transport_index:
            lines += candidate_lines
        sections.append(MediaSection(section.kind, port, section.proto, [str(pt)], lines))

    session_lines = ["v=0", f"o=- {params.session_id} 2 IN IP4 0.0.0.0", "s=-", "t=0 0", "a=ice-lite"]
    if group is not None:
        session_lines.append("a=group:BUNDLE " + " ".join(bundle_mids))
    if session_mixed:
        session_lines.append("a=extmap-allow-mixed")
    if role == "viewer":
        session_lines.append("a=msid-semantic:WMS *")
    answer = SessionDescription(session_lines, sections).to_text()
    aligned_offer = SessionDescription(description.session_lines, aligned).to_text()
    sources: list[SourceStream] = []
    sinks: list[SinkStream] = []
    if role == "host":
        answer = decorate_host_answer(
            answer,
            aligned_offer,
            video_bitrate_kbps=params.video_bitrate_kbps,
            max_framerate=params.max_framerate,
            audio_bitrate_kbps=params.audio_bitrate_kbps,
        )
        sources = sources_from_answer(answer)
    else:
        answer = decorate_viewer_answer(answer, aligned_offer)
        sinks = sinks_from_answer(answer)
    return Answer(
        sdp=answer,
        sources=sources,
        sinks=sinks,
        setup=setup,
        remote_ufrag=remote.ufrag,
        remote_pwd=remote.pwd,
        remote_fingerprints=remote.fingerprints,
        remote_setup=remote.setup,
        bundle_mids=bundle_mids,
        remote_candidates=remote.candidates,
        remote_end_of_candidates=remote.end_of_candidates,
        rejected=rejected,
    )
