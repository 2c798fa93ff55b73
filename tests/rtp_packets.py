"""Building host RTP packets for the media tests (the server never builds whole
packets: the router packs only the fixed header, see media/rtp.py)."""

from __future__ import annotations

import struct

from media.rtp import FIXED_HEADER, encode_extensions


def build_rtp_packet(
    *,
    payload_type: int,
    sequence_number: int,
    timestamp: int,
    ssrc: int,
    payload: bytes,
    marker: bool = False,
    extensions: list[tuple[int, bytes]] | None = None,
    csrcs: tuple[int, ...] = (),
    padding: int = 0,
) -> bytes:
    """A complete RTP packet, as a host would send it."""
    if not 0 <= padding <= 255 or len(csrcs) > 15:
        raise ValueError("bad padding or too many CSRCs")
    ext = encode_extensions(extensions or [])
    b0 = 0x80 | (0x20 if padding else 0) | (0x10 if ext else 0) | len(csrcs)
    b1 = (0x80 if marker else 0) | (payload_type & 0x7F)
    head = FIXED_HEADER.pack(b0, b1, sequence_number & 0xFFFF, timestamp & 0xFFFFFFFF, ssrc & 0xFFFFFFFF)
    pad = b"\x00" * (padding - 1) + bytes((padding,)) if padding else b""
    return head + b"".join(struct.pack("!I", c) for c in csrcs) + ext + payload + pad


def vp8_packet(
    *, seq: int, ts: int, ssrc: int, pid: int, key: bool = False, payload_type: int = 96, marker: bool = True
) -> bytes:
    """A VP8 packet starting a frame, with a 15-bit picture id; `key` makes it a keyframe's."""
    descriptor = bytes([0x90, 0x80, 0x80 | (pid >> 8), pid & 0xFF])  # X=1 S=1, I=1, M=1
    body = b"\x00\x9d\x01\x2a" if key else b"\x01\x02\x03"
    return build_rtp_packet(
        payload_type=payload_type,
        sequence_number=seq,
        timestamp=ts,
        ssrc=ssrc,
        payload=descriptor + body,
        marker=marker,
    )
