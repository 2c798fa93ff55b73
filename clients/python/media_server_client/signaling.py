"""A signaling session over trio-websocket: the client side of PROTOCOL.md.

async with connect_signaling("ws://127.0.0.1:8082/ws") as session:
    joined = await session.join("room_123", "viewer", token=token)
    await session.send(Offer(sdp=offer_sdp))
    answer = await session.expect(Answer)

The message types are in `media_server_client.messages`. Needs the `bots` extra
(trio-websocket, msgspec).
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TypeVar

import msgspec
from trio_websocket import ConnectionClosed, WebSocketConnection, open_websocket_url

from media_server_client.messages import (
    ClientMessage,
    Error,
    Join,
    Joined,
    Role,
    ServerMessage,
    decode_server_message,
    encode,
)

M = TypeVar("M", bound=ServerMessage)

# Close codes after which a client must not reconnect automatically (PROTOCOL.md).
FINAL_CLOSE_CODES = frozenset({4401, 4403, 4404, 4410, 4451})


class SessionClosed(Exception):
    """The server closed the session. `error` is the `error` message it sent first, if any."""

    def __init__(self, code: int | None, reason: str | None, error: Error | None) -> None:
        super().__init__(f"closed with {code} {reason or ''} {error.code + ': ' + error.message if error else ''}")
        self.code = code
        self.reason = reason
        self.error = error

    @property
    def final(self) -> bool:
        return self.code in FINAL_CLOSE_CODES


class ServerError(Exception):
    """The server answered with an `error` and the session goes on."""

    def __init__(self, error: Error) -> None:
        super().__init__(f"{error.code}: {error.message}")
        self.error = error


class SignalingSession:
    def __init__(self, connection: WebSocketConnection) -> None:
        self.connection = connection
        self.last_error: Error | None = None

    async def send(self, message: ClientMessage) -> None:
        await self.connection.send_message(encode(message))

    async def send_raw(self, frame: str | bytes) -> None:
        await self.connection.send_message(frame)

    async def receive(self) -> ServerMessage:
        """The next message; SessionClosed when the server closed the session."""
        try:
            frame = await self.connection.get_message()
        except ConnectionClosed as exc:
            reason = exc.reason
            raise SessionClosed(
                reason.code if reason else None, reason.reason if reason else None, self.last_error
            ) from exc
        try:
            message = decode_server_message(frame)
        except msgspec.MsgspecError as exc:
            raise ValueError(f"the server sent an unreadable message: {frame!r:.200}") from exc
        if isinstance(message, Error):
            self.last_error = message
        return message

    async def expect(self, kind: type[M]) -> M:
        """Skip `room` updates until a message of `kind`; an `error` raises ServerError."""
        while True:
            message = await self.receive()
            if isinstance(message, kind):
                return message
            if isinstance(message, Error):
                raise ServerError(message)

    async def join(self, room_id: str, role: Role, *, token: str | None = None, user_id: str | None = None) -> Joined:
        await self.send(Join(room_id=room_id, role=role, token=token, user_id=user_id))
        try:
            return await self.expect(Joined)
        except ServerError:
            # a refused join is followed by the close: report both together
            await self.wait_closed()
            raise AssertionError("unreachable") from None

    async def wait_closed(self) -> None:
        """Read until the server closes the session; raises SessionClosed then."""
        while True:
            await self.receive()

    async def close(self) -> None:
        await self.connection.aclose()


@asynccontextmanager
async def connect_signaling(
    url: str, *, ssl_context: ssl.SSLContext | None = None, connect_timeout: float = 10
) -> AsyncIterator[SignalingSession]:
    async with open_websocket_url(
        url, ssl_context=ssl_context, connect_timeout=connect_timeout, max_message_size=1024 * 1024
    ) as connection:
        yield SignalingSession(connection)


__all__ = ["FINAL_CLOSE_CODES", "ServerError", "SessionClosed", "SignalingSession", "connect_signaling"]
