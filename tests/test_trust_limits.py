"""The session limits under abuse: each abuser is refused with its code and
logged once (not once per frame), and a bystander in the same room is not
disturbed. (The limits themselves are in test_signaling.py.)"""

from __future__ import annotations

import contextlib
import logging

import pytest
import trio
from trio_websocket import ConnectionClosed, HandshakeError

from media_server_client.messages import Error, Offer, Ping, Pong
from media_server_client.signaling import SessionClosed, SignalingSession, connect_signaling
from tests.serving import RunningServer, http_client, make_config, running_server

RATE = 20
MAX_CONNECTIONS = 3


async def new_room(server: RunningServer) -> str:
    async with http_client(server) as client:
        response = await client.post("/room/create", json={"post_id": "post", "host_user_id": "alice"})
    room_id: str = response.json()["room_id"]
    return room_id


async def still_alive(session: SignalingSession) -> None:
    await session.send(Ping())
    assert await session.expect(Pong) == Pong()


def logged(caplog: pytest.LogCaptureFixture, logger: str, text: str) -> int:
    return sum(1 for r in caplog.records if r.name == logger and text in r.getMessage())


async def flood(server: RunningServer, room_id: str, frames: int) -> None:
    """Join, then send `frames` pings as fast as possible, whatever happens."""
    async with connect_signaling(server.ws_url) as session:
        await session.join(room_id, "viewer")
        try:
            for _ in range(frames):
                await session.send(Ping())
            await session.wait_closed()
        except (SessionClosed, ConnectionClosed, trio.BrokenResourceError):
            pass  # a client flooding past the close may see a reset instead of the close


