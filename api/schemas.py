"""REST request and response bodies. /openapi.json is generated from these types."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from actors.messages import PeerInfo, RoomStats
from actors.supervisor import ServerTotals
from services.recordings import RecordingInfo

Name = Annotated[str, msgspec.Meta(min_length=1, max_length=256)]
TtlSeconds = Annotated[int, msgspec.Meta(ge=1, le=86400)]


class CreateRoomRequest(msgspec.Struct, frozen=True, kw_only=True):
    post_id: Name | None = None
    classroom_id: Name | None = None  # the seed's name for post_id; post_id wins if both are given
    host_user_id: Name
    record: bool = False  # record the host from the start (POST /room/{id}/recording/start later)


class TokenRequest(msgspec.Struct, frozen=True, kw_only=True):
    role: Literal["host", "viewer"]
    user_id: Name
    ttl_seconds: TtlSeconds = 3600


class HealthResponse(msgspec.Struct, frozen=True):
    status: str
    service: str


class CreateRoomResponse(msgspec.Struct, frozen=True):
    room_id: str
    post_id: str
    host_token: str | None
    host_user_id: str


class StopRoomResponse(msgspec.Struct, frozen=True):
    status: Literal["stopped"]
    room_id: str


class TokenResponse(msgspec.Struct, frozen=True):
    token: str | None
    expires_at: int | None


class ErrorResponse(msgspec.Struct, frozen=True):
    error: str
    message: str


class PeersResponse(msgspec.Struct, frozen=True):
    room_id: str
    peers: list[PeerInfo]


class KickResponse(msgspec.Struct, frozen=True):
    status: Literal["kicked"]
    room_id: str
    peer_id: str


class RecordingsResponse(msgspec.Struct, frozen=True):
    room_id: str
    recordings: list[RecordingInfo]


class CrashResponse(msgspec.Struct, frozen=True):
    status: Literal["crashed"]
    room_id: str


__all__ = [
    "CrashResponse",
    "CreateRoomRequest",
    "CreateRoomResponse",
    "ErrorResponse",
    "HealthResponse",
    "KickResponse",
    "PeerInfo",
    "PeersResponse",
    "RecordingInfo",
    "RecordingsResponse",
    "RoomStats",
    "ServerTotals",
    "StopRoomResponse",
    "TokenRequest",
    "TokenResponse",
]
