"""Host and viewer bots: real WebRTC peers (aiortc) that speak PROTOCOL.md.

They run under Trio with a trio-asyncio loop open (aiortc is asyncio):

    async with open_bot_loop():
        async with open_host(ws_url, room_id, user_id="alice") as host:
            await host.wait_connected()
        async with open_viewer(ws_url, room_id) as viewer:
            await viewer.wait_for(lambda s: s.video_frames >= 10)

`host_addresses=["127.0.0.1"]` gathers ICE candidates on loopback only (aioice
skips 127.0.0.1 by default). No STUN server is used unless given.

A refused first join raises out of `open_host`/`open_viewer`. Once joined, a bot
reconnects after an abnormal close (1006 connection lost, 1011, 1012, 4408, ...)
like web/bitbasel-media.js: after a `Backoff` delay it opens a new WebSocket, joins
the same room with the same role, token and user id, negotiates a new peer
connection (a host republishes its tracks) and goes on counting into the same
`BotState` (`reconnects`, `last_close`). A final close (`reconnects_after`), a
refused rejoin or `reconnect_for` seconds without success end it: `state.closed`
is set and leaving the `async with` raises nothing.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import random
import ssl
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

import trio
import trio_asyncio
from aiortc import (
    MediaStreamTrack,
    RTCConfiguration,
    RTCIceServer,
    RTCIceTransportPolicy,
    RTCPeerConnection,
    RTCRtpSender,
    RTCSessionDescription,
)
from aiortc.mediastreams import MediaStreamError
from trio_websocket import ConnectionClosed, HandshakeError

from media_server_client.aiortc_hooks import (
    observe_rtp_received,
    observe_rtp_sent,
    restrict_host_addresses,
    sender_encoder_tasks,
)
from media_server_client.containment import open_contained_loop
from media_server_client.messages import (
    Answer,
    Error,
    IceServer,
    Joined,
    Layers,
    Offer,
    Ping,
    Quality,
    QualityUpdate,
    Reconnect,
    RoomUpdate,
    SetQuality,
    Stopped,
)
from media_server_client.signaling import ServerError, SessionClosed, SignalingSession, connect_signaling
from media_server_client.sources import TestPatternTrack, ToneTrack

#: A trio-asyncio loop for bots: an aiortc task that fails is logged, never re-raised into
#: the loop's nursery (trio-asyncio's default would end the program); see media_server_client/containment.py.
open_bot_loop = open_contained_loop

KEEPALIVE_SECONDS = 20.0
# a reconnection attempt that has not connected, joined and negotiated within this long has failed
RECONNECT_ATTEMPT_SECONDS = 10.0
# close codes after which a retry would only repeat the refusal (as in web/bitbasel-media.js)
NOT_RETRIED_CLOSE_CODES = frozenset({4400, 4415})


@dataclass(frozen=True)
class Backoff:
    """The wait before reconnection attempt n (1, 2, ...): `initial` * `factor` ** (n - 1), at most
    `maximum`, less a random part (up to `jitter` of it) so bots cut off together do not all come back at once."""

    initial: float = 0.25
    maximum: float = 5.0
    factor: float = 2.0
    jitter: float = 0.25

    def delay(self, attempt: int, rand: float | None = None) -> float:
        """`rand` in [0, 1) picks the jitter (default: `random.random()`)."""
        base = min(self.maximum, self.initial * self.factor ** min(attempt - 1, 64))
        return base * (1 - self.jitter * (random.random() if rand is None else rand))


DEFAULT_BACKOFF = Backoff()


def reconnects_after(closed: SessionClosed, *, stopped: bool) -> bool:
    """Whether a bot reconnects after `closed`. Not after a final code (4401, 4403, 4404, 4410, 4451), a
    refusal a retry would repeat (4400, 4415), a normal close (1000, e.g. after `leave`), a close
    without a code, or once its room was `stopped`; after anything else (1006 connection lost, 1011,
    1012, 4408 timeout, 4409, 4429, 1008) it does."""
    if stopped or closed.code is None:
        return False
    return not (closed.final or closed.code in NOT_RETRIED_CLOSE_CODES or closed.code == 1000)


@dataclass
class RtpRecord:
    """One RTP packet as a bot saw it (clear text, before SRTP / after unprotect)."""

    payload_type: int
    ssrc: int
    sequence: int
    timestamp: int
    payload: bytes


@dataclass
class BotState:
    joined: Joined  # of the current session
    room: RoomUpdate
    connection_state: str = "new"  # of the current peer connection
    stopped: Stopped | None = None
    closed: SessionClosed | None = None  # set once the bot has ended (no more reconnection)
    video_frames: int = 0  # counted across reconnections
    audio_frames: int = 0
    first_video_frame_at: float | None = None  # trio clock
    last_video_frame_at: float | None = None  # trio clock
    longest_video_gap: float = 0.0  # s between two decoded video frames, the longest so far
    video_size: tuple[int, int] | None = None
    rtp: list[RtpRecord] = field(default_factory=list)
    reconnects: int = 0  # sessions joined and negotiated again after an abnormal close
    last_close: SessionClosed | None = None  # the latest close or failed reconnection attempt
    redirected_to: str | None = None  # the URL a `reconnect` message named (the next joins go there)
    quality: QualityUpdate | None = None  # viewer: the latest `quality` message
    layers: Layers | None = None  # host: the latest `layers` message (a bot host sends one layer)
    errors: list[Error] = field(default_factory=list)  # `error` messages after which the session went on


@dataclass(frozen=True)
class _Dial:
    """What every (re)join uses: the same room, role, token and user id."""

    url: str
    room_id: str
    role: Literal["host", "viewer"]
    token: str | None
    user_id: str | None
    ssl_context: ssl.SSLContext | None
    stun_servers: Sequence[str]
    host_addresses: Sequence[str] | None
    relay_only: bool = False  # media only through TURN (`joined.ice_servers`)


class Bot:
    """What both bots share: signaling, the peer connection, a state to wait on, reconnection.

    `session` and `pc` are the current ones: a reconnection replaces both."""

    def __init__(
        self,
        dial: _Dial,
        session: SignalingSession,
        pc: RTCPeerConnection,
        joined: Joined,
        *,
        prepare: Callable[[RTCPeerConnection], None],
        start: Callable[[Bot, trio.Nursery], None],
        reconnect_for: float,
        backoff: Backoff,
    ) -> None:
        self._dial = dial
        self._prepare = prepare  # before each offer: add the transceivers
        self._start = start  # after each answer: observers and frame counters, in the session's nursery
        self.reconnect_for = reconnect_for
        self.backoff = backoff
        self.state = BotState(joined=joined, room=RoomUpdate(joined.viewer_count, joined.has_host))
        self.quality_wanted: Quality = "auto"
        self._changed = trio.Event()
        self.started_at = trio.current_time()
        self._use(session, pc, joined)

    @property
    def peer_id(self) -> str:
        return self.state.joined.peer_id

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def wait_for(self, predicate: Callable[[BotState], bool]) -> BotState:
        """Wait until `predicate(state)` holds (bound it with `trio.fail_after`)."""
        while not predicate(self.state):
            await self._changed.wait()
        return self.state

    async def wait_connected(self) -> None:
        await self.wait_for(lambda s: s.connection_state == "connected")

    async def set_quality(self, quality: Quality) -> None:
        """Viewer: ask for a quality (`auto`, `high`, `medium`, `low`, `audio_only`); asked again
        after a reconnection."""
        self.quality_wanted = quality
        await self.session.send(SetQuality(quality=quality))

    def _use(self, session: SignalingSession, pc: RTCPeerConnection, joined: Joined) -> None:
        """Make a newly joined session and its new peer connection the current ones."""
        self.session, self.pc = session, pc
        self.state.joined, self.state.room = joined, RoomUpdate(joined.viewer_count, joined.has_host)
        self.state.connection_state = pc.connectionState

        @pc.on("connectionstatechange")
        def on_state() -> None:
            if pc is self.pc:
                self.state.connection_state = pc.connectionState
                self._notify()

        self._prepare(pc)
        self._notify()

    async def _run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve the session open at start, then reconnect after each abnormal close until a final one."""
        closed = await self._serve(task_status)
        attempt, give_up_at = 0, trio.current_time() + self.reconnect_for
        while self.reconnect_for > 0 and reconnects_after(closed, stopped=self.state.stopped is not None):
            attempt += 1
            delay = self.backoff.delay(attempt)
            if trio.current_time() + delay > give_up_at:
                why = f"gave up reconnecting after {attempt - 1} attempts in {self.reconnect_for:g} s"
                closed = SessionClosed(closed.code, why, closed.error)
                break
            await trio.sleep(delay)
            try:
                with trio.CancelScope(deadline=trio.current_time() + RECONNECT_ATTEMPT_SECONDS) as attempt_scope:
                    async with _joined_session(self._dial) as (session, pc, joined):
                        self._use(session, pc, joined)
                        if self.quality_wanted != "auto":  # a viewer asks again for what it chose
                            await session.send(SetQuality(quality=self.quality_wanted))
                        await _negotiate(session, pc, self._dial)
                        attempt_scope.deadline = math.inf
                        self.state.reconnects += 1
                        self._notify()
                        closed = await self._serve()
                        attempt, give_up_at = 0, trio.current_time() + self.reconnect_for
                if attempt_scope.cancelled_caught:
                    closed = SessionClosed(1006, "reconnection attempt timed out", None)
            except SessionClosed as refused:  # e.g. room_not_found: rooms do not survive a server restart
                closed = refused
            except ServerError as refused:  # the new offer was refused: not retried
                closed = SessionClosed(None, "offer refused", refused.error)
            except (HandshakeError, ConnectionClosed, OSError) as failed:
                closed = SessionClosed(1006, f"reconnection failed: {failed!r}", None)
            self.state.last_close = closed
            self._notify()
        self.state.closed = closed
        self._notify()

    async def _serve(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> SessionClosed:
        """Read signaling, send keepalives and run the role's tasks until the session closes; then
        close its peer connection."""
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_keepalive, self.session)
                self._start(self, nursery)
                task_status.started()
                closed = await self._read_signaling()
                nursery.cancel_scope.cancel()
        finally:
            await _close_pc_shielded(self.pc)
        self.state.last_close = closed
        self._notify()
        return closed

    async def _read_signaling(self) -> SessionClosed:
        while True:
            try:
                message = await self.session.receive()
            except SessionClosed as closed:
                return closed
            if isinstance(message, RoomUpdate):
                self.state.room = message
            elif isinstance(message, Stopped):
                self.state.stopped = message
            elif isinstance(message, QualityUpdate):
                self.state.quality = message
            elif isinstance(message, Layers):
                self.state.layers = message
            elif isinstance(message, Error):
                self.state.errors.append(message)
            elif isinstance(message, Reconnect) and message.url:  # its node stops: the next join goes there
                self._dial = dataclasses.replace(self._dial, url=message.url)
                self.state.redirected_to = message.url
            self._notify()

    def record_rtp(self, data: bytes) -> None:
        if len(data) < 12:
            return
        first = data[0]
        offset = 12 + 4 * (first & 0x0F)
        if first & 0x10 and len(data) >= offset + 4:
            offset += 4 + 4 * int.from_bytes(data[offset + 2 : offset + 4], "big")
        end = len(data) - (data[-1] if first & 0x20 else 0)
        self.state.rtp.append(
            RtpRecord(
                payload_type=data[1] & 0x7F,
                ssrc=int.from_bytes(data[8:12], "big"),
                sequence=int.from_bytes(data[2:4], "big"),
                timestamp=int.from_bytes(data[4:8], "big"),
                payload=bytes(data[offset:end]),
            )
        )


