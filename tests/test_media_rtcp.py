"""RTCP parsing and building (media/rtcp.py)."""

from __future__ import annotations

import contextlib
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from media.errors import MalformedPacket
from media.rtcp import (
    MAX_NACK_SEQS,
    Bye,
    Fir,
    FirEntry,
    Nack,
    OtherRtcp,
    Pli,
    ReceiverReport,
    Remb,
    ReportBlock,
    SenderReport,
    build_bye,
    build_compound,
    build_fir,
    build_nack,
    build_pli,
    build_remb,
    build_rr,
    build_sr,
    nack_pairs,
    parse_rtcp_untrusted,
)

BLOCK = ReportBlock(
    ssrc=0xABCD,
    fraction_lost=25,
    cumulative_lost=-3,
    highest_seq=70000,
    jitter=12,
    lsr=0x12345678,
    dlsr=65536,
)


def test_sr_round_trip() -> None:
    data = build_sr(0x1234, 0x0102030405060708, 90000, 10, 12000, [BLOCK])
    assert parse_rtcp_untrusted(data) == [SenderReport(0x1234, 0x0102030405060708, 90000, 10, 12000, (BLOCK,))]


def test_rr_round_trip_and_empty() -> None:
    assert parse_rtcp_untrusted(build_rr(7, [BLOCK, BLOCK])) == [ReceiverReport(7, (BLOCK, BLOCK))]
    assert build_rr(7) == b"\x80\xc9\x00\x01\x00\x00\x00\x07"
    assert parse_rtcp_untrusted(build_rr(7)) == [ReceiverReport(7, ())]


def test_pli_bytes_and_round_trip() -> None:
    data = build_pli(1, 2)
    assert data == b"\x81\xce\x00\x02\x00\x00\x00\x01\x00\x00\x00\x02"
    assert parse_rtcp_untrusted(data) == [Pli(1, 2)]


def test_fir_round_trip() -> None:
    assert parse_rtcp_untrusted(build_fir(1, 0x55, 300)) == [Fir(1, (FirEntry(0x55, 300 & 0xFF),))]


def test_nack_packing_and_round_trip() -> None:
    seqs = [100, 101, 116, 117, 200]
    assert nack_pairs(seqs) == [(100, 0b1000_0000_0000_0001), (117, 0), (200, 0)]
    assert parse_rtcp_untrusted(build_nack(1, 2, seqs)) == [Nack(1, 2, tuple(seqs))]


def test_nack_wraparound() -> None:
    seqs = [65534, 65535, 0, 1]
    assert nack_pairs(seqs) == [(65534, 0b111)]
    assert parse_rtcp_untrusted(build_nack(1, 2, seqs)) == [Nack(1, 2, (65534, 65535, 0, 1))]


@given(st.lists(st.integers(0, 500), min_size=1, max_size=60))
def test_nack_round_trip_property(offsets: list[int]) -> None:
    seqs = [(65000 + o) & 0xFFFF for o in sorted(set(offsets))]
    (nack,) = parse_rtcp_untrusted(build_nack(3, 4, seqs))
    assert isinstance(nack, Nack)
    assert list(nack.lost) == seqs


@pytest.mark.parametrize("bitrate", [0, 1, 300_000, 1_500_000, 262_143, 262_144, 10**9])
def test_remb_round_trip(bitrate: int) -> None:
    (remb,) = parse_rtcp_untrusted(build_remb(9, bitrate, [0x11, 0x22]))
    assert isinstance(remb, Remb)
    assert remb.sender_ssrc == 9
    assert remb.ssrcs == (0x11, 0x22)
    # 18-bit mantissa: rounded down, relative error < 2^-17
    assert remb.bitrate_bps <= bitrate
    assert bitrate - remb.bitrate_bps <= bitrate / 2**17


def test_remb_known_bytes() -> None:
    # 1,500,000 = 187500 << 3
    data = build_remb(1, 1_500_000, [2])
    assert data[12:16] == b"REMB"
    assert data[16:20] == bytes([1, (3 << 2) | (187500 >> 16), (187500 >> 8) & 0xFF, 187500 & 0xFF])


def test_bye_and_other_and_compound() -> None:
    sdes = b"\x81\xca\x00\x02\x00\x00\x00\x05\x00\x00\x00\x00"
    data = build_compound(build_rr(5), sdes, build_bye([5, 6]), build_pli(5, 6))
    packets = parse_rtcp_untrusted(data)
    assert packets == [
        ReceiverReport(5, ()),
        OtherRtcp(202, 1, b"\x00\x00\x00\x05\x00\x00\x00\x00"),
        Bye((5, 6)),
        Pli(5, 6),
    ]


def test_transport_cc_is_other() -> None:
    twcc = b"\x8f\xcd\x00\x02" + b"\x00" * 8
    (p,) = parse_rtcp_untrusted(twcc)
    assert isinstance(p, OtherRtcp)
    assert (p.packet_type, p.fmt) == (205, 15)


def test_padding_is_removed() -> None:
    padded = b"\xa0\xc9\x00\x02\x00\x00\x00\x07\x00\x00\x00\x04"
    assert parse_rtcp_untrusted(padded) == [ReceiverReport(7, ())]


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x80\xc9\x00",
        b"\x40\xc9\x00\x01\x00\x00\x00\x07",  # version 1
        b"\x80\xc9\x00\x05\x00\x00\x00\x07",  # length overruns
        b"\x81\xc9\x00\x01\x00\x00\x00\x07",  # one report block missing
        b"\x81\xcd\x00\x01\x00\x00\x00\x01",  # NACK without media ssrc
        b"\x84\xce\x00\x03" + b"\x00" * 12,  # FIR with half an entry
        b"\xa0\xc9\x00\x01\x00\x00\x00\x00",  # padding 0
        build_rr(1) + b"\x80",  # trailing junk
    ],
)
def test_malformed(data: bytes) -> None:
    with pytest.raises(MalformedPacket):
        parse_rtcp_untrusted(data)


@given(st.binary(max_size=120))
def test_parse_raises_only_malformed(data: bytes) -> None:
    with contextlib.suppress(MalformedPacket):
        parse_rtcp_untrusted(data)


@given(st.binary(max_size=80))
def test_parse_valid_header_random_body(body: bytes) -> None:
    body = body[: len(body) - len(body) % 4]
    for pt in (200, 201, 203, 205, 206):
        for fmt in (0, 1, 4, 15, 31):
            data = bytes([0x80 | fmt, pt]) + (len(body) // 4).to_bytes(2, "big") + body
            with contextlib.suppress(MalformedPacket):
                parse_rtcp_untrusted(data)


def test_nack_names_each_packet_once_and_at_most_max_nack_seqs() -> None:
    """A NACK repeating its FCI entries is one NACK of its distinct packets; a longer list
    than any sender keeps is cut at MAX_NACK_SEQS."""
    entries = struct.pack("!HH", 100, 0xFFFF) * 290  # 17 packets, 290 times
    body = struct.pack("!II", 1, 2) + entries
    (nack,) = parse_rtcp_untrusted(struct.pack("!BBH", 0x81, 205, len(body) // 4) + body)
    assert isinstance(nack, Nack) and nack.lost == tuple(range(100, 117))
    overlapping = build_nack(1, 2, [10, 11]) + build_nack(1, 2, [])
    assert parse_rtcp_untrusted(overlapping)[0] == Nack(1, 2, (10, 11))
    everything = build_nack(1, 2, range(0, 4000, 2))
    (big,) = parse_rtcp_untrusted(everything)
    assert isinstance(big, Nack) and big.lost == tuple(range(0, 2 * MAX_NACK_SEQS, 2))
