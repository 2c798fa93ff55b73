"""VP8 RTP payload descriptor (RFC 7741 section 4.2).

::

         0 1 2 3 4 5 6 7
        +-+-+-+-+-+-+-+-+
        |X|R|N|S|R| PID | (REQUIRED)
        +-+-+-+-+-+-+-+-+
   X:   |I|L|T|K| RSV   | (OPTIONAL)
        +-+-+-+-+-+-+-+-+
   I:   |M| PictureID   | (OPTIONAL, 7 or 15 bits)
        +-+-+-+-+-+-+-+-+
   L:   |   TL0PICIDX   | (OPTIONAL)
        +-+-+-+-+-+-+-+-+
   T/K: |TID|Y| KEYIDX  | (OPTIONAL)
        +-+-+-+-+-+-+-+-+

The forwarder only reads the descriptor and may rewrite the picture id; the
VP8 payload after it is passed through byte for byte.
"""

from __future__ import annotations

import msgspec

from media.errors import MalformedPacket

__all__ = [
    "Vp8Descriptor",
    "descriptor_length",
    "is_keyframe_start",
    "keyframe_size",
    "keyframe_start_in",
    "parse_vp8_descriptor_untrusted",
    "picture_id_location",
    "read_picture_id",
    "rewrite_picture_id",
    "rewrite_tl0_pic_idx",
    "tl0_pic_idx_location",
]


class Vp8Descriptor(msgspec.Struct, frozen=True):
    extended: bool
    non_reference: bool
    start_of_partition: bool
    partition_id: int
    picture_id: int | None = None
    picture_id_bits: int = 0  # 0 (absent), 7 or 15
    tl0_pic_idx: int | None = None
    tid: int | None = None
    layer_sync: bool = False
    key_idx: int | None = None
    length: int = 1  # descriptor length in bytes
    keyframe: bool = False  # S=1, PID=0 and the VP8 payload header's P bit == 0


def parse_vp8_descriptor_untrusted(payload: bytes) -> Vp8Descriptor:
    """Parse the descriptor at the start of an RTP payload. Raises only MalformedPacket."""
    n = len(payload)
    if n < 1:
        raise MalformedPacket("empty VP8 payload")
    b0 = payload[0]
    i = 1
    picture_id: int | None = None
    pid_bits = 0
    tl0: int | None = None
    tid: int | None = None
    key_idx: int | None = None
    layer_sync = False
    if b0 & 0x80:
        if n < 2:
            raise MalformedPacket("VP8 descriptor truncated (X)")
        x = payload[1]
        i = 2
        if x & 0x80:  # I
            if i >= n:
                raise MalformedPacket("VP8 descriptor truncated (I)")
            if payload[i] & 0x80:
                if i + 1 >= n:
                    raise MalformedPacket("VP8 descriptor truncated (15-bit picture id)")
                picture_id = ((payload[i] & 0x7F) << 8) | payload[i + 1]
                pid_bits = 15
                i += 2
            else:
                picture_id = payload[i] & 0x7F
                pid_bits = 7
                i += 1
        if x & 0x40:  # L
            if i >= n:
                raise MalformedPacket("VP8 descriptor truncated (L)")
            tl0 = payload[i]
            i += 1
        if x & 0x30:  # T or K
            if i >= n:
                raise MalformedPacket("VP8 descriptor truncated (T/K)")
            tk = payload[i]
            if x & 0x20:
                tid = tk >> 6
                layer_sync = bool(tk & 0x20)
            if x & 0x10:
                key_idx = tk & 0x1F
            i += 1
    start = bool(b0 & 0x10)
    pid = b0 & 0x07
    keyframe = start and pid == 0 and i < n and not (payload[i] & 0x01)
    return Vp8Descriptor(
        extended=bool(b0 & 0x80),
        non_reference=bool(b0 & 0x20),
        start_of_partition=start,
        partition_id=pid,
        picture_id=picture_id,
        picture_id_bits=pid_bits,
        tl0_pic_idx=tl0,
        tid=tid,
        layer_sync=layer_sync,
        key_idx=key_idx,
        length=i,
        keyframe=keyframe,
    )


def descriptor_length(payload: bytes) -> int:
    """Length in bytes of the descriptor, or -1 if the payload is too short for it."""
    n = len(payload)
    if n < 1:
        return -1
    b0 = payload[0]
    if not b0 & 0x80:
        return 1
    if n < 2:
        return -1
    x = payload[1]
    i = 2
    if x & 0x80:
        if i >= n:
            return -1
        i += 2 if payload[i] & 0x80 else 1
    if x & 0x40:
        i += 1
    if x & 0x30:
        i += 1
    return i if i <= n else -1


def is_keyframe_start(payload: bytes) -> bool:
    """True for the first packet of a keyframe: S=1, PID=0 and P bit == 0."""
    if not payload or (payload[0] & 0x17) != 0x10:  # S set, PID == 0
        return False
    i = descriptor_length(payload)
    return 0 < i < len(payload) and not (payload[i] & 0x01)


