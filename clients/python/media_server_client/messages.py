"""The WebSocket signaling messages (docs/PROTOCOL.md), as msgspec tagged unions.

The client's own copy of the wire format: one JSON object per text frame, tagged by
`"type"`, unknown fields ignored. It is declared here rather than imported from the
server's packages (the client installs without them); the server's repository checks
that both sides have the same tags and fields (tests/test_sdk_types_match_server.py).

Needs msgspec: part of the `bots` extra (`pip install "bitbasel-media-client[bots]"`).
"""

from __future__ import annotations

from typing import Literal

import msgspec

PROTOCOL_VERSION = 1

Role = Literal["host", "viewer"]
StopReason = Literal["api", "idle", "shutdown", "crashed"]
Quality = Literal["auto", "high", "medium", "low", "audio_only"]
LayerName = Literal["high", "medium", "low", "audio_only"]
QualityReason = Literal["bandwidth", "requested", "host", "codec"]


class IceServer(msgspec.Struct, frozen=True, omit_defaults=True):
    """One entry of `RTCConfiguration.iceServers` (in `joined.ice_servers`), as the browser API spells it."""

    urls: list[str]
    username: str | None = None
    credential: str | None = None


class _Message(msgspec.Struct, frozen=True, tag_field="type", omit_defaults=False):
    pass


# ---- client to server --------------------------------------------------------------


class Join(_Message, frozen=True, tag="join"):
    room_id: str
    role: Role
    token: str | None = None
    user_id: str | None = None


class Offer(_Message, frozen=True, tag="offer"):
    sdp: str


class Candidate(_Message, frozen=True, tag="candidate"):
    candidate: str
    sdpMid: str | None = None
    sdpMLineIndex: int | None = None


class Leave(_Message, frozen=True, tag="leave"):
    pass


class Ping(_Message, frozen=True, tag="ping"):
    pass


class SetQuality(_Message, frozen=True, tag="set_quality"):
    """A viewer's choice of layers: `auto`, the highest it wants, or `audio_only`."""

    quality: Quality


ClientMessage = Join | Offer | Candidate | Leave | Ping | SetQuality


# ---- server to client --------------------------------------------------------------


class Joined(_Message, frozen=True, tag="joined"):
    room_id: str
    peer_id: str
    role: Role
    viewer_count: int
    has_host: bool
    protocol: int = PROTOCOL_VERSION
    # STUN/TURN servers for this session's RTCPeerConnection (TURN credentials minted for it)
    ice_servers: list[IceServer] = msgspec.field(default_factory=list)


class Answer(_Message, frozen=True, tag="answer"):
    sdp: str


class RoomUpdate(_Message, frozen=True, tag="room"):
    viewer_count: int
    has_host: bool


class Stopped(_Message, frozen=True, tag="stopped"):
    room_id: str
    reason: StopReason


class Error(_Message, frozen=True, tag="error"):
    code: str
    message: str


class Pong(_Message, frozen=True, tag="pong"):
    pass


class Reconnect(_Message, frozen=True, tag="reconnect"):
    """The session is about to close (1012) because its node stops: reconnect to `url` (another
    node's WebSocket URL; null = the same URL) and join the same room again."""

    reason: str
    url: str | None = None


class QualityUpdate(_Message, frozen=True, tag="quality"):
    """What a viewer is sent now, whenever it changes (null layer: no video yet)."""

    layer: LayerName | None
    width: int | None
    height: int | None
    reason: QualityReason


class Layers(_Message, frozen=True, tag="layers"):
    """To a simulcast host: the rids someone needs now (it may pause the others)."""

    active: list[str]


ServerMessage = Joined | Answer | RoomUpdate | Stopped | Error | Pong | Reconnect | QualityUpdate | Layers


# ---- codecs ---------------------------------------------------------------------------

_server_decoder: msgspec.json.Decoder[ServerMessage] = msgspec.json.Decoder(ServerMessage)
_encoder = msgspec.json.Encoder()


def decode_server_message(frame: str | bytes) -> ServerMessage:
    """A server's frame; `msgspec.MsgspecError` if it is not one."""
    return _server_decoder.decode(frame)


def encode(message: ClientMessage | ServerMessage) -> str:
    return _encoder.encode(message).decode()


__all__ = [
    "PROTOCOL_VERSION",
    "Answer",
    "Candidate",
    "ClientMessage",
    "Error",
    "IceServer",
    "Join",
    "Joined",
    "LayerName",
    "Layers",
    "Leave",
    "Offer",
    "Ping",
    "Pong",
    "Quality",
    "QualityReason",
    "QualityUpdate",
    "Reconnect",
    "Role",
    "RoomUpdate",
    "ServerMessage",
    "SetQuality",
    "StopReason",
    "Stopped",
    "decode_server_message",
    "encode",
]
