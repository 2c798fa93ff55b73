"""Demultiplex datagrams arriving on the one media UDP port (RFC 7983, RFC 5761).

:func:`classify` looks at the first byte (RFC 7983 section 7, as updated by
RFC 9443) and, for RTP/RTCP, at the second (RFC 5761 section 4)::

    first byte   0..3     STUN           (ICE connectivity checks)
                 16..19   ZRTP           -> "unknown" (not used by WebRTC)
                 20..63   DTLS
                 64..79   TURN channel   -> "unknown" (no TURN on this port)
                 128..191 RTP or RTCP: second byte 192..223 is an RTCP packet
                          type (RFC 5761 reserves RTP payload types 64..95,
                          which with the marker bit set are 192..223), else RTP
                 other                   -> "unknown" (QUIC and unassigned)

Runs per packet: a table lookup, one comparison on the second byte for SRTP
and a minimum-length check, no allocation. The length floors only reject
datagrams too short to be any packet of the class (STUN header 20 bytes, DTLS
record header 13, RTP fixed header 12, RTCP header plus sender SSRC 8); the
parsers behind each class still validate everything else.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Final, Literal

__all__ = ["MIN_LENGTH", "DatagramKind", "classify"]

DatagramKind = Literal["stun", "dtls", "rtp", "rtcp", "unknown"]

MIN_LENGTH: Final[Mapping[DatagramKind, int]] = MappingProxyType(
    {"stun": 20, "dtls": 13, "rtp": 12, "rtcp": 8, "unknown": 0}
)

_MIN_STUN = MIN_LENGTH["stun"]
_MIN_DTLS = MIN_LENGTH["dtls"]
_MIN_RTP = MIN_LENGTH["rtp"]
_MIN_RTCP = MIN_LENGTH["rtcp"]


def _first_byte_kind(b: int) -> DatagramKind:
    if b <= 3:
        return "stun"
    if 20 <= b <= 63:
        return "dtls"
    if 128 <= b <= 191:
        return "rtp"  # or RTCP: decided on the second byte
    return "unknown"


_BY_FIRST_BYTE: tuple[DatagramKind, ...] = tuple(_first_byte_kind(b) for b in range(256))


def classify(datagram: bytes) -> DatagramKind:
    """Which protocol a datagram on the shared media port belongs to (RFC 7983).

    Never raises for any bytes-like input; "unknown" means drop it.
    """
    n = len(datagram)
    if n < _MIN_RTCP:  # the shortest class
        return "unknown"
    kind = _BY_FIRST_BYTE[datagram[0]]
    if kind == "rtp":
        if 192 <= datagram[1] <= 223:
            return "rtcp"
        return "rtp" if n >= _MIN_RTP else "unknown"
    if kind == "stun":
        return "stun" if n >= _MIN_STUN else "unknown"
    if kind == "dtls":
        return "dtls" if n >= _MIN_DTLS else "unknown"
    return "unknown"
