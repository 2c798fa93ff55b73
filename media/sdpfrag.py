"""SDP fragments (RFC 8840, `application/trickle-ice-sdpfrag`) of WHIP and WHEP (RFC 9725 4.3).

Sans-IO. A client's PATCH carries either trickled candidates (same ICE credentials) or an
ICE restart (new `a=ice-ufrag` / `a=ice-pwd`); the server's answer to a restart is a fragment
of its new credentials and candidates. A restart is negotiated as a whole offer: the
session's first offer with the new credentials (`with_ice_credentials`), so the transport
takes it the way it takes a WebSocket client's restart offer.
"""

from __future__ import annotations

import re

import msgspec

from media.sdp import ICE_PWD, ICE_UFRAG, MediaSection, SessionDescription, parse_sdp_untrusted
from media.streams import SdpError

#: A fragment is a few candidates: far below an SDP's limit.
MAX_FRAGMENT_LENGTH = 16 * 1024
MAX_FRAGMENT_CANDIDATES = 64


class TrickledCandidate(msgspec.Struct, frozen=True):
    candidate: str  # `candidate:...` without `a=`
    mid: str | None


class SdpFragment(msgspec.Struct, frozen=True):
    ufrag: str | None
    pwd: str | None
    candidates: list[TrickledCandidate]
    end_of_candidates: bool


def parse_sdpfrag_untrusted(text: str) -> SdpFragment:
    """The credentials and candidates of a client's fragment. Raises only :class:`SdpError`."""
    if len(text) > MAX_FRAGMENT_LENGTH:
        raise SdpError(f"SDP fragment over {MAX_FRAGMENT_LENGTH} bytes")
    ufrag = pwd = mid = None
    candidates: list[TrickledCandidate] = []
    end = False
    for raw in text.replace("\r\n", "\n").split("\n"):
        line = raw.strip()
        if not line:
            continue
        if len(line) < 2 or line[1] != "=":
            raise SdpError(f"malformed SDP fragment line {line[:40]!r}")
        if line.startswith("m="):
            mid = None
        elif line.startswith("a=mid:"):
            mid = line[6:].strip()
        elif line.startswith("a=ice-ufrag:"):
            ufrag = _credential(line[12:].strip(), ufrag, ICE_UFRAG, "a=ice-ufrag")
        elif line.startswith("a=ice-pwd:"):
            pwd = _credential(line[10:].strip(), pwd, ICE_PWD, "a=ice-pwd")
        elif line.startswith("a=candidate:"):
            if len(candidates) >= MAX_FRAGMENT_CANDIDATES:
                raise SdpError(f"more than {MAX_FRAGMENT_CANDIDATES} candidates in one fragment")
            candidates.append(TrickledCandidate(line[2:], mid))
        elif line == "a=end-of-candidates":
            end = True
    if (ufrag is None) != (pwd is None):
        raise SdpError("an ICE restart needs both a=ice-ufrag and a=ice-pwd")
    return SdpFragment(ufrag, pwd, candidates, end)


def _credential(value: str, previous: str | None, pattern: re.Pattern[str], name: str) -> str:
    if previous is not None and previous != value:
        raise SdpError(f"two different {name} values in one fragment")
    if not pattern.fullmatch(value):
        raise SdpError(f"malformed {name}")
    return value


def ice_credentials(sdp: str) -> tuple[str, str]:
    """The ICE ufrag and password of a whole SDP's transport: those of its BUNDLE group's first
    (tagged) section, else the session level's, else the first section's that has them."""
    description = parse_sdp_untrusted(sdp)
    groups = description.bundle_groups()
    tagged = [s for s in description.media if groups and groups[0] and s.mid == groups[0][0]]
    places: list[MediaSection | SessionDescription] = [*tagged, description, *description.media]
    for place in places:
        ufrag, pwd = place.attributes("ice-ufrag"), place.attributes("ice-pwd")
        if ufrag and pwd:
            return ufrag[0].strip(), pwd[0].strip()
    raise SdpError("the SDP has no ICE credentials")


def with_ice_credentials(sdp: str, ufrag: str, pwd: str) -> str:
    """`sdp` with every `a=ice-ufrag` / `a=ice-pwd` line carrying these credentials."""
    lines = []
    for line in sdp.replace("\r\n", "\n").split("\n"):
        if line.startswith("a=ice-ufrag:"):
            line = f"a=ice-ufrag:{ufrag}"
        elif line.startswith("a=ice-pwd:"):
            line = f"a=ice-pwd:{pwd}"
        if line:
            lines.append(line)
    return "\r\n".join(lines) + "\r\n"


def restart_fragment(answer_sdp: str) -> str:
    """The server's fragment for an ICE restart (RFC 9725 4.3.2): ICE-lite, the BUNDLE group, and
    for the group's first (transport-carrying) section its mid, new credentials and candidates."""
    description = parse_sdp_untrusted(answer_sdp)
    lines = [line for line in description.session_lines if line.startswith(("a=ice-lite", "a=group:BUNDLE"))]
    section = next(s for s in description.media if not s.rejected)
    lines.append(f"m={section.kind} 9 {section.proto} {' '.join(section.formats)}")
    for line in section.lines:
        if line.startswith(("a=mid:", "a=ice-ufrag:", "a=ice-pwd:", "a=candidate:", "a=end-of-candidates")):
            lines.append(line)
    return "\r\n".join(lines) + "\r\n"
