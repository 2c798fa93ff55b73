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
from core.room_directory import RoomRow
from transport.media_port import MediaPort
from transport.relay_port import RelayPort

IDLE = 300


async def start(nursery: trio.Nursery, **overrides: Any) -> SupervisorClient:
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
    await trio.testing.wait_all_tasks_blocked()  # the crashed actor's ticker unwinds first
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
    await trio.testing.wait_all_tasks_blocked()  # the crashed actor's ticker unwinds first
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
    with trio.fail_after(1):  # told by the room's teardown, in the room's task, right after the stop
        assert await inbox.receive() == RoomStoppedEvent(room_id=room.room_id, reason="api")
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


# ---- deadlines, queued requests at a stop, atomic membership -------------------------------


async def test_a_call_nobody_answers_fails_at_its_deadline(autojump_clock: trio.testing.MockClock) -> None:
    from actors.errors import ActorTimeout
    from actors.mailbox import CALL_TIMEOUT_SECONDS, open_mailbox

    send, _receive = open_mailbox()  # an actor that never reads its mailbox
    started = trio.current_time()
    with pytest.raises(ActorTimeout):
        await call(send, lambda r: Leave("p", r))
    assert trio.current_time() - started == pytest.approx(CALL_TIMEOUT_SECONDS)


async def test_closing_a_mailbox_answers_every_queued_request() -> None:
    from actors.mailbox import close_mailbox, open_mailbox

    mailbox = open_mailbox()
    outcomes: list[str] = []

    async def caller() -> None:
        try:
            await call(mailbox[0], lambda r: Leave("p", r))
        except ActorGone:
            outcomes.append("gone")

    async with trio.open_nursery() as nursery:
        for _ in range(10):
            nursery.start_soon(caller)
        await trio.testing.wait_all_tasks_blocked()
        assert close_mailbox(mailbox, lambda _: ActorGone("stopped")) == 10
    assert outcomes == ["gone"] * 10


async def test_stopping_a_busy_room_answers_its_queued_joins(nursery: trio.Nursery) -> None:
    client = await start(nursery, max_viewers_per_room=100)
    room_id = (await client.create_room("post", "host")).room_id
    ref = await ref_of(client, room_id)
    outcomes: list[str] = []

    async def joiner(index: int) -> None:
        try:
            await join(ref, f"peer_{index}")
            outcomes.append("joined")
        except ActorGone:
            outcomes.append("gone")
        except RoomFull:
            outcomes.append("full")

    with trio.fail_after(10):  # before the fix, the joins queued at the stop waited forever
        async with trio.open_nursery() as joiners:
            for index in range(40):
                joiners.start_soon(joiner, index)
            await trio.lowlevel.checkpoint()  # a few joins are handled, the rest wait in the mailbox
            await client.stop_room(room_id)
    assert len(outcomes) == 40 and "gone" in outcomes
    assert (await client.room_stats(room_id)).viewer_count == 0


async def test_a_member_whose_session_ended_is_not_counted_even_before_its_leave(nursery: trio.Nursery) -> None:
    client = await start(nursery, max_viewers_per_room=1)
    room_id = (await client.create_room("post", "host")).room_id
    ref = await ref_of(client, room_id)
    _, inbox = await join(ref, "viewer_1")
    assert (await client.room_stats(room_id)).viewer_count == 1
    inbox.close()  # the session ended; its Leave has not arrived (or never will)
    assert (await client.room_stats(room_id)).viewer_count == 0
    accepted, _ = await join(ref, "viewer_2")  # the room is not full of a phantom
    assert accepted.viewer_count == 1


async def test_a_room_adopted_where_its_edge_was_is_the_room_not_the_edge(nursery: trio.Nursery) -> None:
    """The room's origin node died and the cluster gives the room to the worker that held an
    edge of it (for that node's viewers): the edge stops, the room itself lives there, and its
    host can join."""
    media_port = MediaPort(["127.0.0.1"], 0)  # bound, not served: the edge's relay link only opens
    relay_port = RelayPort(media_port)
    client = await start(nursery, relay_port=relay_port, media_lock=media_port.lock)
    room_id = "room_4242"
    opened = await client.open_edge(room_id, "post", "alice", key=bytes(32))
    assert not opened.existing
    adopted = await client.adopt_room(RoomRow(room_id, "post", "alice", created_at=0.0))
    assert adopted.room_id == room_id and not adopted.existing
    ref = await ref_of(client, room_id)
    accepted, _ = await join(ref, "peer_host", "host", "alice")  # an edge takes no host
    assert isinstance(accepted, JoinAccepted)
    stats = await client.room_stats(room_id)  # an edge has no stats of its own
    assert stats.is_active and stats.host_joined
    media_port.close()
