"""RTP header parsing and outgoing-header building (media/rtp.py).

The outgoing packet is assembled by the router (its fixed header packed inline
per viewer, the rest from `build_body`), so those tests go through a `Router`.
"""

from __future__ import annotations

import contextlib
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from media.errors import MalformedPacket
from media.router import Router
from media.rtp import (
    AUDIO_LEVEL_URI,
    FIXED_HEADER,
    MID_URI,
    build_body,
    encode_extensions,
    make_extension_plan,
    parse_extensions_untrusted,
    parse_rtp_untrusted,
)
from media.streams import SinkStream, SourceStream
from tests.rtp_packets import build_rtp_packet

TWCC_URI = "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01"
ABS_SEND_URI = "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time"


def test_parse_minimal() -> None:
    data = build_rtp_packet(
        payload_type=111,
        sequence_number=65535,
        timestamp=0xFFFFFFFF,
        ssrc=0xDEADBEEF,
        payload=b"opus",
        marker=True,
    )
    h = parse_rtp_untrusted(data)
    assert (h.version, h.padding, h.extension, h.csrc_count) == (2, False, False, 0)
    assert (h.marker, h.payload_type, h.sequence_number) == (True, 111, 65535)
    assert (h.timestamp, h.ssrc) == (0xFFFFFFFF, 0xDEADBEEF)
    assert h.header_length == h.payload_offset == 12
    assert data[h.payload_offset : h.payload_end] == b"opus"
    assert h.extensions == {}


def test_parse_one_byte_extensions_csrcs_and_padding() -> None:
    data = build_rtp_packet(
        payload_type=96,
        sequence_number=1,
        timestamp=2,
        ssrc=3,
        payload=b"\x10\x00abc",
        extensions=[(1, b"0"), (3, b"\x01\x02")],
        csrcs=(7, 8),
        padding=4,
    )
    h = parse_rtp_untrusted(data)
    assert h.csrc_count == 2
    assert h.extension_profile == 0xBEDE
    assert h.extensions == {1: b"0", 3: b"\x01\x02"}
    assert h.padding
    assert data[h.payload_offset : h.payload_end] == b"\x10\x00abc"
    lazy = parse_rtp_untrusted(data, parse_extensions=False)
    assert lazy.extensions == {}
    assert parse_extensions_untrusted(data, lazy) == h.extensions


def test_parse_two_byte_extensions() -> None:
    data = build_rtp_packet(
        payload_type=96,
        sequence_number=1,
        timestamp=2,
        ssrc=3,
        payload=b"x",
        extensions=[(20, b""), (2, b"y" * 20)],
    )
    h = parse_rtp_untrusted(data)
    assert h.extension_profile == 0x1000
    assert h.extensions == {20: b"", 2: b"y" * 20}


def test_one_byte_padding_and_reserved_id() -> None:
    # element id 1 len 1, a padding byte, then id 15 which stops processing
    block = bytes([0x10, 0xAA, 0x00, 0xF0])
    data = FIXED_HEADER.pack(0x90, 96, 1, 2, 3) + struct.pack("!HH", 0xBEDE, 1) + block + b"p"
    assert parse_rtp_untrusted(data).extensions == {1: b"\xaa"}


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x80" * 11,
        FIXED_HEADER.pack(0x40, 96, 1, 2, 3),  # version 1
        FIXED_HEADER.pack(0x81, 96, 1, 2, 3),  # CSRC missing
        FIXED_HEADER.pack(0x90, 96, 1, 2, 3) + b"\xbe\xde",  # ext header truncated
        FIXED_HEADER.pack(0x90, 96, 1, 2, 3) + b"\xbe\xde\x00\x02" + b"\x00" * 4,
        FIXED_HEADER.pack(0xA0, 96, 1, 2, 3) + b"ab\x00",  # padding 0
        FIXED_HEADER.pack(0xA0, 96, 1, 2, 3) + b"ab\x09",  # padding too long
        FIXED_HEADER.pack(0x90, 96, 1, 2, 3) + b"\xbe\xde\x00\x01\x13\x00\x00\x00",  # overrun
    ],
)
def test_malformed(data: bytes) -> None:
    with pytest.raises(MalformedPacket):
        parse_rtp_untrusted(data)


@given(st.binary(max_size=80))
def test_parse_raises_only_malformed(data: bytes) -> None:
    try:
        h = parse_rtp_untrusted(data)
    except MalformedPacket:
        return
    assert 12 <= h.payload_offset <= h.payload_end <= len(data)


