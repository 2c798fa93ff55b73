"""api/http_sessions.ChannelSocket, the socket of an HTTP-driven peer actor, against a scripted
peer: a request's reply is what the peer sends after the request's fence, never a late reply
to an earlier request; a session that ends answers its waiting request at once."""

from __future__ import annotations

import msgspec
import pytest
import trio

from api.http_sessions import ChannelSocket, SessionClosed
from core.signaling import Answer, ClientMessage, Error, Join, Offer, Ping, Pong, encode

decode_client = msgspec.json.Decoder(ClientMessage)


async def test_a_late_reply_to_an_earlier_request_is_not_the_next_ones() -> None:
    socket = ChannelSocket(lambda code: None, keepalive_seconds=60)
    seen: list[object] = []

    async def peer() -> None:
        await socket.send(encode(Answer(sdp="late: the answer of a request that timed out")))
        await socket.send(encode(Error(code="unsupported_codec", message="news, not a reply")))
        for _ in range(2):  # the fence's ping, then the offer
            message = decode_client.decode(await socket.receive())
            seen.append(message)
            if isinstance(message, Ping):
                await socket.send(encode(Error(code="unsupported_codec", message="news after the fence")))
                await socket.send(encode(Pong()))
            else:
                await socket.send(encode(Error(code="unsupported_codec", message="news, still not a reply")))
                await socket.send(encode(Answer(sdp="the offer's answer")))

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            socket_ready = trio.Event()

            async def request() -> None:
                socket_ready.set()
                reply = await socket.request(Offer(sdp="v=0"), not_replies=frozenset({"unsupported_codec"}))
                assert reply == Answer(sdp="the offer's answer")

            nursery.start_soon(request)
            await socket_ready.wait()
            await trio.sleep(0.01)  # the request waits at its fence: what the peer sent before is ignored
            nursery.start_soon(peer)
    assert [type(m) for m in seen] == [Ping, Offer]


async def test_a_join_is_not_fenced_and_an_ended_session_answers_at_once() -> None:
    socket = ChannelSocket(lambda code: None, keepalive_seconds=60)
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:

            async def peer() -> None:
                assert isinstance(decode_client.decode(await socket.receive()), Join)  # first, no ping before it
                socket.ended(1000)  # e.g. a DELETE cancelled the session

            nursery.start_soon(peer)
            with pytest.raises(SessionClosed):
                await socket.request(Join(room_id="room_1", role="viewer"), fenced=False)
        with pytest.raises(SessionClosed):  # and every later request
            await socket.request(Offer(sdp="v=0"))


async def test_the_peers_close_ends_a_waiting_request() -> None:
    closed: list[int] = []
    socket = ChannelSocket(closed.append, keepalive_seconds=60)
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:

            async def peer() -> None:
                decode_client.decode(await socket.receive())
                await socket.send(encode(Error(code="forbidden", message="no")))

            nursery.start_soon(peer)
            reply = await socket.request(Join(room_id="room_1", role="host"), fenced=False)
            assert isinstance(reply, Error) and reply.code == "forbidden"
            await socket.close(4403)
    assert closed == [4403] and socket.close_code == 4403
