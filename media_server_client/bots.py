"""Host and viewer bots: real WebRTC peers (aiortc) that speak PROTOCOL.md.

They run under Trio with a trio-asyncio loop open (aiortc is asyncio):

    async with trio_asyncio.open_loop():
        async with open_host(ws_url, room_id, user_id="alice") as host:
            await host.wait_connected()
        async with open_viewer(ws_url, room_id) as viewer:
            await viewer.wait_for(lambda s: s.video_frames >= 10)

`host_addresses=["127.0.0.1"]` gathers ICE candidates on loopback only (aioice
skips 127.0.0.1 by default). No STUN server is used unless given.
"""

from __future__ import annotations

import asyncio
import math
import ssl
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Literal

import trio
import trio_asyncio
from aiortc import MediaStreamTrack, RTCConfiguration, RTCIceServer, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError

from core.signaling import Answer, Joined, Offer, Ping, RoomUpdate, Stopped
from media_server_client.signaling import SessionClosed, SignalingSession, connect_signaling
from media_server_client.sources import TestPatternTrack, ToneTrack
from transport.aiortc_adapter import (
    observe_rtp_received,
    observe_rtp_sent,
    restrict_host_addresses,
    sender_encoder_tasks,
)

KEEPALIVE_SECONDS = 20.0


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
    joined: Joined
    room: RoomUpdate
    connection_state: str = "new"
    stopped: Stopped | None = None
    closed: SessionClosed | None = None
    video_frames: int = 0
    audio_frames: int = 0
    first_video_frame_at: float | None = None  # trio clock
    video_size: tuple[int, int] | None = None
    rtp: list[RtpRecord] = field(default_factory=list)


class Bot:
    """What both bots share: signaling, the peer connection, a state to wait on."""

    def __init__(self, session: SignalingSession, pc: RTCPeerConnection, joined: Joined) -> None:
        self.session = session
        self.pc = pc
        self.state = BotState(joined=joined, room=RoomUpdate(joined.viewer_count, joined.has_host))
        self._changed = trio.Event()
        self.started_at = trio.current_time()

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

    def _watch_connection(self) -> None:
        @self.pc.on("connectionstatechange")
        def on_state() -> None:
            self.state.connection_state = self.pc.connectionState
            self._notify()

    async def _read_signaling(self) -> None:
        try:
            while True:
                message = await self.session.receive()
                if isinstance(message, RoomUpdate):
                    self.state.room = message
                elif isinstance(message, Stopped):
                    self.state.stopped = message
                self._notify()
        except SessionClosed as closed:
            self.state.closed = closed
            self._notify()

    async def _keepalive(self) -> None:
        while True:
            await trio.sleep(KEEPALIVE_SECONDS)
            await self.session.send(Ping())

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


async def _close_pc(pc: RTCPeerConnection) -> None:
    """Stop the tracks so the encoder loops end by themselves, then close
    (cancelling an encoder in run_in_executor can hang under trio-asyncio)."""
    for sender in pc.getSenders():
        if sender.track is not None:
            sender.track.stop()
    encoders = sender_encoder_tasks(pc)
    if encoders:
        await asyncio.wait(encoders, timeout=3)
    await pc.close()


def _configuration(stun_servers: Sequence[str]) -> RTCConfiguration:
    # Always pass iceServers: without it aiortc falls back to a public STUN server.
    return RTCConfiguration(iceServers=[RTCIceServer(urls=url) for url in stun_servers])


async def _negotiate(session: SignalingSession, pc: RTCPeerConnection, host_addresses: Sequence[str] | None) -> None:
    if host_addresses is not None:
        restrict_host_addresses(pc, host_addresses)
    offer = await trio_asyncio.aio_as_trio(pc.createOffer)()
    await trio_asyncio.aio_as_trio(pc.setLocalDescription)(offer)
    await session.send(Offer(sdp=pc.localDescription.sdp))
    answer = await session.expect(Answer)
    await trio_asyncio.aio_as_trio(pc.setRemoteDescription)(RTCSessionDescription(sdp=answer.sdp, type="answer"))


@asynccontextmanager
async def _bot_session(
    url: str,
    room_id: str,
    role: Literal["host", "viewer"],
    *,
    token: str | None,
    user_id: str | None,
    ssl_context: ssl.SSLContext | None,
    stun_servers: Sequence[str],
) -> AsyncIterator[tuple[SignalingSession, RTCPeerConnection, Joined]]:
    async with connect_signaling(url, ssl_context=ssl_context) as session:
        joined = await session.join(room_id, role, token=token, user_id=user_id)
        pc = RTCPeerConnection(_configuration(stun_servers))
        try:
            yield session, pc, joined
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(10):
                await trio_asyncio.aio_as_trio(_close_pc)(pc)


@asynccontextmanager
async def _running_bot(
    session: SignalingSession, pc: RTCPeerConnection, joined: Joined, host_addresses: Sequence[str] | None
) -> AsyncIterator[tuple[Bot, trio.Nursery]]:
    """Negotiate, then keep reading signaling and sending keepalives while the bot is used."""
    bot = Bot(session, pc, joined)
    bot._watch_connection()
    await _negotiate(session, pc, host_addresses)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(bot._read_signaling)
        nursery.start_soon(bot._keepalive)
        yield bot, nursery
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
    ssl_context: ssl.SSLContext | None = None,
    record_sent_rtp: bool = False,
) -> AsyncIterator[Bot]:
    """Join `room_id` as host and publish `tracks` (default: a test pattern and a tone)."""
    if tracks is None:
        tracks = [TestPatternTrack(), ToneTrack()]
    async with _bot_session(
        url, room_id, "host", token=token, user_id=user_id, ssl_context=ssl_context, stun_servers=stun_servers
    ) as (session, pc, joined):
        for track in tracks:
            pc.addTransceiver(track, direction="sendonly")
        async with _running_bot(session, pc, joined, host_addresses) as (bot, _):
            if record_sent_rtp:
                observe_rtp_sent(pc, bot.record_rtp)
            yield bot


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
    ssl_context: ssl.SSLContext | None = None,
    decode: bool = True,
    record_received_rtp: bool = False,
) -> AsyncIterator[Bot]:
    """Join `room_id` as viewer; decode (count frames) what arrives."""
    async with _bot_session(
        url, room_id, "viewer", token=token, user_id=user_id, ssl_context=ssl_context, stun_servers=stun_servers
    ) as (session, pc, joined):
        for kind in kinds:
            pc.addTransceiver(kind, direction="recvonly")
        async with _running_bot(session, pc, joined, host_addresses) as (bot, nursery):
            if record_received_rtp:
                observe_rtp_received(pc, bot.record_rtp)
            if decode:
                for transceiver in pc.getTransceivers():
                    nursery.start_soon(_count_frames, bot, transceiver.receiver.track)
            yield bot


async def _count_frames(bot: Bot, track: MediaStreamTrack) -> None:
    receive = trio_asyncio.aio_as_trio(track.recv)
    while True:
        try:
            frame = await receive()
        except MediaStreamError:
            return
        state = bot.state
        if track.kind == "video":
            if state.first_video_frame_at is None:
                state.first_video_frame_at = trio.current_time()
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
