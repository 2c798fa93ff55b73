"""media/h264.py without sockets: where a keyframe starts in RTP payloads of packetization
mode 1 (single NAL units, STAP-A, FU-A), and profile-level-id (RFC 6184)."""

from __future__ import annotations

import pytest

from media.h264 import (
    FU_A,
    IDR,
    PPS,
    SPS,
    STAP_A,
    ProfileLevel,
    is_keyframe_start,
    keyframe_start_in,
    nal_types,
    parse_profile_level_id,
)

NRI = 0x60  # nal_ref_idc 3


def unit(kind: int, body: bytes = b"\x88\x84\x00") -> bytes:
    return bytes([NRI | kind]) + body


def stap_a(*units: bytes) -> bytes:
    out = bytes([NRI | STAP_A])
    for u in units:
        out += len(u).to_bytes(2, "big") + u
    return out


def fu_a(kind: int, *, start: bool, end: bool = False, body: bytes = b"\x00\x01") -> bytes:
    return bytes([NRI | FU_A, (0x80 if start else 0) | (0x40 if end else 0) | kind]) + body


@pytest.mark.parametrize(
    ("payload", "starts", "types"),
    [
        (unit(SPS), True, [SPS]),  # the parameter sets before an IDR, one packet each
        (unit(PPS), False, [PPS]),
        (unit(IDR), True, [IDR]),  # an IDR slice whole (no SPS in band)
        (unit(1), False, [1]),  # a P slice
        (stap_a(unit(SPS), unit(PPS)), True, [SPS, PPS]),  # Chromium: SPS+PPS aggregated
        (stap_a(unit(SPS), unit(PPS), unit(IDR)), True, [SPS, PPS, IDR]),
        (stap_a(unit(6), unit(1)), False, [6, 1]),  # SEI + P slice
        (fu_a(IDR, start=True), True, [IDR]),  # the first fragment of an IDR slice
        (fu_a(IDR, start=False), False, [IDR]),  # a middle one
        (fu_a(IDR, start=False, end=True), False, [IDR]),
        (fu_a(1, start=True), False, [1]),  # a P slice's first fragment
    ],
)
def test_keyframe_starts_in_each_packetization(payload: bytes, starts: bool, types: list[int]) -> None:
    assert is_keyframe_start(payload) is starts
    assert nal_types(payload) == types
    framed = b"\x90\x00" + payload + b"\x00\x00"  # inside a datagram: only [start, end) is read
    assert keyframe_start_in(framed, 2, 2 + len(payload)) is starts


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"\x65",  # an IDR's header and nothing else
        bytes([NRI | FU_A]),  # an FU-A without its FU header
        bytes([NRI | STAP_A]) + b"\x00\x09" + unit(SPS),  # a size past the end
        bytes([NRI | STAP_A]) + b"\x00\x00" + unit(SPS),  # a zero size
        bytes([NRI | STAP_A, 0x00]),  # a truncated size
    ],
)
def test_malformed_payloads_start_nothing_and_never_raise(payload: bytes) -> None:
    assert not is_keyframe_start(payload)
    assert nal_types(payload) == [] or len(payload) == 1


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("42e01f", ProfileLevel("constrained_baseline", 31)),  # Chromium's and OBS's usual
        ("42001f", ProfileLevel("baseline", 31)),
        ("4d001f", ProfileLevel("main", 31)),
        ("4d801f", ProfileLevel("constrained_baseline", 31)),  # constraint_set0 on main
        ("640c1f", ProfileLevel("constrained_high", 31)),
        ("640028", ProfileLevel("high", 40)),
        ("42f00b", ProfileLevel("constrained_baseline", 9)),  # level 1b: 11 with constraint_set3
        ("42E01F", ProfileLevel("constrained_baseline", 31)),  # hex in either case
    ],
)
def test_profile_level_id(value: str, expected: ProfileLevel) -> None:
    assert parse_profile_level_id(value) == expected


@pytest.mark.parametrize("value", ["", "42e0", "42e01f00", "zze01f", "420f1f", "650000", "42e000"])
def test_profile_level_ids_that_name_no_profile(value: str) -> None:
    assert parse_profile_level_id(value) is None
