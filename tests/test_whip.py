"""WHIP and WHEP from outside, status by status (RFC 9725; PROTOCOL.md "WHIP ingest", "WHEP
playback"): a plain HTTP client (httpx) and aiortc peers that speak nothing but HTTP, against a
real server on loopback. The media tests with GStreamer and Chromium are in
tests/test_whip_media.py."""

from __future__ import annotations

from pathlib import Path

import httpx
import trio

from core.tokens import TokenIssuer
from media_server_client.bots import open_bot_loop
from tests.media_support import create_room, frames_at_least, media_server, room_stats, viewer
from tests.serving import http_client, make_config, poll_until, server_process
from tests.whip_support import whep_viewer, whip_publisher

SECRET = "whip-test-secret-0123456789abcdef"


async def test_a_whip_host_is_watched_over_websocket_and_whep_then_delete_ends_it() -> None:
    with trio.fail_after(90):
        async with media_server() as server:
            room_id = await create_room(server)
            async with viewer(server, room_id) as ws_viewer, whep_viewer(server.url, room_id) as early:
                assert early.created.status_code == 201, early.created.text  # before the host is live
                async with whip_publisher(server.url, room_id) as host:
                    assert host.created.status_code == 201, host.created.text
                    assert host.location.startswith(f"/whip/{room_id}/") and host.etag.startswith('"')
                    answer = host.created.text
                    assert "a=ice-lite" in answer and "a=group:BUNDLE 0 1" in answer and "a=rtcp-mux" in answer
                    assert answer.count("a=recvonly") == 2
                    await ws_viewer.wait_for(frames_at_least(video=20, audio=50))
                    await early.wait_frames(video=20, audio=50)
                    async with whep_viewer(server.url, room_id) as late:
                        await late.wait_frames(video=20, audio=50)
                        assert late.video_size == (320, 240)
                    stats = await room_stats(server, room_id)
                    assert stats["has_host"] and stats["viewer_count"] == 2, stats
                    async with http_client(server) as client:
                        deleted = await client.delete(host.location)
                        assert deleted.status_code == 200, deleted.text
                        stats = await room_stats(server, room_id)  # at once, not after a timeout
                        assert not stats["has_host"], stats
                        again = await client.delete(host.location)
                        patched = await client.patch(
                            host.location,
                            content="a=end-of-candidates\r\n",
                            headers={"If-Match": "*", "Content-Type": "application/trickle-ice-sdpfrag"},
                        )
                    assert again.status_code == 404 and patched.status_code == 404
                    await ws_viewer.wait_for(lambda s: not s.room.has_host)


def _sdp(token: str | None = None) -> dict[str, str]:
    return {"Content-Type": "application/sdp"} | ({"Authorization": f"Bearer {token}"} if token else {})


def _frag(etag: str | None, token: str | None) -> dict[str, str]:
    headers = {"Content-Type": "application/trickle-ice-sdpfrag"}
    if etag is not None:
        headers["If-Match"] = etag
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    return headers


async def _wait_gone(client: httpx.AsyncClient, location: str, token: str) -> None:
    """PATCH answers 404 once the session is over (polled: ending it is the server's)."""

    async def patch() -> int:
        trickle = await client.patch(location, content="a=end-of-candidates\r\n", headers=_frag("*", token))
        return trickle.status_code

    await poll_until(patch, lambda status: status == 404, interval=0.05)


