"""Sans-IO SDP helpers for the transport adapter.

No aiortc, asyncio or trio here: text in, text (or plain values) out.

The transport uses these to

- check a client's offer and cut it down to the one codec the server speaks
  per kind (VP8 for video, Opus for audio) before aiortc sees it, so that the
  answer has no rtx / red / ulpfec / H264 and the payload types are the
  client's (:func:`restrict_offer_untrusted`);
- add what aiortc does not write to the answer: bandwidth lines, the VP8
  ``max-fr`` and Opus ``maxaveragebitrate`` fmtp parameters, ``ccm fir``
  feedback (:func:`decorate_host_answer`, :func:`decorate_viewer_answer`), and
  rewrite the host candidates' address to ``announced_address``
  (:func:`rewrite_host_candidates`);
- read back from the answer what the forwarder needs
  (:func:`sources_from_answer`, :func:`sinks_from_answer`).

The parser keeps every line as it came (only line endings are normalised), so
an edited description differs from the input only where it was edited.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Literal

from media.streams import (
    MediaKind,
    SdpError,
    SinkStream,
    SourceStream,
    UnsupportedCodecError,
)

Direction = Literal["sendrecv", "sendonly", "recvonly", "inactive"]
DIRECTIONS: tuple[Direction, ...] = ("sendrecv", "sendonly", "recvonly", "inactive")

#: The one codec the server accepts per kind: kind -> (encoding name, clock rate).
SERVER_CODECS: dict[str, tuple[str, int]] = {"video": ("VP8", 90000), "audio": ("opus", 48000)}

MAX_SDP_LENGTH = 64 * 1024
MAX_MEDIA_SECTIONS = 32


@dataclass
class RtpMap:
    payload_type: int
    name: str  # encoding name as written ("VP8", "opus", ...)
    clock_rate: int
    channels: int | None = None


@dataclass
class MediaSection:
    """One ``m=`` section: the ``m=`` line split up, then its other lines verbatim."""

    kind: str
    port: int
    proto: str
    formats: list[str]
    lines: list[str] = field(default_factory=list)

    # -- reading -----------------------------------------------------------------

    def attributes(self, name: str) -> list[str]:
        """Values of every ``a=name:value`` line (``""`` for a flag ``a=name``)."""
        out = []
        for line in self.lines:
            if not line.startswith("a="):
                continue
            key, sep, value = line[2:].partition(":")
            if key == name:
                out.append(value if sep else "")
        return out

    @property
    def mid(self) -> str | None:
        values = self.attributes("mid")
        return values[0].strip() if values else None

    @property
    def direction(self) -> Direction:
        for line in self.lines:
            value = line[2:].strip()
            if line.startswith("a=") and value in DIRECTIONS:
                return value
        return "sendrecv"

    @property
    def rejected(self) -> bool:
        return self.port == 0

    def rtpmaps(self) -> list[RtpMap]:
        """The ``a=rtpmap`` entries, in the order of the ``m=`` line's formats."""
        by_pt: dict[int, RtpMap] = {}
        for value in self.attributes("rtpmap"):
            pt_text, _, encoding = value.partition(" ")
            parts = encoding.strip().split("/")
            try:
                pt = int(pt_text)
                clock_rate = int(parts[1])
                channels = int(parts[2]) if len(parts) > 2 and parts[2] else None
            except (ValueError, IndexError):
                raise SdpError(f"malformed a=rtpmap:{value!r}") from None
            by_pt[pt] = RtpMap(pt, parts[0], clock_rate, channels)
        out = []
        for fmt in self.formats:
            if fmt.isdigit() and int(fmt) in by_pt:
                out.append(by_pt[int(fmt)])
        return out

    def fmtp(self, payload_type: int) -> dict[str, str]:
        """The ``a=fmtp`` parameters of one payload type (``key=value;...``)."""
        for value in self.attributes("fmtp"):
            pt_text, _, params = value.partition(" ")
            if pt_text == str(payload_type):
                return parse_fmtp_params(params)
        return {}

    def rtcp_feedback(self, payload_type: int) -> list[str]:
        out = []
        for value in self.attributes("rtcp-fb"):
            pt_text, _, fb = value.partition(" ")
            if pt_text in (str(payload_type), "*"):
                out.append(" ".join(fb.split()))
        return out

    def extmaps(self) -> dict[int, str]:
        """Header extensions: id -> URI (``a=extmap:ID[/direction] URI``)."""
        out: dict[int, str] = {}
        for value in self.attributes("extmap"):
            head, _, rest = value.partition(" ")
            try:
                ext_id = int(head.partition("/")[0])
            except ValueError:
                raise SdpError(f"malformed a=extmap:{value!r}") from None
            uri = rest.split()[0] if rest.split() else ""
            if not uri:
                raise SdpError(f"malformed a=extmap:{value!r}")
            out[ext_id] = uri
        return out

    def ssrcs(self) -> list[int]:
        """SSRCs of the ``a=ssrc`` lines, first appearance first, no repeats."""
        out: list[int] = []
        for value in self.attributes("ssrc"):
            try:
                ssrc = int(value.split()[0])
            except (ValueError, IndexError):
                raise SdpError(f"malformed a=ssrc:{value!r}") from None
            if ssrc not in out:
                out.append(ssrc)
        return out

    # -- editing -----------------------------------------------------------------

    def keep_only_payload_type(self, payload_type: int) -> None:
        """Drop every other format and the rtpmap / fmtp / rtcp-fb lines that name one."""
        keep = str(payload_type)
        self.formats = [keep]
        kept = []
        for line in self.lines:
            if line.startswith(("a=rtpmap:", "a=fmtp:", "a=rtcp-fb:")):
                pt_text = line.partition(":")[2].partition(" ")[0]
                if pt_text not in (keep, "*"):
                    continue
            kept.append(line)
        self.lines = kept

    def set_fmtp_params(self, payload_type: int, params: dict[str, str]) -> None:
        """Add or overwrite fmtp parameters of one payload type, keeping the others."""
        merged = self.fmtp(payload_type)
        merged.update(params)
        text = f"a=fmtp:{payload_type} " + ";".join(f"{k}={v}" for k, v in merged.items())
        prefix = f"a=fmtp:{payload_type} "
        for i, line in enumerate(self.lines):
            if line.startswith(prefix) or line == prefix.rstrip():
                self.lines[i] = text
                return
        self._insert_after_last(text, f"a=rtpmap:{payload_type} ")

    def add_rtcp_feedback(self, payload_type: int, feedback: str) -> None:
        if feedback in self.rtcp_feedback(payload_type):
            return
        text = f"a=rtcp-fb:{payload_type} {feedback}"
        self._insert_after_last(text, f"a=rtcp-fb:{payload_type} ", f"a=rtpmap:{payload_type} ")

    def set_bandwidth(self, kbps: int) -> None:
        """Replace the section's ``b=`` lines with ``b=AS`` (kbps) and ``b=TIAS`` (bps)."""
        self.lines = [line for line in self.lines if not line.startswith("b=")]
        at = 0
        for i, line in enumerate(self.lines):
            if line.startswith(("i=", "c=")):
                at = i + 1
        self.lines[at:at] = [f"b=AS:{kbps}", f"b=TIAS:{kbps * 1000}"]

    def _insert_after_last(self, text: str, *prefixes: str) -> None:
        for prefix in prefixes:
            positions = [i for i, line in enumerate(self.lines) if line.startswith(prefix)]
            if positions:
                self.lines.insert(positions[-1] + 1, text)
                return
        self.lines.append(text)

    def to_lines(self) -> list[str]:
        m_line = f"m={self.kind} {self.port} {self.proto} {' '.join(self.formats)}".rstrip()
        return [m_line, *self.lines]


