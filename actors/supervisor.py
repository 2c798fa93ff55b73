"""The supervisor actor: the registry of rooms and their lifecycles; every room's task runs
in its nursery.

What it owns: the registry (rooms by id, active rooms by post, room ids issued), each room's
lifecycle (created, restarted, stopped, forgotten: `RoomRecord` in actors/room.py), and the
services that outlive a room actor's crash (recordings run in its nursery; the room
directory is written through `services/room_store.py`). What it does not own: a room's
state, which only the room's actor writes (actors/room.py). Requests about a room's state
(a kick, starting or stopping a recording, a keyframe) are forwarded to the room's mailbox,
and the room answers the caller.

Erlang/OTP one_for_one: a room actor that raises is started again on the same record after
a short backoff (`RESTART_BACKOFF_SECONDS`, doubling); more than `MAX_RESTARTS` crashes
within `RESTART_WINDOW_SECONDS` stop the room with reason "crashed". A sweep every
`SWEEP_INTERVAL_SECONDS` stops rooms idle for `idle_timeout_seconds` and forgets stopped
rooms after the same time.

Stats are answered here, from the rooms' records, in one hop: a room actor that is busy,
restarting or just stopped never delays (or drops) a stats request. Stopping a room marks
the stop, closes its mailbox with `close_mailbox` (which answers every request still queued
there, `ActorGone`) and cancels the room's task, whose teardown tells its members; the
supervisor does the same with its own mailbox when it ends.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import trio

from actors.errors import ActorGone, Capacity, RecordingNotFound, RoomNotFound
from actors.events import NO_EVENTS, EventSink
from actors.mailbox import answer, call, close_mailbox, forward, open_mailbox, tell
from actors.messages import (
    AdoptRoom,
    CreateRoom,
    EdgeOpened,
    FindRoom,
    GetKeyframe,
    GetMetrics,
    GetPeers,
    GetRoomStats,
    GetTotals,
    InjectCrash,
    KickPeer,
    OpenEdge,
    OpenRelay,
    PeerInfo,
    RecordingEnded,
    RoomCreated,
    RoomRef,
    RoomStats,
    StartRecording,
    StopRecording,
    StopRoom,
)
from actors.relays import RELAY_TIMEOUT_SECONDS, EdgeFeed
from actors.room import RoomActor, RoomRecord, StopInfo, new_record, no_fault, relay_control_receiver
from core.config import RecordingsConfig
from core.ids import RoomIdAllocator
from core.room_directory import RoomRow
from core.signaling import StopReason
from media.router import Router, RouterStatistics
from services.recordings import Recording, RecordingInfo
from services.room_store import RoomStore
from transport.relay_port import RelayPort

log = logging.getLogger("bitbasel.supervisor")

MAX_RESTARTS = 3
RESTART_WINDOW_SECONDS = 10.0
#: The wait before a crashed room actor starts again, doubled for each crash in the window
#: (0.05, 0.1, 0.2 s): a bug that crashes at once does not spin; requests wait in the mailbox.
RESTART_BACKOFF_SECONDS = 0.05
SWEEP_INTERVAL_SECONDS = 30.0
#: An edge (actors/relays.py) with no viewer for this long stops (its origin drops the relay).
EDGE_IDLE_SECONDS = 10.0


class _Sweep(msgspec.Struct, frozen=True):
    reply: trio.MemorySendChannel[Any]


class _StopAll(msgspec.Struct, frozen=True):
    reason: StopReason
    reply: trio.MemorySendChannel[Any]


class Supervisor:
    def __init__(
        self,
        *,
        max_rooms: int,
        max_viewers_per_room: int,
        idle_timeout_seconds: float,
        target_bitrate_bps: int = 1_500_000,
        media_lock: AbstractContextManager[Any] | None = None,
        events: EventSink = NO_EVENTS,
        recordings: RecordingsConfig | None = None,
        store: RoomStore | None = None,
        restored: list[RoomRow] | None = None,
        fault: Callable[[str], None] = no_fault,
        relay_port: RelayPort | None = None,
    ) -> None:
        self._relay_port = relay_port  # rooms across workers (actors/relays.py); None: not here
        self._recordings = recordings or RecordingsConfig()
        # the room directory (a restart loses no room), and the rooms it had when we started
        self._store = store
        self._restored = list(restored or [])
        self._fault = fault  # tests crash room actors in the middle of a handler (actors/room.py)
        self._recordings_running: set[Recording] = set()
        self._recording_ended = trio.lowlevel.ParkingLot()
        self._events = events  # webhooks: room_started, room_stopped here; the rest from the rooms
        # the media port's lock: every room's router is driven by the media thread too
        self._media_lock = media_lock if media_lock is not None else threading.RLock()
        self._max_rooms = max_rooms
        self._target_bitrate_bps = target_bitrate_bps
        self._max_viewers = max_viewers_per_room
        self._idle_timeout = idle_timeout_seconds
        self._mailbox_send, self._mailbox_receive = open_mailbox()
        self._rooms: dict[str, RoomRecord] = {}
        self._active_by_post: dict[str, str] = {}
        self._ids = RoomIdAllocator()
        self._nursery: trio.Nursery | None = None
        self._rooms_created = 0
        self._room_restarts = 0
        self._rooms_crashed = 0
        self._forgotten_bytes_sent = 0
        self._forgotten_bytes_received = 0
        self._forgotten_problems: dict[str, int] = {}  # TransportCounters.problems()
        self._forgotten_forwarding = ForwardingTotals()  # of rooms no longer known: counters never go back
        self._handlers: dict[type, Callable[[Any], None]] = {
            CreateRoom: self._on_create,
            AdoptRoom: self._on_adopt,
            StopRoom: self._on_stop,
            FindRoom: self._on_find,
            GetRoomStats: self._on_room_stats,
            GetTotals: self._on_totals,
            GetMetrics: self._on_metrics,
            GetPeers: self._on_peers,
            GetKeyframe: self._forward_to_room,
            StartRecording: self._forward_to_room,
            StopRecording: self._forward_to_room,
            KickPeer: self._forward_to_room,
            OpenRelay: self._forward_to_room,
            OpenEdge: self._on_open_edge,
            _Sweep: self._on_sweep,
            _StopAll: self._on_stop_all,
        }

    @property
    def client(self) -> SupervisorClient:
        return SupervisorClient(self._mailbox_send.clone())

    async def run(self, *, task_status: trio.TaskStatus[SupervisorClient] = trio.TASK_STATUS_IGNORED) -> None:
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                self._adopt_restored()
                nursery.start_soon(self._sweep_timer)
                task_status.started(self.client)
                async for message in self._mailbox_receive:
                    with message.reply:
                        self._handlers[type(message)](message)
        finally:
            close_mailbox((self._mailbox_send, self._mailbox_receive), lambda _: ActorGone("the server is stopping"))

    # ---- message handlers ---------------------------------------------------------------

    def _adopt_restored(self) -> None:
        """The rooms the directory had at start: active ones live again (their clients
        reconnect and resume), stopped ones are only kept from being issued again."""
        for row in self._restored:
            self._ids.reserve(row.room_id)
            if row.stopped_at is not None or row.post_id in self._active_by_post:
                if self._store is not None:
                    self._store.forgotten(row.room_id)
                continue
            self._revive(row)
            log.info("room %s restored for post %s (host user %s)", row.room_id, row.post_id, row.host_user_id)
        self._restored = []

    def _new_record(self, room_id: str, post_id: str, host_user_id: str, created_at: float | None = None) -> RoomRecord:
        return new_record(
            room_id,
            post_id,
            host_user_id,
            router=Router(rtcp_ssrc=secrets.randbits(32) or 1, target_bitrate_bps=self._target_bitrate_bps),
            media_lock=self._media_lock,
            events=self._events,
            created_at=created_at,
        )

    def _revive(self, row: RoomRow) -> RoomRecord:
        record = self._new_record(row.room_id, row.post_id, row.host_user_id, row.created_at)
        self._add_room(record, record_now=row.record)
        return record

    def _on_adopt(self, message: AdoptRoom) -> None:
        row = message.row
        held = self._rooms.get(row.room_id)
        if held is not None and held.stopped is None and held.state.edge is not None:
            # an edge of the room, whose origin (another node) died: the room itself lives here now
            self._stop(held, "shutdown", resumes_elsewhere=True)
        if held is not None and held.stopped is None:
            answer(message.reply, RoomCreated(held.room_id, held.post_id, held.host_user_id, existing=True))
            return
        if len(self._active_by_post) >= self._max_rooms or row.post_id in self._active_by_post:
            answer(message.reply, Capacity(f"cannot take room {row.room_id} here (max_rooms, or its post has a room)"))
            return
        if held is not None and held.state.edge is not None:  # its counts kept in the totals
            self._forget(held)
        elif held is not None:  # stopped here before (e.g. this worker drained): it lives again
            del self._rooms[row.room_id]
        self._ids.reserve(row.room_id)
        record = self._revive(row)
        self._save_row(record, recording=row.record)
        log.info("room %s taken over for post %s (host user %s)", row.room_id, row.post_id, row.host_user_id)
        answer(message.reply, RoomCreated(record.room_id, record.post_id, record.host_user_id, existing=False))

    def _on_open_edge(self, message: OpenEdge) -> None:
        """This worker holds viewers of a room whose host is on another worker: the room is
        made here as an edge, fed by a relay link the origin sends to (actors/relays.py). Not
        in the room directory, no webhooks (its origin has them), not counted as a room."""
        port = self._relay_port
        held = self._rooms.get(message.room_id)
        if port is None:
            answer(message.reply, Capacity("this server has no relay port (one worker)"))
            return
        if held is not None and held.stopped is None:
            edge = held.state.edge
            if edge is None:
                answer(message.reply, Capacity(f"room {message.room_id} has its host here: not an edge"))
            else:
                # its origin sends to it now: relayed (a new origin, after a takeover, relays again)
                heard = edge.link.peer is not None and time.monotonic() - edge.link.last_heard < RELAY_TIMEOUT_SECONDS
                if edge.link.key != message.key:
                    answer(message.reply, Capacity(f"room {message.room_id}'s edge here has another relay"))
                    return
                address = port.public_address if edge.link.key is not None else port.address
                answer(message.reply, EdgeOpened(address, edge.link.number, existing=True, relayed=heard))
            return
        if held is not None:  # an edge (or the room) that stopped here before: its counts kept
            self._forget(held)
        record = self._new_record(message.room_id, message.post_id, message.host_user_id)
        record.events = NO_EVENTS
        router = record.state.router
        relay_id = ""

        def on_rtp(data: bytes) -> None:  # the media thread, under the lock
            router.on_publisher_rtp(data, time.monotonic())

        def on_rtcp(data: bytes) -> None:
            router.on_publisher_rtcp(data, time.monotonic())

        link = port.open(
            on_rtp,
            on_rtcp,
            relay_control_receiver(port, record.mailbox[0], lambda: relay_id),
            learn_peer=True,
            key=message.key,
        )
        relay_id = str(link.number)
        record.state.edge = EdgeFeed(link)
        self._rooms[record.room_id] = record
        assert self._nursery is not None
        self._nursery.start_soon(self._supervise, record, name=f"room {record.room_id} (edge)")
        remote = message.key is not None
        log.info("room %s: an edge here, fed by relay %s%s", record.room_id, relay_id, " (another node)" * remote)
        answer(message.reply, EdgeOpened(port.public_address if remote else port.address, link.number, False, False))

    def _add_room(self, record: RoomRecord, *, record_now: bool) -> None:
        self._rooms[record.room_id] = record
        self._active_by_post[record.post_id] = record.room_id
        self._rooms_created += 1
        assert self._nursery is not None
        self._nursery.start_soon(self._supervise, record, name=f"room {record.room_id}")
        if record_now:  # the room's actor starts it, first thing
            tell(record.mailbox[0], lambda reply: StartRecording(record.room_id, reply))

    def _on_create(self, message: CreateRoom) -> None:
        existing = self._active_by_post.get(message.post_id)
        if existing is not None:
            record = self._rooms[existing]
            answer(message.reply, RoomCreated(record.room_id, record.post_id, record.host_user_id, existing=True))
            return
        if len(self._active_by_post) >= self._max_rooms:
            answer(message.reply, Capacity(f"max_rooms ({self._max_rooms}) rooms are active"))
            return
        record = self._new_record(self._ids.new(), message.post_id, message.host_user_id)
        self._save_row(record, recording=message.record)
        log.info("room %s created for post %s (host user %s)", record.room_id, record.post_id, record.host_user_id)
        answer(message.reply, RoomCreated(record.room_id, record.post_id, record.host_user_id, existing=False))
        record.emit("room_started", host_user_id=record.host_user_id)
        self._add_room(record, record_now=message.record)

    def _on_stop(self, message: StopRoom) -> None:
        record = self._rooms.get(message.room_id)
        if record is None:
            answer(message.reply, RoomNotFound(f"no room {message.room_id}"))
            return
        self._stop(record, message.reason)
        answer(message.reply, record.stats())

    def _on_find(self, message: FindRoom) -> None:
        record = self._rooms.get(message.room_id)
        if record is None:
            answer(message.reply, RoomNotFound(f"no room {message.room_id}"))
        elif record.stopped is not None:
            answer(message.reply, record.stats())
        else:
            answer(message.reply, self._ref(record))

    def _on_room_stats(self, message: GetRoomStats) -> None:
        record = self._rooms.get(message.room_id)
        if record is None or record.state.edge is not None:  # an edge's stats are its origin's
            answer(message.reply, RoomNotFound(f"no room {message.room_id}"))
            return
        answer(message.reply, record.stats())

    def _tally(self, *, forwarding: bool) -> _Tally:
        """Sessions and bytes over every known room (plus forgotten rooms' bytes), and with
        `forwarding` the routers' counters (plain ints: read without the media lock)."""
        tally = _Tally(
            bytes_sent=self._forgotten_bytes_sent,
            bytes_received=self._forgotten_bytes_received,
            forwarding=self._forgotten_forwarding,
            transport_problems=dict(self._forgotten_problems),
        )
        for record in self._rooms.values():
            state = record.state
            if forwarding:
                statistics = state.router.statistics()
                tally.forwarding = tally.forwarding.plus(statistics)
                layer_viewers = {layer.name: layer.viewers for layer in statistics.layers}
                layer_viewers["audio_only"] = statistics.audio_only_viewers
                tally.layer_viewers = _summed(tally.layer_viewers, layer_viewers)
            tally.bytes_sent += state.counters.bytes_sent
            tally.bytes_received += state.counters.bytes_received
            tally.transport_problems = _summed(tally.transport_problems, state.counters.problems())
            if record.stopped is None:
                tally.viewers += state.viewer_count
                tally.hosts += 1 if state.host is not None else 0
        return tally

    def _on_totals(self, message: GetTotals) -> None:
        tally = self._tally(forwarding=False)
        answer(
            message.reply,
            ServerTotals(
                total_rooms=len(self._rooms),
                active_rooms=len(self._active_by_post),
                total_peers=tally.viewers + tally.hosts,
                total_viewers=tally.viewers,
                total_hosts=tally.hosts,
                total_bytes_sent=tally.bytes_sent,
                total_bytes_received=tally.bytes_received,
                room_restarts=self._room_restarts,
                rooms_crashed=self._rooms_crashed,
            ),
        )

    def _active_room(self, room_id: str, *, edge: bool = False) -> RoomRecord | RoomNotFound:
        """A room whose origin is here (the public REST never addresses an edge: its origin
        answers), or with ``edge`` the room's edge here (the front's moderation calls)."""
        record = self._rooms.get(room_id)
        if record is None or record.stopped is not None or (record.state.edge is not None) != edge:
            return RoomNotFound(f"no active {'edge of room' if edge else 'room'} {room_id}")
        return record

    def _on_peers(self, message: GetPeers) -> None:
        record = self._active_room(message.room_id, edge=message.edge)
        if isinstance(record, RoomNotFound):
            answer(message.reply, record)
            return
        answer(message.reply, record.state.peers())

    def _forward_to_room(self, message: StartRecording | StopRecording | KickPeer | GetKeyframe) -> None:
        """A request about a room's state: its actor answers the caller."""
        record = self._active_room(message.room_id, edge=isinstance(message, KickPeer) and message.edge)
        if isinstance(record, RoomNotFound):
            stopped = isinstance(message, StopRecording) and message.room_id in self._rooms
            # a stopped room's recording ended with it
            answer(message.reply, RecordingNotFound(f"room {message.room_id} is not recording") if stopped else record)
            return
        forward(record.mailbox[0], message, busy=f"room {record.room_id} is busy; try again")

    # ---- services of the rooms (actors/room.py RoomServices) ----------------------------

    def start_recording(self, record: RoomRecord) -> Recording:
        """A recording of the room, running in this nursery (it outlives a room actor's crash);
        the room's actor feeds it. When it ends by itself, the actor is told."""
        state = record.state

        def request_keyframe() -> None:  # called under the media lock
            if state.publisher_peer_id is not None:
                state.router.request_keyframe(time.monotonic())

        def ready(info: RecordingInfo) -> None:
            record.emit(
                "recording_ready",
                recording_id=info.recording_id,
                duration_seconds=info.duration_seconds,
                bytes=info.bytes,
                stop_reason=info.stop_reason,
            )

        recording = Recording(
            Path(self._recordings.directory),
            record.room_id,
            record.post_id,
            media_lock=record.media_lock,
            max_bytes=self._recordings.max_bytes,
            max_seconds=self._recordings.max_seconds,
            request_keyframe=request_keyframe,
            on_ready=ready,
        )
        assert self._nursery is not None
        self._recordings_running.add(recording)
        self._nursery.start_soon(self._run_recording, record, recording, name=f"recording {recording.recording_id}")
        return recording

    async def _run_recording(self, record: RoomRecord, recording: Recording) -> None:
        try:
            await recording.run()
        except Exception:  # a disk error, or a bug fed by a host's packets: this recording ends, nothing else
            log.exception("room %s: recording %s failed", record.room_id, recording.recording_id)
            recording.stop("failed")
        finally:
            self._recordings_running.discard(recording)
            self._recording_ended.unpark_all()
            if record.stopped is None:  # ended by its own limit, or failed: the room lets it go
                tell(record.mailbox[0], lambda reply: RecordingEnded(recording, reply))

    def save_row(self, record: RoomRecord, *, recording: bool) -> None:
        """The room's row as it should come back after a restart (recording or not)."""
        self._save_row(record, recording=recording)

    def _save_row(self, record: RoomRecord, *, recording: bool) -> None:
        """The room's row as it should come back after a restart (recording or not)."""
        if self._store is not None and record.stopped is None:
            row = RoomRow(record.room_id, record.post_id, record.host_user_id, record.created_at, recording)
            self._store.saved(row)

    async def wait_recordings_finished(self) -> None:
        """Until every recording has finished its file (bound it: at shutdown)."""
        while self._recordings_running:
            await self._recording_ended.park()

    def _on_metrics(self, message: GetMetrics) -> None:
        tally = self._tally(forwarding=True)
        answer(
            message.reply,
            ServerMetrics(
                known_rooms=len(self._rooms),
                active_rooms=len(self._active_by_post),
                hosts=tally.hosts,
                viewers=tally.viewers,
                bytes_sent=tally.bytes_sent,
                bytes_received=tally.bytes_received,
                transport_problems=tally.transport_problems,
                room_restarts=self._room_restarts,
                rooms_crashed=self._rooms_crashed,
                forwarding=tally.forwarding,
                layer_viewers=tally.layer_viewers,
            ),
        )

    def _on_sweep(self, message: _Sweep) -> None:
        now = trio.current_time()
        for record in list(self._rooms.values()):
            if record.stopped is None:
                idle_since = record.state.idle_since  # the room's actor keeps it (and purges ended sessions)
                timeout = EDGE_IDLE_SECONDS if record.state.edge is not None else self._idle_timeout
                if idle_since is not None and now - idle_since >= timeout:
                    self._stop(record, "idle")
            elif now - record.stopped.at >= self._idle_timeout:
                self._forget(record)
        answer(message.reply, None)

    def _on_stop_all(self, message: _StopAll) -> None:
        for record in list(self._rooms.values()):
            self._stop(record, message.reason)
        answer(message.reply, None)

    # ---- room lifecycle -----------------------------------------------------------------

    async def _supervise(self, record: RoomRecord) -> None:
        """The room's task: its actor, started again after each crash, until the room stops;
        then the room's teardown (actors/room.py), in this same task."""
        try:
            with record.cancel_scope:
                await self._run_actor(record)
        finally:
            if record.stopped is not None:
                RoomActor.tear_down(record)

    async def _run_actor(self, record: RoomRecord) -> None:
        """Run the room's actor, starting it again after a crash (after a backoff), until the
        room stops."""
        while record.stopped is None:
            actor = RoomActor(record, self, max_viewers=self._max_viewers, fault=self._fault)
            try:
                await actor.run()
            except Exception:
                if record.stopped is not None:
                    break
                if self._crashed_too_often(record):
                    log.exception(
                        "room %s crashed %d times in %.0f s: stopping it",
                        record.room_id,
                        len(record.crash_times),
                        RESTART_WINDOW_SECONDS,
                    )
                    self._rooms_crashed += 1
                    self._stop(record, "crashed")
                    break
                record.restarts += 1
                self._room_restarts += 1
                log.exception("room %s actor crashed; restarting it (restart %d)", record.room_id, record.restarts)
                await trio.sleep(RESTART_BACKOFF_SECONDS * 2 ** (len(record.crash_times) - 1))
            else:
                break  # mailbox closed: the room was stopped

    @staticmethod
    def _crashed_too_often(record: RoomRecord) -> bool:
        now = trio.current_time()
        record.crash_times.append(now)
        while record.crash_times and now - record.crash_times[0] > RESTART_WINDOW_SECONDS:
            record.crash_times.popleft()
        return len(record.crash_times) > MAX_RESTARTS

    def stop_edge(self, record: RoomRecord, reason: StopReason | None) -> None:
        """An edge room's actor: its origin stopped the room (``reason``), or went silent
        (None: its viewers are told to reconnect, and the front places them again)."""
        self._stop(record, reason or "shutdown", resumes_elsewhere=reason is None, stopped_by_origin=reason is not None)

    def _stop_edge(self, record: RoomRecord, reason: StopReason, *, resumes: bool) -> None:
        """Its viewers are told to reconnect (``resumes``: the room goes on, they are placed
        again) or that the room stopped."""
        record.stopped = StopInfo(reason=reason, at=trio.current_time(), resumes=resumes)
        record.cancel_scope.cancel()
        close_mailbox(record.mailbox, lambda _: ActorGone(f"room {record.room_id} stopped"))
        log.info("room %s (edge) stopped (%s)", record.room_id, reason if not resumes else "its origin went silent")

    @property
    def relay_port(self) -> RelayPort | None:
        return self._relay_port

    def _stop(
        self,
        record: RoomRecord,
        reason: StopReason,
        *,
        resumes_elsewhere: bool = False,
        stopped_by_origin: bool = False,
    ) -> None:
        """Mark the stop, answer what is queued for the room, and cancel its task: its teardown
        tells its members (`stopped`, or `restarting` when the room resumes after a restart)."""
        if record.stopped is not None:
            return
        if record.state.edge is not None:  # stopped here (idle, this worker stopping, crashing) or by its origin
            resumes = resumes_elsewhere or (not stopped_by_origin and reason in ("shutdown", "crashed"))
            self._stop_edge(record, reason, resumes=resumes)
            return
        resumes = reason == "shutdown" and self._store is not None  # the restarted server has the room
        record.stopped = StopInfo(reason=reason, at=trio.current_time(), resumes=resumes)
        record.cancel_scope.cancel()
        if self._active_by_post.get(record.post_id) == record.room_id:
            del self._active_by_post[record.post_id]
        answered = close_mailbox(record.mailbox, lambda _: ActorGone(f"room {record.room_id} stopped"))
        log.info("room %s stopped (%s); %d queued request(s) answered", record.room_id, reason, answered)
        if resumes:  # the room goes on in the restarted server: no room_stopped for it
            return
        if self._store is not None:
            self._store.stopped(record.room_id, reason, time.time())
        record.emit("room_stopped", reason=reason)

    def _forget(self, record: RoomRecord) -> None:
        state = record.state
        self._forgotten_forwarding = self._forgotten_forwarding.plus(state.router.statistics())
        self._forgotten_bytes_sent += state.counters.bytes_sent
        self._forgotten_bytes_received += state.counters.bytes_received
        self._forgotten_problems = _summed(self._forgotten_problems, state.counters.problems())
        del self._rooms[record.room_id]
        if self._store is not None and record.state.edge is None:
            self._store.forgotten(record.room_id)
        log.info("room %s forgotten", record.room_id)

    @staticmethod
    def _ref(record: RoomRecord) -> RoomRef:
        return RoomRef(record.room_id, record.post_id, record.host_user_id, record.mailbox[0], record.state.counters)

    async def _sweep_timer(self) -> None:
        while True:
            await trio.sleep(SWEEP_INTERVAL_SECONDS)
            with contextlib.suppress(ActorGone):  # a busy mailbox: the next sweep catches up
                await call(self._mailbox_send, _Sweep)


class ServerTotals(msgspec.Struct, frozen=True):
    total_rooms: int
    active_rooms: int
    total_peers: int
    total_viewers: int
    total_hosts: int
    total_bytes_sent: int
    total_bytes_received: int
    room_restarts: int
    rooms_crashed: int


class ForwardingTotals(msgspec.Struct, frozen=True):
    """The routers' counters summed over every room since the start (RouterStatistics)."""

    packets_in: int = 0
    bytes_in: int = 0
    packets_out: int = 0
    bytes_out: int = 0
    retransmissions: int = 0
    keyframe_requests_sent: int = 0
    nacks_sent: int = 0
    padding_bytes: int = 0
    drops: dict[str, int] = msgspec.field(default_factory=dict)
    layer_packets_in: dict[str, int] = msgspec.field(default_factory=dict)  # by layer name
    layer_switches: dict[str, int] = msgspec.field(default_factory=dict)  # by reason
    keyframe_requests: dict[str, int] = msgspec.field(default_factory=dict)  # by cause

    def plus(self, room: RouterStatistics) -> ForwardingTotals:
        return ForwardingTotals(
            packets_in=self.packets_in + room.packets_in,
            bytes_in=self.bytes_in + room.bytes_in,
            packets_out=self.packets_out + room.packets_out,
            bytes_out=self.bytes_out + room.bytes_out,
            retransmissions=self.retransmissions + room.retransmissions,
            keyframe_requests_sent=self.keyframe_requests_sent + room.keyframe_requests_sent,
            nacks_sent=self.nacks_sent + room.nacks_sent,
            padding_bytes=self.padding_bytes + room.padding_bytes,
            drops=_summed(self.drops, room.drops),
            layer_packets_in=_summed(self.layer_packets_in, {layer.name: layer.packets_in for layer in room.layers}),
            layer_switches=_summed(self.layer_switches, room.layer_switches),
            keyframe_requests=_summed(self.keyframe_requests, room.keyframe_requests),
        )


def _summed(a: dict[str, int], b: dict[str, int]) -> dict[str, int]:
    total = dict(a)
    for key, count in b.items():
        total[key] = total.get(key, 0) + count
    return total


@dataclass
class _Tally:
    forwarding: ForwardingTotals
    viewers: int = 0
    layer_viewers: dict[str, int] = field(default_factory=dict)  # viewers by the layer they get now
    hosts: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0
    transport_problems: dict[str, int] = field(default_factory=dict)


class ServerMetrics(msgspec.Struct, frozen=True):
    known_rooms: int
    active_rooms: int
    hosts: int  # host sessions joined
    viewers: int  # viewer sessions joined
    bytes_sent: int
    bytes_received: int
    transport_problems: dict[str, int]  # TransportCounters.problems() over every room since the start
    room_restarts: int
    rooms_crashed: int
    forwarding: ForwardingTotals
    layer_viewers: dict[str, int]  # viewers of the live rooms by the layer they get (audio_only too)


class SupervisorClient:
    """What the REST and WebSocket handlers hold: request/reply over the mailbox,
    each call bounded by `actors.mailbox.CALL_TIMEOUT_SECONDS` (then `ActorTimeout`)."""

    def __init__(self, mailbox: trio.MemorySendChannel[Any]) -> None:
        self._mailbox = mailbox

    async def create_room(self, post_id: str, host_user_id: str, *, record: bool = False) -> RoomCreated:
        result: RoomCreated = await call(self._mailbox, lambda r: CreateRoom(post_id, host_user_id, r, record))
        return result

    async def adopt_room(self, row: RoomRow) -> RoomCreated:
        result: RoomCreated = await call(self._mailbox, lambda r: AdoptRoom(row, r))
        return result

    async def open_edge(self, room_id: str, post_id: str, host_user_id: str, key: bytes | None = None) -> EdgeOpened:
        result: EdgeOpened = await call(self._mailbox, lambda r: OpenEdge(room_id, post_id, host_user_id, r, key))
        return result

    async def open_relay(self, room_id: str, address: tuple[str, int], link: int, key: bytes | None = None) -> None:
        await call(self._mailbox, lambda r: OpenRelay(room_id, address, link, r, key))

    async def stop_room(self, room_id: str, reason: StopReason = "api") -> RoomStats:
        result: RoomStats = await call(self._mailbox, lambda r: StopRoom(room_id, reason, r))
        return result

    async def find_room(self, room_id: str) -> RoomRef | RoomStats:
        result: RoomRef | RoomStats = await call(self._mailbox, lambda r: FindRoom(room_id, r))
        return result

    async def stop_all(self, reason: StopReason) -> None:
        await call(self._mailbox, lambda r: _StopAll(reason, r))

    async def sweep(self) -> None:
        """Run the idle sweep now (the timer runs it every 30 s)."""
        await call(self._mailbox, _Sweep)

    async def room_stats(self, room_id: str) -> RoomStats:
        """The room's stats (active or stopped), answered by the supervisor in one hop."""
        result: RoomStats = await call(self._mailbox, lambda r: GetRoomStats(room_id, r))
        return result

    async def crash_room(self, room_id: str) -> None:
        found = await self.find_room(room_id)
        if isinstance(found, RoomStats):
            raise RoomNotFound(f"room {room_id} is stopped")
        try:
            await call(found.mailbox, InjectCrash)
        except ActorGone:
            return  # the expected outcome: the actor raised and dropped the request

    async def totals(self) -> ServerTotals:
        result: ServerTotals = await call(self._mailbox, GetTotals)
        return result

    async def peers(self, room_id: str, *, edge: bool = False) -> list[PeerInfo]:
        result: list[PeerInfo] = await call(self._mailbox, lambda r: GetPeers(room_id, r, edge))
        return result

    async def start_recording(self, room_id: str) -> Recording:
        result: Recording = await call(self._mailbox, lambda r: StartRecording(room_id, r))
        return result

    async def stop_recording(self, room_id: str) -> Recording:
        result: Recording = await call(self._mailbox, lambda r: StopRecording(room_id, r))
        return result

    async def keyframe(self, room_id: str) -> bytes | None:
        result: bytes | None = await call(self._mailbox, lambda r: GetKeyframe(room_id, r))
        return result

    async def kick(self, room_id: str, peer_id: str, *, edge: bool = False) -> None:
        await call(self._mailbox, lambda r: KickPeer(room_id, peer_id, r, edge))

    async def metrics(self) -> ServerMetrics:
        result: ServerMetrics = await call(self._mailbox, GetMetrics)
        return result
