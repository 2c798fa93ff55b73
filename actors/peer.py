"""The peer actor: one WebSocket signaling session, its room membership and its
peer connection.

Shape (after Galene's per-peer loop and Hypercorn's WebSocket handling): a
reader and a bounded writer run as siblings in the session's nursery, with the
room's events arriving in the peer's inbox. Ending the session is a `Close`
queued behind whatever is still to be sent (an `error` first), so a refusal
always reaches the client before the close frame. The peer connection and the
room membership are released in a shielded `finally`, whatever ended the session.

A join is atomic: the room to leave is remembered before the `Join` is sent,
and the teardown first closes the session's inbox (the room sees the member as
gone from that moment, see actors/room.py) and then sends `Leave`, which the
room handles after the `Join` (one mailbox, in order). A join the room accepted
just as the session was cancelled is undone either way.

The session ends at once when its peer connection fails or closes by itself
(ICE or DTLS failure, or no datagram for `[ice] consent_timeout_seconds`).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NoReturn, Protocol

import msgspec
import trio

from actors.errors import ActorCrashed, ActorGone, ActorRefusal, ActorTimeout, RoomNotFound
from actors.mailbox import call
from actors.messages import (
    AttachMedia,
    ChooseQuality,
    HostReplaced,
    JoinAccepted,
    Kicked,
    LayersNeeded,
    MediaEndpoint,
    MediaRoute,
    PacketHandler,
    PeerConnectionState,
    QualityChanged,
    Restarting,
    RoomChanged,
    RoomRef,
    RoomStoppedEvent,
)
from actors.messages import (
    Join as RoomJoin,
)
from actors.messages import (
    Leave as RoomLeave,
)
from actors.supervisor import SupervisorClient
from core.ice_servers import IceServer
from core.ids import new_peer_id
from core.signaling import (
    MAX_MESSAGE_BYTES,
    Answer,
    BadMessage,
    Candidate,
    ClientMessage,
    Error,
    Join,
    Joined,
    Layers,
    Leave,
    Offer,
    Ping,
    Pong,
    Quality,
    QualityUpdate,
    RoomUpdate,
    ServerMessage,
    SetQuality,
    Stopped,
    decode_client_message_untrusted,
    encode,
)
from core.tokens import TokenError, TokenIssuer
from media.ice_lite import DirectoryFull
from media.streams import SdpError, UnsupportedCodecError
from transport.settings import TransportCounters

log = logging.getLogger("bitbasel.peer")

OUTBOX_SIZE = 64
INBOX_SIZE = 64
TEARDOWN_DEADLINE_SECONDS = 5.0
#: After our close frame, how long the client has to answer with its own (RFC 6455 7.1.1):
#: meanwhile what it sends is read and dropped, so the closing handshake completes and its
#: close code arrives (closing with its frames unread makes the kernel reset the connection,
#: and the client sees 1006 instead).
CLOSE_HANDSHAKE_SECONDS = 2.0
#: A request the room's actor crashed on is sent again (the restarted actor handles it; each
#: request to a room is idempotent), at most this many times in all.
ROOM_CALL_ATTEMPTS = 3

# close codes of PROTOCOL.md
CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001
CLOSE_POLICY = 1008
CLOSE_TOO_BIG = 1009
CLOSE_SERVICE_RESTART = 1012  # RFC 6455 registry: retryable; the JS client and the bots reconnect
CLOSE_TRY_AGAIN_LATER = 1013  # RFC 6455 registry: a retryable refusal (the server is too busy)
CLOSE_OF_CODE = {
    "bad_message": 4400,
    "unauthorized": 4401,
    "forbidden": 4403,
    "room_not_found": 4404,
    "timeout": 4408,
    "host_taken": 4409,
    "replaced": 4410,
    "unsupported_codec": 4415,
    "dtls_failed": 4495,
    "room_full": 4429,
    "kicked": 4451,
    "rate_limited": CLOSE_POLICY,
    "unavailable": CLOSE_TRY_AGAIN_LATER,
}


class SignalingSocket(Protocol):
    """What the peer actor needs of a WebSocket (api/ws.py adapts Quart's)."""

    async def receive(self) -> str | bytes: ...
    async def send(self, text: str) -> None: ...
    async def close(self, code: int) -> None: ...


class MediaConnection(MediaEndpoint, Protocol):
    """A server-side peer connection (transport.PeerConnection): synchronous, never blocks.
    The session owns it: it sets its callbacks (the room's answer to AttachMedia says what
    to call for each packet) and closes it."""

    on_state: Callable[[str], None] | None
    on_rtp: PacketHandler | None
    on_rtcp: PacketHandler | None

    @property
    def state(self) -> str: ...

    @property
    def failure(self) -> str | None: ...

    @property
    def failure_kind(self) -> str | None: ...

    def accept_offer(self, offer_sdp: str) -> str: ...
    def add_remote_candidate(self, candidate: str, sdp_mid: str | None, sdp_mline_index: int | None) -> None: ...
    def close(self) -> None: ...


class ConnectionFactory(Protocol):
    """`label` names the session in the transport's logs."""

    def publisher(self, counters: TransportCounters, *, label: str) -> MediaConnection: ...
    def viewer(self, counters: TransportCounters, *, label: str) -> MediaConnection: ...


@dataclass(frozen=True)
class PeerEnvironment:
    supervisor: SupervisorClient
    tokens: TokenIssuer | None
    connections: ConnectionFactory
    max_messages_per_second: int
    silence_timeout_seconds: float = 60.0
    # a peer connection not connected this long after the answer (or failed) ends the session
    connect_timeout_seconds: float = 30.0
    # `joined.ice_servers` for a session of this user id (core/ice_servers.py)
    ice_servers: Callable[[str], list[IceServer]] = lambda user_id: []


class _Close(msgspec.Struct, frozen=True):
    code: int


class _TransportState(msgspec.Struct, frozen=True):
    connection: Any  # which connection reported it (an abandoned one is ignored)
    state: str


class _EndSession(Exception):
    """Raised inside the reader to end the session after queueing `error` + close."""


class RateLimiter:
    """At most `limit` messages in any one-second window starting at a message."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._window_start = -1.0
        self._count = 0

    def allow(self, now: float) -> bool:
        if now - self._window_start >= 1.0:
            self._window_start = now
            self._count = 0
        self._count += 1
        return self._count <= self._limit


class PeerSession:
    def __init__(self, env: PeerEnvironment, socket: SignalingSocket, *, going_away: trio.Event | None = None) -> None:
        self._env = env
        self._socket = socket
        self.peer_id = new_peer_id()
        self._outbox_send, self._outbox_receive = trio.open_memory_channel[ServerMessage | _Close](OUTBOX_SIZE)
        self._inbox_send, self._inbox_receive = trio.open_memory_channel[Any](INBOX_SIZE)
        self._rate = RateLimiter(env.max_messages_per_second)
        self._room: RoomRef | None = None
        self._member_of: RoomRef | None = None  # set before the Join is sent: the room to leave
        self._role: str | None = None
        self._connection: MediaConnection | None = None
        self._offer_refused = False  # the last offer got bad_sdp: its trickled candidates are ignored
        self._media_attached = False
        self._nursery: trio.Nursery | None = None
        self._ending = False
        self.dropped_updates = 0

    # ---- lifecycle ------------------------------------------------------------------------

    async def run(self) -> None:
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                nursery.start_soon(self._write, nursery.cancel_scope)
                nursery.start_soon(self._handle_events)
                await self._read()
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(TEARDOWN_DEADLINE_SECONDS):
                await self._teardown()

    async def _teardown(self) -> None:
        self._inbox_receive.close()  # from now on the room counts this member as gone
        if self._member_of is not None:
            with contextlib.suppress(ActorGone):  # the room stopped (or is stuck): nothing to leave
                await _call_room(self._member_of.mailbox, lambda r: RoomLeave(self.peer_id, r))
        if self._connection is not None:
            connection, self._connection = self._connection, None
            connection.on_state = None
            connection.close()
        log.info("peer %s: session ended", self.peer_id)

    # ---- writer: the only task that writes to the socket ----------------------------------

    async def _write(self, session_scope: trio.CancelScope) -> None:
        async for item in self._outbox_receive:
            if isinstance(item, _Close):
                await self._socket.close(item.code)
                # the client's close ends the session sooner (Quart cancels it on the disconnect)
                await trio.sleep(CLOSE_HANDSHAKE_SECONDS)
                session_scope.cancel()
                return
            await self._socket.send(encode(item))

    async def _send(self, message: ServerMessage) -> None:
        if self._ending:  # the session's last words (error, close) are queued: nothing may follow them
            return
        await self._outbox_send.send(message)

    async def _end(self, code: int, error: Error | None = None) -> None:
        """Queue the error (if any) and the close; the writer sends both and ends the session."""
        if self._ending:
            return
        self._ending = True
        if error is not None:
            log.info("peer %s: refused (%s): %s", self.peer_id, error.code, error.message)
            await self._outbox_send.send(error)
        await self._outbox_send.send(_Close(code))

    async def _refuse(self, code: str, message: str) -> NoReturn:
        await self._end(CLOSE_OF_CODE[code], Error(code=code, message=message))
        raise _EndSession

    # ---- reader ---------------------------------------------------------------------------

    async def _read(self) -> None:
        try:
            while True:
                with trio.move_on_after(self._env.silence_timeout_seconds) as silence:
                    frame = await self._socket.receive()
                if self._ending:  # the session ended elsewhere (an event): nothing more is handled
                    break
                if silence.cancelled_caught:
                    await self._refuse("timeout", f"no message for {self._env.silence_timeout_seconds:.0f} s")
                await self._on_frame(frame)
        except _EndSession:
            pass
        # the writer flushes the queued error and close, then the closing handshake runs: what
        # the client still sends is read and dropped until its close (or the writer's deadline)
        while True:
            await self._socket.receive()

    async def _on_frame(self, frame: str | bytes) -> None:
        size = len(frame) if isinstance(frame, bytes) else len(frame.encode())
        if size > MAX_MESSAGE_BYTES:
            log.info("peer %s: message of %d bytes over the limit; closing 1009", self.peer_id, size)
            await self._end(CLOSE_TOO_BIG)
            raise _EndSession
        if not self._rate.allow(trio.current_time()):
            await self._refuse("rate_limited", f"more than {self._env.max_messages_per_second} messages per second")
        try:
            message = decode_client_message_untrusted(frame)
        except BadMessage as exc:
            if self._room is None:
                await self._refuse("bad_message", f"the first message must be a valid join: {exc}")
            await self._send(Error(code="bad_message", message=str(exc)))
            return
        await self._dispatch(message)

    async def _dispatch(self, message: ClientMessage) -> None:
        if self._room is None and not isinstance(message, Join):
            await self._refuse("bad_message", "the first message must be a join")
        match message:
            case Join():
                if self._room is not None:
                    await self._refuse("bad_message", "join may be sent only once")
                await self._join(message)
            case Offer():
                await self._offer(message)
            case Candidate():
                await self._candidate(message)
            case Leave():
                await self._end(CLOSE_NORMAL)
                raise _EndSession
            case Ping():
                await self._send(Pong())
            case SetQuality(quality=quality):
                await self._set_quality(quality)

    # ---- join -----------------------------------------------------------------------------

    async def _join(self, message: Join) -> None:
        try:
            found = await self._env.supervisor.find_room(message.room_id)
        except RoomNotFound:
            found = None
        except ActorTimeout as exc:
            await self._refuse("unavailable", f"the server is too busy to answer: {exc.message}; try again")
        if not isinstance(found, RoomRef):
            await self._refuse("room_not_found", f"room {message.room_id} does not exist or is stopped")
        user_id = await self._authorize(message, found)
        self._member_of = found
        try:
            accepted: JoinAccepted = await _call_room(
                found.mailbox,
                lambda r: RoomJoin(self.peer_id, message.role, user_id, self._inbox_send, r),
            )
        except ActorTimeout as exc:
            await self._refuse("unavailable", f"room {message.room_id} did not answer: {exc.message}; try again")
        except ActorCrashed as exc:
            await self._refuse("unavailable", f"room {message.room_id} failed to answer: {exc.message}; try again")
        except ActorGone:
            await self._refuse("room_not_found", f"room {message.room_id} stopped")
        except ActorRefusal as refusal:
            await self._refuse(refusal.code, refusal.message)
        self._room = found
        self._role = message.role
        log.info("peer %s joined %s as %s (user %s)", self.peer_id, found.room_id, message.role, user_id)
        await self._send(
            Joined(
                room_id=found.room_id,
                peer_id=self.peer_id,
                role=message.role,
                viewer_count=accepted.viewer_count,
                has_host=accepted.has_host,
                ice_servers=self._env.ice_servers(user_id),
            )
        )

    async def _authorize(self, message: Join, room: RoomRef) -> str:
        """The session's user id, or a refusal (unauthorized / forbidden)."""
        tokens = self._env.tokens
        if tokens is not None:
            if message.token is None:
                await self._refuse("unauthorized", "a join token is required")
            try:
                return tokens.verify(message.token, room_id=room.room_id, role=message.role).sub
            except TokenError as exc:
                await self._refuse(exc.code, exc.message)
        if message.role == "host" and message.user_id != room.host_user_id:
            await self._refuse("forbidden", "only the room's host user may join as host")
        return message.user_id or self.peer_id

    # ---- media negotiation ------------------------------------------------------------------

    async def _offer(self, message: Offer) -> None:
        if self._connection is not None:
            await self._renegotiate(message)
            return
        assert self._room is not None
        factory = self._env.connections
        label = f"peer {self.peer_id} ({self._role} in {self._room.room_id})"
        connection = (
            factory.publisher(self._room.counters, label=label)
            if self._role == "host"
            else factory.viewer(self._room.counters, label=label)
        )
        inbox = self._inbox_send
        connection.on_state = lambda state: _notify(inbox, _TransportState(connection, state))
        self._connection = connection  # from now on the teardown closes it, also mid-negotiation
        try:
            answer_sdp = connection.accept_offer(message.sdp)
        except SdpError as exc:
            self._abandon_connection()
            self._offer_refused = True
            await self._send(Error(code="bad_sdp", message=str(exc) or "the offer cannot be used"))
            return
        except UnsupportedCodecError as exc:
            self._abandon_connection()
            await self._refuse("unsupported_codec", str(exc) or "the offer has no VP8 video or no Opus audio")
        except DirectoryFull as exc:  # a capacity refusal: retryable (1013)
            self._abandon_connection()
            await self._refuse("unavailable", f"the server's media port is full ({exc}); try again later")
        await self._send(Answer(sdp=answer_sdp))
        assert self._nursery is not None
        self._nursery.start_soon(self._enforce_connect_deadline, connection)
        if self._role == "host":
            # the host's packets are routed from the first one on
            await self._attach_media()
        # a viewer is attached once its transport can send: its join-time keyframe request is not wasted

    async def _renegotiate(self, message: Offer) -> None:
        """A later offer (an ICE restart): answered, or refused with `bad_sdp` (the session and
        its media go on either way)."""
        assert self._connection is not None
        try:
            answer_sdp = self._connection.accept_offer(message.sdp)
        except (SdpError, UnsupportedCodecError, ValueError) as exc:  # ValueError: e.g. a ufrag collision
            await self._send(Error(code="bad_sdp", message=str(exc) or "the new offer cannot be used"))
            return
        except RuntimeError:  # the connection failed or closed just now: that event ends the session
            return
        await self._send(Answer(sdp=answer_sdp))

    def _abandon_connection(self) -> None:
        """Close a connection whose offer was refused; the session may send another offer."""
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.close()

    async def _enforce_connect_deadline(self, connection: MediaConnection) -> None:
        await trio.sleep(self._env.connect_timeout_seconds)
        if connection.state != "connected":
            await self._end(
                CLOSE_OF_CODE["timeout"],
                Error(
                    code="timeout",
                    message=f"peer connection not established in {self._env.connect_timeout_seconds:.0f} s",
                ),
            )

    async def _attach_media(self) -> None:
        """Have the room route the connection's media, and install what the room answers:
        from then on packets go connection -> router -> connections, on the media thread."""
        if self._room is None or self._connection is None or self._media_attached:
            return
        self._media_attached = True
        connection = self._connection
        try:
            route: MediaRoute = await _call_room(self._room.mailbox, lambda r: AttachMedia(self.peer_id, connection, r))
        except ActorGone:  # the room stopped (its `stopped` event ends this session) or we left it
            return
        connection.on_rtp, connection.on_rtcp = route.on_rtp, route.on_rtcp

    async def _set_quality(self, quality: Quality) -> None:
        """A viewer's choice of layers; a host's is a bad_message (the session goes on)."""
        if self._role != "viewer":
            await self._send(Error(code="bad_message", message="set_quality is for viewers"))
            return
        assert self._room is not None
        with contextlib.suppress(ActorGone):  # the room stopped: its `stopped` event ends this session
            await _call_room(self._room.mailbox, lambda r: ChooseQuality(self.peer_id, quality, r))

    async def _candidate(self, message: Candidate) -> None:
        if self._connection is None and self._offer_refused:
            return  # a candidate of the refused offer, already on its way: nothing to do with it
        if self._connection is None:
            await self._send(Error(code="bad_message", message="send candidates after the offer"))
            return
        try:
            self._connection.add_remote_candidate(message.candidate, message.sdpMid, message.sdpMLineIndex)
        except ValueError as exc:
            await self._send(Error(code="bad_message", message=f"bad candidate: {exc}"))

    # ---- events from the room and the transport ---------------------------------------------

    async def _handle_events(self) -> None:
        async for event in self._inbox_receive:
            match event:
                case RoomChanged(viewer_count=viewers, has_host=has_host):
                    try:
                        self._outbox_send.send_nowait(RoomUpdate(viewer_count=viewers, has_host=has_host))
                    except trio.WouldBlock:
                        self.dropped_updates += 1  # a later update supersedes it
                case RoomStoppedEvent(room_id=room_id, reason=reason):
                    self._room = None  # nothing to leave
                    await self._send(Stopped(room_id=room_id, reason=reason))
                    await self._end(CLOSE_GOING_AWAY if reason == "shutdown" else CLOSE_NORMAL)
                case Restarting():
                    self._room = None  # nothing to leave: the room goes on in the restarted server
                    await self._end(
                        CLOSE_SERVICE_RESTART,
                        Error(code="restarting", message="the server is restarting: reconnect, the room goes on"),
                    )
                case Kicked():
                    await self._end(
                        CLOSE_OF_CODE["kicked"],
                        Error(code="kicked", message="a moderator removed you from this room; do not rejoin"),
                    )
                case QualityChanged(layer=layer, width=width, height=height, reason=reason):
                    if reason == "codec":  # the room's video codec is not one this viewer receives
                        message = "the room's video codec is not one your offer can receive: audio only"
                        await self._send(Error(code="unsupported_codec", message=message))
                    await self._send(QualityUpdate(layer=layer, width=width, height=height, reason=reason))
                case LayersNeeded(active=active):
                    await self._send(Layers(active=active))
                case HostReplaced():
                    await self._end(
                        CLOSE_OF_CODE["replaced"],
                        Error(code="replaced", message="a new session of the same host replaced this one"),
                    )
                case _TransportState(connection=connection, state=state):
                    if connection is self._connection:
                        await self._on_transport_state(state)

    async def _on_transport_state(self, state: str) -> None:
        log.info("peer %s: peer connection %s", self.peer_id, state)
        if self._room is None:
            return
        if state == "connected":
            await self._attach_media()
        elif state == "failed":
            connection = self._connection
            reason = (connection.failure if connection is not None else None) or "unknown reason"
            code = "dtls_failed" if connection is not None and connection.failure_kind == "dtls" else "timeout"
            await self._end(CLOSE_OF_CODE[code], Error(code=code, message=f"the peer connection failed: {reason}"))
        elif state == "closed":  # the client closed its peer connection (DTLS close_notify): it is leaving
            await self._end(CLOSE_NORMAL)
        with contextlib.suppress(ActorGone):
            await _call_room(self._room.mailbox, lambda r: PeerConnectionState(self.peer_id, state == "connected", r))


async def _call_room(mailbox: trio.MemorySendChannel[Any], build: Callable[[trio.MemorySendChannel[Any]], Any]) -> Any:
    """`call` the room, sending the request again if the room's actor crashed on it (it is
    restarted on the same state, and a request to a room is idempotent)."""
    for attempt in range(1, ROOM_CALL_ATTEMPTS + 1):
        try:
            return await call(mailbox, build)
        except ActorCrashed:
            if attempt == ROOM_CALL_ATTEMPTS:
                raise
            log.info("the room's actor crashed on a request; sending it again (attempt %d)", attempt + 1)
    raise AssertionError("unreachable")


def _notify(inbox: trio.MemorySendChannel[Any], event: object) -> None:
    """Called synchronously from the transport's callbacks (on the media port's task)."""
    try:
        inbox.send_nowait(event)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass  # the session has ended: nobody to tell
    except trio.WouldBlock:
        log.warning("peer inbox full: dropped %r", event)
