"""One owner per room: the room's actor is the only writer of its state, and a crash in the
middle of any of its handlers leaves a room that is consistent and works (actors/room.py).

The supervisor and the room actors run on their own (Trio's autojump clock); a fault hook
makes the actor raise at a named point in the middle of a handler, once. What the room's
state is after the restart is read through the supervisor's answers (stats, peers), as any
caller reads it. A peer connection is an in-memory endpoint here (the transport is tested
with real peers elsewhere); the router, the mailboxes, the recordings are the real ones.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from actors.errors import ActorCrashed, KickedOut
from actors.mailbox import call
from actors.messages import (
    AttachMedia,
    Join,
    JoinAccepted,
    Kicked,
    Leave,
    MediaRoute,
    PeerConnectionState,
    RoomRef,
    RoomStats,
)
from actors.supervisor import Supervisor, SupervisorClient
from core.config import RecordingsConfig
from media.streams import SinkStream, SourceStream
from tests.rtp_packets import build_rtp_packet

VP8, OPUS = 96, 111


class Fault:
    """Raises once at the armed point (actors/room.py calls it with the point's name)."""

    def __init__(self) -> None:
        self.armed: str | None = None
        self.fired: list[str] = []

    def __call__(self, where: str) -> None:
        if where == self.armed:
            self.armed = None
            self.fired.append(where)
            raise RuntimeError(f"fault injected at {where}")


class Events:
    def __init__(self) -> None:
        self.emitted: list[str] = []

    def emit(self, event_type: str, room_id: str, post_id: str, **data: Any) -> None:
        self.emitted.append(event_type)


class MemoryEndpoint:
    """A negotiated connection as the room sees it (actors.messages.MediaEndpoint)."""

    def __init__(self, role: str) -> None:
        self.sources = [SourceStream(kind="video", payload_type=VP8, clock_rate=90000)] if role == "host" else []
        self.sinks = [SinkStream(kind="video", ssrc=0x1234, payload_type=VP8, clock_rate=90000)]
        self.rtp: list[bytes] = []
        self.rtcp: list[bytes] = []

    def send_rtp(self, data: bytes) -> None:
        self.rtp.append(data)

    def send_rtcp(self, data: bytes) -> None:
        self.rtcp.append(data)


class Room:
    """A room of a supervisor, and what its callers hold."""

    def __init__(self, client: SupervisorClient, ref: RoomRef, fault: Fault, events: Events) -> None:
        self.client, self.ref, self.fault, self.events = client, ref, fault, events
        self.inboxes: dict[str, trio.MemoryReceiveChannel[Any]] = {}
        self._inbox_sends: dict[str, trio.MemorySendChannel[Any]] = {}

    async def join(self, peer_id: str, role: str = "viewer", user: str | None = None) -> JoinAccepted:
        if peer_id not in self._inbox_sends:
            self._inbox_sends[peer_id], self.inboxes[peer_id] = trio.open_memory_channel[Any](64)
        inbox = self._inbox_sends[peer_id]
        user_id = user or ("alice" if role == "host" else f"user-{peer_id}")
        accepted: JoinAccepted = await call(self.ref.mailbox, lambda r: Join(peer_id, role, user_id, inbox, r))  # type: ignore[arg-type]
        return accepted

    async def attach(self, peer_id: str, endpoint: MemoryEndpoint) -> MediaRoute:
        route: MediaRoute = await call(self.ref.mailbox, lambda r: AttachMedia(peer_id, endpoint, r))
        return route

    async def connected(self, peer_id: str) -> None:
        await call(self.ref.mailbox, lambda r: PeerConnectionState(peer_id, True, r))

    async def leave(self, peer_id: str) -> None:
        await call(self.ref.mailbox, lambda r: Leave(peer_id, r))

    async def stats(self) -> RoomStats:
        await trio.sleep(1)  # a crashed incarnation has unwound and the next one started (backoff)
        return await self.client.room_stats(self.ref.room_id)

    async def crashes_at(self, point: str, operation: Any) -> None:
        """`operation()` meets the fault at `point`: its caller is told the actor crashed."""
        self.fault.armed = point
        with pytest.raises(ActorCrashed):
            await operation()
        assert self.fault.fired[-1] == point


async def open_room(nursery: trio.Nursery, tmp_path: Path) -> Room:
    fault, events = Fault(), Events()
    supervisor = Supervisor(
        max_rooms=4,
        max_viewers_per_room=3,
        idle_timeout_seconds=300,
        recordings=RecordingsConfig(directory=str(tmp_path)),
        events=events,
        fault=fault,
    )
    client: SupervisorClient = await nursery.start(supervisor.run)
    created = await client.create_room("post", "alice")
    ref = await client.find_room(created.room_id)
    assert isinstance(ref, RoomRef)
    return Room(client, ref, fault, events)


def assert_consistent(stats: RoomStats, *, viewers: int, routed: int, publisher: bool, restarts: int) -> None:
    assert stats.is_active and stats.restarts == restarts
    assert stats.viewer_count == viewers
    assert stats.forwarding is not None
    assert stats.forwarding.viewer_count == routed
    assert stats.forwarding.has_publisher is publisher


def host_packet(seq: int) -> bytes:
    descriptor = bytes([0x90, 0x80, 0x80, seq & 0xFF])
    return build_rtp_packet(
        payload_type=VP8,
        sequence_number=seq,
        timestamp=3000 * seq,
        ssrc=0xAB,
        payload=descriptor + b"\x10\x02\x00\x9d\x01\x2a",
    )


async def test_a_crash_in_join_keeps_the_member_and_the_join_sent_again_counts_once(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery, tmp_path: Path
) -> None:
    room = await open_room(nursery, tmp_path)
    await room.crashes_at("join", lambda: room.join("v1"))
    accepted = await room.join("v1")  # the peer sends it again (actors/peer.py): idempotent
    assert accepted.viewer_count == 1
    assert_consistent(await room.stats(), viewers=1, routed=0, publisher=False, restarts=1)


async def test_a_crash_in_leave_unroutes_the_viewer_it_removed(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery, tmp_path: Path
) -> None:
    room = await open_room(nursery, tmp_path)
    await room.join("v1")
    await room.attach("v1", MemoryEndpoint("viewer"))
    assert_consistent(await room.stats(), viewers=1, routed=1, publisher=False, restarts=0)
    await room.crashes_at("leave", lambda: room.leave("v1"))  # removed from the members, still routed
    # the next incarnation re-derives the router from the members
    assert_consistent(await room.stats(), viewers=0, routed=0, publisher=False, restarts=1)
    await room.leave("v1")  # sent again: nothing left to do
    assert_consistent(await room.stats(), viewers=0, routed=0, publisher=False, restarts=1)


async def test_a_crash_in_attach_media_and_the_attach_sent_again(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery, tmp_path: Path
) -> None:
    room = await open_room(nursery, tmp_path)
    await room.join("h", "host")
    await room.join("v1")
    host, viewer = MemoryEndpoint("host"), MemoryEndpoint("viewer")
    await room.crashes_at("attach_media", lambda: room.attach("h", host))
    await room.crashes_at("attach_media", lambda: room.attach("v1", viewer))
    assert_consistent(await room.stats(), viewers=1, routed=1, publisher=True, restarts=2)
    route = await room.attach("h", host)  # sent again: the connection gets its route this time
    await room.attach("v1", viewer)
    assert route.on_rtp is not None
    route.on_rtp(host_packet(1))  # the media thread's call: a keyframe reaches the viewer
    assert len(viewer.rtp) == 1
    assert_consistent(await room.stats(), viewers=1, routed=1, publisher=True, restarts=2)


async def test_a_crash_in_a_connection_state_change_is_announced_after_the_restart(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery, tmp_path: Path
) -> None:
    room = await open_room(nursery, tmp_path)
    await room.join("h", "host")
    await room.join("v1")
    await room.crashes_at("connection_state", lambda: room.connected("h"))
    stats = await room.stats()
    assert stats.has_host and stats.restarts == 1
    # the viewer was told by the next incarnation (its state had changed, unannounced)
    updates = []
    while True:
        try:
            updates.append(room.inboxes["v1"].receive_nowait())
        except trio.WouldBlock:
            break
    assert updates[-1].has_host


async def test_a_crash_in_a_kick_keeps_the_ban_and_the_kick_sent_again_tells_the_session(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery, tmp_path: Path
) -> None:
    room = await open_room(nursery, tmp_path)
    await room.join("v1", user="mallory")
    await room.crashes_at("kick", lambda: room.client.kick(room.ref.room_id, "v1"))
    await room.client.kick(room.ref.room_id, "v1")
    assert isinstance(room.inboxes["v1"].receive_nowait(), Kicked)
    room.inboxes["v1"].close()  # the kicked session ends
    with pytest.raises(KickedOut):
        await room.join("v2", user="mallory")


async def test_a_kick_during_a_restart_waits_for_the_next_incarnation(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery, tmp_path: Path
) -> None:
    room = await open_room(nursery, tmp_path)
    await room.join("v1", user="mallory")
    await room.client.crash_room(room.ref.room_id)  # the actor is down for its backoff now
    await room.client.kick(room.ref.room_id, "v1")  # queued, handled by the next incarnation
    assert isinstance(room.inboxes["v1"].receive_nowait(), Kicked)
    assert (await room.stats()).restarts == 1
    room.inboxes["v1"].close()
    with pytest.raises(KickedOut):
        await room.join("v2", user="mallory")


async def test_a_crash_in_starting_or_stopping_a_recording_leaves_one_recording(
    nursery: trio.Nursery, tmp_path: Path
) -> None:  # the real clock: a recording writes its file in worker threads
    room = await open_room(nursery, tmp_path)
    room_id = room.ref.room_id
    await room.crashes_at("start_recording", lambda: room.client.start_recording(room_id))
    first = await room.client.start_recording(room_id)  # sent again: the one already started
    again = await room.client.start_recording(room_id)
    assert again is first
    await room.crashes_at("stop_recording", lambda: room.client.stop_recording(room_id))
    stopped = await room.client.stop_recording(room_id)
    assert stopped is first
    with trio.fail_after(5):
        await stopped.wait_done()
    assert stopped.info().stop_reason == "api"
    assert len(list((tmp_path / room_id).glob("rec_*.webm"))) == 1


async def test_a_crash_in_the_ticker_after_host_live_tells_it_again_rather_than_never(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery, tmp_path: Path
) -> None:
    room = await open_room(nursery, tmp_path)
    await room.join("h", "host")
    route = await room.attach("h", MemoryEndpoint("host"))
    assert route.on_rtp is not None
    room.fault.armed = "live"
    route.on_rtp(host_packet(1))
    await trio.sleep(1)  # the ticker sees the packet, tells host_live, crashes; the next one tells it again
    assert room.fault.fired == ["live"]
    assert room.events.emitted.count("host_live") == 2
    assert (await room.stats()).restarts == 1
