"""media/h264.py without sockets: where a keyframe starts in RTP payloads of packetization
mode 1 (single NAL units, STAP-A, FU-A), profile-level-id (RFC 6184), and access units as a
recording stores them."""

from __future__ import annotations

import pytest

from media.h264 import (
    AUD,
    FU_A,
    IDR,
    PPS,
    SPS,
    STAP_A,
    H264Format,
    ParameterSets,
    ProfileLevel,
    Sample,
    avc_decoder_configuration,
    choose_host_format,
    choose_viewer_format,
    depacketize,
    host_answer_fmtp,
    is_keyframe_start,
    keyframe_start_in,
    length_prefixed,
    nal_types,
    opens_access_unit,
    parse_profile_level_id,
    recording_sample,
    sps_frame_size,
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


def fmt(pt: int, profile_level_id: str | None, mode: str | None = "1", asymmetry: bool = True) -> H264Format:
    fmtp = {"packetization-mode": mode} if mode is not None else {}
    if profile_level_id is not None:
        fmtp["profile-level-id"] = profile_level_id
    if asymmetry:
        fmtp["level-asymmetry-allowed"] = "1"
    return H264Format(pt, fmtp)


# what Chromium offers for H.264 (OpenH264), in its order
CHROMIUM = [
    fmt(102, "42001f", mode="1"),
    fmt(103, "42001f", mode="0"),
    fmt(104, "42e01f", mode="1"),
    fmt(105, "42e01f", mode="0"),
    fmt(106, "4d001f", mode="1"),
    fmt(107, "4d001f", mode="0"),
]


def test_a_host_format_is_mode_1_and_the_most_widely_decoded_profile_it_offers() -> None:
    chosen = choose_host_format(CHROMIUM)
    assert chosen is not None
    assert chosen[0].payload_type == 104 and chosen[1] == ProfileLevel("constrained_baseline", 31)
    assert host_answer_fmtp(chosen[0]) == {
        "level-asymmetry-allowed": "1",
        "packetization-mode": "1",
        "profile-level-id": "42e01f",
    }
    # openh264enc's offer (GStreamer) has no profile-level-id: baseline level 1 by default
    bare = choose_host_format([fmt(96, None)])
    assert bare is not None and bare[1] == ProfileLevel("baseline", 10)
    assert "profile-level-id" not in host_answer_fmtp(bare[0])
    assert choose_host_format([fmt(96, "42e01f", mode="0"), fmt(97, "42e01f", mode=None)]) is None
    assert choose_host_format([fmt(96, "640c1f"), fmt(97, "4d001f")]) == (fmt(97, "4d001f"), ProfileLevel("main", 31))


def test_a_viewer_receives_under_the_same_profile_or_one_containing_it() -> None:
    constrained = ProfileLevel("constrained_baseline", 31)
    assert choose_viewer_format(CHROMIUM, constrained) == CHROMIUM[2]  # 42e01f, mode 1
    assert choose_viewer_format([CHROMIUM[0], CHROMIUM[4]], constrained) == CHROMIUM[0]  # baseline contains it
    assert choose_viewer_format(CHROMIUM, ProfileLevel("main", 31)) == CHROMIUM[4]
    assert choose_viewer_format(CHROMIUM, ProfileLevel("high", 31)) is None  # nobody decodes High here
    assert choose_viewer_format([CHROMIUM[1], CHROMIUM[3]], constrained) is None  # mode 0 only
    low = [fmt(96, "42e00d", asymmetry=False)]  # level 1.3, no asymmetry: a 3.1 stream is too much
    assert choose_viewer_format(low, constrained) is None
    assert choose_viewer_format([fmt(96, "42e00d")], constrained) == fmt(96, "42e00d")


SPS_UNIT = bytes([NRI | SPS, 0x42, 0xE0, 0x1F, 0xDA, 0x02, 0x80])
PPS_UNIT = bytes([NRI | PPS, 0xCE, 0x3C, 0x80])
IDR_UNIT = bytes([NRI | IDR]) + bytes(range(40))


def fragments(unit_bytes: bytes, size: int) -> list[bytes]:
    body = unit_bytes[1:]
    parts = [body[i : i + size] for i in range(0, len(body), size)]
    out = []
    for i, part in enumerate(parts):
        header = (0x80 if i == 0 else 0) | (0x40 if i == len(parts) - 1 else 0) | (unit_bytes[0] & 0x1F)
        out.append(bytes([(unit_bytes[0] & 0xE0) | FU_A, header]) + part)
    return out


def test_an_access_unit_is_rebuilt_from_stap_a_and_fu_a() -> None:
    payloads = [stap_a(SPS_UNIT, PPS_UNIT), *fragments(IDR_UNIT, 16)]
    assert len(payloads) == 4
    assert depacketize(payloads) == [SPS_UNIT, PPS_UNIT, IDR_UNIT]
    assert depacketize([unit(1, b"\x9a\x00")]) == [unit(1, b"\x9a\x00")]
    assert length_prefixed([SPS_UNIT, PPS_UNIT]) == b"\x00\x00\x00\x07" + SPS_UNIT + b"\x00\x00\x00\x04" + PPS_UNIT


@pytest.mark.parametrize("drop", [1, 3])  # the first or the last fragment (a middle one: the caller's
def test_an_access_unit_with_a_fragment_missing_is_nothing(drop: int) -> None:  # sequence numbers)
    payloads = [stap_a(SPS_UNIT, PPS_UNIT), *fragments(IDR_UNIT, 16)]
    del payloads[drop]
    assert depacketize(payloads) == []


def test_the_avc_decoder_configuration_record() -> None:
    record = avc_decoder_configuration(SPS_UNIT, PPS_UNIT)
    assert record[:6] == bytes([1, 0x42, 0xE0, 0x1F, 0xFF, 0xE1])
    assert record[6:8] == (7).to_bytes(2, "big") and record[8:15] == SPS_UNIT
    assert record[15] == 1 and record[16:18] == (4).to_bytes(2, "big") and record[18:] == PPS_UNIT
    with pytest.raises(ValueError):
        avc_decoder_configuration(PPS_UNIT, SPS_UNIT)


def encoded_sps(width: int, height: int, profile: str) -> bytes:
    """The SPS libx264 (through PyAV, as aiortc encodes) writes for a frame of that size."""
    import av

    context = av.CodecContext.create("libx264", "w")
    context.width, context.height, context.pix_fmt = width, height, "yuv420p"
    context.options = {"profile": profile, "tune": "zerolatency"}
    frame = av.VideoFrame(width, height, "yuv420p")
    stream = b"".join(bytes(packet) for packet in context.encode(frame)) + b"".join(
        bytes(packet) for packet in context.encode(None)
    )
    for unit in stream.split(b"\x00\x00\x01"):
        unit = unit.rstrip(b"\x00")
        if unit and unit[0] & 0x1F == SPS:
            return unit
    raise AssertionError("no SPS in libx264's output")


@pytest.mark.parametrize(
    ("width", "height", "profile"),
    [(320, 240, "baseline"), (640, 360, "baseline"), (1280, 720, "main"), (1920, 1080, "high"), (322, 182, "high")],
)
def test_the_frame_size_an_sps_declares(width: int, height: int, profile: str) -> None:
    assert sps_frame_size(encoded_sps(width, height, profile)) == (width, height)


def test_an_sps_that_is_cut_short_or_not_an_sps_has_no_size() -> None:
    sps = encoded_sps(640, 360, "baseline")
    assert sps_frame_size(sps[:6]) is None
    assert sps_frame_size(PPS_UNIT) is None and sps_frame_size(b"") is None


@pytest.mark.parametrize(
    ("payload", "opens"),
    [
        (stap_a(unit(SPS), unit(PPS)), True),
        (unit(SPS), True),
        (unit(AUD, b"\xf0"), True),
        (stap_a(unit(AUD, b"\xf0"), unit(1)), True),
        (unit(PPS), False),  # it follows the SPS
        (fu_a(IDR, start=True), False),  # an IDR without its parameter sets, or a second slice
        (unit(1), False),
        (stap_a(unit(6), unit(1)), False),  # an SEI may come after the parameter sets
        (b"", False),
    ],
)
def test_what_can_only_open_an_access_unit(payload: bytes, opens: bool) -> None:
    assert opens_access_unit(payload) is opens


def test_a_keyframe_sample_is_led_by_the_parameter_sets_it_uses() -> None:
    sps, aud, sei = encoded_sps(320, 240, "baseline"), unit(AUD, b"\xf0"), unit(6)
    params = ParameterSets()
    assert recording_sample([sps, PPS_UNIT], params) is None  # no slice: nothing to write, kept
    assert (params.sps, params.pps) == (sps, PPS_UNIT)
    avcc = avc_decoder_configuration(sps, PPS_UNIT)
    keyframe = Sample(length_prefixed([sps, PPS_UNIT, sei, IDR_UNIT]), True, (320, 240), avcc)
    assert recording_sample([aud, sei, IDR_UNIT], params) == keyframe  # the kept ones; no AUD
    assert recording_sample([aud, sps, PPS_UNIT, sei, IDR_UNIT], params) == keyframe  # its own
    assert recording_sample([aud, sei, PPS_UNIT, sps, IDR_UNIT], params) == keyframe  # put in order
    assert recording_sample([aud, unit(1)], params) == Sample(length_prefixed([unit(1)]), False, None, None)


def test_a_keyframe_without_parameter_sets_that_decode_it_is_refused() -> None:
    with pytest.raises(ValueError):
        recording_sample([IDR_UNIT], ParameterSets())
    with pytest.raises(ValueError):
        recording_sample([encoded_sps(320, 240, "baseline"), IDR_UNIT], ParameterSets())  # no PPS
    with pytest.raises(ValueError):  # an SPS cut short: no frame size for the track
        recording_sample([encoded_sps(320, 240, "baseline")[:6], PPS_UNIT, IDR_UNIT], ParameterSets())
