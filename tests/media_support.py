"""Helpers for end-to-end media tests: a server plus aiortc bots on loopback."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx

from core.config import Config
from media.vp8 import descriptor_length
from media_server_client.bots import Bot, open_host, open_viewer
from media_server_client.containment import open_contained_loop
from tests.serving import RunningServer, http_client, make_config, running_server

LOOPBACK = ["127.0.0.1"]
VP8_CLOCK = 90000


@asynccontextmanager
async def media_server(config: Config | None = None) -> AsyncIterator[RunningServer]:
    """A server inside a trio-asyncio loop (the bots' aiortc shares it)."""
    async with open_contained_loop(), running_server(config or make_config(debug={"fault_injection": True})) as s:
        yield s


async def create_room(server: RunningServer, post: str = "post", host: str = "alice") -> str:
    async with http_client(server) as client:
        response = await client.post("/room/create", json={"post_id": post, "host_user_id": host})
    room_id: str = response.json()["room_id"]
    return room_id


async def room_stats(server: RunningServer, room_id: str) -> dict[str, Any]:
    async with http_client(server) as client:
        stats: dict[str, Any] = (await client.get(f"/room/{room_id}/stats")).json()
    return stats


async def server_stats(server: RunningServer) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=server.url) as client:
        stats: dict[str, Any] = (await client.get("/stats")).json()
    return stats


def frames_at_least(video: int = 0, audio: int = 0) -> Any:
    """A ``Bot.wait_for`` condition: at least that many decoded frames of each kind."""
    return lambda s: s.video_frames >= video and s.audio_frames >= audio


def host(server: RunningServer, room_id: str, **kwargs: Any) -> Any:
    return open_host(server.ws_url, room_id, user_id=kwargs.pop("user_id", "alice"), host_addresses=LOOPBACK, **kwargs)


def viewer(server: RunningServer, room_id: str, **kwargs: Any) -> Any:
    return open_viewer(server.ws_url, room_id, host_addresses=LOOPBACK, **kwargs)


def media_payloads(bot: Bot, payload_type: int, *, vp8: bool) -> set[bytes]:
    """The media bytes of a bot's recorded packets: whole Opus payloads, VP8 after its descriptor."""
    out = set()
    for record in bot.state.rtp:
        if record.payload_type != payload_type or not record.payload:
            continue
        out.add(record.payload[descriptor_length(record.payload) :] if vp8 else record.payload)
    return out


def payload_type_of(sdp: str, codec: str) -> int:
    for line in sdp.splitlines():
        if line.startswith("a=rtpmap:") and f" {codec}/" in line:
            return int(line.split(":", 1)[1].split()[0])
    raise AssertionError(f"no {codec} in SDP")


def make_webm(path: str, *, seconds: float = 2.0, width: int = 160, height: int = 120, fps: int = 15) -> None:
    """A small VP8 + Opus WebM file made with PyAV (a keyframe every second)."""
    import fractions

    import av

    with av.open(path, "w", format="webm") as container:
        video = container.add_stream("libvpx", rate=fps)
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        video.options = {"g": str(fps), "deadline": "realtime", "cpu-used": "8"}
        audio = container.add_stream("libopus", rate=48000)
        audio.layout = "mono"
        for index in range(int(seconds * fps)):
            frame = av.VideoFrame(width, height, "yuv420p")
            frame.planes[0].update(bytes((x + index * 3) % 256 for x in range(width)) * height)
            frame.planes[1].update(bytes([128]) * (width * height // 4))
            frame.planes[2].update(bytes([128]) * (width * height // 4))
            frame.pts, frame.time_base = index, fractions.Fraction(1, fps)
            container.mux(video.encode(frame))
        for index in range(int(seconds * 50)):
            samples = av.AudioFrame(format="s16", layout="mono", samples=960)
            samples.planes[0].update(bytes(1920))
            samples.sample_rate, samples.pts = 48000, index * 960
            samples.time_base = fractions.Fraction(1, 48000)
            container.mux(audio.encode(samples))
        container.mux(video.encode(None))
        container.mux(audio.encode(None))
