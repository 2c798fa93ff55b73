"""H.264 over RTP (RFC 6184), what a forwarder needs of it, sans-IO (issue 22).

The server never decodes: it needs to know where a keyframe starts (a viewer joins there, a
PLI is answered there, a recording starts there) and which profile a host offers (the answer
never claims one the host did not offer, RFC 6184 8.2.2).

Packetization mode 1 carries three kinds of RTP payload, told by the NAL unit header's type
(its low five bits):

- a single NAL unit (types 1-23): the unit itself;
- STAP-A (24): several units, each after a 16-bit size;
- FU-A (28): one unit in fragments; the FU header's S bit marks the first, and its type is
  the unit's.

A keyframe starts at its sequence parameter set (SPS, 7) when the encoder sends one in band
before each IDR (browsers and x264 do), or at the first fragment of its IDR slice (5) when it
does not; a packet holding either starts one. (PPS, 8, alone does not: it follows the SPS.)

Offer/answer (RFC 6184 8.2.2): a host's format is chosen among the H.264 formats it offers
(packetization mode 1, the most widely decodable profile first) and answered with its own
``profile-level-id``; a viewer's, among those it offers, is one whose profile is the host's
stream's (or contains it) at a level that stream fits, or none (the viewer cannot watch it).
Recordings (media/recorder.py) store an access unit as Matroska does (:func:`recording_sample`):
its NAL units after 4-byte lengths, a keyframe's led by the SPS and PPS it uses, the file's
first keyframe's SPS and PPS as the track's avcC (:func:`avc_decoder_configuration`).
"""

from __future__ import annotations

from typing import Final, NamedTuple

__all__ = [
    "AUD",
    "FU_A",
    "IDR",
    "PPS",
    "SPS",
    "STAP_A",
    "H264Format",
    "ParameterSets",
    "ProfileLevel",
    "Sample",
    "avc_decoder_configuration",
    "choose_host_format",
    "choose_viewer_format",
    "depacketize",
    "host_answer_fmtp",
    "is_keyframe_start",
    "keyframe_start_in",
    "length_prefixed",
    "nal_types",
    "opens_access_unit",
    "parse_profile_level_id",
    "recording_sample",
    "sps_frame_size",
]

IDR: Final = 5
SPS: Final = 7
PPS: Final = 8
AUD: Final = 9  # access unit delimiter
STAP_A: Final = 24
FU_A: Final = 28
_STARTS_KEYFRAME: Final = frozenset({IDR, SPS})


def nal_types(payload: bytes) -> list[int]:
    """The NAL unit types an RTP payload carries (an FU-A: its unit's type, first fragment or
    not); [] for what is too short or malformed (a STAP-A whose sizes overrun)."""
    return _nal_types(payload, 0, len(payload))


def _nal_types(data: bytes, start: int, end: int) -> list[int]:
    if end - start < 1:
        return []
    kind = data[start] & 0x1F
    if kind == FU_A:
        return [data[start + 1] & 0x1F] if end - start >= 2 else []
    if kind != STAP_A:
        return [kind] if kind else []
    types = []
    at = start + 1
    while at + 2 < end:
        size = (data[at] << 8) | data[at + 1]
        at += 2
        if size == 0 or at + size > end:
            return []
        types.append(data[at] & 0x1F)
        at += size
    return types if at == end else []


def keyframe_start_in(data: bytes, start: int, end: int) -> bool:
    """Whether the RTP payload ``data[start:end]`` starts a keyframe (see the module's
    docstring), without copying it: an SPS or an IDR slice as a single unit or in a STAP-A, or
    an FU-A's first fragment of an IDR slice."""
    if end - start < 2:
        return False
    kind = data[start] & 0x1F
    if kind == FU_A:
        header = data[start + 1]
        return bool(header & 0x80) and (header & 0x1F) in _STARTS_KEYFRAME
    if kind == STAP_A:
        return any(t in _STARTS_KEYFRAME for t in _nal_types(data, start, end))
    return kind in _STARTS_KEYFRAME


def is_keyframe_start(payload: bytes) -> bool:
    """:func:`keyframe_start_in` of a whole payload."""
    return keyframe_start_in(payload, 0, len(payload))


class ProfileLevel(NamedTuple):
    """What a ``profile-level-id`` (RFC 6184 8.1: profile_idc, profile-iop, level_idc, hex)
    says: the profile's name and the level (``level_idc``: 31 is level 3.1; level 1b is 9)."""

    profile: str
    level_idc: int


