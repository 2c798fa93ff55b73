"""WHIP and WHEP sessions: a peer actor (actors/peer.py) driven by HTTP requests instead of a
WebSocket.

Each session is the same `PeerSession` a WebSocket client gets, so joining, host replacement,
kicks, webhooks, recordings and the media path are the WebSocket's. What differs is its
socket: `ChannelSocket` hands the peer the messages a request stands for (`join`, `offer`,
`candidate`) and gives back the reply that request waits for (`joined`, `answer` or `error`);
the room's other news (`room`, `quality`, ...) has no one to go to and is dropped. When idle it
hands the peer a `ping` now and then, so the session lives while its media does: it ends when
its peer connection fails or goes silent (`[ice] consent_timeout_seconds`), on DELETE, a kick,
a host replacement or the room's stop, and is then forgotten at once (its URL answers 404).

The sessions run in the registry's nursery, which outlives the requests; each counts against
`[server] max_connections` with the WebSocket sessions.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field

import msgspec
import trio

from actors.peer import CLOSE_NORMAL, PeerEnvironment, PeerSession
from api.context import ConnectionGate
from core.signaling import Answer, ClientMessage, Error, Joined, Ping, Pong, Role, ServerMessage, encode

log = logging.getLogger("bitbasel.http_sessions")

#: How long a request waits for the peer's reply (a join and an offer take milliseconds; the
#: room's own deadline is 5 s).
REPLY_DEADLINE_SECONDS = 10.0
#: An idle session is handed a `ping` this often (the peer ends a session silent for
#: `[server] silence_timeout_seconds`).
KEEPALIVE_SECONDS = 15.0
_PING = encode(Ping())
_server_messages: msgspec.json.Decoder[ServerMessage] = msgspec.json.Decoder(ServerMessage)


class SessionClosed(Exception):
    """The peer ended the session before it replied (its `error`, if any, came first)."""

    def __init__(self, code: int) -> None:
        super().__init__(f"session closed ({code})")
        self.code = code


class ChannelSocket:
    """The peer actor's SignalingSocket for a session without a WebSocket.

    One request at a time (a lock). A request is fenced: a `ping` goes first and whatever the
    peer sends before its `pong` (a late reply to a request that timed out, an event) is not
    taken for the reply; then the request's message, and its reply is the next `joined`,
    `answer` or `error` (but codes the caller says cannot be its reply)."""

    def __init__(self, on_close: Callable[[int], None], keepalive_seconds: float = KEEPALIVE_SECONDS) -> None:
        self._to_peer, self._from_requests = trio.open_memory_channel[str](4)
        self._on_close = on_close
        self._keepalive_seconds = keepalive_seconds
        self._reply: trio.MemorySendChannel[ServerMessage | SessionClosed] | None = None
        self._lock = trio.Lock()
        self.close_code: int | None = None

    # ---- the peer's side ---------------------------------------------------------------

    async def receive(self) -> str:
        if self.close_code is not None:
            await trio.sleep_forever()
        with trio.move_on_after(self._keepalive_seconds):
            return await self._from_requests.receive()
        return _PING

    async def send(self, text: str) -> None:
        message = _server_messages.decode(text)
        if isinstance(message, Error):
            log.info("http session: %s: %s", message.code, message.message)
        if isinstance(message, Joined | Answer | Error | Pong) and self._reply is not None:
            with contextlib.suppress(trio.WouldBlock, trio.BrokenResourceError):
                self._reply.send_nowait(message)

    async def close(self, code: int) -> None:
        if self.close_code is None:
            self.ended(code)
            self._on_close(code)

    def ended(self, code: int) -> None:
        """The session is over (closed by the peer, or cancelled): a waiting request gets
        SessionClosed, and so does every later one."""
        if self.close_code is not None:
            return
        self.close_code = code
        if self._reply is not None:
            with contextlib.suppress(trio.WouldBlock, trio.BrokenResourceError):
                self._reply.send_nowait(SessionClosed(code))

    # ---- the requests' side ------------------------------------------------------------

    async def request(
        self, message: ClientMessage, *, fenced: bool = True, not_replies: frozenset[str] = frozenset()
    ) -> ServerMessage:
        """Hand the peer `message` (`join` or `offer`) and return its reply (`joined`, `answer` or
        an `error` whose code is not in `not_replies`). `fenced=False` for the `join` (nothing
        may precede it). Raises SessionClosed, or trio.TooSlowError past the deadline."""
        async with self._lock:
            if self.close_code is not None:
                raise SessionClosed(self.close_code)
            send, receive = trio.open_memory_channel[ServerMessage | SessionClosed](16)
            self._reply = send
            try:
                with trio.fail_after(REPLY_DEADLINE_SECONDS):
                    reply: ServerMessage | SessionClosed = Pong()
                    if fenced:
                        await self._to_peer.send(_PING)
                        while not isinstance(reply := await receive.receive(), Pong | SessionClosed):
                            pass  # sent before the fence: not this request's
                    if not isinstance(reply, SessionClosed):
                        await self._to_peer.send(encode(message))
                        reply = await receive.receive()
                        while isinstance(reply, Pong) or (isinstance(reply, Error) and reply.code in not_replies):
                            reply = await receive.receive()
            finally:
                self._reply = None
            if isinstance(reply, SessionClosed):
                raise reply
            return reply


@dataclass
class HttpSession:
    """One WHIP or WHEP session, as its URL (`/whip/{room_id}/{session_id}`) names it."""

    session_id: str
    room_id: str
    role: Role
    bearer: str | None  # the token that created it: later requests must bear the same one
    socket: ChannelSocket = field(init=False)
    offer_sdp: str = ""  # the last offer taken: an ICE restart is negotiated as it, with new credentials
    etag: str = field(default_factory=lambda: _new_etag())
    ended: trio.Event = field(default_factory=trio.Event)
    cancel_scope: trio.CancelScope = field(default_factory=trio.CancelScope)  # the session's task's

    def end_soon(self) -> None:
        self.cancel_scope.cancel()

    def new_etag(self) -> str:
        self.etag = _new_etag()
        return self.etag


def _new_etag() -> str:
    return f'"{secrets.token_urlsafe(12)}"'


class HttpSessions:
    """The WHIP and WHEP sessions of this server, by id; their tasks run in its nursery."""

    def __init__(self, env: PeerEnvironment, gate: ConnectionGate) -> None:
        self._env = env
        self._gate = gate
        self._sessions: dict[str, HttpSession] = {}
        self._nursery: trio.Nursery | None = None

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            await trio.sleep_forever()

    def ids(self) -> list[str]:
        return list(self._sessions)

    def get(self, room_id: str, session_id: str, role: Role) -> HttpSession | None:
        session = self._sessions.get(session_id)
        if session is None or session.room_id != room_id or session.role != role:
            return None
        return session

    async def start(self, room_id: str, role: Role, bearer: str | None) -> HttpSession | None:
        """A new session, running, not yet joined; None when `max_connections` is reached."""
        assert self._nursery is not None, "HttpSessions.run is not running"
        if not self._gate.try_enter():
            return None
        session = HttpSession(secrets.token_urlsafe(18), room_id, role, bearer)
        keepalive = min(KEEPALIVE_SECONDS, self._env.silence_timeout_seconds / 3)
        session.socket = ChannelSocket(lambda code: self._closed(session), keepalive)
        self._sessions[session.session_id] = session
        await self._nursery.start(self._run, session)
        return session

    async def end(self, session: HttpSession) -> None:
        """End the session and return once it has left its room (the teardown's own deadline)."""
        self._sessions.pop(session.session_id, None)
        session.socket.ended(CLOSE_NORMAL)
        session.end_soon()
        await session.ended.wait()

    def _closed(self, session: HttpSession) -> None:
        """The peer ended the session (an error, a kick, its connection's end): forget it now;
        its teardown runs at once (no closing handshake to wait for)."""
        self._sessions.pop(session.session_id, None)
        session.end_soon()

    async def _run(
        self, session: HttpSession, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        try:
            with session.cancel_scope:
                task_status.started()
                await PeerSession(self._env, session.socket).run()
        finally:
            session.socket.ended(CLOSE_NORMAL)  # a request still waiting hears it now
            self._sessions.pop(session.session_id, None)
            self._gate.leave()
            session.ended.set()
            door = "WHIP" if session.role == "host" else "WHEP"
            log.info("%s session %s in %s ended", door, session.session_id, session.room_id)
