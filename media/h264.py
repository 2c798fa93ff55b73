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
"""

from __future__ import annotations

from typing import Final, NamedTuple

__all__ = [
    "FU_A",
    "IDR",
    "PPS",
    "SPS",
    "STAP_A",
    "ProfileLevel",
    "is_keyframe_start",
    "keyframe_start_in",
    "nal_types",
    "parse_profile_level_id",
]

IDR: Final = 5
SPS: Final = 7
PPS: Final = 8
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
