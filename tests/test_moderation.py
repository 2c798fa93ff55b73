"""Moderation: a room's sessions listed, one kicked; it is told, does not come back, and the
others keep their media (aiortc bots through an in-process server)."""

from __future__ import annotations

import time

import pytest
import trio

from media_server_client.signaling import SessionClosed, connect_signaling
from media_server_client.sources import TestPatternTrack, ToneTrack
from tests.media_support import create_room, host, media_server, viewer
from tests.serving import http_client


async def test_a_kicked_viewer_is_told_does_not_return_and_the_others_keep_decoding() -> None:
    with trio.fail_after(60):
        async with media_server() as server, http_client(server) as client:
            room_id = await create_room(server, host="alice")
            tracks = [TestPatternTrack(160, 120, 15), ToneTrack()]
            async with (
                host(server, room_id, tracks=tracks) as h,
                viewer(server, room_id, user_id="troll") as troll,
                viewer(server, room_id, user_id="fan") as fan,
            ):
                for v in (troll, fan):
                    await v.wait_for(lambda s: s.video_frames >= 5)
                listed = (await client.get(f"/room/{room_id}/peers")).json()
                by_user = {p["user_id"]: p for p in listed["peers"]}
                assert set(by_user) == {"alice", "troll", "fan"}
                assert by_user["alice"]["role"] == "host" and by_user["alice"]["peer_id"] == h.state.joined.peer_id
                assert by_user["alice"]["bytes_received"] > 0 and by_user["fan"]["bytes_sent"] > 0
                assert all(p["connection_state"] == "connected" for p in listed["peers"])
                assert all(abs(p["joined_at"] - time.time()) < 60 for p in listed["peers"])

                troll_peer = by_user["troll"]["peer_id"]
                kicked = await client.post(f"/room/{room_id}/peers/{troll_peer}/kick")
                assert kicked.json() == {"status": "kicked", "room_id": room_id, "peer_id": troll_peer}
                await troll.wait_for(lambda s: s.closed is not None)
                closed = troll.state.closed
                assert closed is not None and closed.code == 4451 and closed.final
                assert closed.error is not None and closed.error.code == "kicked"
                frames = fan.state.video_frames
                await fan.wait_for(lambda s: s.video_frames >= frames + 15)  # the others carry on
                await trio.sleep(1.0)  # a bot that reconnected would have joined again by now
                after = (await client.get(f"/room/{room_id}/peers")).json()["peers"]
                assert sorted(p["user_id"] for p in after) == ["alice", "fan"]
                assert troll.state.reconnects == 0
                again = await client.post(f"/room/{room_id}/peers/{troll_peer}/kick")
                assert again.status_code == 404 and again.json()["error"] == "not_found"
                # a client that comes back anyway is refused: the user is banned from the room
                async with connect_signaling(server.ws_url) as session:
                    with pytest.raises(SessionClosed) as refused:
                        await session.join(room_id, "viewer", user_id="troll")
                assert refused.value.code == 4451 and refused.value.error is not None
                assert refused.value.error.code == "kicked"
