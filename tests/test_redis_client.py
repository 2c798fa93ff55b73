"""cluster/redis_client.py against a real redis-server (tests/redis_support.py) on loopback."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from functools import partial
from urllib.parse import urlsplit

import pytest
import trio

from cluster.redis_client import RedisClient, RedisUnavailable, open_redis
from cluster.resp import RespError
from tests.redis_support import free_port, redis_server

CAS_SCRIPT = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
    redis.call('SET', KEYS[1], ARGV[2])
    return 1
end
return 0
"""


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    with redis_server() as url:
        yield url


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[RedisClient]:
    async with open_redis(redis_url) as client:
        assert await client.command("FLUSHALL") == "OK"
        yield client


def port_of(url: str) -> int:
    port = urlsplit(url).port
    assert port is not None
    return port


async def test_set_get_round_trip(client: RedisClient) -> None:
    assert await client.command("SET", "greeting", "héllo") == "OK"
    assert await client.command("GET", "greeting") == "héllo".encode()
    assert await client.command("GET", "missing") is None
    assert await client.command("INCRBY", "counter", 5) == 5
    assert await client.command("SET", b"bin\x00ary", bytes(range(256))) == "OK"
    assert await client.command("GET", b"bin\x00ary") == bytes(range(256))
    assert await client.command("PING") == "PONG"


async def test_hset_hgetall(client: RedisClient) -> None:
    assert await client.command("HSET", "room:1", "post", "p1", "host", "u1", "created", 1.5) == 3
    reply = await client.command("HGETALL", "room:1")
    assert isinstance(reply, list)
    assert dict(zip(reply[::2], reply[1::2], strict=True)) == {b"post": b"p1", b"host": b"u1", b"created": b"1.5"}
    assert await client.command("HGETALL", "no-such-hash") == []


async def test_error_reply_is_raised_and_the_session_continues(client: RedisClient) -> None:
    with pytest.raises(RespError, match="unknown command") as caught:
        await client.command("NOSUCHCOMMAND", "x")
    assert caught.value.kind == "ERR"
    await client.command("LPUSH", "list", "a")
    with pytest.raises(RespError) as caught:
        await client.command("GET", "list")
    assert caught.value.kind == "WRONGTYPE"
    assert await client.command("LRANGE", "list", 0, -1) == [b"a"]


async def test_pipeline_returns_replies_in_order_with_error_values(client: RedisClient) -> None:
    replies = await client.pipeline(
        ("SET", "n", 1),
        ("INCR", "n"),
        ("LPUSH", "n", "x"),  # WRONGTYPE: a value, not raised
        ("GET", "n"),
        ("GET", "missing"),
        ("MGET", "n", "missing"),
        ("PING",),
    )
    assert replies[:2] == ["OK", 2]
    assert isinstance(replies[2], RespError) and replies[2].kind == "WRONGTYPE"
    assert replies[3:] == [b"2", None, [b"2", None], "PONG"]
    assert await client.pipeline() == []
    assert await client.command("GET", "n") == b"2"


async def test_eval_compare_and_set(client: RedisClient) -> None:
    await client.command("SET", "owner", "node-a")
    assert await client.command("EVAL", CAS_SCRIPT, 1, "owner", "node-b", "node-c") == 0
    assert await client.command("GET", "owner") == b"node-a"
    assert await client.command("EVAL", CAS_SCRIPT, 1, "owner", "node-a", "node-c") == 1
    assert await client.command("GET", "owner") == b"node-c"


async def test_db_from_the_url_is_isolated(client: RedisClient, redis_url: str) -> None:
    url3 = redis_url.removesuffix("/0") + "/3"
    async with open_redis(url3) as client3:
        assert await client3.command("SET", "where", "db3") == "OK"
        assert await client.command("GET", "where") is None
        await client.command("SET", "where", "db0")
        assert await client3.command("GET", "where") == b"db3"
        assert await client3.command("DBSIZE") == 1
        info = await client3.command("CLIENT", "INFO")
        assert isinstance(info, bytes) and b" db=3 " in info