# (profile_idc, iop mask, iop value, profile): the constraint flags that make a profile of a
# profile_idc (H.264 A.2; the constrained baseline is what every baseline decoder takes)
_PROFILES: Final = (
    (0x42, 0x4F, 0x40, "constrained_baseline"),  # constraint_set1
    (0x4D, 0x8F, 0x80, "constrained_baseline"),  # constraint_set0 on main
    (0x58, 0xCF, 0xC0, "constrained_baseline"),  # constraint_set0+1 on extended
    (0x42, 0x4F, 0x00, "baseline"),
    (0x58, 0xCF, 0x80, "baseline"),
    (0x4D, 0xAF, 0x00, "main"),
    (0x64, 0xFF, 0x00, "high"),
    (0x64, 0xFF, 0x0C, "constrained_high"),
    (0xF4, 0xFF, 0x00, "predictive_high_444"),
)


def parse_profile_level_id(value: str) -> ProfileLevel | None:
    """The profile and level of a ``profile-level-id`` (six hex digits), or None for one that
    is malformed or names no profile a WebRTC peer uses. Level 1b (level_idc 11 with
    constraint_set3 on a baseline or main profile) is given as 9."""
    if len(value) != 6:
        return None
    try:
        raw = bytes.fromhex(value)
    except ValueError:
        return None
    profile_idc, iop, level_idc = raw
    if level_idc == 0:
        return None
    for idc, mask, bits, name in _PROFILES:
        if profile_idc == idc and iop & mask == bits:
            if level_idc == 11 and iop & 0x10 and name in ("constrained_baseline", "baseline", "main"):
                level_idc = 9  # level 1b
            return ProfileLevel(name, level_idc)
    return None


class H264Format(NamedTuple):
    """One ``a=rtpmap:<pt> H264/90000`` of an offer with its ``a=fmtp`` parameters."""

    payload_type: int
    fmtp: dict[str, str]


# a host's formats in the order the server takes them: what every receiver decodes first
_HOST_PREFERENCE: Final = ("constrained_baseline", "baseline", "main", "constrained_high", "high")


def _mode_1(fmtp: dict[str, str]) -> bool:
    return fmtp.get("packetization-mode") == "1"


def _profile(fmtp: dict[str, str]) -> ProfileLevel | None:
    # RFC 6184 8.1: absent, the Baseline profile at level 1 is implied
    return parse_profile_level_id(fmtp.get("profile-level-id", _IMPLIED))


_IMPLIED: Final = "42000a"


def choose_host_format(offered: list[H264Format]) -> tuple[H264Format, ProfileLevel] | None:
    """The H.264 format the server takes from a host's offer: packetization mode 1 (the one
    it forwards), the first profile of _HOST_PREFERENCE the host offers, the offer's order on
    a tie; None when the host offers none. The answer repeats its ``profile-level-id`` (a
    profile the host offered, at its own level: the server does not decode)."""
    usable = [(f, p) for f in offered if _mode_1(f.fmtp) and (p := _profile(f.fmtp)) is not None]
    for wanted in _HOST_PREFERENCE:
        for fmt, profile in usable:
            if profile.profile == wanted:
                return fmt, profile
    return None


def host_answer_fmtp(fmt: H264Format) -> dict[str, str]:
    """The ``a=fmtp`` of a host's answered H.264 format: its own ``profile-level-id`` (none
    when it offered none: the server claims no profile the host did not name)."""
    fmtp = {"level-asymmetry-allowed": "1", "packetization-mode": "1"}
    if "profile-level-id" in fmt.fmtp:
        fmtp["profile-level-id"] = fmt.fmtp["profile-level-id"].lower()
    return fmtp


def choose_viewer_format(offered: list[H264Format], host: ProfileLevel) -> H264Format | None:
    """The format of a viewer's offer under which it receives a host's stream of profile
    ``host``: packetization mode 1, the same profile (or, for a constrained-baseline stream,
    one that contains it: baseline, main, high), at a level no lower than the host's unless
    the viewer allows asymmetric levels; None when the viewer cannot receive it."""
    containing = {host.profile}
    if host.profile == "constrained_baseline":
        containing |= {"baseline", "main", "constrained_high", "high"}
    fallback = None
    for fmt in offered:
        profile = _profile(fmt.fmtp)
        if not _mode_1(fmt.fmtp) or profile is None or profile.profile not in containing:
            continue
        if profile.level_idc < host.level_idc and fmt.fmtp.get("level-asymmetry-allowed") != "1":
            continue
        if profile.profile == host.profile:
            return fmt
        fallback = fallback or fmt
    return fallback


# ---------------------------------------------------------------- access units (recordings)


