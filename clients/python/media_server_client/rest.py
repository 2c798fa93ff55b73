"""The REST client, mirroring the C++ prototype's `media_server_client`.

httpx and the standard library only: the answers are decoded into frozen dataclasses by
`_decode` (a field the server added later than the client is ignored; a missing or
mistyped one raises `MediaServerError` with code "bad_response").
"""

from __future__ import annotations

import functools
import json
import os
import types
import typing
from dataclasses import MISSING, dataclass, fields, is_dataclass
from types import TracebackType
from typing import Any, Literal, TypeVar

import httpx

from media_server_client.errors import ERROR_CLASSES, MediaServerError

T = TypeVar("T")


# The response bodies, declared here rather than imported from the server's packages
# (the client installs without them). The server repository's
# tests/test_sdk_types_match_server.py checks that their fields are the server's. A field
# the server added later has a default, so that an older server's answers still decode.


@dataclass(frozen=True)
class CreatedRoom:
    """`POST /room/create` (the server's api.schemas.CreateRoomResponse)."""

    room_id: str
    post_id: str
    host_token: str | None = None  # None when the server has no [auth] secret
    host_user_id: str = ""


@dataclass(frozen=True)
class RoomStats:
    """`GET /room/{room_id}/stats` (the server's actors.messages.RoomStats)."""

    room_id: str
    post_id: str
    is_active: bool
    viewer_count: int
    has_host: bool  # a host is joined and connected
    stop_reason: str | None = None  # "api", "idle", "shutdown" or "crashed" once stopped
    host_joined: bool = False  # a host session is joined (connected or not)
    host_user_id: str = ""
    created_at: float = 0.0  # unix seconds
    restarts: int = 0  # times the room was restarted after a crash
    bytes_sent: int = 0  # media bytes sent to the room's viewers
    bytes_received: int = 0  # media bytes received from the room's host
    forwarding: dict[str, Any] | None = None  # the forwarder's counters while active (see /openapi.json)


@dataclass(frozen=True)
class ServerStats:
    """`GET /stats` (the server's actors.supervisor.ServerTotals)."""

    total_rooms: int
    active_rooms: int
    total_peers: int
    total_viewers: int
    total_hosts: int
    total_bytes_sent: int
    total_bytes_received: int
    room_restarts: int = 0  # room actors restarted after a crash
    rooms_crashed: int = 0  # rooms stopped as "crashed"


@dataclass(frozen=True)
class JoinToken:
    """`POST /room/{room_id}/token` (the server's api.schemas.TokenResponse)."""

    token: str | None  # None when the server has no [auth] secret
    expires_at: int | None


@dataclass(frozen=True)
class Peer:
    """One session of `GET /room/{room_id}/peers` (the server's actors.messages.PeerInfo)."""

    peer_id: str
    role: Literal["host", "viewer"]
    user_id: str
    joined_at: float  # unix seconds
    connection_state: str  # "connecting" or "connected"
    bytes_received: int  # a host's RTP bytes
    bytes_sent: int  # RTP payload bytes forwarded to a viewer
    video_layer: str | None = None  # a viewer's simulcast layer (low, medium, high, audio_only)
    estimate_bps: int | None = None  # what the server estimates a viewer's link carries


@dataclass(frozen=True)
class _Peers:
    room_id: str
    peers: list[Peer]


# ---- decoding JSON into the dataclasses above (what msgspec did, for these types only) ----


class _BadResponse(ValueError):
    pass


@functools.cache
def _hints(kind: type) -> dict[str, Any]:
    return typing.get_type_hints(kind)


