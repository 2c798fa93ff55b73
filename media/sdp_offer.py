"""What the server takes from a client's offer, read once: the m= sections it answers (each
cut down to its one codec), the BUNDLE group, and the offerer's transport parameters.

:func:`read_offer_untrusted` applies the rules :mod:`media.sdp_answer`'s docstring gives
(which sections are rejected and why, the answerer-tagged section, one transport without
BUNDLE) and returns an :class:`OfferReading`: values the answer is built from, so the
answer never goes back to the offer's text. No trio or asyncio here.

Errors: :class:`~media.streams.SdpError` for an offer that cannot be answered and
:class:`~media.streams.UnsupportedCodecError` for a host section without VP8/Opus;
nothing else, whatever the text.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import msgspec

from media.sdp import (
    FINGERPRINT,
    FINGERPRINT_ALGORITHMS,
    ICE_FOUNDATION,
    ICE_PWD,
    ICE_UFRAG,
    SERVER_CODECS,
    TOKEN,
    Direction,
    MediaSection,
    SessionDescription,
    find_server_codec,
    viewer_video_codecs,
)
from media.streams import SdpError, UnsupportedCodecError

__all__ = ["OfferReading", "RemoteCandidate", "RemoteTransport", "parse_candidate_untrusted", "read_offer_untrusted"]

Role = Literal["host", "viewer"]

#: The one RTP profile accepted (DTLS-SRTP over UDP, with feedback).
ACCEPTED_PROTO = "UDP/TLS/RTP/SAVPF"
MAX_REMOTE_CANDIDATES = 64


class RemoteCandidate(msgspec.Struct, frozen=True):
    """One ``a=candidate`` of the offer (RFC 8839 section 5.1), as written.

    ``address`` is an IP address or an mDNS name (``....local``); ``transport``
    is lower case (``udp``, ``tcp``...): the caller keeps the ones it can use.
    """

    foundation: str
    component: int
    transport: str
    priority: int
    address: str
    port: int
    type: str
    related_address: str | None = None
    related_port: int | None = None
    tcptype: str | None = None


class RemoteTransport(msgspec.Struct, frozen=True):
    """The offerer's transport parameters: ICE credentials, DTLS fingerprints (supported
    hashes, values upper case) and ``a=setup`` (lower case), its candidates so far."""

    ufrag: str
    pwd: str
    fingerprints: list[tuple[str, str]]
    setup: str
    candidates: list[RemoteCandidate]
    end_of_candidates: bool


@dataclass(frozen=True)
class OfferReading:
    """An offer as the server reads it.

    ``answered``: by m-line index, each section the server answers, with only the
    server's codec left in it (:meth:`~media.sdp.MediaSection.with_only_payload_type`).
    ``rejected``: (m-line index, reason) of the others. ``bundle_mids``: the answer's
    BUNDLE group, tagged mid first (``[]``: the offer has no group). ``transport_index``:
    the m-line whose transport parameters are ``remote`` (the tagged one with BUNDLE,
    the first answered one without).
    """

    description: SessionDescription
    mids: list[str | None]
    answered: dict[int, MediaSection]
    rejected: list[tuple[int, str]]
    bundle_mids: list[str]
    transport_index: int
    remote: RemoteTransport


def read_offer_untrusted(
    description: SessionDescription, role: Role, video_codecs: tuple[str, ...] = ("VP8",)
) -> OfferReading:
    """Check a parsed offer and read what the answer is built from (see the module docstring)."""
    if description.attributes("ice-lite"):
        raise SdpError("offer is ICE-lite: the server is ICE-lite too, and two lite agents cannot connect")
    mids = _checked_mids(description)
    group = _offered_group(description, mids)
    reasons = [_rejection(section, mid, group, role) for section, mid in zip(description.media, mids, strict=True)]
    accepted = [i for i, reason in enumerate(reasons) if reason is None]
    rejected = [(i, reason) for i, reason in enumerate(reasons) if reason is not None]
    if not accepted:
        verb = "send" if role == "host" else "receive"
        why = "; ".join(f"{_label(description, mids, i)}: {reason}" for i, reason in rejected[:4])
        raise SdpError(f"offer has no audio or video to {verb} ({why})")
    answered = _cut_to_server_codecs(description, accepted, role, video_codecs if role == "host" else ("VP8",))
    if group is not None:
        bundle_indexes = _bundle_order(description, mids, group, accepted)
        transport_index, bundle_mids = bundle_indexes[0], [mids[i] or "" for i in bundle_indexes]
    else:
        transport_index, bundle_mids = accepted[0], []
        _check_one_transport(description, mids, accepted)
    remote = _remote_transport(description, transport_index, _label(description, mids, transport_index))
    if group is None:
        for i in accepted[1:]:
            if not description.media[i].attributes("rtcp-mux"):
                raise SdpError(
                    f"offer's {_label(description, mids, i)} has no a=rtcp-mux: "
                    "the server multiplexes RTP and RTCP (RFC 5761)"
                )
    return OfferReading(description, mids, answered, rejected, bundle_mids, transport_index, remote)


# ------------------------------------------------------------------ sections


def _label(description: SessionDescription, mids: list[str | None], index: int) -> str:
    kind, mid = description.media[index].kind, mids[index]
    return f"m-line {index} ({kind[:20]}" + (f", mid {mid})" if mid is not None else ")")


def _checked_mids(description: SessionDescription) -> list[str | None]:
    mids: list[str | None] = []
    for section in description.media:
        mid = section.mid
        if mid is not None:
            if not TOKEN.fullmatch(mid):
                raise SdpError(f"malformed a=mid:{mid[:40]!r}")
            if mid in mids:
                raise SdpError(f"two m= sections have a=mid:{mid}")
        mids.append(mid)
    return mids


def _offered_group(description: SessionDescription, mids: list[str | None]) -> list[str] | None:
    """The offer's first BUNDLE group (known mids, each once), or None without BUNDLE."""
    groups = [group for group in description.bundle_groups() if group]
    if not groups:
        return None
    group: list[str] = []
    for mid in groups[0]:
        if mid in mids and mid not in group:
            group.append(mid)
    return group