async def _keepalive(session: SignalingSession) -> None:
    while True:
        await trio.sleep(KEEPALIVE_SECONDS)
        try:
            await session.send(Ping())
        except ConnectionClosed:
            return  # the reader sees the close too and ends the session


class LentTrack(MediaStreamTrack):
    """A host's source track as one peer connection sees it. aiortc stops a sender's track when
    the sender's loop ends, e.g. as soon as the server closes DTLS (a node that drains, a
    restart), and the bot stops it before closing a pc itself: either way this stand-in ends,
    never the source, which the next connection publishes."""

    def __init__(self, source: MediaStreamTrack) -> None:
        super().__init__()
        self.kind = source.kind
        self.source = source

    async def recv(self) -> Any:
        if self.readyState != "live" or self.source.readyState != "live":
            raise MediaStreamError
        return await self.source.recv()


async def _close_pc(pc: RTCPeerConnection) -> None:
    """End the encoder loops by themselves, then close (cancelling an encoder in run_in_executor can
    hang under trio-asyncio). The senders' tracks are the host's `LentTrack`s: stopping them ends
    the loops and leaves the sources live for the next pc (`open_host` stops those when it ends)."""
    for sender in pc.getSenders():
        if sender.track is not None:
            sender.track.stop()
    encoders = sender_encoder_tasks(pc)
    if encoders:
        await asyncio.wait(encoders, timeout=3)
    await pc.close()


