"""WHIP and WHEP peers for tests: aiortc over plain HTTP (httpx), no WebSocket at all.

`whip_publisher` POSTs a host's offer to `{base_url}/whip/{room_id}`, `whep_viewer` a viewer's
to `{base_url}/whep/{room_id}`; each yields the peer with the server's 201 response (its `Location`,
`ETag`, `Link`) and, for a viewer, the frames it decoded. Both run inside a trio-asyncio loop
(tests/media_support.media_server and open_bot_loop open one).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import httpx
import trio
import trio_asyncio
from aiortc import MediaStreamTrack, RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError

from media_server_client.aiortc_hooks import restrict_host_addresses
from media_server_client.bots import prefer_codec
from media_server_client.sources import TestPatternTrack, ToneTrack

LOOPBACK = ["127.0.0.1"]


@dataclass
class HttpPeer:
    pc: RTCPeerConnection
    created: httpx.Response  # the 201 (or the refusal: then no session)
    video_frames: int = 0
    audio_frames: int = 0
    video_size: tuple[int, int] | None = None
    changed: trio.Event = field(default_factory=trio.Event)

    @property
    def location(self) -> str:
        return self.created.headers["location"]

    @property
    def etag(self) -> str:
        return self.created.headers["etag"]

    async def wait_frames(self, video: int = 0, audio: int = 0) -> None:
        while self.video_frames < video or self.audio_frames < audio:
            await self.changed.wait()


async def offer_of(pc: RTCPeerConnection) -> str:
    restrict_host_addresses(pc, LOOPBACK)
    offer = await trio_asyncio.aio_as_trio(pc.createOffer)()
    await trio_asyncio.aio_as_trio(pc.setLocalDescription)(offer)
    sdp: str = pc.localDescription.sdp
    return sdp


@asynccontextmanager
async def _http_peer(
    base_url: str, door: str, room_id: str, pc: RTCPeerConnection, token: str | None
) -> AsyncIterator[HttpPeer]:
    headers = {"Content-Type": "application/sdp"} | ({"Authorization": f"Bearer {token}"} if token else {})
    try:
        offer = await offer_of(pc)
        async with httpx.AsyncClient(base_url=base_url, timeout=10) as client:
            created = await client.post(f"/{door}/{room_id}", content=offer, headers=headers)
        peer = HttpPeer(pc, created)
        if created.status_code == 201:
            answer = RTCSessionDescription(sdp=created.text, type="answer")
            await trio_asyncio.aio_as_trio(pc.setRemoteDescription)(answer)
        async with trio.open_nursery() as nursery:
            for transceiver in pc.getTransceivers():
                if transceiver.direction == "recvonly" and created.status_code == 201:
                    nursery.start_soon(_count_frames, peer, transceiver.receiver.track)
            yield peer
            nursery.cancel_scope.cancel()
    finally:
        with trio.CancelScope(shield=True), trio.move_on_after(10):
            await trio_asyncio.aio_as_trio(pc.close)()


@asynccontextmanager
async def whip_publisher(
    base_url: str,
    room_id: str,
    *,
    token: str | None = None,
    tracks: Sequence[MediaStreamTrack] | None = None,
    video_codec: str | None = None,
) -> AsyncIterator[HttpPeer]:
    sources = [TestPatternTrack(), ToneTrack()] if tracks is None else list(tracks)
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    for track in sources:
        transceiver = pc.addTransceiver(track, direction="sendonly")
        if video_codec is not None and track.kind == "video":
            prefer_codec(transceiver, video_codec)
    async with _http_peer(base_url, "whip", room_id, pc, token) as peer:
        yield peer


@asynccontextmanager
async def whep_viewer(
    base_url: str, room_id: str, *, token: str | None = None, video_codec: str | None = None
) -> AsyncIterator[HttpPeer]:
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    for kind in ("audio", "video"):
        transceiver = pc.addTransceiver(kind, direction="recvonly")
        if video_codec is not None and kind == "video":
            prefer_codec(transceiver, video_codec)
    async with _http_peer(base_url, "whep", room_id, pc, token) as peer:
        yield peer


async def _count_frames(peer: HttpPeer, track: MediaStreamTrack) -> None:
    receive = trio_asyncio.aio_as_trio(track.recv)
    while True:
        try:
            frame = await receive()
        except MediaStreamError:
            return
        if track.kind == "video":
            peer.video_frames += 1
            peer.video_size = (frame.width, frame.height)
        else:
            peer.audio_frames += 1
        peer.changed.set()
        peer.changed = trio.Event()