def _rejection(section: MediaSection, mid: str | None, group: list[str] | None, role: Role) -> str | None:
    """Why this offered section is answered with port 0 (None: it is answered)."""
    if section.kind not in SERVER_CODECS:
        return "not audio or video"
    if any(len(fmt) > 10 for fmt in section.formats):  # (also keeps int() in rtpmaps() bounded)
        raise SdpError(f"malformed m= line: format {section.formats[0][:20]!r}... too long")
    if section.proto.upper() != ACCEPTED_PROTO:
        return f"transport {section.proto[:40]!r} is not {ACCEPTED_PROTO}"
    in_group = group is not None and mid is not None and mid in group
    if section.port == 0 and not (in_group and section.attributes("bundle-only")):
        return "port 0 (disabled by the offerer)"
    if group is not None and not in_group:
        return "not in the offer's (first) BUNDLE group"
    if role == "viewer" and section.kind == "video" and not viewer_video_codecs(section):
        return "video offered without VP8 or H264"
    if role == "viewer" and find_server_codec(section) is None:
        return f"{section.kind} offered without {SERVER_CODECS[section.kind][0]}"
    return None


def _cut_to_server_codecs(
    description: SessionDescription, accepted: list[int], role: Role, video_codecs: tuple[str, ...]
) -> dict[int, MediaSection]:
    """The accepted sections with only the server's codec left (video: the first of
    ``video_codecs`` offered, VP8 or H.264; audio: Opus), under the offer's payload type (rtx,
    red, ulpfec, the other codecs... gone with their lines). A host section without one
    raises UnsupportedCodecError; an offer with nothing for the role to send (host) or
    receive (viewer) raises SdpError."""
    answered: dict[int, MediaSection] = {}
    for i in accepted:
        section = description.media[i]
        if section.mid is None:
            raise SdpError(f"{section.kind} section without a=mid")
        if role == "viewer" and section.kind == "video":
            receivable = viewer_video_codecs(section)
            if receivable:  # every codec it can receive: it watches whichever the host publishes
                answered[i] = section.with_only_payload_type(*(r.payload_type for r in receivable))
                continue
        codec = find_server_codec(section, video_codecs)
        if codec is None:
            names = " or ".join(video_codecs) if section.kind == "video" else SERVER_CODECS[section.kind][0]
            raise UnsupportedCodecError(f"{section.kind} offered without {names}")
        answered[i] = section.with_only_payload_type(codec.payload_type)
    wanted: tuple[Direction, ...] = ("sendonly", "sendrecv") if role == "host" else ("recvonly", "sendrecv")
    if not any(section.direction in wanted for section in answered.values()):
        verb = "send" if role == "host" else "receive"
        raise SdpError(f"offer has no audio or video to {verb}")
    return answered