def _decode(kind: Any, value: Any, where: str = "$") -> Any:
    """`value` (parsed JSON) as `kind`: a dataclass above, str, int, float, bool, None, Any,
    a union, a Literal, list[...] or dict[str, ...]. Unknown object keys are ignored."""
    origin = typing.get_origin(kind)
    if kind is Any:
        return value
    if isinstance(kind, type) and is_dataclass(kind):
        if not isinstance(value, dict):
            raise _BadResponse(f"{where}: expected an object, got {value!r:.80}")
        hints = _hints(kind)
        given: dict[str, Any] = {}
        for spec in fields(kind):
            if spec.name in value:
                given[spec.name] = _decode(hints[spec.name], value[spec.name], f"{where}.{spec.name}")
            elif spec.default is MISSING and spec.default_factory is MISSING:
                raise _BadResponse(f"{where}: missing required field {spec.name!r}")
        return kind(**given)
    if origin in (typing.Union, types.UnionType):
        for option in typing.get_args(kind):
            try:
                return _decode(option, value, where)
            except _BadResponse:
                continue
        raise _BadResponse(f"{where}: expected {kind}, got {value!r:.80}")
    if origin is Literal:
        if value not in typing.get_args(kind):
            raise _BadResponse(f"{where}: expected one of {typing.get_args(kind)}, got {value!r:.80}")
        return value
    if origin is list:
        if not isinstance(value, list):
            raise _BadResponse(f"{where}: expected an array, got {value!r:.80}")
        (item,) = typing.get_args(kind)
        return [_decode(item, element, f"{where}[{i}]") for i, element in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise _BadResponse(f"{where}: expected an object, got {value!r:.80}")
        _, item = typing.get_args(kind)
        return {key: _decode(item, element, f"{where}.{key}") for key, element in value.items()}
    if kind is type(None):
        if value is not None:
            raise _BadResponse(f"{where}: expected null, got {value!r:.80}")
        return None
    if kind is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if kind in (str, int, bool) and isinstance(value, kind) and (kind is bool or not isinstance(value, bool)):
        return value
    raise _BadResponse(f"{where}: expected {getattr(kind, '__name__', kind)}, got {value!r:.80}")


class MediaServerClient:
    """Async REST client. Use it as is (a connection per call, safe under any event
    loop) or as `async with` to keep one pooled connection for many calls."""

    def __init__(
        self, base_url: str = "http://localhost:8082", *, api_key: str | None = None, timeout: float = 10.0
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._timeout = timeout
        self._pooled: httpx.AsyncClient | None = None

    async def __aenter__(self) -> MediaServerClient:
        self._pooled = self._new_http_client()
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._pooled is not None:
            await self._pooled.aclose()
            self._pooled = None

    # ---- the seed's API ----
    async def create_room(self, post_id: str, user_id: str) -> str:
        """Create (or get the active) room for a post; returns its room_id."""
        return (await self.create_room_with_token(post_id, user_id)).room_id

    async def create_room_with_token(self, post_id: str, user_id: str) -> CreatedRoom:
        return await self._call("POST", "/room/create", CreatedRoom, {"post_id": post_id, "host_user_id": user_id})

    async def stop_room(self, room_id: str) -> None:
        await self._call("POST", f"/room/{room_id}/stop", dict[str, Any])

    async def get_room_stats(self, room_id: str) -> RoomStats:
        return await self._call("GET", f"/room/{room_id}/stats", RoomStats)

    async def get_server_stats(self) -> ServerStats:
        return await self._call("GET", "/stats", ServerStats)

    async def health(self) -> bool:
        body = await self._call("GET", "/health", dict[str, Any])
        return body.get("status") == "healthy"

    async def create_token(
        self, room_id: str, role: Literal["host", "viewer"], user_id: str, ttl_seconds: int = 3600
    ) -> JoinToken:
        body = {"role": role, "user_id": user_id, "ttl_seconds": ttl_seconds}
        return await self._call("POST", f"/room/{room_id}/token", JoinToken, body)

    # ---- moderation ----
    async def list_peers(self, room_id: str) -> list[Peer]:
        """The sessions joined to an active room."""
        return (await self._call("GET", f"/room/{room_id}/peers", _Peers)).peers

    async def kick_peer(self, room_id: str, peer_id: str) -> None:
        """Remove a session: it is told `kicked` (close 4451) and must not come back."""
        await self._call("POST", f"/room/{room_id}/peers/{peer_id}/kick", dict[str, Any])

    # ---- plumbing ----
    def _new_http_client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.base_url, headers=self._headers, timeout=self._timeout)

    async def _call(self, method: str, path: str, kind: type[T], body: object | None = None) -> T:
        content = json.dumps(body).encode() if body is not None else None
        headers = {"Content-Type": "application/json"} if content is not None else {}
        try:
            if self._pooled is not None:
                response = await self._pooled.request(method, path, content=content, headers=headers)
            else:
                async with self._new_http_client() as client:
                    response = await client.request(method, path, content=content, headers=headers)
        except httpx.HTTPError as exc:
            raise MediaServerError(0, "unreachable", f"{method} {self.base_url}{path}: {exc!r}") from exc
        if response.status_code != 200:
            code, message = _error_of(response)
            raise ERROR_CLASSES.get(code, MediaServerError)(response.status_code, code, message)
        try:
            decoded: T = _decode(kind, json.loads(response.content))
        except (ValueError, RecursionError) as exc:  # _BadResponse, or not JSON at all
            raise MediaServerError(
                response.status_code, "bad_response", f"{method} {path}: {exc} ({response.text[:200]!r})"
            ) from exc
        return decoded


def _error_of(response: httpx.Response) -> tuple[str, str]:
    """(code, message) of an error answer: `{"error": ..., "message": ...}`, or "unknown"."""
    try:
        body = json.loads(response.content)
    except (ValueError, RecursionError):
        return "unknown", response.text[:200]
    if not isinstance(body, dict):
        return "unknown", response.text[:200]
    code, message = body.get("error", "unknown"), body.get("message", "")
    return (code if isinstance(code, str) else "unknown"), (message if isinstance(message, str) else str(message))


_default_client: MediaServerClient | None = None


def get_media_server_client() -> MediaServerClient:
    """The process-wide client, configured from MEDIA_SERVER_URL (default
    http://localhost:8082) and MEDIA_SERVER_API_KEY."""
    global _default_client
    if _default_client is None:
        _default_client = MediaServerClient(
            os.environ.get("MEDIA_SERVER_URL", "http://localhost:8082"),
            api_key=os.environ.get("MEDIA_SERVER_API_KEY") or None,
        )
    return _default_client