async def test_whip_and_whep_answer_each_status_of_the_protocol() -> None:
    config = make_config(auth={"secret": SECRET}, server={"max_connections": 3})
    tokens = TokenIssuer(SECRET)
    with trio.fail_after(120):
        async with media_server(config) as server:
            room_id = await create_room(server)
            other_room = await create_room(server, post="other")
            host_token, _ = tokens.mint(room_id, "host", "alice", 600)
            viewer_token, _ = tokens.mint(room_id, "viewer", "bob", 600)
            other_token, _ = tokens.mint(other_room, "host", "alice", 600)
            async with http_client(server) as client, whip_publisher(server.url, room_id, token=host_token) as host:
                offer = host.pc.localDescription.sdp
                # a session, and what it answers
                assert host.created.status_code == 201, host.created.text
                assert host.created.headers["content-type"] == "application/sdp"
                assert host.created.headers["access-control-allow-origin"] == "*"
                assert "location" in host.created.headers["access-control-expose-headers"].lower()
                assert "Link" not in host.created.headers  # no TURN configured
                # OPTIONS: what a POST takes, and CORS preflight
                for door in ("whip", "whep"):
                    options = await client.options(f"/{door}/{room_id}")
                    assert options.status_code == 204 and options.headers["accept-post"] == "application/sdp"
                    assert "POST" in options.headers["access-control-allow-methods"]
                    assert "authorization" in options.headers["access-control-allow-headers"].lower()
                session_options = await client.options(host.location)
                assert session_options.headers["accept-patch"] == "application/trickle-ice-sdpfrag"
                # refusals of a POST, with the JSON error body
                wrong_type = await client.post(
                    f"/whip/{room_id}", content=offer, headers={"Content-Type": "text/plain"}
                )
                assert wrong_type.status_code == 415 and wrong_type.headers["accept-post"] == "application/sdp"
                assert wrong_type.json()["error"] == "unsupported_media_type"
                no_token = await client.post(f"/whip/{room_id}", content=offer, headers=_sdp())
                assert (no_token.status_code, no_token.json()["error"]) == (401, "unauthorized")
                viewer_as_host = await client.post(f"/whip/{room_id}", content=offer, headers=_sdp(viewer_token))
                assert viewer_as_host.status_code == 403, viewer_as_host.text
                wrong_room = await client.post(f"/whip/{room_id}", content=offer, headers=_sdp(other_token))
                assert wrong_room.status_code == 403, wrong_room.text
                unknown = await client.post("/whep/room_999999", content=offer, headers=_sdp(viewer_token))
                assert (unknown.status_code, unknown.json()["error"]) == (404, "room_not_found")
                mallory, _ = tokens.mint(room_id, "host", "mallory", 600)  # another user, while alice is host
                taken = await client.post(f"/whip/{room_id}", content=offer, headers=_sdp(mallory))
                assert (taken.status_code, taken.json()["error"]) == (409, "host_taken")
                codecs = {"opus/48000": "nothing/48000", "VP8/90000": "none/90000", "H264/90000": "nil/90000"}
                no_codec = offer
                for ours, unknown_codec in codecs.items():
                    no_codec = no_codec.replace(ours, unknown_codec)
                refused = await client.post(f"/whip/{other_room}", content=no_codec, headers=_sdp(other_token))
                assert (refused.status_code, refused.json()["error"]) == (422, "unsupported_codec"), refused.text
                # PATCH: If-Match, content type, trickle, tokens
                candidate = "a=mid:0\r\na=candidate:1 1 udp 2130706431 127.0.0.1 50000 typ host\r\n"
                missing = await client.patch(host.location, content=candidate, headers=_frag(None, host_token))
                assert missing.status_code == 428, missing.text
                stale = await client.patch(host.location, content=candidate, headers=_frag('"stale"', host_token))
                assert stale.status_code == 412, stale.text
                frag_type = _frag(host.etag, host_token) | {"Content-Type": "application/sdp"}
                assert (await client.patch(host.location, content=candidate, headers=frag_type)).status_code == 415
                trickled = await client.patch(host.location, content=candidate, headers=_frag(host.etag, host_token))
                assert trickled.status_code == 204, trickled.text
                many = "a=mid:0\r\n" + "".join(  # more candidates than the peer's messages per second
                    f"a=candidate:{i} 1 udp 2130706431 127.0.0.1 {50000 + i} typ host\r\n" for i in range(64)
                )
                for _ in range(3):
                    trickled = await client.patch(host.location, content=many, headers=_frag(host.etag, host_token))
                    assert trickled.status_code == 204, trickled.text
                huge = await client.patch(host.location, content="a=x\r\n" * 5000, headers=_frag(host.etag, host_token))
                assert (huge.status_code, huge.json()["error"]) == (413, "too_large")
                broken = "a=candidate:1 1 udp nonsense\r\n"
                bad = await client.patch(host.location, content=broken, headers=_frag(host.etag, host_token))
                assert (bad.status_code, bad.json()["error"]) == (400, "bad_sdp")
                assert (
                    await client.patch(host.location, content=candidate, headers=_frag(host.etag, None))
                ).status_code == 401
                stranger = _frag(host.etag, viewer_token)
                assert (await client.patch(host.location, content=candidate, headers=stranger)).status_code == 403
                assert (
                    await client.delete(host.location, headers={"Authorization": f"Bearer {viewer_token}"})
                ).status_code == 403
                # an ICE restart: new credentials in, the server's new ones and a new ETag out
                restart = "a=ice-ufrag:WhIpReStArT\r\na=ice-pwd:aNewPasswordOf22CharsOrMore\r\n"
                restarted = await client.patch(host.location, content=restart, headers=_frag("*", host_token))
                assert restarted.status_code == 200, restarted.text
                assert restarted.headers["content-type"] == "application/trickle-ice-sdpfrag"
                assert restarted.headers["etag"] != host.etag
                old_ufrag = next(line for line in host.created.text.splitlines() if line.startswith("a=ice-ufrag:"))
                assert "a=ice-ufrag:" in restarted.text and old_ufrag not in restarted.text
                assert "a=candidate:" in restarted.text and "a=ice-lite" in restarted.text
                after = await client.patch(host.location, content=candidate, headers=_frag(host.etag, host_token))
                assert after.status_code == 412  # the ETag before the restart is stale now
                # capacity: max_connections = 3 (the host, then two WHEP viewers)
                async with whep_viewer(server.url, room_id, token=viewer_token) as v1:
                    assert v1.created.status_code == 201, v1.created.text
                    async with whep_viewer(server.url, room_id, token=viewer_token) as v2:
                        assert v2.created.status_code == 201, v2.created.text
                        async with whep_viewer(server.url, room_id, token=viewer_token) as full:
                            assert full.created.status_code == 503, full.created.text
                            assert full.created.headers["retry-after"].isdigit()
                # a second WHIP publisher of the same user replaces the first
                async with whip_publisher(server.url, room_id, token=host_token) as second:
                    assert second.created.status_code == 201, second.created.text
                    await _wait_gone(client, host.location, host_token)
                    assert (
                        await client.delete(host.location, headers={"Authorization": f"Bearer {host_token}"})
                    ).status_code == 404
                    # a kick ends a WHIP session
                    api = (
                        {"Authorization": f"Bearer {server.config.auth.api_key}"} if server.config.auth.api_key else {}
                    )
                    peers = (await client.get(f"/room/{room_id}/peers", headers=api)).json()["peers"]
                    (hosts,) = [p["peer_id"] for p in peers if p["role"] == "host"]
                    assert (await client.post(f"/room/{room_id}/peers/{hosts}/kick", headers=api)).status_code == 200
                    await _wait_gone(client, second.location, host_token)
                    assert not (await room_stats(server, room_id))["has_host"]