def _bundle_order(
    description: SessionDescription, mids: list[str | None], group: list[str], accepted: list[int]
) -> list[int]:
    """The accepted sections in the group's order, the answerer-tagged one first: the
    first with a port in the offer (RFC 8843 section 7.3.1)."""
    position = {mid: n for n, mid in enumerate(group)}
    in_order = sorted(accepted, key=lambda i: position[mids[i] or ""])
    tags = [i for i in in_order if description.media[i].port != 0]
    if not tags:
        raise SdpError(
            "the BUNDLE group has no accepted m= section with a port: "
            "a bundle-only section cannot carry the transport (RFC 8843 section 7.3.1)"
        )
    return [tags[0]] + [i for i in in_order if i != tags[0]]


# ------------------------------------------------------------------ the transport


def _transport_values(section: MediaSection, description: SessionDescription, name: str) -> list[str]:
    """Media-level values of a transport attribute, else the session-level ones."""
    return section.attributes(name) or description.attributes(name)


def _credentials(section: MediaSection, description: SessionDescription) -> tuple[str, str, frozenset[tuple[str, str]]]:
    """(ufrag, pwd, fingerprints) as they stand in the offer, for comparing sections."""
    ufrag = next(iter(_transport_values(section, description, "ice-ufrag")), "").strip()
    pwd = next(iter(_transport_values(section, description, "ice-pwd")), "").strip()
    fingerprints = frozenset(_parse_fingerprints(_transport_values(section, description, "fingerprint")))
    return ufrag, pwd, fingerprints


def _check_one_transport(description: SessionDescription, mids: list[str | None], accepted: list[int]) -> None:
    """Without BUNDLE the server still has one transport: every answered section must
    share the first one's ICE credentials and fingerprints."""
    first = _credentials(description.media[accepted[0]], description)
    for i in accepted[1:]:
        if _credentials(description.media[i], description) != first:
            raise SdpError(
                f"offer without a=group:BUNDLE has m= sections with different ICE credentials or "
                f"fingerprints ({_label(description, mids, i)}): the server has one transport "
                "per peer, offer BUNDLE (bundlePolicy 'max-bundle', 'balanced' or 'max-compat'; "
                "GStreamer's webrtcbin: 'max-bundle' or 'max-compat')"
            )


def _parse_fingerprints(values: list[str]) -> list[tuple[str, str]]:
    out = []
    for value in values:
        parts = value.split()
        if len(parts) != 2 or not FINGERPRINT.fullmatch(parts[1]):
            raise SdpError(f"malformed a=fingerprint:{value[:80]!r}")
        algorithm = parts[0].lower()
        if algorithm in FINGERPRINT_ALGORITHMS and (algorithm, parts[1].upper()) not in out:
            out.append((algorithm, parts[1].upper()))
    return out


