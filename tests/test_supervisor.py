"""The supervisor and room actors on their own, with trio's autojump clock."""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing

from actors.errors import ActorGone, Capacity, HostTaken, RoomFull, RoomNotFound
from actors.mailbox import call
from actors.messages import HostReplaced, Join, JoinAccepted, Leave, RoomChanged, RoomRef, RoomStats, RoomStoppedEvent
from actors.supervisor import SWEEP_INTERVAL_SECONDS, Supervisor, SupervisorClient

IDLE = 300


async def start(nursery: trio.Nursery, **overrides: int) -> SupervisorClient:
    options = {"max_rooms": 10, "max_viewers_per_room": 2, "idle_timeout_seconds": IDLE} | overrides
    client: SupervisorClient = await nursery.start(Supervisor(**options).run)
    return client


async def join(
    ref: RoomRef, peer_id: str, role: str = "viewer", user: str = "u"
) -> tuple[JoinAccepted, trio.MemoryReceiveChannel[Any]]:
    send, receive = trio.open_memory_channel[Any](16)
    accepted: JoinAccepted = await call(ref.mailbox, lambda r: Join(peer_id, role, user, send, r))  # type: ignore[arg-type]
    return accepted, receive


async def ref_of(client: SupervisorClient, room_id: str) -> RoomRef:
    found = await client.find_room(room_id)
    assert isinstance(found, RoomRef)
    return found


async def test_idle_room_is_stopped_by_the_sweep_then_forgotten(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    client = await start(nursery)
    room = await client.create_room("post", "host")
    await trio.sleep(IDLE - 1)
    assert (await client.room_stats(room.room_id)).is_active
    # the sweep runs every 30 s: the room is stopped within one interval after the timeout
    await trio.sleep(SWEEP_INTERVAL_SECONDS + 1)
    stats = await client.room_stats(room.room_id)
    assert not stats.is_active and stats.stop_reason == "idle"
    await trio.sleep(IDLE + SWEEP_INTERVAL_SECONDS + 1)
    with pytest.raises(RoomNotFound):
        await client.room_stats(room.room_id)


async def test_a_room_with_a_session_is_not_idle(autojump_clock: trio.testing.MockClock, nursery: trio.Nursery) -> None:
    client = await start(nursery)
    room = await client.create_room("post", "host")
    ref = await ref_of(client, room.room_id)
    await join(ref, "v1")
    await trio.sleep(IDLE * 3)
    assert (await client.room_stats(room.room_id)).is_active
    await call(ref.mailbox, lambda r: Leave("v1", r))
    await trio.sleep(IDLE + SWEEP_INTERVAL_SECONDS + 1)
    assert (await client.room_stats(room.room_id)).stop_reason == "idle"


async def test_restart_intensity(autojump_clock: trio.testing.MockClock, nursery: trio.Nursery) -> None:
    client = await start(nursery)
    room = await client.create_room("post", "host")
    for _ in range(3):  # three crashes in 10 s are restarted
        await client.crash_room(room.room_id)
        await trio.sleep(1)
    stats = await client.room_stats(room.room_id)
    assert stats.is_active and stats.restarts == 3
    await trio.sleep(10)  # the window slides: old crashes no longer count
    for _ in range(3):
        await client.crash_room(room.room_id)
    assert (await client.room_stats(room.room_id)).is_active
    await client.crash_room(room.room_id)  # the 4th within 10 s stops the room
    stats = await client.room_stats(room.room_id)
    assert not stats.is_active and stats.stop_reason == "crashed"


async def test_restart_keeps_the_roster_and_peers_are_not_dropped(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    client = await start(nursery)
    room = await client.create_room("post", "host")
    ref = await ref_of(client, room.room_id)
    _, inbox = await join(ref, "v1")
    await client.crash_room(room.room_id)
    stats = await client.room_stats(room.room_id)
    assert stats.viewer_count == 1 and stats.restarts == 1
    accepted, _ = await join(ref, "v2")  # the same mailbox reaches the new incarnation
    assert accepted.viewer_count == 2
    assert inbox.receive_nowait() == RoomChanged(viewer_count=2, has_host=False)


async def test_viewer_limit_and_host_rules(nursery: trio.Nursery) -> None:
    client = await start(nursery)
    room = await client.create_room("post", "alice")
    ref = await ref_of(client, room.room_id)
    await join(ref, "v1")
    await join(ref, "v2")
    with pytest.raises(RoomFull):
        await join(ref, "v3")
    _, first_host = await join(ref, "h1", "host", "alice")
    with pytest.raises(HostTaken):
        await join(ref, "h2", "host", "mallory")
    await join(ref, "h3", "host", "alice")  # same user: replaces
    assert isinstance(first_host.receive_nowait(), HostReplaced)
    assert (await client.room_stats(room.room_id)).host_joined


async def test_stop_tells_every_peer_and_closes_the_mailbox(nursery: trio.Nursery) -> None:
    client = await start(nursery)
    room = await client.create_room("post", "host")
    ref = await ref_of(client, room.room_id)
    _, inbox = await join(ref, "v1")
    await client.stop_room(room.room_id)
    assert inbox.receive_nowait() == RoomStoppedEvent(room_id=room.room_id, reason="api")
    with pytest.raises(ActorGone):
        await join(ref, "v2")
    assert isinstance(await client.find_room(room.room_id), RoomStats)


async def test_capacity_counts_active_rooms_only(nursery: trio.Nursery) -> None:
    client = await start(nursery, max_rooms=1)
    room = await client.create_room("a", "h")
    with pytest.raises(Capacity):
        await client.create_room("b", "h")
    await client.stop_room(room.room_id)
    await client.create_room("b", "h")


async def test_shutdown_stops_all_rooms_with_reason(nursery: trio.Nursery) -> None:
    client = await start(nursery)
    rooms = [await client.create_room(f"p{i}", "h") for i in range(3)]
    await client.stop_all("shutdown")
    for room in rooms:
        assert (await client.room_stats(room.room_id)).stop_reason == "shutdown"