async def test_whip_answers_link_headers_with_turn_credentials() -> None:
    config = make_config(ice={"turn_servers": ["turn:127.0.0.1:3478?transport=udp"], "turn_secret": "turn-secret"})
    with trio.fail_after(60):
        async with media_server(config) as server:
            room_id = await create_room(server)
            async with whep_viewer(server.url, room_id) as watcher:
                assert watcher.created.status_code == 201, watcher.created.text
                (link,) = watcher.created.headers.get_list("link")
    assert link.startswith('<turn:127.0.0.1:3478?transport=udp>; rel="ice-server"; username="')
    assert 'credential="' in link and 'credential-type="password"' in link


async def test_whip_and_whep_reach_the_rooms_worker_through_the_front(tmp_path: Path) -> None:
    """Two workers: each room on its own; a WHIP host and a WHEP viewer of the second room talk
    to the front only, which relays each request to that room's worker."""
    ice = {"stun_servers": ["stun:127.0.0.1:3478"], "turn_servers": ["turn:127.0.0.1:3478"], "turn_secret": "t"}
    with server_process(tmp_path, cluster={"workers": 2}, ice=ice) as front:
        async with open_bot_loop(), httpx.AsyncClient(base_url=front.url, timeout=10) as client:
            rooms = []
            for post in ("one", "two"):
                created = await client.post("/room/create", json={"post_id": post, "host_user_id": "alice"})
                rooms.append(created.json()["room_id"])
            placed = (await client.get("/stats")).json()
            assert sorted(len(w["rooms"]) for w in placed["workers"]) == [1, 1]
            with trio.fail_after(60):
                async with whip_publisher(front.url, rooms[1]) as host, whep_viewer(front.url, rooms[1]) as watcher:
                    assert host.created.status_code == 201 and watcher.created.status_code == 201
                    links = host.created.headers.get_list("link")  # two headers through the front, not one joined
                    assert [link.split(";")[0] for link in links] == ["<stun:127.0.0.1:3478>", "<turn:127.0.0.1:3478>"]
                    await watcher.wait_frames(video=20, audio=50)
                    options = await client.options(f"/whep/{rooms[1]}")
                    assert options.status_code == 204 and options.headers["accept-post"] == "application/sdp"
                    assert (await client.delete(watcher.location)).status_code == 200
                    assert (await client.delete(host.location)).status_code == 200
                    assert (await client.delete(host.location)).status_code == 404
                    stats = (await client.get(f"/room/{rooms[1]}/stats")).json()
                    assert not stats["has_host"] and stats["viewer_count"] == 0, stats
                    unknown = await client.post("/whip/room_424242", content="v=0\r\n", headers=_sdp())
                    assert unknown.status_code == 404 and unknown.headers["access-control-allow-origin"] == "*"