def _remote_transport(description: SessionDescription, index: int, where: str) -> RemoteTransport:
    section = description.media[index]
    ufrags = _transport_values(section, description, "ice-ufrag")
    pwds = _transport_values(section, description, "ice-pwd")
    if not ufrags:
        raise SdpError(f"offer has no a=ice-ufrag (for {where})")
    if not pwds:
        raise SdpError(f"offer has no a=ice-pwd (for {where})")
    ufrag, pwd = ufrags[0].strip(), pwds[0].strip()
    if not ICE_UFRAG.fullmatch(ufrag):
        raise SdpError("offer's a=ice-ufrag must be 4 to 256 ice-chars (RFC 8839)")
    if not ICE_PWD.fullmatch(pwd):
        raise SdpError("offer's a=ice-pwd must be 22 to 256 ice-chars (RFC 8839)")
    fingerprint_values = _transport_values(section, description, "fingerprint")
    if not fingerprint_values:
        raise SdpError(f"offer has no a=fingerprint (for {where}): DTLS-SRTP needs the peer's certificate hash")
    fingerprints = _parse_fingerprints(fingerprint_values)
    if not fingerprints:
        raise SdpError("offer has no a=fingerprint with a supported hash (sha-1, sha-224, sha-256, sha-384, sha-512)")
    setups = _transport_values(section, description, "setup")
    if not setups:
        raise SdpError(f"offer has no a=setup (for {where}): an offer must say actpass, active or passive")
    setup = setups[0].strip().lower()
    if setup not in ("actpass", "active", "passive"):
        raise SdpError(f"offer's a=setup:{setup[:20]!r} is not actpass, active or passive")
    if not section.attributes("rtcp-mux"):
        raise SdpError(f"offer's {where} has no a=rtcp-mux: the server multiplexes RTP and RTCP (RFC 5761)")
    candidate_values = section.attributes("candidate")
    if len(candidate_values) > MAX_REMOTE_CANDIDATES:
        raise SdpError(f"offer has more than {MAX_REMOTE_CANDIDATES} candidates")
    candidates = [parse_candidate_untrusted(value) for value in candidate_values]
    end = bool(section.attributes("end-of-candidates") or description.attributes("end-of-candidates"))
    return RemoteTransport(ufrag, pwd, fingerprints, setup, candidates, end)


# ------------------------------------------------------------------ candidates


def _uint(text: str, maximum: int, what: str, line: str) -> int:
    if not (text.isascii() and text.isdigit() and len(text) <= 10):
        raise SdpError(f"malformed a=candidate (bad {what}): {line[:80]!r}")
    value = int(text)
    if value > maximum:
        raise SdpError(f"malformed a=candidate ({what} out of range): {line[:80]!r}")
    return value


def parse_candidate_untrusted(text: str) -> RemoteCandidate:
    """Parse one candidate: ``[a=][candidate:]foundation component transport priority
    address port typ type [raddr A] [rport P] [tcptype T] [name value]...``.

    Raises only :class:`SdpError`. Unknown extension pairs (``generation``,
    ``ufrag``, ``network-id``...) are skipped.
    """
    value = text.strip()
    value = value.removeprefix("a=").removeprefix("candidate:")
    fields = value.split()
    if len(fields) < 8 or fields[6] != "typ" or len(fields) % 2:
        raise SdpError(f"malformed a=candidate: {text[:80]!r}")
    foundation, component, transport, priority, address, port, _, cand_type = fields[:8]
    if not ICE_FOUNDATION.fullmatch(foundation):
        raise SdpError(f"malformed a=candidate (bad foundation): {text[:80]!r}")
    extras = dict(zip(fields[8::2], fields[9::2], strict=True))
    related_port = extras.get("rport")
    return RemoteCandidate(
        foundation=foundation,
        component=_uint(component, 256, "component", text),
        transport=transport.lower(),
        priority=_uint(priority, 0xFFFFFFFF, "priority", text),
        address=address,
        port=_uint(port, 65535, "port", text),
        type=cand_type,
        related_address=extras.get("raddr"),
        related_port=_uint(related_port, 65535, "rport", text) if related_port is not None else None,
        tcptype=extras.get("tcptype"),
    )