async def test_abusers_are_refused_logged_once_and_bystanders_keep_working(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    config = make_config(server={"max_messages_per_second": RATE, "max_connections": MAX_CONNECTIONS})
    with trio.fail_after(30):
        async with running_server(config) as server:
            room_id = await new_room(server)
            async with connect_signaling(server.ws_url) as bystander:
                await bystander.join(room_id, "viewer", user_id="bystander")

                # flooding: one session at 10x the limit, two at once at 5x
                await flood(server, room_id, 10 * RATE)
                await still_alive(bystander)
                async with trio.open_nursery() as nursery:
                    for _ in range(2):
                        nursery.start_soon(flood, server, room_id, 5 * RATE)
                await still_alive(bystander)
                assert logged(caplog, "bitbasel.peer", "refused (rate_limited)") == 3

                # oversize: cut off with 1009, logged once
                async with connect_signaling(server.ws_url) as big:
                    await big.join(room_id, "viewer")
                    await big.send(Offer(sdp="v=0\r\n" + "x" * (64 * 1024)))
                    with pytest.raises(SessionClosed) as closed:
                        await big.wait_closed()
                    assert closed.value.code == 1009
                await still_alive(bystander)
                assert logged(caplog, "bitbasel.peer", "over the limit") == 1

                # max_connections: the bystander + 2 fill it; 150 more are refused and logged twice (1st, 100th)
                async with connect_signaling(server.ws_url) as a, connect_signaling(server.ws_url) as b:
                    await a.join(room_id, "viewer")
                    await b.join(room_id, "viewer")
                    for _ in range(150):
                        async with connect_signaling(server.ws_url) as refused:
                            with pytest.raises(SessionClosed) as closed:
                                await refused.wait_closed()
                            assert closed.value.code == 1008
                            assert closed.value.error == Error(code="rate_limited", message="max_connections reached")
                    await still_alive(a)
                await still_alive(bystander)
                assert logged(caplog, "bitbasel.ws", "max_connections") == 2

                # freed slots are usable again, and the room counts only who is really there
                async with connect_signaling(server.ws_url) as later:
                    await later.join(room_id, "viewer")
                    await still_alive(later)
                async with http_client(server) as client:
                    stats = (await client.get(f"/room/{room_id}/stats")).json()
                assert stats["viewer_count"] == 1 and stats["is_active"] is True
                assert (await client_totals(server))["total_peers"] == 1


async def client_totals(server: RunningServer) -> dict[str, int]:
    async with http_client(server) as client:
        totals: dict[str, int] = (await client.get("/stats")).json()
    return totals


async def test_refused_connections_do_not_leak_slots() -> None:
    """Sessions refused or broken in every way give their slot back."""
    config = make_config(server={"max_connections": 2, "max_messages_per_second": 5})
    with trio.fail_after(20):
        async with running_server(config) as server:
            room_id = await new_room(server)
            for _ in range(5):
                await flood(server, room_id, 50)  # rate_limited
                async with connect_signaling(server.ws_url) as bad:  # bad first message
                    await bad.send_raw("nope")
                    with pytest.raises(SessionClosed):
                        await bad.wait_closed()
                async with connect_signaling(server.ws_url) as gone:  # vanishes without a close
                    await gone.join(room_id, "viewer")
                    await gone.connection._stream.aclose()  # trio-websocket keeps its stream private
            for _ in range(100):  # teardown is asynchronous: give it up to 5 s
                if not (await client_totals(server))["total_peers"]:
                    break
                await trio.sleep(0.05)
            else:
                raise AssertionError(f"sessions leaked: {await client_totals(server)}")
            try:
                async with connect_signaling(server.ws_url) as a, connect_signaling(server.ws_url) as b:
                    await a.join(room_id, "viewer")
                    await b.join(room_id, "viewer")
            except HandshakeError as exc:  # pragma: no cover - a failure message
                raise AssertionError("slots were not given back") from exc


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/room/create"),  # 413 too_large, answered before the body is read
        ("POST", "/room/room_1/token"),  # 413 too_large
        ("POST", "/room/room_1/stop"),  # 404, the body is never read
        ("GET", "/stats"),  # 200, a GET with a body
        ("GET", "/health"),  # open even with an API key
        ("POST", "/nope"),  # 404 not_found
        ("GET", "/room/create"),  # 405
    ],
)
async def test_an_unread_big_body_does_not_stall_the_connection(method: str, path: str) -> None:
    """Hypercorn stops reading a body the app leaves unread, and used to leave the
    connection stuck for good (api/body_drain.py): the next request on it hung,
    and the server kept the socket after the client left."""
    with trio.fail_after(20):
        async with running_server() as server, http_client(server) as client:
            for _ in range(3):
                response = await client.request(method, path, content=b"x" * (3 * 1024 * 1024))
                assert response.status_code < 500, response.text
                with trio.fail_after(3):  # the same keep-alive connection serves the next request
                    assert (await client.get("/health")).status_code == 200


@pytest.mark.parametrize("join_first", [True, False])
async def test_a_frame_over_hypercorns_limit_closes_1009_and_frees_the_slot(join_first: bool) -> None:
    """A message bigger than even Hypercorn's buffer (64 KiB + 1 KiB) is cut off
    by Hypercorn, which used to leave the TCP connection and the session open
    until the silence timeout (api/hypercorn_patch.py): the client's close hung
    and the slot stayed taken. Now the close is prompt and the slot is free."""
    config = make_config(server={"max_connections": 1, "silence_timeout_seconds": 600})
    with trio.fail_after(20):
        async with running_server(config) as server:
            room_id = await new_room(server)
            for size in (70 * 1024, 300 * 1024, 2 * 1024 * 1024):
                with trio.fail_after(3):
                    async with connect_signaling(server.ws_url) as big:
                        if join_first:
                            await big.join(room_id, "viewer")
                        with contextlib.suppress(ConnectionClosed):  # the server may close before all is sent
                            await big.send_raw("x" * size)
                        with pytest.raises(SessionClosed) as closed:
                            await big.wait_closed()
                        assert closed.value.code == 1009
                with trio.fail_after(3):  # the one slot is free again at once
                    async with connect_signaling(server.ws_url) as next_one:
                        await next_one.join(room_id, "viewer")
                        await still_alive(next_one)