async def test_whep_viewers_are_placed_over_the_workers_and_counted_until_they_end(tmp_path: Path) -> None:
    """Two workers, `room_viewers_per_worker = 1`, `max_viewers_per_room = 3`: WHEP viewers go
    to the origin, then to the other worker (an edge), as WebSocket viewers do, and all decode;
    the fourth is `room_full`; a viewer that leaves without DELETE (its peer connection closed)
    frees its place once the front hears it ended, a DELETE at once."""
    cluster = {"workers": 2, "room_viewers_per_worker": 1}
    with server_process(tmp_path, cluster=cluster, rooms={"max_viewers_per_room": 3}) as front:
        async with open_bot_loop(), httpx.AsyncClient(base_url=front.url, timeout=10) as client:
            created = await client.post("/room/create", json={"post_id": "placed", "host_user_id": "alice"})
            room_id = created.json()["room_id"]
            with trio.fail_after(90):
                async with (
                    whip_publisher(front.url, room_id) as host,
                    whep_viewer(front.url, room_id) as first,
                    whep_viewer(front.url, room_id) as second,
                ):
                    assert host.created.status_code == first.created.status_code == second.created.status_code == 201
                    workers = [v.location.rsplit("/", 1)[1].partition(".")[0] for v in (first, second)]
                    assert sorted(workers) == ["0", "1"], workers  # the origin, then the other worker
                    for watcher in (first, second):
                        await watcher.wait_frames(video=20, audio=50)
                    async with whep_viewer(front.url, room_id) as third:
                        assert third.created.status_code == 201
                        await third.wait_frames(video=10)
                        full = await client.post(
                            f"/whep/{room_id}", content=host.pc.localDescription.sdp, headers=_sdp()
                        )
                        assert (full.status_code, full.json()["error"]) == (503, "room_full")
                    # the third closed its peer connection, no DELETE: the front hears it ended
                    started = trio.current_time()

                    async def post_viewer() -> int:
                        async with whep_viewer(front.url, room_id) as again:
                            return again.created.status_code

                    await poll_until(post_viewer, lambda status: status == 201, interval=0.5)  # 503 until then
                    freed_after = trio.current_time() - started
                    assert freed_after < 6, freed_after
                    # a DELETE gives the place back at once
                    assert (await client.delete(second.location)).status_code == 200
                    async with whep_viewer(front.url, room_id) as fifth:
                        assert fifth.created.status_code == 201, fifth.created.text
