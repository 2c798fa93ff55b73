"""Datagram classification on the shared media port (media/demux.py)."""

from __future__ import annotations

from aioice import stun
from hypothesis import given
from hypothesis import strategies as st

from media.demux import MIN_LENGTH, classify
from media.rtcp import build_pli, build_rr
from media.rtp import FIXED_HEADER

PAD = bytes(40)


def test_first_byte_ranges_rfc7983() -> None:
    for b in range(256):
        kind = classify(bytes([b, 0]) + PAD)
        if b <= 3:
            assert kind == "stun", b
        elif 20 <= b <= 63:
            assert kind == "dtls", b
        elif 128 <= b <= 191:
            assert kind == "rtp", b
        else:  # ZRTP 16..19, TURN channels 64..79, QUIC, unassigned
            assert kind == "unknown", b


def test_rtcp_by_second_byte_rfc5761() -> None:
    for second in range(256):
        kind = classify(bytes([0x80, second]) + PAD)
        assert kind == ("rtcp" if 192 <= second <= 223 else "rtp"), second
    # marker bit set on an ordinary payload type stays RTP
    assert classify(bytes([0x80, 0x80 | 96]) + PAD) == "rtp"


def test_real_packets() -> None:
    rtp = FIXED_HEADER.pack(0x80, 96, 1, 2, 3) + b"payload"
    assert classify(rtp) == "rtp"
    assert classify(build_rr(7)) == "rtcp"
    assert classify(build_pli(1, 2)) == "rtcp"
    request = stun.Message(stun.Method.BINDING, stun.Class.REQUEST)
    request.add_fingerprint()
    assert classify(bytes(request)) == "stun"
    # DTLS 1.2 handshake record header (content type 22, version fefd, epoch, seq, length)
    assert classify(bytes.fromhex("16fefd0000000000000000002c") + bytes(44)) == "dtls"
    assert classify(bytes.fromhex("17fefd0001000000000005") + bytes(40)) == "dtls"  # application data


def test_length_floors() -> None:
    assert classify(b"") == "unknown"
    assert classify(b"\x00") == "unknown"
    assert classify(bytes(19)) == "unknown"
    assert classify(bytes(20)) == "stun"
    assert classify(b"\x16" + bytes(11)) == "unknown"
    assert classify(b"\x16" + bytes(12)) == "dtls"
    assert classify(b"\x80\x60" + bytes(9)) == "unknown"
    assert classify(b"\x80\x60" + bytes(10)) == "rtp"
    assert classify(b"\x80\xc9" + bytes(5)) == "unknown"
    assert classify(b"\x80\xc9" + bytes(6)) == "rtcp"
    assert MIN_LENGTH["rtcp"] == 8


def test_bytes_like() -> None:
    data = build_rr(1)
    assert classify(bytearray(data)) == "rtcp"
    assert classify(memoryview(data)) == "rtcp"


@given(st.binary(max_size=64))
def test_classify_fuzz(data: bytes) -> None:
    kind = classify(data)
    assert kind in ("stun", "dtls", "rtp", "rtcp", "unknown")
    if kind != "unknown":
        assert len(data) >= MIN_LENGTH[kind]
        first = data[0]
        assert {
            "stun": first <= 3,
            "dtls": 20 <= first <= 63,
            "rtp": 128 <= first <= 191 and not 192 <= data[1] <= 223,
            "rtcp": 128 <= first <= 191 and 192 <= data[1] <= 223,
        }[kind]
