"""The room directory's contract (core/room_directory.py), the same for both backends: the
embedded SQLite file and Redis (a real redis-server on loopback). Then what only the shared
backend does: rows owned per node and worker, and a room moved between nodes
(cluster/registry.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import trio

from cluster.redis_client import RedisClient
from cluster.redis_directory import RedisRoomDirectory
from cluster.registry import ClusterRegistry, NodeInfo, WorkerLoad
from core.room_directory import RoomDirectory, RoomRow, SqliteRoomDirectory
from tests.redis_support import redis_server


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    with redis_server() as url:
        yield url


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[RedisClient]:
    client = RedisClient(redis_url)
    await client.command("FLUSHDB")
    yield client
    await client.aclose()


@pytest.fixture(params=["sqlite", "redis"])
async def reopen(request: pytest.FixtureRequest, tmp_path: Path, redis_url: str) -> AsyncIterator[object]:
    """A function that opens the backend again (a restart), on the same file or Redis db."""
    opened: list[RoomDirectory] = []
    if request.param == "redis":
        flush = RedisClient(redis_url)
        await flush.command("FLUSHDB")
        await flush.aclose()

    async def open_directory() -> RoomDirectory:
        directory: RoomDirectory
        if request.param == "sqlite":
            directory = await SqliteRoomDirectory.open(str(tmp_path / "rooms.sqlite3"))
        else:
            directory = RedisRoomDirectory(RedisClient(redis_url), "node-a", 0)
        opened.append(directory)
        return directory

    yield open_directory
    for directory in opened:
        await directory.aclose()


async def test_rows_survive_a_reopen(reopen: object) -> None:
    assert callable(reopen)
    first: RoomDirectory = await reopen()
    await first.save(RoomRow("room_1", "p1", "alice", 100.0, record=True))
    await first.save(RoomRow("room_2", "p2", "bob", 200.0))
    await first.mark_stopped("room_2", "api", 250.0)
    await first.mark_stopped("room_2", "idle", 300.0)  # the first stop is the one kept
    await first.save(RoomRow("room_3", "p3", "carol", 300.0))
    await first.forget("room_3")
    await first.forget("room_404")  # unknown: nothing happens
    second: RoomDirectory = await reopen()
    assert await second.load() == [
        RoomRow("room_1", "p1", "alice", 100.0, record=True),
        RoomRow("room_2", "p2", "bob", 200.0, stopped_at=250.0, stop_reason="api"),
    ]


async def test_each_worker_loads_only_its_rows_and_cannot_write_anothers(redis: RedisClient) -> None:
    a0 = RedisRoomDirectory(redis, "node-a", 0)
    a1 = RedisRoomDirectory(redis, "node-a", 1)
    b0 = RedisRoomDirectory(redis, "node-b", 0)
    await a0.save(RoomRow("room_1", "p1", "alice", 1.0))
    await a1.save(RoomRow("room_2", "p2", "bob", 2.0))
    assert [r.room_id for r in await a0.load()] == ["room_1"]
    assert [r.room_id for r in await a1.load()] == ["room_2"]
    assert await b0.load() == []
    # node b may not overwrite, stop or forget node a's room
    await b0.save(RoomRow("room_1", "p1", "mallory", 9.0))
    await b0.mark_stopped("room_1", "api", 10.0)
    await b0.forget("room_1")
    assert await a0.load() == [RoomRow("room_1", "p1", "alice", 1.0)]


async def test_a_room_moves_from_a_dead_node_and_a_drained_one(redis: RedisClient) -> None:
    a = ClusterRegistry(redis, "node-a", ttl_seconds=1)
    b = ClusterRegistry(redis, "node-b", ttl_seconds=30)
    beat = NodeInfo("node-a", "http://a", False, 1, 2, [WorkerLoad(0, 1, 0, 1, 2)], 0.0)
    await a.heartbeat(beat)
    await b.heartbeat(NodeInfo("node-b", "http://b", False, 0, 0, [], 0.0))
    assert set(await b.live_nodes()) == {"node-a", "node-b"}
    await RedisRoomDirectory(redis, "node-a", 0).save(RoomRow("room_1", "p1", "alice", 1.0))
    assert await b.active_room_of_post("p1") == "room_1"
    place = await b.room("room_1")
    assert place is not None and (place.node, place.worker, place.row.host_user_id) == ("node-a", 0, "alice")

    # node a's heartbeat expires: node b claims the room once; a second claim from a stale view fails
    await redis.command("PEXPIRE", "bitbasel:node:node-a", 1)
    await trio.sleep(0.05)
    assert not await b.is_live("node-a") and set(await b.live_nodes()) == {"node-b"}
    assert await b.claim("room_1", owner="node-a", worker=1)
    assert not await b.claim("room_1", owner="node-a", worker=0)
    assert [r.room_id for r in await RedisRoomDirectory(redis, "node-b", 1).load()] == ["room_1"]
    await RedisRoomDirectory(redis, "node-a", 0).mark_stopped("room_1", "api", 5.0)  # the old owner: refused
    assert await b.active_room_of_post("p1") == "room_1"

    # node b drains: its active rooms are released (node ""), a stopped one stays where it is
    b1 = RedisRoomDirectory(redis, "node-b", 1)
    await b1.save(RoomRow("room_2", "p2", "bob", 2.0))
    await b1.mark_stopped("room_2", "idle", 6.0)
    assert await b.release_rooms() == 1
    released, stopped = await b.room("room_1"), await b.room("room_2")
    assert released is not None and released.node == ""
    assert stopped is not None and stopped.node == "node-b" and stopped.row.stop_reason == "idle"
    assert await b.active_room_of_post("p2") is None
    c = ClusterRegistry(redis, "node-c", ttl_seconds=30)
    assert await c.claim("room_1", owner="", worker=0)
    assert not await c.claim("room_2", owner="node-b", worker=0)  # stopped rooms are not taken over
    await b.leave()
    assert "node-b" not in await c.live_nodes()