@dataclass
class SessionDescription:
    session_lines: list[str]
    media: list[MediaSection]

    def bundle_groups(self) -> list[list[str]]:
        groups = []
        for line in self.session_lines:
            if line.startswith("a=group:BUNDLE"):
                groups.append(line.split()[1:])
        return groups

    def to_text(self) -> str:
        lines = list(self.session_lines)
        for section in self.media:
            lines.extend(section.to_lines())
        return "\r\n".join(lines) + "\r\n"


def parse_fmtp_params(text: str) -> dict[str, str]:
    params: dict[str, str] = {}
    for item in text.split(";"):
        item = item.strip()
        if not item:
            continue
        key, _, value = item.partition("=")
        params[key.strip()] = value.strip()
    return params


def parse_sdp_untrusted(text: str) -> SessionDescription:
    """Split an SDP into session lines and media sections. Raises only :class:`SdpError`."""
    if not isinstance(text, str):
        raise SdpError("SDP must be a string")
    if len(text) > MAX_SDP_LENGTH:
        raise SdpError("SDP too long")
    lines = [line for line in text.replace("\r\n", "\n").split("\n") if line.strip()]
    if not lines or lines[0].strip() != "v=0":
        raise SdpError("SDP must start with v=0")
    session_lines: list[str] = []
    media: list[MediaSection] = []
    for raw in lines:
        line = raw.rstrip("\r")
        if len(line) < 2 or line[1] != "=" or not line[0].isalpha():
            raise SdpError(f"malformed SDP line {line[:40]!r}")
        if line.startswith("m="):
            parts = line[2:].split()
            if len(parts) < 3:
                raise SdpError(f"malformed m= line {line[:60]!r}")
            try:
                port = int(parts[1].partition("/")[0])
            except ValueError:
                raise SdpError(f"malformed m= line {line[:60]!r}") from None
            if len(media) >= MAX_MEDIA_SECTIONS:
                raise SdpError("too many media sections")
            media.append(MediaSection(parts[0], port, parts[2], parts[3:]))
        elif media:
            media[-1].lines.append(line)
        else:
            session_lines.append(line)
    if not media:
        raise SdpError("SDP has no media section")
    return SessionDescription(session_lines, media)


