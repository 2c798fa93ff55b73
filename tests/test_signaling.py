"""WebSocket signaling over real sockets: joins, refusals with their close codes,
bad input answered to that client alone. (Media is in test_media_e2e.py.)"""

from __future__ import annotations

import secrets

import pytest
import trio
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, CloseConnection, Request, TextMessage

from media_server_client.messages import Error, Join, Joined, Leave, Offer, Ping, Pong, RoomUpdate, Stopped
from media_server_client.signaling import SessionClosed, SignalingSession, connect_signaling
from tests.serving import RunningServer, http_client, make_config, running_server


async def new_room(server: RunningServer, post: str = "post", host: str = "alice") -> str:
    async with http_client(server) as client:
        response = await client.post("/room/create", json={"post_id": post, "host_user_id": host})
    room_id: str = response.json()["room_id"]
    return room_id


async def expect_refusal(session: SignalingSession, code: str, close_code: int) -> None:
    with pytest.raises(SessionClosed) as closed:
        await session.wait_closed()
    assert closed.value.code == close_code
    assert closed.value.error is not None and closed.value.error.code == code


async def test_join_as_viewer_and_host(server: RunningServer) -> None:
    with trio.fail_after(10):
        room_id = await new_room(server)
        async with connect_signaling(server.ws_url) as viewer:
            joined = await viewer.join(room_id, "viewer", user_id="bob")
            assert joined == Joined(
                room_id=room_id, peer_id=joined.peer_id, role="viewer", viewer_count=1, has_host=False, protocol=1
            )
            async with connect_signaling(server.ws_url) as host:
                hosted = await host.join(room_id, "host", user_id="alice")
                assert hosted.viewer_count == 1 and hosted.role == "host"
                async with connect_signaling(server.ws_url) as second:
                    await second.join(room_id, "viewer")
                    assert await host.expect(RoomUpdate) == RoomUpdate(viewer_count=2, has_host=False)
                    assert await viewer.expect(RoomUpdate) == RoomUpdate(viewer_count=2, has_host=False)
                async with http_client(server) as client:
                    stats = (await client.get(f"/room/{room_id}/stats")).json()
                    totals = (await client.get("/stats")).json()
                assert stats["viewer_count"] == 1 and stats["host_joined"] is True
                assert stats["has_host"] is False  # joined, but no connected peer connection yet
                assert totals["total_peers"] == 2 and totals["total_hosts"] == 1


async def test_ping_pong_and_leave(server: RunningServer) -> None:
    with trio.fail_after(10):
        room_id = await new_room(server)
        async with connect_signaling(server.ws_url) as session:
            await session.join(room_id, "viewer")
            await session.send(Ping())
            assert await session.expect(Pong) == Pong()
            await session.send(Leave())
            with pytest.raises(SessionClosed) as closed:
                await session.wait_closed()
            assert closed.value.code == 1000 and closed.value.error is None


@pytest.mark.parametrize(
    "frame",
    [
        '{"type": "ping"}',
        "not json",
        '{"type": "join"}',
        '{"type":"join","room_id":5,"role":"viewer"}',
        '{"type": "offer", "sdp": "v=0"}',
        "[1,2]",
    ],
)
async def test_anything_before_a_good_join_is_bad_message(server: RunningServer, frame: str) -> None:
    with trio.fail_after(10):
        async with connect_signaling(server.ws_url) as session:
            await session.send_raw(frame)
            await expect_refusal(session, "bad_message", 4400)


async def test_bad_messages_after_join_get_an_error_and_the_session_goes_on(server: RunningServer) -> None:
    with trio.fail_after(10):
        room_id = await new_room(server)
        async with connect_signaling(server.ws_url) as session:
            await session.join(room_id, "viewer")
            for frame in [
                "{oops",
                '{"type": "dance"}',
                '{"type": "offer", "sdp": 12}',
                b"\x00binary",
                '{"type": "candidate", "candidate": "candidate:1 1 udp 1 127.0.0.1 9 typ host"}',
            ]:
                await session.send_raw(frame)
                error = await session.receive()
                assert isinstance(error, Error) and error.code == "bad_message", frame
            await session.send(Ping())
            assert isinstance(await session.receive(), Pong)


