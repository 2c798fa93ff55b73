"""`GET /room/{id}/thumbnail.jpg`: a real JPEG of the host's frame size, decoded from the host's
latest keyframe only when asked (aiortc host bot through an in-process server)."""

from __future__ import annotations

import io

import av
import trio

from media_server_client.sources import TestPatternTrack, ToneTrack
from tests.media_support import create_room, host, media_server, viewer
from tests.serving import http_client


def jpeg_size(jpeg: bytes) -> tuple[int, int]:
    with av.open(io.BytesIO(jpeg), format="image2pipe") as container:
        frame = next(container.decode(video=0))
        return frame.width, frame.height


async def test_a_thumbnail_is_a_jpeg_of_the_hosts_frame_size_and_is_cached() -> None:
    with trio.fail_after(60):
        async with media_server() as server, http_client(server) as client:
            room_id = await create_room(server)
            missing = await client.get("/room/room_000000000001/thumbnail.jpg")
            assert missing.status_code == 404 and missing.json()["error"] == "room_not_found"
            started = trio.current_time()
            no_host = await client.get(f"/room/{room_id}/thumbnail.jpg")  # nothing to show: bounded wait
            assert no_host.status_code == 404 and no_host.json()["error"] == "not_found"
            assert trio.current_time() - started < 5
            async with (
                host(server, room_id, tracks=[TestPatternTrack(320, 240, 15), ToneTrack()]),
                viewer(server, room_id) as v,
            ):
                await v.wait_for(lambda s: s.video_frames >= 5)
                first = await client.get(f"/room/{room_id}/thumbnail.jpg")
                again = await client.get(f"/room/{room_id}/thumbnail.jpg")
    assert first.status_code == 200 and first.headers["content-type"] == "image/jpeg"
    assert first.content[:3] == b"\xff\xd8\xff"
    assert jpeg_size(first.content) == (320, 240)
    assert first.headers["x-frame-size"] == "320x240"
    assert again.content == first.content  # within 3 s: the same picture, not decoded again