def depacketize(payloads: list[bytes]) -> list[bytes]:
    """The NAL units of one access unit from its RTP payloads, contiguous and in sequence order
    (the caller checks the sequence numbers: a missing middle fragment is not seen here):
    single units as they are, STAP-A's split, FU-A's joined with their unit header rebuilt from
    the FU indicator's F and NRI bits and the FU header's type; [] when a fragmented unit has no
    first or last fragment or a payload is malformed."""
    units: list[bytes] = []
    fragment: bytearray | None = None
    for payload in payloads:
        if not payload:
            return []
        kind = payload[0] & 0x1F
        if kind == FU_A:
            if len(payload) < 3:
                return []
            header = payload[1]
            if header & 0x80:  # the first fragment
                if fragment is not None:
                    return []
                fragment = bytearray([(payload[0] & 0xE0) | (header & 0x1F)])
            elif fragment is None:
                return []
            fragment += payload[2:]
            if header & 0x40:  # the last
                units.append(bytes(fragment))
                fragment = None
            continue
        if fragment is not None:
            return []
        if kind == STAP_A:
            at = 1
            while at + 2 <= len(payload):
                size = int.from_bytes(payload[at : at + 2], "big")
                at += 2
                if size == 0 or at + size > len(payload):
                    return []
                units.append(payload[at : at + size])
                at += size
            if at != len(payload):
                return []
        elif kind:
            units.append(payload)
    return [] if fragment is not None else units


def avc_decoder_configuration(sps: bytes, pps: bytes) -> bytes:
    """The AVCDecoderConfigurationRecord (ISO/IEC 14496-15 5.2.4.1) of one SPS and one PPS:
    Matroska's ``CodecPrivate`` for ``V_MPEG4/ISO/AVC``, with 4-byte NAL lengths."""
    if len(sps) < 4 or sps[0] & 0x1F != SPS or not pps or pps[0] & 0x1F != PPS:
        raise ValueError("an SPS (profile, constraints, level after its header) and a PPS are needed")
    return (
        bytes([1, sps[1], sps[2], sps[3], 0xFF, 0xE1])  # version, profile, compat, level; 4-byte lengths; 1 SPS
        + len(sps).to_bytes(2, "big")
        + sps
        + bytes([1])
        + len(pps).to_bytes(2, "big")
        + pps
    )


def length_prefixed(units: list[bytes]) -> bytes:
    """An access unit as Matroska and MP4 store it: each NAL unit after its 4-byte length."""
    return b"".join(len(unit).to_bytes(4, "big") + unit for unit in units)


#: What begins each NAL unit in Annex B (the byte stream decoders take, e.g. FFmpeg's).
ANNEX_B_START_CODE = b"\x00\x00\x00\x01"


def annex_b(units: list[bytes]) -> bytes:
    """An access unit as a decoder reads it from a byte stream: each NAL unit after a start code."""
    return b"".join(ANNEX_B_START_CODE + unit for unit in units)


def opens_access_unit(payload: bytes) -> bool:
    """Whether an RTP payload can only be the first of an access unit: it begins with an access
    unit delimiter or an SPS (H.264 7.4.1.2.3: nothing but those and SEI precede an SPS in an
    access unit; WebRTC senders put the SPS first). After a loss, or at a new stream's first
    packets, an access unit is taken from such a payload (or after a marker bit, or where the
    timestamp changes between packets in sequence), never from the middle of one."""
    return nal_types(payload)[:1] in ([AUD], [SPS])


class ParameterSets:
    """The newest SPS and PPS a stream carried: a keyframe that comes without them uses them."""

    __slots__ = ("pps", "sps")

    def __init__(self) -> None:
        self.sps: bytes | None = None
        self.pps: bytes | None = None


class Sample(NamedTuple):
    """An access unit as a recording stores it."""

    data: bytes  # its NAL units, length_prefixed
    keyframe: bool  # it holds an IDR slice
    size: tuple[int, int] | None  # a keyframe's: its SPS's frame size
    avcc: bytes | None  # a keyframe's: the avc_decoder_configuration of its SPS and PPS


def recording_sample(units: list[bytes], params: ParameterSets) -> Sample | None:
    """The sample of an access unit's NAL units (:func:`depacketize`), or None when it holds no
    slice (parameter sets alone: kept in ``params``; nothing to write).

    A keyframe's sample starts with the SPS and PPS it uses, its own or else the newest seen
    before (so a player can start at any keyframe, and a new host's new frame size decodes
    though the file's avcC is the first host's); access unit delimiters are dropped (a
    Matroska block is one access unit). Raises ValueError for a keyframe with no SPS or PPS
    seen, or whose SPS's frame size cannot be read."""
    types = [unit[0] & 0x1F for unit in units]
    for unit, kind in zip(units, types, strict=True):
        if kind == SPS:
            params.sps = unit
        elif kind == PPS:
            params.pps = unit
    if not any(1 <= kind <= IDR for kind in types):  # no coded slice
        return None
    if IDR not in types:
        return Sample(length_prefixed([u for u, k in zip(units, types, strict=True) if k != AUD]), False, None, None)
    sps, pps = params.sps, params.pps
    if sps is None or pps is None:
        raise ValueError("a keyframe with no SPS or PPS in or before it")
    size = sps_frame_size(sps)
    if size is None:
        raise ValueError("a keyframe whose SPS's frame size cannot be read")
    rest = [u for u, k in zip(units, types, strict=True) if k not in (AUD, SPS, PPS)]
    return Sample(length_prefixed([sps, pps, *rest]), True, size, avc_decoder_configuration(sps, pps))