async def test_set_quality_is_checked_and_the_session_goes_on(server: RunningServer) -> None:
    """A viewer's `set_quality` with a name PROTOCOL.md does not list, or without one, is
    `bad_message`; so is `set_quality` from a host; a good one before the offer is taken
    silently (it applies from the first frame); each session goes on."""
    with trio.fail_after(10):
        room_id = await new_room(server, host="alice")
        async with connect_signaling(server.ws_url) as viewer, connect_signaling(server.ws_url) as host:
            await viewer.join(room_id, "viewer")
            await host.join(room_id, "host", user_id="alice")
            for frame in ['{"type": "set_quality", "quality": "ultra"}', '{"type": "set_quality"}']:
                await viewer.send_raw(frame)
                error = await viewer.receive()
                assert isinstance(error, Error) and error.code == "bad_message", frame
            await viewer.send_raw('{"type": "set_quality", "quality": "low"}')
            await viewer.send(Ping())
            assert isinstance(await viewer.receive(), Pong)  # no answer to a good one
            await host.send_raw('{"type": "set_quality", "quality": "low"}')
            error = await host.receive()
            assert isinstance(error, Error) and error.code == "bad_message" and "viewer" in error.message
            await host.send(Ping())
            assert isinstance(await host.receive(), Pong)


async def test_second_join_ends_the_session(server: RunningServer) -> None:
    with trio.fail_after(10):
        room_id = await new_room(server)
        async with connect_signaling(server.ws_url) as session:
            await session.join(room_id, "viewer")
            await session.send(Join(room_id=room_id, role="viewer"))
            await expect_refusal(session, "bad_message", 4400)


async def test_unknown_and_stopped_rooms(server: RunningServer) -> None:
    with trio.fail_after(10):
        async with connect_signaling(server.ws_url) as session:
            await session.send(Join(room_id="room_123", role="viewer"))
            await expect_refusal(session, "room_not_found", 4404)
        room_id = await new_room(server)
        async with http_client(server) as client:
            await client.post(f"/room/{room_id}/stop")
        async with connect_signaling(server.ws_url) as session:
            await session.send(Join(room_id=room_id, role="viewer"))
            await expect_refusal(session, "room_not_found", 4404)


async def test_host_rules(server: RunningServer) -> None:
    with trio.fail_after(10):
        room_id = await new_room(server, host="alice")
        async with connect_signaling(server.ws_url) as mallory:
            await mallory.send(Join(room_id=room_id, role="host", user_id="mallory"))
            await expect_refusal(mallory, "forbidden", 4403)
        async with connect_signaling(server.ws_url) as first, connect_signaling(server.ws_url) as second:
            await first.join(room_id, "host", user_id="alice")
            await second.join(room_id, "host", user_id="alice")
            await expect_refusal(first, "replaced", 4410)