def keyframe_start_in(data: bytes, start: int, end: int) -> bool:
    """:func:`is_keyframe_start` of the payload ``data[start:end]``, without copying it (the
    router checks every video packet of a host)."""
    if end - start < 2 or (data[start] & 0x17) != 0x10:  # S set, PID == 0
        return False
    i = start + 1
    if data[start] & 0x80:
        x = data[i]
        i += 1
        if x & 0x80:
            if i >= end:
                return False
            i += 2 if data[i] & 0x80 else 1
        if x & 0x40:
            i += 1
        if x & 0x30:
            i += 1
    return i < end and not (data[i] & 0x01)


def keyframe_size(payload: bytes) -> tuple[int, int] | None:
    """``(width, height)`` of a keyframe from its first packet's payload (the VP8 key frame
    header, RFC 6386 9.1: a 3-byte frame tag, the start code 9d 01 2a, then 14-bit width and
    height, each with 2 scaling bits), or None for anything else."""
    if not is_keyframe_start(payload):
        return None
    i = descriptor_length(payload)
    header = payload[i : i + 10]
    if len(header) < 10 or header[3:6] != b"\x9d\x01\x2a":
        return None
    width = (header[6] | header[7] << 8) & 0x3FFF
    height = (header[8] | header[9] << 8) & 0x3FFF
    return (width, height) if width and height else None


def picture_id_location(buf: bytes | bytearray, start: int = 0) -> tuple[int, int]:
    """``(offset, bits)`` of the picture id of the descriptor at ``buf[start:]``,
    or ``(-1, 0)`` if it has none."""
    if len(buf) < start + 3 or not buf[start] & 0x80 or not buf[start + 1] & 0x80:
        return -1, 0
    at = start + 2
    if buf[at] & 0x80:
        return (at, 15) if at + 1 < len(buf) else (-1, 0)
    return at, 7


def read_picture_id(buf: bytes | bytearray, start: int = 0) -> tuple[int | None, int]:
    """``(picture_id, bits)`` of the descriptor at ``buf[start:]``; ``(None, 0)`` if absent."""
    at, bits = picture_id_location(buf, start)
    if at < 0:
        return None, 0
    if bits == 15:
        return ((buf[at] & 0x7F) << 8) | buf[at + 1], 15
    return buf[at] & 0x7F, 7


def rewrite_picture_id(buf: bytearray, delta: int, start: int = 0) -> None:
    """Add ``delta`` to the picture id of the descriptor at ``buf[start:]``, in place,
    modulo its own width (7 or 15 bits, kept). No-op without a picture id."""
    at, bits = picture_id_location(buf, start)
    if at < 0:
        return
    if bits == 15:
        pid = (((buf[at] & 0x7F) << 8) | buf[at + 1]) + delta
        buf[at] = 0x80 | ((pid >> 8) & 0x7F)
        buf[at + 1] = pid & 0xFF
    else:
        buf[at] = (buf[at] + delta) & 0x7F


def tl0_pic_idx_location(buf: bytes | bytearray, start: int = 0) -> int:
    """The offset of the TL0PICIDX of the descriptor at ``buf[start:]``, or -1 if it has none."""
    if len(buf) < start + 2 or not buf[start] & 0x80 or not buf[start + 1] & 0x40:
        return -1
    at = start + 2
    if buf[start + 1] & 0x80:  # a picture id first
        if at >= len(buf):
            return -1
        at += 2 if buf[at] & 0x80 else 1
    return at if at < len(buf) else -1


def rewrite_tl0_pic_idx(buf: bytearray, delta: int, start: int = 0) -> None:
    """Add ``delta`` to the TL0PICIDX of the descriptor at ``buf[start:]`` (mod 256), in place."""
    at = tl0_pic_idx_location(buf, start)
    if at >= 0:
        buf[at] = (buf[at] + delta) & 0xFF


def temporal_of(buf: bytes | bytearray, start: int = 0) -> int:
    """The temporal layer of the descriptor at ``buf[start:]`` as one small int: its TID (0-3,
    0 without one) in bits 0-1, the layer-sync bit Y in bit 2 (RFC 7741: the frame depends only
    on the base layer, so a viewer may move up to its layer here), and in bit 3 whether the
    packet starts a frame (S=1, partition 0). A packet without a T field is layer 0 and a sync
    point; a truncated descriptor is layer 0, not a frame start."""
    n = len(buf)
    if n <= start:
        return 0
    b0 = buf[start]
    starts = 8 if (b0 & 0x1F) == 0x10 else 0
    if not b0 & 0x80 or n < start + 2:  # no extension byte: no temporal layers
        return starts | 4
    x = buf[start + 1]
    if not x & 0x20:  # no T bit
        return starts | 4
    at = start + 2
    if x & 0x80:  # picture id
        if at >= n:
            return 0
        at += 2 if buf[at] & 0x80 else 1
    if x & 0x40:  # TL0PICIDX
        at += 1
    if at >= n:
        return 0
    tk = buf[at]
    return starts | (4 if tk & 0x20 else 0) | (tk >> 6)
