"""VP8 payload descriptor (media/vp8.py)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from media.errors import MalformedPacket
from media.vp8 import (
    descriptor_length,
    is_keyframe_start,
    parse_vp8_descriptor_untrusted,
    read_picture_id,
    rewrite_picture_id,
)

KEY = b"\x00\x9d\x01\x2a"  # VP8 payload header with P=0 (keyframe)
INTER = b"\x01\x00\x00"  # P=1


def test_minimal_descriptor() -> None:
    d = parse_vp8_descriptor_untrusted(b"\x10" + KEY)
    assert d.length == 1
    assert d.start_of_partition
    assert d.partition_id == 0
    assert d.picture_id is None
    assert d.keyframe
    assert is_keyframe_start(b"\x10" + KEY)
    assert not is_keyframe_start(b"\x10" + INTER)
    assert not is_keyframe_start(b"\x00" + KEY)  # not a start
    assert not is_keyframe_start(b"\x11" + KEY)  # partition 1
    assert not is_keyframe_start(b"\x10")  # no payload header
    assert not is_keyframe_start(b"")


def test_all_extensions_15_bit_picture_id() -> None:
    payload = bytes([0x90, 0xF0, 0x80 | 0x12, 0x34, 0x05, 0b10_1_00011]) + KEY
    d = parse_vp8_descriptor_untrusted(payload)
    assert d.picture_id == 0x1234
    assert d.picture_id_bits == 15
    assert d.tl0_pic_idx == 5
    assert d.tid == 2
    assert d.layer_sync
    assert d.key_idx == 3
    assert d.length == 6 == descriptor_length(payload)
    assert d.keyframe and is_keyframe_start(payload)


def test_7_bit_picture_id() -> None:
    payload = bytes([0x80, 0x80, 0x55]) + INTER
    d = parse_vp8_descriptor_untrusted(payload)
    assert (d.picture_id, d.picture_id_bits, d.length) == (0x55, 7, 3)
    assert not d.start_of_partition
    assert not d.keyframe


@pytest.mark.parametrize(
    "payload",
    [b"", b"\x80", b"\x80\x80", b"\x80\x80\x80", b"\x80\x40", b"\x80\x20", b"\x80\xc0\x05"],
)
def test_truncated(payload: bytes) -> None:
    with pytest.raises(MalformedPacket):
        parse_vp8_descriptor_untrusted(payload)
    if payload:
        assert descriptor_length(payload) == -1 or descriptor_length(payload) > len(payload) - 1


@given(st.binary(max_size=12))
def test_parse_raises_only_malformed_and_agrees(payload: bytes) -> None:
    try:
        d = parse_vp8_descriptor_untrusted(payload)
    except MalformedPacket:
        return
    assert d.length == descriptor_length(payload)
    assert d.keyframe == is_keyframe_start(payload)


def test_rewrite_15_bit_wraps_and_keeps_width() -> None:
    buf = bytearray([0x90, 0x80, 0xFF, 0xFE]) + KEY
    rewrite_picture_id(buf, 3)
    assert read_picture_id(buf) == (1, 15)
    assert buf[2] & 0x80
    assert bytes(buf[4:]) == KEY


def test_rewrite_7_bit_wraps() -> None:
    buf = bytearray([0x90, 0x80, 0x7F]) + KEY
    rewrite_picture_id(buf, 2)
    assert read_picture_id(buf) == (1, 7)


def test_rewrite_at_offset_and_without_picture_id() -> None:
    buf = bytearray(b"HDR" + bytes([0x90, 0x80, 0x80, 0x10]) + KEY)
    rewrite_picture_id(buf, 0x7FFF, start=3)
    assert read_picture_id(buf, 3) == (0x0F, 15)
    plain = bytearray(b"\x10" + KEY)
    rewrite_picture_id(plain, 5)
    assert bytes(plain) == b"\x10" + KEY