def _find_server_codec(section: MediaSection) -> RtpMap | None:
    name, clock_rate = SERVER_CODECS[section.kind]
    for rtpmap in section.rtpmaps():
        if rtpmap.name.lower() == name.lower() and rtpmap.clock_rate == clock_rate:
            return rtpmap
    return None


def restrict_offer_untrusted(text: str, *, role: Literal["host", "viewer"]) -> str:
    """Check a client's offer and keep only VP8 (video) and Opus (audio).

    ``role="host"``: at least one audio/video section must be ``sendonly`` or
    ``sendrecv``. ``role="viewer"``: at least one must be ``recvonly`` or
    ``sendrecv``. Otherwise :class:`SdpError` ("nothing to send/receive").

    A video section without VP8 or an audio section without Opus raises
    :class:`UnsupportedCodecError`. Every other payload type (rtx, red,
    ulpfec, H264, ...) is removed, with its rtpmap / fmtp / rtcp-fb lines, so
    the answer has exactly one codec per section, under the client's payload
    type. Sections other than audio, video and application raise
    :class:`SdpError`.
    """
    description = parse_sdp_untrusted(text)
    wanted: tuple[Direction, ...] = ("sendonly", "sendrecv") if role == "host" else ("recvonly", "sendrecv")
    useful = 0
    for section in description.media:
        if section.kind == "application":
            continue
        if section.kind not in SERVER_CODECS:
            raise SdpError(f"unsupported media kind {section.kind!r}")
        if section.mid is None:
            raise SdpError(f"{section.kind} section without a=mid")
        if section.rejected:
            raise SdpError(f"{section.kind} section with port 0")
        codec = _find_server_codec(section)
        if codec is None:
            name = SERVER_CODECS[section.kind][0]
            raise UnsupportedCodecError(f"{section.kind} offered without {name}")
        section.keep_only_payload_type(codec.payload_type)
        if section.direction in wanted:
            useful += 1
    if not useful:
        verb = "send" if role == "host" else "receive"
        raise SdpError(f"offer has no audio or video to {verb}")
    return description.to_text()


def decorate_host_answer(
    answer: str,
    offer: str,
    *,
    video_bitrate_kbps: int,
    max_framerate: int,
    audio_bitrate_kbps: int,
) -> str:
    """Add what the host must be told to an aiortc answer for a host.

    Video: ``b=AS``/``b=TIAS`` (video_bitrate_kbps), fmtp ``max-fr``, and
    ``ccm fir`` / ``nack`` / ``nack pli`` / ``goog-remb`` feedback where the offer
    has them for that payload type (aiortc keeps only nack, pli and remb, and
    only those the offer has). Audio: ``b=AS``/``b=TIAS`` (audio_bitrate_kbps),
    fmtp ``maxaveragebitrate`` in bps, and ``useinbandfec=1`` if the offer asks.
    """
    offered = parse_sdp_untrusted(offer)
    description = parse_sdp_untrusted(answer)
    for section, offer_section in zip(description.media, offered.media, strict=False):
        for rtpmap in section.rtpmaps():
            pt = rtpmap.payload_type
            if section.kind == "video" and rtpmap.name.lower() == "vp8":
                section.set_bandwidth(video_bitrate_kbps)
                section.set_fmtp_params(pt, {"max-fr": str(max_framerate)})
                _copy_offered_feedback(section, offer_section, pt)
            elif section.kind == "audio" and rtpmap.name.lower() == "opus":
                section.set_bandwidth(audio_bitrate_kbps)
                params = {"maxaveragebitrate": str(audio_bitrate_kbps * 1000)}
                if offer_section.fmtp(pt).get("useinbandfec") == "1":
                    params["useinbandfec"] = "1"
                section.set_fmtp_params(pt, params)
    return description.to_text()


