"""RTP header parsing (RFC 3550, RFC 8285 header extensions) and outgoing-header building.

The forwarder parses each incoming packet once (:func:`parse_rtp_untrusted`) and
then builds, per *distinct* viewer extension plan, the part of the outgoing
packet that follows the fixed 12-byte header (:func:`build_body`). Per viewer,
only the fixed header is packed (:data:`FIXED_HEADER`) and prepended, inline in
the router's per-viewer loop (``Router._fan_out``).
"""

from __future__ import annotations

import struct
from collections.abc import Mapping

import msgspec

from media.errors import MalformedPacket

__all__ = [
    "ABS_SEND_TIME_URI",
    "ALLOWED_EXTENSION_URIS",
    "FIXED_HEADER",
    "MID_URI",
    "REPAIRED_RID_URI",
    "RID_URI",
    "ExtensionPlan",
    "RtpHeader",
    "abs_send_time",
    "build_body",
    "encode_extensions",
    "make_extension_plan",
    "parse_extensions_untrusted",
    "parse_rtp_untrusted",
]

MID_URI = "urn:ietf:params:rtp-hdrext:sdes:mid"
RID_URI = "urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id"  # RFC 8852: a simulcast layer's name
REPAIRED_RID_URI = "urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id"
ABS_SEND_TIME_URI = "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time"
AUDIO_LEVEL_URI = "urn:ietf:params:rtp-hdrext:ssrc-audio-level"
VIDEO_ORIENTATION_URI = "urn:3gpp:video-orientation"

# Extensions worth forwarding end to end (value copied, id mapped to the viewer's).
# Everything else (transport-cc, abs-send-time, toffset, rid, abs-capture-time,
# playout-delay, ...) describes the host->server hop and is dropped. MID is
# handled separately: it carries the viewer's own value.
ALLOWED_EXTENSION_URIS: frozenset[str] = frozenset({AUDIO_LEVEL_URI, VIDEO_ORIENTATION_URI})

# V/P/X/CC, M/PT, seq, ts, ssrc
FIXED_HEADER = struct.Struct("!BBHII")
_unpack_fixed = FIXED_HEADER.unpack_from
_unpack_ext_hdr = struct.Struct("!HH").unpack_from


class RtpHeader(msgspec.Struct, gc=False):
    """A parsed RTP header.

    ``payload_offset``..``payload_end`` is the payload (``payload_end``
    excludes padding). ``ext_start``..``ext_end`` is the extension block's
    element area (both 0 without an extension). ``extensions`` maps id -> value
    bytes; it is empty when the packet has none or was parsed with
    ``parse_extensions=False`` (see :func:`parse_extensions_untrusted`).
    """

    marker: bool
    payload_type: int
    sequence_number: int
    timestamp: int
    ssrc: int
    payload_offset: int
    payload_end: int
    padding: bool = False
    csrc_count: int = 0
    extension_profile: int = 0
    ext_start: int = 0
    ext_end: int = 0
    extensions: dict[int, bytes] = msgspec.field(default_factory=dict)

    @property
    def version(self) -> int:
        return 2

    @property
    def extension(self) -> bool:
        """The X bit."""
        return self.ext_start > 0

    @property
    def header_length(self) -> int:
        return self.payload_offset


def _parse_extensions(block: bytes, profile: int) -> dict[int, bytes]:
    exts: dict[int, bytes] = {}
    n = len(block)
    i = 0
    if profile == 0xBEDE:  # one-byte header (RFC 8285 4.2)
        while i < n:
            b = block[i]
            if b == 0:  # padding
                i += 1
                continue
            ext_id = b >> 4
            if ext_id == 15 or ext_id == 0:  # reserved / bad padding: stop (RFC 8285)
                break
            length = (b & 0x0F) + 1
            i += 1
            if i + length > n:
                raise MalformedPacket("RTP one-byte extension overruns its block")
            exts[ext_id] = block[i : i + length]
            i += length
    elif profile & 0xFFF0 == 0x1000:  # two-byte header (RFC 8285 4.3)
        while i < n:
            ext_id = block[i]
            if ext_id == 0:  # padding
                i += 1
                continue
            if i + 1 >= n:
                raise MalformedPacket("RTP two-byte extension header truncated")
            length = block[i + 1]
            i += 2
            if i + length > n:
                raise MalformedPacket("RTP two-byte extension overruns its block")
            exts[ext_id] = block[i : i + length]
            i += length
    # any other profile: not RFC 8285; ignored (and never forwarded)
    return exts