async def _close_pc_shielded(pc: RTCPeerConnection) -> None:
    with trio.CancelScope(shield=True), trio.move_on_after(10):
        await trio_asyncio.aio_as_trio(_close_pc)(pc)


async def _stop_tracks(tracks: Sequence[MediaStreamTrack]) -> None:
    for track in tracks:
        track.stop()


def _configuration(dial: _Dial, session_servers: Sequence[IceServer]) -> RTCConfiguration:
    """The bot's own STUN servers and the session's from `joined.ice_servers` (TURN with
    credentials minted for it). Always pass iceServers: without it aiortc falls back to a
    public STUN server."""
    servers = [RTCIceServer(urls=url) for url in dial.stun_servers]
    servers += [RTCIceServer(urls=s.urls, username=s.username, credential=s.credential) for s in session_servers]
    policy = RTCIceTransportPolicy.RELAY if dial.relay_only else RTCIceTransportPolicy.ALL
    return RTCConfiguration(iceServers=servers, iceTransportPolicy=policy)


async def _negotiate(session: SignalingSession, pc: RTCPeerConnection, dial: _Dial) -> None:
    if dial.host_addresses is not None and not dial.relay_only:  # relay only: no host candidates at all
        restrict_host_addresses(pc, dial.host_addresses)
    offer = await trio_asyncio.aio_as_trio(pc.createOffer)()
    await trio_asyncio.aio_as_trio(pc.setLocalDescription)(offer)
    await session.send(Offer(sdp=pc.localDescription.sdp))
    answer = await session.expect(Answer)
    await trio_asyncio.aio_as_trio(pc.setRemoteDescription)(RTCSessionDescription(sdp=answer.sdp, type="answer"))


