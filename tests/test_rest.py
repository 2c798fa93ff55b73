"""Every REST route of PROTOCOL.md, over real HTTP, with its errors."""

from __future__ import annotations

import time

import httpx
import jwt
import pytest
import trio

from tests.serving import RunningServer, http_client, make_config, running_server


async def create(client: httpx.AsyncClient, post_id: str = "post_1", user: str = "user_1") -> dict[str, object]:
    response = await client.post("/room/create", json={"post_id": post_id, "host_user_id": user})
    assert response.status_code == 200, response.text
    body: dict[str, object] = response.json()
    return body


def assert_error(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"] == code
    assert isinstance(body["message"], str) and body["message"]


async def test_health(server: RunningServer) -> None:
    with trio.fail_after(10):
        async with http_client(server) as client:
            response = await client.get("/health")
    assert response.status_code == 200
    assert response.json() == {"status": "healthy", "service": "media_server"}


async def test_create_room_gives_random_ids_and_one_room_per_post(server: RunningServer) -> None:
    with trio.fail_after(10):
        async with http_client(server) as client:
            first = await create(client, "post_a", "u1")
            again = await create(client, "post_a", "u1")
            other = await create(client, "post_b", "u2")
    assert first["room_id"] == again["room_id"]
    assert first["post_id"] == "post_a"
    assert first["host_token"] is None  # no [auth] secret
    room_a, room_b = str(first["room_id"]), str(other["room_id"])
    assert room_a != room_b
    for room_id in (room_a, room_b):
        assert room_id.startswith("room_") and room_id[5:].isdigit()
    assert abs(int(room_a[5:]) - int(room_b[5:])) != 1  # not sequential (fails with p ~ 1e-12)


async def test_classroom_id_is_accepted_and_post_id_wins(server: RunningServer) -> None:
    with trio.fail_after(10):
        async with http_client(server) as client:
            seed = await client.post("/room/create", json={"classroom_id": "class_9", "host_user_id": "u"})
            both = await client.post(
                "/room/create", json={"classroom_id": "class_x", "post_id": "post_x", "host_user_id": "u"}
            )
    assert seed.status_code == 200 and seed.json()["post_id"] == "class_9"
    assert both.json()["post_id"] == "post_x"


@pytest.mark.parametrize(
    "body",
    [
        b"{not json",
        b"",
        b"[]",
        b'{"host_user_id": "u"}',  # no post_id
        b'{"post_id": "p"}',  # no host_user_id
        b'{"post_id": 12, "host_user_id": "u"}',  # wrong type
        b'{"post_id": "", "host_user_id": "u"}',  # empty
    ],
)
async def test_create_room_bad_bodies(server: RunningServer, body: bytes) -> None:
    with trio.fail_after(10):
        async with http_client(server) as client:
            response = await client.post("/room/create", content=body, headers={"Content-Type": "application/json"})
    assert_error(response, 400, "bad_request")


async def test_unknown_fields_are_ignored(server: RunningServer) -> None:
    with trio.fail_after(10):
        async with http_client(server) as client:
            response = await client.post("/room/create", json={"post_id": "p", "host_user_id": "u", "extra": [1]})
    assert response.status_code == 200


async def test_body_over_one_mib_is_refused(server: RunningServer) -> None:
    big = b'{"post_id": "' + b"x" * (1024 * 1024) + b'", "host_user_id": "u"}'
    with trio.fail_after(10):
        async with http_client(server) as client:
            response = await client.post("/room/create", content=big, headers={"Content-Type": "application/json"})
    assert_error(response, 413, "too_large")


async def test_stop_and_stats(server: RunningServer) -> None:
    with trio.fail_after(10):
        async with http_client(server) as client:
            room = await create(client, "post_s", "host_s")
            room_id = room["room_id"]
            stats = (await client.get(f"/room/{room_id}/stats")).json()
            assert stats["room_id"] == room_id and stats["post_id"] == "post_s"
            assert stats["is_active"] is True and stats["viewer_count"] == 0 and stats["has_host"] is False
            assert stats["stop_reason"] is None
            stopped = await client.post(f"/room/{room_id}/stop")
            assert stopped.json() == {"status": "stopped", "room_id": room_id}
            again = await client.post(f"/room/{room_id}/stop")
            assert again.status_code == 200 and again.json()["status"] == "stopped"
            after = (await client.get(f"/room/{room_id}/stats")).json()
            assert after["is_active"] is False and after["stop_reason"] == "api"
            # a stopped room frees its post: a new create gives a new room
            fresh = await create(client, "post_s", "host_s")
            assert fresh["room_id"] != room_id


async def test_unknown_room_is_404(server: RunningServer) -> None:
    with trio.fail_after(10):
        async with http_client(server) as client:
            for response in (
                await client.get("/room/room_1/stats"),
                await client.post("/room/room_1/stop"),
                await client.post("/room/room_1/token", json={"role": "viewer", "user_id": "u"}),
            ):
                assert_error(response, 404, "room_not_found")


async def test_unknown_route_and_method(server: RunningServer) -> None:
    with trio.fail_after(10):
        async with http_client(server) as client:
            assert_error(await client.get("/nope"), 404, "not_found")
            assert_error(await client.get("/room/create"), 405, "method_not_allowed")
            assert_error(await client.delete("/health"), 405, "method_not_allowed")


@pytest.mark.parametrize("byte_range", ["bytes=99999999-", "bytes=0-1", "bytes=-5", "junk"])
async def test_pages_ignore_range_headers(server: RunningServer, byte_range: str) -> None:
    """Found by the fuzzer: Quart's Range handling answered 500 past the end of a file."""
    with trio.fail_after(10):
        async with http_client(server) as client:
            for path in ("/", "/watch/room_1", "/static/bitbasel-media.js"):
                response = await client.get(path, headers={"Range": byte_range})
                assert response.status_code == 200 and response.content, (path, response.status_code)


async def test_server_stats_count_rooms(server: RunningServer) -> None:
    with trio.fail_after(10):
        async with http_client(server) as client:
            empty = (await client.get("/stats")).json()
            rooms = [await create(client, f"post_{i}", "u") for i in range(3)]
            await client.post(f"/room/{rooms[0]['room_id']}/stop")
            stats = (await client.get("/stats")).json()
    assert empty["total_rooms"] == 0
    for key in ("total_peers", "total_viewers", "total_hosts", "total_bytes_sent", "total_bytes_received"):
        assert stats[key] == 0
    assert stats["total_rooms"] == 3 and stats["active_rooms"] == 2


async def test_max_rooms_gives_capacity() -> None:
    with trio.fail_after(10):
        async with running_server(make_config(rooms={"max_rooms": 2})) as server, http_client(server) as client:
            a = await create(client, "p1")
            await create(client, "p2")
            assert_error(
                await client.post("/room/create", json={"post_id": "p3", "host_user_id": "u"}), 503, "capacity"
            )
            same = await create(client, "p1")  # the active room of a post is still returned
            assert same["room_id"] == a["room_id"]
            await client.post(f"/room/{a['room_id']}/stop")
            await create(client, "p3")


async def test_tokens_are_null_without_secret(server: RunningServer) -> None:
    with trio.fail_after(10):
        async with http_client(server) as client:
            room = await create(client)
            response = await client.post(f"/room/{room['room_id']}/token", json={"role": "viewer", "user_id": "v"})
    assert response.json() == {"token": None, "expires_at": None}


SECRET = "s" * 32


async def test_tokens_are_hs256_jwts_with_the_protocol_claims() -> None:
    with trio.fail_after(10):
        async with running_server(make_config(auth={"secret": SECRET})) as server, http_client(server) as client:
            room = await create(client, "post_t", "host_t")
            token = await client.post(
                f"/room/{room['room_id']}/token", json={"role": "viewer", "user_id": "v1", "ttl_seconds": 60}
            )
            for ttl in (0, 86401, "60"):
                bad = await client.post(
                    f"/room/{room['room_id']}/token", json={"role": "viewer", "user_id": "v", "ttl_seconds": ttl}
                )
                assert_error(bad, 400, "bad_request")
            assert_error(
                await client.post(f"/room/{room['room_id']}/token", json={"role": "admin", "user_id": "v"}),
                400,
                "bad_request",
            )
    host_claims = jwt.decode(str(room["host_token"]), SECRET, algorithms=["HS256"])
    assert host_claims["room"] == room["room_id"] and host_claims["role"] == "host" and host_claims["sub"] == "host_t"
    body = token.json()
    claims = jwt.decode(body["token"], SECRET, algorithms=["HS256"])
    assert claims == {"room": room["room_id"], "role": "viewer", "sub": "v1", "exp": body["expires_at"]}
    assert 55 <= body["expires_at"] - time.time() <= 61


async def test_api_key_guards_every_route_but_health() -> None:
    with trio.fail_after(10):
        config = make_config(auth={"api_key": "k3y"}, debug={"fault_injection": True})
        async with running_server(config) as server, http_client(server) as client:
            assert (await client.get("/health")).status_code == 200
            for method, path in [
                ("POST", "/room/create"),
                ("GET", "/stats"),
                ("GET", "/room/room_1/stats"),
                ("POST", "/room/room_1/stop"),
                ("POST", "/room/room_1/token"),
                ("POST", "/debug/room/room_1/crash"),
            ]:
                assert_error(await client.request(method, path, json={}), 401, "unauthorized")
                wrong = await client.request(method, path, json={}, headers={"Authorization": "Bearer nope"})
                assert_error(wrong, 401, "unauthorized")
            good = {"Authorization": "Bearer k3y"}
            response = await client.post("/room/create", json={"post_id": "p", "host_user_id": "u"}, headers=good)
            assert response.status_code == 200
            assert (await client.get("/stats", headers=good)).status_code == 200


async def test_crash_route_restarts_room_with_same_stats(server: RunningServer) -> None:
    with trio.fail_after(10):
        async with http_client(server) as client:
            room = await create(client, "post_c", "host_c")
            room_id = room["room_id"]
            before = (await client.get(f"/room/{room_id}/stats")).json()
            crashed = await client.post(f"/debug/room/{room_id}/crash")
            assert crashed.status_code == 200
            after = (await client.get(f"/room/{room_id}/stats")).json()
            assert after["restarts"] == 1
            for key in ("room_id", "post_id", "is_active", "viewer_count", "has_host", "host_user_id", "created_at"):
                assert after[key] == before[key]
            assert (await client.get("/stats")).json()["room_restarts"] == 1


async def test_crash_route_is_absent_without_fault_injection() -> None:
    with trio.fail_after(10):
        async with running_server() as server, http_client(server) as client:
            room = await create(client)
            assert_error(await client.post(f"/debug/room/{room['room_id']}/crash"), 404, "not_found")


async def test_too_many_crashes_stop_the_room(server: RunningServer) -> None:
    with trio.fail_after(10):
        async with http_client(server) as client:
            room = await create(client, "post_cc", "h")
            room_id = room["room_id"]
            for _ in range(4):
                await client.post(f"/debug/room/{room_id}/crash")
            stats = (await client.get(f"/room/{room_id}/stats")).json()
            assert stats["is_active"] is False and stats["stop_reason"] == "crashed"
            assert_error(await client.post(f"/debug/room/{room_id}/crash"), 404, "room_not_found")