class RawWebSocket:
    """A WebSocket client on wsproto over a plain socket, to see the closing handshake from the
    client's side: it answers the server's close only when told to."""

    def __init__(self, sock: trio.SocketStream) -> None:
        self.sock = sock
        self.ws = WSConnection(ConnectionType.CLIENT)

    @classmethod
    async def connect(cls, url: str) -> RawWebSocket:
        host, port = url.removeprefix("ws://").split("/")[0].split(":")
        raw = cls(await trio.open_tcp_stream(host, int(port)))
        await raw.sock.send_all(raw.ws.send(Request(host=host, target="/ws")))
        while not any(isinstance(e, AcceptConnection) for e in await raw.events()):
            pass
        return raw

    async def events(self) -> list[object]:
        data = await self.sock.receive_some(65536)
        if not data:
            raise EOFError("the server closed the TCP connection")
        self.ws.receive_data(data)
        return list(self.ws.events())

    async def send_text(self, text: str) -> None:
        await self.sock.send_all(self.ws.send(TextMessage(data=text)))

    async def send_text_anyway(self, text: str) -> None:
        """A text frame written by hand (wsproto sends nothing after the peer's close): what a
        client whose writer had not yet seen the close still sends."""
        payload = text.encode()
        assert len(payload) < 126
        mask = secrets.token_bytes(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        await self.sock.send_all(bytes((0x81, 0x80 | len(payload))) + mask + masked)


async def test_after_its_close_frame_the_server_reads_until_the_clients_close(server: RunningServer) -> None:
    """The closing handshake (RFC 6455 7.1.1): a replaced host still sending when the server's
    `replaced` close (4410) arrives. The server keeps reading (and dropping) what it sends until
    its close answer, then ends the connection cleanly. Closing at once, with the client's
    frames unread, makes the kernel answer them with a reset, and a reset loses what the client
    had not read yet: the close code (1006 instead of 4410)."""
    with trio.fail_after(20):
        room_id = await new_room(server, host="alice")
        first = await RawWebSocket.connect(server.ws_url)
        await first.send_text(f'{{"type": "join", "room_id": "{room_id}", "role": "host", "user_id": "alice"}}')
        async with connect_signaling(server.ws_url) as second:
            await second.join(room_id, "host", user_id="alice")
            close = None
            while close is None:
                close = next((e for e in await first.events() if isinstance(e, CloseConnection)), None)
            assert close.code == 4410
            for _ in range(20):  # 0.4 s of frames after the server's close: read, not reset
                await first.send_text_anyway('{"type": "ping"}')
                await trio.sleep(0.02)
            await first.sock.send_all(first.ws.send(close.response()))
            with pytest.raises(EOFError):  # then the server ends the TCP connection (a FIN, no reset)
                while True:
                    await first.events()


async def test_room_full(server: RunningServer) -> None:
    config = make_config(rooms={"max_viewers_per_room": 1})
    with trio.fail_after(10):
        async with running_server(config) as small:
            room_id = await new_room(small)
            async with connect_signaling(small.ws_url) as first, connect_signaling(small.ws_url) as second:
                await first.join(room_id, "viewer")
                await second.send(Join(room_id=room_id, role="viewer"))
                await expect_refusal(second, "room_full", 4429)


async def test_silent_session_times_out() -> None:
    config = make_config(server={"silence_timeout_seconds": 0.5})
    with trio.fail_after(10):
        async with running_server(config) as server:
            room_id = await new_room(server)
            async with connect_signaling(server.ws_url) as session:
                await session.join(room_id, "viewer")
                await expect_refusal(session, "timeout", 4408)


async def test_oversized_message_is_cut_off(server: RunningServer) -> None:
    with trio.fail_after(10):
        room_id = await new_room(server)
        async with connect_signaling(server.ws_url) as session, connect_signaling(server.ws_url) as bystander:
            await session.join(room_id, "viewer")
            await bystander.join(room_id, "viewer")
            await session.send(Offer(sdp="v=0\r\n" + "a" * (64 * 1024)))
            with pytest.raises(SessionClosed) as closed:
                await session.wait_closed()
            assert closed.value.code == 1009
            await bystander.send(Ping())
            assert await bystander.expect(Pong) == Pong()


async def test_flooding_is_rate_limited() -> None:
    config = make_config(server={"max_messages_per_second": 20})
    with trio.fail_after(10):
        async with running_server(config) as server:
            room_id = await new_room(server)
            async with connect_signaling(server.ws_url) as session:
                await session.join(room_id, "viewer")
                # one over the limit, then stop: a client that keeps flooding after the close makes the
                # server's kernel reset the connection (unread data), which may discard the error in flight
                for _ in range(21):
                    await session.send(Ping())
                with pytest.raises(SessionClosed) as closed:
                    while True:
                        await session.receive()
                assert closed.value.code == 1008
                assert closed.value.error is not None and closed.value.error.code == "rate_limited"


async def test_max_connections() -> None:
    config = make_config(server={"max_connections": 2})
    with trio.fail_after(10):
        async with running_server(config) as server:
            room_id = await new_room(server)
            async with connect_signaling(server.ws_url) as a, connect_signaling(server.ws_url) as b:
                await a.join(room_id, "viewer")
                await b.join(room_id, "viewer")
                async with connect_signaling(server.ws_url) as c:
                    await expect_refusal(c, "rate_limited", 1008)
            async with connect_signaling(server.ws_url) as d:  # freed slots are reusable
                await d.join(room_id, "viewer")


async def test_rest_stop_and_shutdown_tell_the_peers() -> None:
    with trio.fail_after(15):
        async with running_server() as server:
            room_id = await new_room(server)
            other_room = await new_room(server, post="other")
            async with connect_signaling(server.ws_url) as session:
                await session.join(room_id, "viewer")
                async with http_client(server) as client:
                    await client.post(f"/room/{room_id}/stop")
                assert await session.expect(Stopped) == Stopped(room_id=room_id, reason="api")
                with pytest.raises(SessionClosed) as closed:
                    await session.wait_closed()
                assert closed.value.code == 1000
            async with connect_signaling(server.ws_url) as session:
                await session.join(other_room, "viewer")
                server.shutdown.set()
                assert await session.expect(Stopped) == Stopped(room_id=other_room, reason="shutdown")
                with pytest.raises(SessionClosed) as closed:
                    await session.wait_closed()
                assert closed.value.code == 1001