@asynccontextmanager
async def _joined_session(dial: _Dial) -> AsyncIterator[tuple[SignalingSession, RTCPeerConnection, Joined]]:
    """A new WebSocket joined to the room and a new peer connection, closed at exit."""
    async with connect_signaling(dial.url, ssl_context=dial.ssl_context) as session:
        joined = await session.join(dial.room_id, dial.role, token=dial.token, user_id=dial.user_id)
        pc = RTCPeerConnection(_configuration(dial, joined.ice_servers))
        try:
            yield session, pc, joined
        finally:
            await _close_pc_shielded(pc)


@asynccontextmanager
async def _open_bot(
    dial: _Dial,
    *,
    prepare: Callable[[RTCPeerConnection], None],
    start: Callable[[Bot, trio.Nursery], None],
    reconnect_for: float,
    backoff: Backoff,
) -> AsyncIterator[Bot]:
    """Join and negotiate (a refusal raises here), then run the bot while it is used."""
    async with _joined_session(dial) as (session, pc, joined):
        bot = Bot(dial, session, pc, joined, prepare=prepare, start=start, reconnect_for=reconnect_for, backoff=backoff)
        await _negotiate(session, pc, dial)
        async with trio.open_nursery() as nursery:
            await nursery.start(bot._run)
            yield bot
            nursery.cancel_scope.cancel()