def parse_rtp_untrusted(data: bytes, *, parse_extensions: bool = True) -> RtpHeader:
    """Parse an RTP packet's header. Raises only :class:`MalformedPacket`.

    With ``parse_extensions=False`` the extension block's bounds are checked but
    its elements are left for :func:`parse_extensions_untrusted` (the
    forwarder's fast path: most packets need none of them).
    """
    n = len(data)
    if n < 12:
        raise MalformedPacket("RTP packet shorter than 12 bytes")
    b0, b1, seq, ts, ssrc = _unpack_fixed(data, 0)
    if b0 & 0xC0 != 0x80:
        raise MalformedPacket("RTP version is not 2")
    cc = b0 & 0x0F
    offset = 12 + 4 * cc
    if offset > n:
        raise MalformedPacket("RTP CSRC list truncated")
    end = n
    if b0 & 0x20:
        pad = data[n - 1]
        if pad == 0:
            raise MalformedPacket("RTP padding length is 0")
        end = n - pad
    if not b0 & 0x10:
        if end < offset:
            raise MalformedPacket("RTP padding overruns the header")
        return RtpHeader(bool(b1 & 0x80), b1 & 0x7F, seq, ts, ssrc, offset, end, bool(b0 & 0x20), cc)
    if offset + 4 > n:
        raise MalformedPacket("RTP extension header truncated")
    profile, words = _unpack_ext_hdr(data, offset)
    start = offset + 4
    offset = start + 4 * words
    if offset > end:
        raise MalformedPacket("RTP extension block truncated")
    exts = _parse_extensions(data[start:offset], profile) if parse_extensions and words else {}
    return RtpHeader(
        bool(b1 & 0x80),
        b1 & 0x7F,
        seq,
        ts,
        ssrc,
        offset,
        end,
        bool(b0 & 0x20),
        cc,
        profile,
        start,
        offset,
        exts,
    )


def parse_extensions_untrusted(data: bytes, hdr: RtpHeader) -> dict[int, bytes]:
    """The header extensions (id -> value) of the packet ``hdr`` was parsed from."""
    if hdr.ext_end <= hdr.ext_start:
        return {}
    return _parse_extensions(data[hdr.ext_start : hdr.ext_end], hdr.extension_profile)


class ExtensionPlan:
    """What to put in one viewer's header-extension block, given the host's ids.

    ``mapping`` is ``((host_id, viewer_id), ...)`` for allow-listed URIs both
    sides negotiated; ``mid`` is ``(viewer_id, value)`` when the viewer
    negotiated the MID extension and has a MID; ``send_time_id`` is the viewer's
    id for abs-send-time, which the server stamps with its own send time. Plans
    are value objects; the router interns equal plans so that viewers can be
    grouped by identity.
    """

    __slots__ = ("key", "mapping", "mid", "send_time_id", "static_block")

    def __init__(
        self, mapping: tuple[tuple[int, int], ...], mid: tuple[int, bytes] | None, send_time_id: int | None = None
    ) -> None:
        self.mapping = mapping
        self.mid = mid
        self.send_time_id = send_time_id
        self.key = (mapping, mid, send_time_id)
        # the block when no mapped extension is in the packet and no send time is stamped
        # (just the MID, or nothing)
        self.static_block = encode_extensions([mid]) if mid is not None and send_time_id is None else b""

    @property
    def is_empty(self) -> bool:
        return not self.mapping and self.mid is None and self.send_time_id is None

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ExtensionPlan) and other.key == self.key

    def __hash__(self) -> int:
        return hash(self.key)

    def __repr__(self) -> str:
        return f"ExtensionPlan(mapping={self.mapping!r}, mid={self.mid!r}, send_time_id={self.send_time_id!r})"


