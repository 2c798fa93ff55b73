"""WebSocket signaling messages (PROTOCOL.md), as msgspec tagged unions.

One JSON object per text frame, tagged by `"type"`. Unknown fields are
ignored. The server decodes client messages with `decode_client_message_untrusted`
and encodes its own with `encode`. The Python client has its own copy of these
types (clients/python: `media_server_client.messages`), kept in step by
tests/test_sdk_types_match_server.py.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from core.ice_servers import IceServer

PROTOCOL_VERSION = 1
MAX_MESSAGE_BYTES = 64 * 1024

Role = Literal["host", "viewer"]
StopReason = Literal["api", "idle", "shutdown", "crashed"]
Quality = Literal["auto", "high", "medium", "low", "audio_only"]  # a viewer's choice (media/layers.py)
LayerName = Literal["high", "medium", "low", "audio_only"]
QualityReason = Literal["bandwidth", "requested", "host", "codec"]
Text = Annotated[str, msgspec.Meta(max_length=256)]


class _Message(msgspec.Struct, frozen=True, tag_field="type", omit_defaults=False):
    pass


# ---- client to server --------------------------------------------------------------


class Join(_Message, frozen=True, tag="join"):
    room_id: Text
    role: Role
    token: str | None = None
    user_id: Text | None = None


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
    """A viewer's choice: `auto` (the best its network carries), a highest layer it wants
    (bandwidth may still choose a lower one), or `audio_only`. The session goes on."""

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
    """To a simulcast host: the rids someone needs now; it may pause the others (dynacast)."""

    active: list[str]


ServerMessage = Joined | Answer | RoomUpdate | Stopped | Error | Pong | Reconnect | QualityUpdate | Layers


# ---- codecs ---------------------------------------------------------------------------


class BadMessage(ValueError):
    """A frame that is not a well-formed client message; the text says why."""


_client_decoder: msgspec.json.Decoder[ClientMessage] = msgspec.json.Decoder(ClientMessage)
_encoder = msgspec.json.Encoder()


def decode_client_message_untrusted(frame: str | bytes) -> ClientMessage:
    if isinstance(frame, bytes):
        raise BadMessage("binary frames are not accepted: send JSON text frames")
    try:
        return _client_decoder.decode(frame)
    except msgspec.ValidationError as exc:
        raise BadMessage(str(exc)) from exc
    except msgspec.DecodeError as exc:
        raise BadMessage(f"malformed JSON: {exc}") from exc
    except RecursionError as exc:  # msgspec recurses even into ignored fields: ~1000 `[` are enough
        raise BadMessage("malformed JSON: nested too deeply") from exc


def encode(message: ClientMessage | ServerMessage) -> str:
    return _encoder.encode(message).decode()
