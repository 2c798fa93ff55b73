"""RTCP: parse compound packets into typed objects, and build the ones the router sends.

Covered: SR/RR (RFC 3550), BYE, generic NACK and PLI/FIR (RFC 4585, RFC 5104),
REMB (draft-alvestrand-rmcat-remb). Anything else parses as :class:`OtherRtcp`.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence

import msgspec

from media.errors import MalformedPacket

__all__ = [
    "MAX_NACK_SEQS",
    "Bye",
    "Fir",
    "FirEntry",
    "Nack",
    "OtherRtcp",
    "Pli",
    "ReceiverReport",
    "Remb",
    "ReportBlock",
    "RtcpPacket",
    "SenderReport",
    "build_bye",
    "build_compound",
    "build_fir",
    "build_nack",
    "build_pli",
    "build_remb",
    "build_rr",
    "build_sr",
    "nack_pairs",
    "parse_rtcp_untrusted",
]

RTCP_SR = 200
RTCP_RR = 201
RTCP_SDES = 202
RTCP_BYE = 203
RTCP_APP = 204
RTCP_RTPFB = 205
RTCP_PSFB = 206

_HDR = struct.Struct("!BBH")
_I = struct.Struct("!I")
_II = struct.Struct("!II")
_HH = struct.Struct("!HH")
_SR_INFO = struct.Struct("!IQIII")  # sender ssrc, ntp, rtp ts, packets, octets
_BLOCK = struct.Struct("!IIIIII")  # ssrc, frac|lost, highest, jitter, lsr, dlsr


class ReportBlock(msgspec.Struct, frozen=True):
    ssrc: int
    fraction_lost: int  # 0..255 (fixed point /256)
    cumulative_lost: int  # signed 24-bit
    highest_seq: int  # extended highest sequence number received
    jitter: int
    lsr: int
    dlsr: int  # 1/65536 s


class SenderReport(msgspec.Struct, frozen=True):
    ssrc: int
    ntp: int  # 64-bit NTP timestamp
    rtp_ts: int
    packet_count: int
    octet_count: int
    reports: tuple[ReportBlock, ...] = ()


class ReceiverReport(msgspec.Struct, frozen=True):
    ssrc: int
    reports: tuple[ReportBlock, ...] = ()


#: Distinct sequence numbers one NACK may name: no sender keeps more packets than this
#: (the router's cache holds 512), so the rest of a longer list is ignored.
MAX_NACK_SEQS = 512


class Nack(msgspec.Struct, frozen=True):
    sender_ssrc: int
    media_ssrc: int
    lost: tuple[int, ...]  # distinct sequence numbers, in packet order, at most MAX_NACK_SEQS


class Pli(msgspec.Struct, frozen=True):
    sender_ssrc: int
    media_ssrc: int


class FirEntry(msgspec.Struct, frozen=True):
    ssrc: int
    seq_nr: int


class Fir(msgspec.Struct, frozen=True):
    sender_ssrc: int
    entries: tuple[FirEntry, ...]


class Remb(msgspec.Struct, frozen=True):
    sender_ssrc: int
    bitrate_bps: int
    ssrcs: tuple[int, ...]


class Bye(msgspec.Struct, frozen=True):
    ssrcs: tuple[int, ...]
    reason: bytes = b""


class OtherRtcp(msgspec.Struct, frozen=True):
    packet_type: int
    fmt: int  # the 5-bit count/format field
    body: bytes  # after the 4-byte header, padding removed


RtcpPacket = SenderReport | ReceiverReport | Nack | Pli | Fir | Remb | Bye | OtherRtcp


# ---------------------------------------------------------------- parsing


def _blocks(body: bytes, offset: int, count: int) -> tuple[ReportBlock, ...]:
    if offset + 24 * count > len(body):
        raise MalformedPacket("RTCP report blocks truncated")
    out = []
    for k in range(count):
        ssrc, fl, highest, jitter, lsr, dlsr = _BLOCK.unpack_from(body, offset + 24 * k)
        lost = fl & 0xFFFFFF
        if lost & 0x800000:
            lost -= 0x1000000
        out.append(ReportBlock(ssrc, fl >> 24, lost, highest, jitter, lsr, dlsr))
    return tuple(out)


def _parse_one(pt: int, fmt: int, body: bytes) -> RtcpPacket:
    n = len(body)
    if pt == RTCP_SR:
        if n < 24:
            raise MalformedPacket("RTCP SR too short")
        ssrc, ntp, rtp_ts, packets, octets = _SR_INFO.unpack_from(body, 0)
        return SenderReport(ssrc, ntp, rtp_ts, packets, octets, _blocks(body, 24, fmt))
    if pt == RTCP_RR:
        if n < 4:
            raise MalformedPacket("RTCP RR too short")
        return ReceiverReport(_I.unpack_from(body, 0)[0], _blocks(body, 4, fmt))
    if pt == RTCP_BYE:
        if n < 4 * fmt:
            raise MalformedPacket("RTCP BYE truncated")
        ssrcs = tuple(_I.unpack_from(body, 4 * k)[0] for k in range(fmt))
        reason = b""
        if n > 4 * fmt:
            rlen = body[4 * fmt]
            reason = body[4 * fmt + 1 : 4 * fmt + 1 + rlen]
        return Bye(ssrcs, reason)
    if pt == RTCP_RTPFB and fmt == 1:
        if n < 8 or (n - 8) % 4:
            raise MalformedPacket("RTCP NACK malformed")
        sender, media = _II.unpack_from(body, 0)
        return Nack(sender, media, _nacked_seqs(body))
    if pt == RTCP_PSFB:
        if n < 8:
            raise MalformedPacket("RTCP PSFB too short")
        sender, media = _II.unpack_from(body, 0)
        if fmt == 1:
            return Pli(sender, media)
        if fmt == 4:
            if (n - 8) % 8:
                raise MalformedPacket("RTCP FIR malformed")
            entries = tuple(FirEntry(_I.unpack_from(body, off)[0], body[off + 4]) for off in range(8, n, 8))
            return Fir(sender, entries)
        if fmt == 15 and body[8:12] == b"REMB":
            if n < 16:
                raise MalformedPacket("RTCP REMB too short")
            num = body[12]
            if n < 16 + 4 * num:
                raise MalformedPacket("RTCP REMB ssrc list truncated")
            exp = body[13] >> 2
            mantissa = ((body[13] & 0x03) << 16) | (body[14] << 8) | body[15]
            ssrcs = tuple(_I.unpack_from(body, 16 + 4 * k)[0] for k in range(num))
            return Remb(sender, mantissa << exp, ssrcs)
    return OtherRtcp(pt, fmt, body)


def _nacked_seqs(body: bytes) -> tuple[int, ...]:
    """The distinct sequence numbers of a NACK's FCI entries (PID + BLP), in order, at most
    MAX_NACK_SEQS: a repeated entry is skipped before it is expanded, so a NACK that names the
    same packets again and again costs one expansion (and one retransmission) each."""
    lost: dict[int, None] = {}
    entries: set[int] = set()
    for off in range(8, len(body), 4):
        entry = _I.unpack_from(body, off)[0]
        if entry in entries:
            continue
        entries.add(entry)
        pid, blp = entry >> 16, entry & 0xFFFF
        lost[pid] = None
        bit = 0
        while blp:
            if blp & 1:
                lost[(pid + bit + 1) & 0xFFFF] = None
            blp >>= 1
            bit += 1
        if len(lost) >= MAX_NACK_SEQS:
            return tuple(lost)[:MAX_NACK_SEQS]
    return tuple(lost)


def parse_rtcp_untrusted(data: bytes) -> list[RtcpPacket]:
    """Parse a (compound) RTCP packet. Raises only :class:`MalformedPacket`."""
    n = len(data)
    if n < 4:
        raise MalformedPacket("RTCP packet shorter than 4 bytes")
    out: list[RtcpPacket] = []
    offset = 0
    while offset < n:
        if offset + 4 > n:
            raise MalformedPacket("RTCP header truncated")
        b0, pt, words = _HDR.unpack_from(data, offset)
        if b0 >> 6 != 2:
            raise MalformedPacket("RTCP version is not 2")
        end = offset + 4 + 4 * words
        if end > n:
            raise MalformedPacket("RTCP packet length overruns the datagram")
        body_end = end
        if b0 & 0x20:
            pad = data[end - 1] if end > offset + 4 else 0
            if pad == 0 or end - pad < offset + 4:
                raise MalformedPacket("RTCP padding invalid")
            body_end = end - pad
        out.append(_parse_one(pt, b0 & 0x1F, bytes(data[offset + 4 : body_end])))
        offset = end
    return out


# ---------------------------------------------------------------- building


def _header(fmt: int, pt: int, body_len: int) -> bytes:
    if body_len % 4:
        raise ValueError("RTCP body must be a multiple of 4 bytes")
    return _HDR.pack(0x80 | (fmt & 0x1F), pt, body_len // 4)


def _pack_blocks(reports: Sequence[ReportBlock]) -> bytes:
    if len(reports) > 31:
        raise ValueError("at most 31 report blocks")
    return b"".join(
        _BLOCK.pack(
            r.ssrc,
            ((r.fraction_lost & 0xFF) << 24) | (r.cumulative_lost & 0xFFFFFF),
            r.highest_seq & 0xFFFFFFFF,
            r.jitter & 0xFFFFFFFF,
            r.lsr & 0xFFFFFFFF,
            r.dlsr & 0xFFFFFFFF,
        )
        for r in reports
    )


def build_rr(sender_ssrc: int, reports: Sequence[ReportBlock] = ()) -> bytes:
    body = _I.pack(sender_ssrc) + _pack_blocks(reports)
    return _header(len(reports), RTCP_RR, len(body)) + body


def build_sr(
    sender_ssrc: int,
    ntp: int,
    rtp_ts: int,
    packet_count: int,
    octet_count: int,
    reports: Sequence[ReportBlock] = (),
) -> bytes:
    body = _SR_INFO.pack(
        sender_ssrc,
        ntp & 0xFFFFFFFFFFFFFFFF,
        rtp_ts & 0xFFFFFFFF,
        packet_count & 0xFFFFFFFF,
        octet_count & 0xFFFFFFFF,
    ) + _pack_blocks(reports)
    return _header(len(reports), RTCP_SR, len(body)) + body


def nack_pairs(seqs: Iterable[int]) -> list[tuple[int, int]]:
    """Pack sequence numbers (in order, wrap-aware) into (PID, BLP) pairs."""
    pairs: list[tuple[int, int]] = []
    pid = -1
    blp = 0
    for s in seqs:
        s &= 0xFFFF
        if pid >= 0:
            d = (s - pid) & 0xFFFF
            if d == 0:
                continue
            if d <= 16:
                blp |= 1 << (d - 1)
                continue
            pairs.append((pid, blp))
        pid, blp = s, 0
    if pid >= 0:
        pairs.append((pid, blp))
    return pairs


def build_nack(sender_ssrc: int, media_ssrc: int, seqs: Iterable[int]) -> bytes:
    pairs = nack_pairs(seqs)
    body = _II.pack(sender_ssrc, media_ssrc) + b"".join(_HH.pack(p, b) for p, b in pairs)
    return _header(1, RTCP_RTPFB, len(body)) + body


def build_pli(sender_ssrc: int, media_ssrc: int) -> bytes:
    body = _II.pack(sender_ssrc, media_ssrc)
    return _header(1, RTCP_PSFB, len(body)) + body


def build_fir(sender_ssrc: int, media_ssrc: int, seq_nr: int) -> bytes:
    """FIR (RFC 5104 4.3.1): media source in the FCI; the common header's media ssrc is 0."""
    body = _II.pack(sender_ssrc, 0) + _I.pack(media_ssrc) + bytes((seq_nr & 0xFF, 0, 0, 0))
    return _header(4, RTCP_PSFB, len(body)) + body


def build_remb(sender_ssrc: int, bitrate_bps: int, ssrcs: Sequence[int]) -> bytes:
    if bitrate_bps < 0:
        raise ValueError("bitrate must be >= 0")
    if len(ssrcs) > 255:
        raise ValueError("at most 255 ssrcs")
    exp = 0
    mantissa = bitrate_bps
    while mantissa > 0x3FFFF:
        mantissa >>= 1
        exp += 1
    if exp > 63:
        raise ValueError("bitrate too large")
    body = (
        _II.pack(sender_ssrc, 0)
        + b"REMB"
        + bytes((len(ssrcs), (exp << 2) | (mantissa >> 16), (mantissa >> 8) & 0xFF, mantissa & 0xFF))
        + b"".join(_I.pack(s) for s in ssrcs)
    )
    return _header(15, RTCP_PSFB, len(body)) + body


def build_bye(ssrcs: Sequence[int]) -> bytes:
    body = b"".join(_I.pack(s) for s in ssrcs)
    return _header(len(ssrcs), RTCP_BYE, len(body)) + body


def build_compound(*packets: bytes) -> bytes:
    """Concatenate individual RTCP packets into one compound packet."""
    return b"".join(packets)
