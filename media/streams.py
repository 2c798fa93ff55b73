"""The boundary between the transport and the forwarder.

The answer to a client's offer (media/sdp_answer.py) says, for each side, what
the forwarder needs to know to rewrite packets: what a host sends
(:class:`SourceStream`) and what the server sends a viewer (:class:`SinkStream`).
The peer connection (transport/peer_connection.py) hands these to the router.
"""

from __future__ import annotations

from typing import Literal

import msgspec

MediaKind = Literal["audio", "video"]


class SourceStream(msgspec.Struct, frozen=True):
    """One media stream the host publishes, as negotiated in the host's answer.

    The SSRC is not part of it: the router learns it from the first packet with
    this payload type (browsers may change it when they restart a track).
    """

    kind: MediaKind
    payload_type: int  # host's payload type for VP8 (video) or Opus (audio)
    clock_rate: int  # 90000 for VP8, 48000 for Opus
    # header extensions negotiated with the host: id -> URI
    extensions: dict[int, str] = msgspec.field(default_factory=dict)
    # simulcast (RFC 8853): the rids of the host's layers, in its a=simulcast order; () = one stream
    rids: tuple[str, ...] = ()
    codec: str = "VP8"  # video: "VP8" or "H264"; audio: "opus"


class SinkStream(msgspec.Struct, frozen=True):
    """One media stream the server sends to a viewer, as negotiated in the viewer's answer."""

    kind: MediaKind
    ssrc: int  # the SSRC the server announced in the viewer's answer (a=ssrc)
    payload_type: int  # the viewer's payload type for VP8 / Opus
    clock_rate: int
    # header extensions negotiated with the viewer: URI -> id
    extensions: dict[str, int] = msgspec.field(default_factory=dict)
    mid: str | None = None  # the viewer's MID for this m-line
    # the viewer's payload type per codec it receives ("VP8", "H264"; audio: "opus")
    payload_types: dict[str, int] = msgspec.field(default_factory=dict)


class SdpError(ValueError):
    """An offer that cannot be parsed or has nothing to send or receive (`bad_sdp`)."""


class UnsupportedCodecError(ValueError):
    """A host offer without VP8 (video) or Opus (audio) (`unsupported_codec`)."""