# ---------------------------------------------------------------- the SPS's frame size


class _Bits:
    """An RBSP read bit by bit (emulation-prevention bytes removed first), with exp-Golomb."""

    def __init__(self, rbsp: bytes) -> None:
        self._data = rbsp
        self._at = 0  # bits read

    def bit(self) -> int:
        byte = self._at >> 3
        if byte >= len(self._data):
            raise ValueError("the SPS ends early")
        value = (self._data[byte] >> (7 - (self._at & 7))) & 1
        self._at += 1
        return value

    def bits(self, count: int) -> int:
        value = 0
        for _ in range(count):
            value = (value << 1) | self.bit()
        return value

    def ue(self) -> int:
        zeros = 0
        while not self.bit():
            zeros += 1
            if zeros > 31:
                raise ValueError("an exp-Golomb code longer than 32 bits")
        return (1 << zeros) - 1 + self.bits(zeros)

    def se(self) -> int:
        code = self.ue()
        return (code + 1) // 2 if code & 1 else -(code // 2)


def _rbsp(unit: bytes) -> bytes:
    """The unit's payload without its header and with 00 00 03's 03 removed (H.264 7.4.1)."""
    out = bytearray()
    zeros = 0
    for byte in unit[1:]:
        if zeros >= 2 and byte == 3:
            zeros = 0
            continue
        out.append(byte)
        zeros = zeros + 1 if byte == 0 else 0
    return bytes(out)


_HIGH_PROFILES: Final = frozenset({100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135})


def sps_frame_size(sps: bytes) -> tuple[int, int] | None:
    """``(width, height)`` in pixels that an SPS NAL unit declares (H.264 7.3.2.1.1: the
    macroblock counts, frame_mbs_only, the cropping window), or None for one that is
    malformed or uses what this reader does not follow (a scaling matrix is skipped)."""
    if len(sps) < 4 or sps[0] & 0x1F != SPS:
        return None
    try:
        bits = _Bits(_rbsp(sps))
        profile_idc = bits.bits(8)
        bits.bits(16)  # constraint flags and level_idc
        bits.ue()  # seq_parameter_set_id
        chroma_format_idc = 1
        if profile_idc in _HIGH_PROFILES:
            chroma_format_idc = bits.ue()
            if chroma_format_idc == 3:
                bits.bit()  # separate_colour_plane_flag
            bits.ue()  # bit_depth_luma_minus8
            bits.ue()  # bit_depth_chroma_minus8
            bits.bit()  # qpprime_y_zero_transform_bypass_flag
            if bits.bit():  # seq_scaling_matrix_present_flag
                for index in range(8 if chroma_format_idc != 3 else 12):
                    if bits.bit():  # a scaling list: its deltas skipped
                        last = next_scale = 8
                        for _ in range(16 if index < 6 else 64):
                            if next_scale:
                                next_scale = (last + bits.se() + 256) % 256
                            last = next_scale or last
        bits.ue()  # log2_max_frame_num_minus4
        order_type = bits.ue()
        if order_type == 0:
            bits.ue()  # log2_max_pic_order_cnt_lsb_minus4
        elif order_type == 1:
            bits.bit()
            bits.se()
            bits.se()
            for _ in range(bits.ue()):
                bits.se()
        bits.ue()  # max_num_ref_frames
        bits.bit()  # gaps_in_frame_num_value_allowed_flag
        width_mbs = bits.ue() + 1
        height_map_units = bits.ue() + 1
        frame_mbs_only = bits.bit()
        if not frame_mbs_only:
            bits.bit()  # mb_adaptive_frame_field_flag
        bits.bit()  # direct_8x8_inference_flag
        crop = (0, 0, 0, 0)
        if bits.bit():  # frame_cropping_flag
            crop = (bits.ue(), bits.ue(), bits.ue(), bits.ue())
    except ValueError:
        return None
    crop_x = 1 if chroma_format_idc in (0, 3) else 2
    crop_y = (1 if chroma_format_idc in (0, 2, 3) else 2) * (2 - frame_mbs_only)
    width = width_mbs * 16 - crop_x * (crop[0] + crop[1])
    height = (2 - frame_mbs_only) * height_map_units * 16 - crop_y * (crop[2] + crop[3])
    return (width, height) if width > 0 and height > 0 else None