async def test_password_auth() -> None:
    with redis_server(password="p@ss word") as url:
        assert "p%40ss%20word" in url
        async with open_redis(url) as client:
            assert await client.command("SET", "k", "v") == "OK"
            assert await client.command("GET", "k") == b"v"
        no_password = url.replace(":p%40ss%20word@", "")
        async with open_redis(no_password) as client:
            with pytest.raises(RespError) as caught:
                await client.command("GET", "k")
            assert caught.value.kind == "NOAUTH"
        async with open_redis(url.replace("%20word", "%20wrong")) as client:
            with pytest.raises(RedisUnavailable, match="AUTH refused") as unavailable:
                await client.command("GET", "k")
            assert "wrong" not in str(unavailable.value)


async def test_unavailable_when_nothing_listens() -> None:
    port = free_port()
    async with open_redis(f"redis://127.0.0.1:{port}/0", timeout=1.0) as client:
        start = trio.current_time()
        with pytest.raises(RedisUnavailable, match=f"127.0.0.1:{port}") as caught:
            await client.command("PING")
        assert trio.current_time() - start < 1.5
        assert isinstance(caught.value.__cause__, OSError)


async def test_unavailable_after_the_server_stops_then_reconnects_on_restart() -> None:
    with redis_server() as url:
        port = port_of(url)
        client = RedisClient(url, timeout=1.0)
        assert await client.command("SET", "k", "before") == "OK"
    # The server is gone: the open connection is at EOF, a new one is refused.
    for _ in range(2):
        start = trio.current_time()
        with pytest.raises(RedisUnavailable, match=f"127.0.0.1:{port}"):
            await client.command("GET", "k")
        assert trio.current_time() - start < 1.5
    with redis_server(port=port) as url:
        assert port_of(url) == port
        assert await client.command("GET", "k") is None  # no persistence: a fresh server
        assert await client.command("SET", "k", "after") == "OK"
        assert await client.command("GET", "k") == b"after"
    await client.aclose()
    with pytest.raises(trio.ClosedResourceError):
        await client.command("PING")


async def test_a_connection_the_server_closed_while_idle_is_replaced_within_the_call(
    client: RedisClient, redis_url: str
) -> None:
    """Redis's `timeout`, a proxy or a restart closes an idle connection: the next command goes
    out once more on a new connection instead of failing."""
    first_id = await client.command("CLIENT", "ID")
    async with open_redis(redis_url) as other:
        assert await other.command("CLIENT", "KILL", "ID", first_id) == 1
    await trio.sleep(0.05)  # the close reaches the client's socket
    assert await client.command("PING") == "PONG"
    assert await client.command("CLIENT", "ID") != first_id


async def test_silent_server_times_out_and_each_call_reconnects() -> None:
    accepted: list[trio.SocketStream] = []

    async def stay_silent(stream: trio.SocketStream) -> None:
        accepted.append(stream)
        await trio.sleep_forever()

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, stay_silent, 0, host="127.0.0.1"))
        port = listeners[0].socket.getsockname()[1]
        async with open_redis(f"redis://127.0.0.1:{port}/0", timeout=0.3) as client:
            for calls in (1, 2):
                start = trio.current_time()
                with pytest.raises(RedisUnavailable, match=r"no answer within 0\.3 s"):
                    await client.command("PING")
                assert 0.3 <= trio.current_time() - start < 1.0
                await trio.sleep(0.05)  # let the listener run its accept
                assert len(accepted) == calls  # the timed-out connection was dropped, not reused
        nursery.cancel_scope.cancel()


async def test_cancelled_command_does_not_desync_the_connection(client: RedisClient) -> None:
    with trio.move_on_after(0.1):
        await client.command("BLPOP", "empty-list", 1)  # its nil reply comes after 1 s
    assert await client.command("PING") == "PONG"
    assert await client.command("ECHO", "next") == b"next"


async def test_concurrent_callers_share_one_connection(client: RedisClient) -> None:
    connection = await client.command("CLIENT", "ID")
    results: dict[int, object] = {}

    async def call(i: int) -> None:
        results[i] = await client.command("ECHO", f"caller-{i}")

    async with trio.open_nursery() as nursery:
        for i in range(20):
            nursery.start_soon(call, i)
    assert results == {i: f"caller-{i}".encode() for i in range(20)}
    assert await client.command("CLIENT", "ID") == connection