def decorate_viewer_answer(answer: str, offer: str) -> str:
    """Add ``ccm fir`` (and the other video feedback the viewer offers) to a viewer's answer."""
    offered = parse_sdp_untrusted(offer)
    description = parse_sdp_untrusted(answer)
    for section, offer_section in zip(description.media, offered.media, strict=False):
        if section.kind != "video":
            continue
        for rtpmap in section.rtpmaps():
            if rtpmap.name.lower() == "vp8":
                _copy_offered_feedback(section, offer_section, rtpmap.payload_type)
    return description.to_text()


VIDEO_FEEDBACK = ("nack", "nack pli", "ccm fir", "goog-remb")


def _copy_offered_feedback(section: MediaSection, offer_section: MediaSection, pt: int) -> None:
    offered = offer_section.rtcp_feedback(pt)
    for feedback in VIDEO_FEEDBACK:
        if feedback in offered:
            section.add_rtcp_feedback(pt, feedback)


def rewrite_host_candidates(text: str, address: str) -> str:
    """Put ``address`` in every host candidate (ports kept) and in the ``c=`` lines."""
    try:
        version = ipaddress.ip_address(address).version
    except ValueError:
        raise SdpError(f"announced address {address!r} is not an IP address") from None
    description = parse_sdp_untrusted(text)
    for section in description.media:
        for i, line in enumerate(section.lines):
            if line.startswith("a=candidate:"):
                fields = line.split()
                if len(fields) >= 8 and fields[6] == "typ" and fields[7] == "host":
                    fields[4] = address
                    section.lines[i] = " ".join(fields)
            elif line.startswith("c=IN "):
                section.lines[i] = f"c=IN IP{version} {address}"
    return description.to_text()


def candidate_addresses(text: str) -> list[tuple[str, int, str]]:
    """Every ``a=candidate`` as (address, port, type), in order (for tests and checks)."""
    out = []
    for section in parse_sdp_untrusted(text).media:
        for value in section.attributes("candidate"):
            fields = value.split()  # foundation component transport priority addr port typ T
            if len(fields) >= 8 and fields[6] == "typ":
                try:
                    out.append((fields[4], int(fields[5]), fields[7]))
                except ValueError:
                    raise SdpError(f"malformed a=candidate:{value!r}") from None
    return out


def _media_sections(
    text: str, keep: Callable[[MediaSection], bool]
) -> Iterable[tuple[MediaKind, MediaSection, RtpMap]]:
    for section in parse_sdp_untrusted(text).media:
        if section.kind not in SERVER_CODECS or section.rejected or not keep(section):
            continue
        codec = _find_server_codec(section)
        if codec is None:
            continue
        kind: MediaKind = "video" if section.kind == "video" else "audio"
        yield kind, section, codec


def sources_from_answer(answer: str) -> list[SourceStream]:
    """What the host sends, from the server's answer: one per receiving audio/video section."""
    return [
        SourceStream(
            kind=kind,
            payload_type=codec.payload_type,
            clock_rate=codec.clock_rate,
            extensions=section.extmaps(),
        )
        for kind, section, codec in _media_sections(answer, lambda s: s.direction in ("recvonly", "sendrecv"))
    ]


def sinks_from_answer(answer: str) -> list[SinkStream]:
    """What the server sends to a viewer, from its answer: one per sending audio/video section."""
    sinks = []
    for kind, section, codec in _media_sections(answer, lambda s: s.direction in ("sendonly", "sendrecv")):
        ssrcs = section.ssrcs()
        if not ssrcs:
            raise SdpError(f"answer's {kind} section announces no a=ssrc")
        sinks.append(
            SinkStream(
                kind=kind,
                ssrc=ssrcs[0],
                payload_type=codec.payload_type,
                clock_rate=codec.clock_rate,
                extensions={uri: ext_id for ext_id, uri in section.extmaps().items()},
                mid=section.mid,
            )
        )
    return sinks