@given(st.binary(min_size=8, max_size=60), st.sampled_from([0xBEDE, 0x1000, 0x1001]))
def test_extension_parse_raises_only_malformed(block: bytes, profile: int) -> None:
    block = block[: len(block) - len(block) % 4]
    data = FIXED_HEADER.pack(0x90, 96, 1, 2, 3) + struct.pack("!HH", profile, len(block) // 4) + block + b"payload"
    with contextlib.suppress(MalformedPacket):
        parse_rtp_untrusted(data)


HOST_EXT = {1: MID_URI, 2: ABS_SEND_URI, 3: TWCC_URI, 4: AUDIO_LEVEL_URI}


def test_extension_plan_keeps_only_allowed_and_maps_ids() -> None:
    viewer = {MID_URI: 9, TWCC_URI: 5, AUDIO_LEVEL_URI: 12, ABS_SEND_URI: 6}
    plan = make_extension_plan(HOST_EXT, viewer, "a1")
    assert plan.mapping == ((4, 12),)
    assert plan.mid == (9, b"a1")
    assert make_extension_plan(HOST_EXT, {TWCC_URI: 5}, "0").is_empty
    # no MID value: MID stripped
    assert make_extension_plan(HOST_EXT, {MID_URI: 9}, None).is_empty


def _host_packet() -> bytes:
    return build_rtp_packet(
        payload_type=111,
        sequence_number=10,
        timestamp=960,
        ssrc=0x1111,
        payload=b"OPUS-PAYLOAD",
        marker=True,
        extensions=[(1, b"0"), (2, b"\x01\x02\x03"), (3, b"\x00\x07"), (4, b"\x85")],
    )


def _forwarded(data: bytes, *, extensions: dict[str, int] | None = None, mid: str | None = None) -> bytes:
    """Host Opus packet `data` as the router sends it to a new viewer (ssrc 0x2222, PT 100)."""
    router = Router(rtcp_ssrc=1, target_bitrate_bps=1_500_000)
    host = SourceStream(kind="audio", payload_type=111, clock_rate=48000, extensions=HOST_EXT)
    router.attach_publisher([host], lambda d: None, 0.0)
    sink = SinkStream(
        kind="audio", ssrc=0x2222, payload_type=100, clock_rate=48000, extensions=extensions or {}, mid=mid
    )
    sent: list[bytes] = []
    router.add_viewer("v", [sink], sent.append, lambda d: None, 0.0)
    router.on_publisher_rtp(data, 0.0)
    (out,) = sent
    return out


def test_outgoing_fast_path_strips_extensions() -> None:
    out = _forwarded(_host_packet())
    o = parse_rtp_untrusted(out)
    assert not o.extension
    # a new viewer sees the host's seq and ts (tests/test_media_seqmap.py)
    assert (o.ssrc, o.payload_type, o.sequence_number, o.timestamp, o.marker) == (
        0x2222,
        100,
        10,
        960,
        True,
    )
    assert out[o.payload_offset :] == b"OPUS-PAYLOAD"


def test_outgoing_viewer_mid_and_mapped_audio_level() -> None:
    out = _forwarded(_host_packet(), extensions={MID_URI: 3, AUDIO_LEVEL_URI: 1, TWCC_URI: 2}, mid="v7")
    o = parse_rtp_untrusted(out)
    assert o.extensions == {1: b"\x85", 3: b"v7"}
    assert out[o.payload_offset : o.payload_end] == b"OPUS-PAYLOAD"


def test_build_body_mid_only_when_packet_has_no_mapped_extension() -> None:
    data = build_rtp_packet(payload_type=111, sequence_number=1, timestamp=1, ssrc=1, payload=b"P", padding=3)
    h = parse_rtp_untrusted(data)
    plan = make_extension_plan(HOST_EXT, {MID_URI: 3, AUDIO_LEVEL_URI: 1}, "0")
    b0, body = build_body(h, data, plan)
    out = FIXED_HEADER.pack(b0, 100, 1, 1, 1) + body
    o = parse_rtp_untrusted(out)
    assert o.extensions == {3: b"0"}
    assert o.padding
    assert out[o.payload_offset : o.payload_end] == b"P"


def test_two_byte_form_for_large_ids() -> None:
    block = encode_extensions([(3, b"x"), (200, b"mid")])
    assert block[:2] == b"\x10\x00"
    data = FIXED_HEADER.pack(0x90, 96, 1, 2, 3) + block + b"pl"
    assert parse_rtp_untrusted(data).extensions == {3: b"x", 200: b"mid"}


def test_csrcs_are_dropped_on_the_way_out() -> None:
    data = build_rtp_packet(payload_type=111, sequence_number=1, timestamp=2, ssrc=3, payload=b"abc", csrcs=(1, 2))
    assert _forwarded(data) == FIXED_HEADER.pack(0x80, 100, 1, 2, 0x2222) + b"abc"