@asynccontextmanager
async def open_host(
    url: str,
    room_id: str,
    *,
    user_id: str | None = None,
    token: str | None = None,
    tracks: Sequence[MediaStreamTrack] | None = None,
    host_addresses: Sequence[str] | None = None,
    stun_servers: Sequence[str] = (),
    relay_only: bool = False,
    ssl_context: ssl.SSLContext | None = None,
    record_sent_rtp: bool = False,
    reconnect_for: float = 60.0,
    backoff: Backoff = DEFAULT_BACKOFF,
    video_codec: str | None = None,
) -> AsyncIterator[Bot]:
    """Join `room_id` as host and publish `tracks` (default: a test pattern and a tone); after an
    abnormal close, reconnect and publish them again for up to `reconnect_for` seconds (0: never).
    The tracks are stopped when the bot is left. `video_codec` ("VP8", "H264"): offer only that
    one for video (default: aiortc's list)."""
    sources = [TestPatternTrack(), ToneTrack()] if tracks is None else list(tracks)

    def prepare(pc: RTCPeerConnection) -> None:
        for track in sources:
            transceiver = pc.addTransceiver(LentTrack(track), direction="sendonly")
            if video_codec is not None and track.kind == "video":
                prefer_codec(transceiver, video_codec)

    def start(bot: Bot, nursery: trio.Nursery) -> None:
        if record_sent_rtp:
            observe_rtp_sent(bot.pc, bot.record_rtp)

    dial = _Dial(url, room_id, "host", token, user_id, ssl_context, stun_servers, host_addresses, relay_only)
    try:
        async with _open_bot(dial, prepare=prepare, start=start, reconnect_for=reconnect_for, backoff=backoff) as bot:
            yield bot
    finally:
        with trio.CancelScope(shield=True):
            await trio_asyncio.aio_as_trio(_stop_tracks)(sources)


@asynccontextmanager
async def open_viewer(
    url: str,
    room_id: str,
    *,
    user_id: str | None = None,
    token: str | None = None,
    kinds: Sequence[str] = ("video", "audio"),
    host_addresses: Sequence[str] | None = None,
    stun_servers: Sequence[str] = (),
    relay_only: bool = False,
    ssl_context: ssl.SSLContext | None = None,
    decode: bool = True,
    record_received_rtp: bool = False,
    reconnect_for: float = 60.0,
    backoff: Backoff = DEFAULT_BACKOFF,
    video_codec: str | None = None,
) -> AsyncIterator[Bot]:
    """Join `room_id` as viewer; decode (count frames) what arrives; after an abnormal close,
    reconnect for up to `reconnect_for` seconds (0: never). `video_codec` ("VP8", "H264"):
    offer to receive only that one (default: aiortc's list)."""

    def prepare(pc: RTCPeerConnection) -> None:
        for kind in kinds:
            transceiver = pc.addTransceiver(kind, direction="recvonly")
            if video_codec is not None and kind == "video":
                prefer_codec(transceiver, video_codec)

    def start(bot: Bot, nursery: trio.Nursery) -> None:
        if record_received_rtp:
            observe_rtp_received(bot.pc, bot.record_rtp)
        if decode:
            for transceiver in bot.pc.getTransceivers():
                nursery.start_soon(_count_frames, bot, transceiver.receiver.track)

    dial = _Dial(url, room_id, "viewer", token, user_id, ssl_context, stun_servers, host_addresses, relay_only)
    async with _open_bot(dial, prepare=prepare, start=start, reconnect_for=reconnect_for, backoff=backoff) as bot:
        yield bot


def prefer_codec(transceiver: Any, codec: str) -> None:
    """Offer only ``codec`` (and nothing else) on a video transceiver."""
    wanted = [c for c in RTCRtpSender.getCapabilities("video").codecs if c.mimeType.lower() == f"video/{codec}".lower()]
    if not wanted:
        raise ValueError(f"aiortc has no {codec}")
    transceiver.setCodecPreferences(wanted)


async def _count_frames(bot: Bot, track: MediaStreamTrack) -> None:
    receive = trio_asyncio.aio_as_trio(track.recv)
    while True:
        try:
            frame = await receive()
        except MediaStreamError:
            return
        state = bot.state
        if track.kind == "video":
            now = trio.current_time()
            if state.first_video_frame_at is None:
                state.first_video_frame_at = now
            if state.last_video_frame_at is not None:
                state.longest_video_gap = max(state.longest_video_gap, now - state.last_video_frame_at)
            state.last_video_frame_at = now
            state.video_frames += 1
            state.video_size = (frame.width, frame.height)
        else:
            state.audio_frames += 1
        bot._notify()


def median(values: Sequence[float]) -> float:
    ordered = sorted(values)
    if not ordered:
        return math.nan
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2
