"""SDP as values: the parser of a client's offer and the line model the answer is written in.

No trio or asyncio here: text in, values out (and back to text with
:meth:`SessionDescription.to_text`).

:func:`parse_sdp_untrusted` splits a description into its session lines and
its ``m=`` sections; each :class:`MediaSection` keeps its other lines as they
came (only line endings are normalised) and reads them on demand (``a=mid``,
the direction, ``a=rtpmap``, ``a=fmtp``, ``a=rtcp-fb``, ``a=extmap``), so a
parsed offer written back is the offer. :mod:`media.sdp_offer` reads offers
with it and :mod:`media.sdp_answer` renders its answer through it.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Literal

from media.h264 import H264Format, ProfileLevel, choose_host_format, choose_viewer_format
from media.streams import SdpError

Direction = Literal["sendrecv", "sendonly", "recvonly", "inactive"]
DIRECTIONS: tuple[Direction, ...] = ("sendrecv", "sendonly", "recvonly", "inactive")

#: The one codec the server accepts per kind: kind -> (encoding name, clock rate).
SERVER_CODECS: dict[str, tuple[str, int]] = {"video": ("VP8", 90000), "audio": ("opus", 48000)}
#: The video feedback the server speaks (RFC 4585 / RFC 5104, REMB), in the answer's order.
VIDEO_FEEDBACK = ("nack", "nack pli", "ccm fir", "goog-remb")

MAX_SDP_LENGTH = 64 * 1024
MAX_MEDIA_SECTIONS = 32

#: Hash functions of RFC 8122 / RFC 4572 a fingerprint may use.
FINGERPRINT_ALGORITHMS: frozenset[str] = frozenset({"sha-1", "sha-224", "sha-256", "sha-384", "sha-512"})
_ICE_CHARS = "A-Za-z0-9+/"
#: ``ice-ufrag`` / ``ice-pwd`` (RFC 8839 section 5.4) and a candidate's foundation (section 5.1).
ICE_UFRAG = re.compile(f"[{_ICE_CHARS}]{{4,256}}")
ICE_PWD = re.compile(f"[{_ICE_CHARS}]{{22,256}}")
ICE_FOUNDATION = re.compile(f"[{_ICE_CHARS}]{{1,32}}")
#: A fingerprint's value: 16 to 64 hex byte pairs.
FINGERPRINT = re.compile(r"[0-9A-Fa-f]{2}(?::[0-9A-Fa-f]{2}){15,63}")
#: An RFC 8866 token (mids, msid ids, cname), bounded.
TOKEN = re.compile(r"[!#$%&'*+\-.0-9A-Z^_`a-z{|}~]{1,64}")


@dataclass(frozen=True)
class RtpMap:
    payload_type: int
    name: str  # encoding name as written ("VP8", "opus", ...)
    clock_rate: int
    channels: int | None = None


def _attribute_values(lines: list[str], name: str) -> list[str]:
    """Values of every ``a=name:value`` line (``""`` for a flag ``a=name``)."""
    out = []
    for line in lines:
        if not line.startswith("a="):
            continue
        key, sep, value = line[2:].partition(":")
        if key == name:
            out.append(value if sep else "")
    return out


@dataclass(frozen=True)
class MediaSection:
    """One ``m=`` section: the ``m=`` line split up, then its other lines verbatim."""

    kind: str
    port: int
    proto: str
    formats: list[str]
    lines: list[str] = field(default_factory=list)

    def attributes(self, name: str) -> list[str]:
        """Values of every ``a=name:value`` line (``""`` for a flag ``a=name``)."""
        return _attribute_values(self.lines, name)

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
        """The ``a=rtpmap`` entries, in the order of the ``m=`` line's formats (the last
        line of a payload type wins)."""
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
        """The ``a=rtcp-fb`` values for one payload type or ``*``, whitespace normalised."""
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

    def with_only_payload_type(self, payload_type: int, *more: int) -> MediaSection:
        """This section with these formats alone: every other one gone, with the rtpmap /
        fmtp / rtcp-fb lines that name it (lines for ``*`` stay)."""
        keep = [str(payload_type), *(str(pt) for pt in more)]
        lines = []
        for line in self.lines:
            if line.startswith(("a=rtpmap:", "a=fmtp:", "a=rtcp-fb:")):
                pt_text = line.partition(":")[2].partition(" ")[0]
                if pt_text not in keep and pt_text != "*":
                    continue
            lines.append(line)
        return dataclasses.replace(self, formats=keep, lines=lines)

    def to_lines(self) -> list[str]:
        m_line = f"m={self.kind} {self.port} {self.proto} {' '.join(self.formats)}".rstrip()
        return [m_line, *self.lines]


@dataclass(frozen=True)
class SessionDescription:
    session_lines: list[str]
    media: list[MediaSection]

    def attributes(self, name: str) -> list[str]:
        """Values of every session-level ``a=name:value`` line."""
        return _attribute_values(self.session_lines, name)

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


def _video_maps(section: MediaSection) -> tuple[RtpMap | None, list[H264Format]]:
    """A video section's VP8 entry (named as the server writes it) and its H.264 formats."""
    maps = [r for r in section.rtpmaps() if r.clock_rate == 90000]
    vp8 = next((RtpMap(r.payload_type, "VP8", 90000) for r in maps if r.name.upper() == "VP8"), None)
    h264 = [H264Format(r.payload_type, section.fmtp(r.payload_type)) for r in maps if r.name.upper() == "H264"]
    return vp8, h264


def viewer_video_codecs(section: MediaSection) -> list[RtpMap]:
    """What a viewer's video section can receive of the server's codecs, VP8 first: its VP8,
    and its H.264 format of packetization mode 1 for a constrained-baseline stream (what the
    server takes from a host first, media/h264.py), each named as the server writes it."""
    vp8, h264 = _video_maps(section)
    chosen = choose_viewer_format(h264, ProfileLevel("constrained_baseline", 31))
    h264_map = RtpMap(chosen.payload_type, "H264", 90000) if chosen is not None else None
    return [r for r in (vp8, h264_map) if r is not None]


def find_server_codec(section: MediaSection, video_codecs: tuple[str, ...] = ("VP8",)) -> RtpMap | None:
    """The section's entry the server takes: Opus/48000 (audio); for video the first of
    ``video_codecs`` it offers (VP8/90000, or H264/90000 in packetization mode 1 with a profile
    media/h264.py chooses), named as the server writes it; None if it has none."""
    if section.kind != "video":
        name, clock_rate = SERVER_CODECS[section.kind]
        return next(
            (r for r in section.rtpmaps() if r.name.lower() == name.lower() and r.clock_rate == clock_rate), None
        )
    vp8, h264 = _video_maps(section)
    for codec in video_codecs:
        if codec == "VP8" and vp8 is not None:
            return vp8
        chosen = choose_host_format(h264) if codec == "H264" else None
        if chosen is not None:
            return RtpMap(chosen[0].payload_type, "H264", 90000)
    return None