def make_extension_plan(
    host_extensions: Mapping[int, str],
    viewer_extensions: Mapping[str, int],
    viewer_mid: str | None,
) -> ExtensionPlan:
    """Build the plan from the host's ``id -> URI`` and the viewer's ``URI -> id``."""
    mapping = tuple(
        sorted(
            (host_id, viewer_extensions[uri])
            for host_id, uri in host_extensions.items()
            if uri in ALLOWED_EXTENSION_URIS and uri in viewer_extensions
        )
    )
    mid: tuple[int, bytes] | None = None
    mid_id = viewer_extensions.get(MID_URI)
    if mid_id is not None and viewer_mid:
        value = viewer_mid.encode()
        if 1 <= len(value) <= 255:
            mid = (mid_id, value)
    return ExtensionPlan(mapping, mid, viewer_extensions.get(ABS_SEND_TIME_URI))


def abs_send_time(now: float) -> bytes:
    """The abs-send-time extension's value for ``now`` (seconds, any epoch: receivers use
    differences): 6.18 fixed point seconds, 24 bits, wrapping every 64 s."""
    return (int(now * 262144) & 0xFFFFFF).to_bytes(3, "big")


def encode_extensions(elements: list[tuple[int, bytes]]) -> bytes:
    """Encode ``(id, value)`` pairs as a header-extension block (profile, length,
    elements, zero padding); one-byte form when possible, else two-byte. Returns
    ``b""`` when there is nothing to encode."""
    if not elements:
        return b""
    one_byte = all(1 <= i <= 14 and 1 <= len(v) <= 16 for i, v in elements)
    parts: list[bytes] = []
    if one_byte:
        for i, v in elements:
            parts.append(bytes(((i << 4) | (len(v) - 1),)))
            parts.append(v)
        profile = 0xBEDE
    else:
        for i, v in elements:
            parts.append(bytes((i, len(v))))
            parts.append(v)
        profile = 0x1000
    block = b"".join(parts)
    rem = len(block) % 4
    if rem:
        block += b"\x00" * (4 - rem)
    return struct.pack("!HH", profile, len(block) // 4) + block


def build_body(hdr: RtpHeader, data: bytes, plan: ExtensionPlan | None, send_time: bytes = b"") -> tuple[int, bytes]:
    """What follows the fixed header in the packet sent to a viewer with ``plan``.

    Returns ``(first_byte, body)``: the V/P/X/CC byte (CC is always 0: CSRCs
    are dropped) and the extension block (if any) followed by the payload
    including any padding. Call once per packet per distinct plan. Parses the
    packet's extensions (once, kept in ``hdr.extensions``) only if the plan
    maps some; malformed extensions are then dropped, never raised.
    ``send_time``: the abs-send-time value to stamp (:func:`abs_send_time`), if
    the plan has an id for it.
    """
    payload = data[hdr.payload_offset :]
    b0 = 0xA0 if hdr.padding else 0x80
    if plan is None:
        return b0, payload
    elements: list[tuple[int, bytes]] = []
    if plan.mapping and hdr.ext_end > hdr.ext_start:
        exts = hdr.extensions
        if not exts:
            try:
                exts = hdr.extensions = parse_extensions_untrusted(data, hdr)
            except MalformedPacket:
                exts = {}
        for host_id, out_id in plan.mapping:
            value = exts.get(host_id)
            if value is not None:
                elements.append((out_id, value))
    if plan.send_time_id is not None and send_time:
        elements.append((plan.send_time_id, send_time))
    if elements:
        if plan.mid is not None:
            elements.append(plan.mid)
        return b0 | 0x10, encode_extensions(elements) + payload
    if plan.static_block:
        return b0 | 0x10, plan.static_block + payload
    return b0, payload
