"""A room: its durable record (kept by the supervisor across actor restarts) and
the room actor that owns its state and routing while it runs.

The record holds what must survive a crash of the room actor: ids, post, host
user, creation time, the roster of joined peers (their inboxes), counters and
the media router. A new incarnation of the actor picks the record up, so a
restart drops no viewer and no packet: media never passes through the actor.

The record is written by the room actor (members, media) and by the
supervisor (the stop), and read by the supervisor (stats); all of them run on
the one Trio thread and each handler runs to its end without awaiting, so
nobody sees half an update. The router is also driven by the media thread
(transport/media_port.py): whoever touches it holds `media_lock` (the media
port's lock), and the actor holds it for each handler.

Membership cannot leak: a member's inbox is the send side of its session's
event channel, and a session closes the receive side first thing when it ends,
whatever ends it (cancellation included). A member whose inbox has no open
receiver is gone: it is not counted, and it is purged at the next join even if
its `Leave` never arrives.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any

import trio

from actors.errors import ActorGone, HostTaken, KickedOut, RoomFull
from actors.events import NO_EVENTS, EventSink
from actors.mailbox import answer, open_mailbox
from actors.messages import (
    AttachMedia,
    HostReplaced,
    InjectCrash,
    Join,
    JoinAccepted,
    Leave,
    PeerConnectionState,
    PeerInfo,
    Restarting,
    RoomChanged,
    RoomStats,
    RoomStoppedEvent,
)
from core.signaling import Role, StopReason
from media.router import Router
from media.streams import SourceStream
from services.recordings import Recording
from transport.settings import TransportCounters

log = logging.getLogger("bitbasel.room")


@dataclass(slots=True)
class Member:
    peer_id: str
    role: Role
    user_id: str
    inbox: trio.MemorySendChannel[Any]
    connected: bool = False
    joined_at: float = field(default_factory=time.time)  # unix seconds

    @property
    def gone(self) -> bool:
        """The session ended (it closed its inbox's receive side)."""
        return self.inbox.statistics().open_receive_channels == 0

    def notify(self, event: object) -> bool:
        """Best effort: a peer whose inbox is full or gone misses the event (it is a
        state snapshot; the next one supersedes it). Returns whether it was delivered."""
        try:
            self.inbox.send_nowait(event)
        except (trio.WouldBlock, trio.BrokenResourceError, trio.ClosedResourceError):
            return False
        return True


@dataclass(slots=True)
class StopInfo:
    reason: StopReason
    at: float  # trio clock


@dataclass(slots=True)
class RoomRecord:
    room_id: str
    post_id: str
    host_user_id: str
    created_at: float  # unix seconds
    idle_since: float | None  # trio clock; None while a session is joined
    members: dict[str, Member] = field(default_factory=dict)
    stopped: StopInfo | None = None
    restarts: int = 0
    crash_times: deque[float] = field(default_factory=deque)
    counters: TransportCounters = field(default_factory=TransportCounters)
    mailbox: tuple[trio.MemorySendChannel[Any], trio.MemoryReceiveChannel[Any]] = field(default_factory=open_mailbox)
    cancel_scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    # the data plane: host packets reach it synchronously from the transport, never via the actor
    router: Router = field(default_factory=lambda: Router(rtcp_ssrc=1, target_bitrate_bps=1_500_000))
    publisher_peer_id: str | None = None  # whose connection feeds the router
    # held around anything that touches the router (the media thread drives it too)
    media_lock: AbstractContextManager[Any] = field(default_factory=threading.RLock)
    announced: RoomChanged = field(default_factory=lambda: RoomChanged(viewer_count=0, has_host=False))
    # webhooks (services/webhooks.py): where events go, and whether the host's media is flowing
    events: EventSink = field(default_factory=lambda: NO_EVENTS)
    live: bool = False  # host_live sent, host_left not yet
    live_baseline: int = 0  # router.packets_in when the current publisher was attached
    banned_users: set[str] = field(default_factory=set)  # kicked: refused if they join again
    publisher_sources: list[SourceStream] = field(default_factory=list)  # what the attached host sends
    recording: Recording | None = None  # fed by the host's on_rtp on the media thread (media_lock)

    def emit(self, event_type: str, **data: Any) -> None:
        self.events.emit(event_type, self.room_id, self.post_id, **data)

    def peers(self) -> list[PeerInfo]:
        """The joined sessions, for moderators (hold media_lock: the router's counters)."""
        infos = []
        for member in self.members.values():
            if member.gone:
                continue
            is_publisher = member.peer_id == self.publisher_peer_id
            infos.append(
                PeerInfo(
                    peer_id=member.peer_id,
                    role=member.role,
                    user_id=member.user_id,
                    joined_at=member.joined_at,
                    connection_state="connected" if member.connected else "connecting",
                    bytes_received=self.router.statistics().bytes_in if is_publisher else 0,
                    bytes_sent=self.router.viewer_bytes_sent(member.peer_id),
                )
            )
        return infos

    # ---- derived state ----
    @property
    def host(self) -> Member | None:
        return next((m for m in self.members.values() if m.role == "host" and not m.gone), None)

    @property
    def viewer_count(self) -> int:
        return sum(1 for m in self.members.values() if m.role == "viewer" and not m.gone)

    @property
    def has_host(self) -> bool:
        host = self.host
        return host is not None and host.connected

    def stats(self) -> RoomStats:
        return RoomStats(
            room_id=self.room_id,
            post_id=self.post_id,
            is_active=self.stopped is None,
            viewer_count=self.viewer_count if self.stopped is None else 0,
            has_host=self.has_host if self.stopped is None else False,
            stop_reason=self.stopped.reason if self.stopped else None,
            host_joined=self.stopped is None and self.host is not None,
            host_user_id=self.host_user_id,
            created_at=self.created_at,
            restarts=self.restarts,
            bytes_sent=self.counters.bytes_sent,
            bytes_received=self.counters.bytes_received,
            forwarding=self.router.statistics() if self.stopped is None else None,
        )

    def mark_stopped(self, reason: StopReason, *, resumes: bool = False) -> bool:
        """Record the stop and tell every peer (`resumes`: the server is restarting and the room
        goes on after it, so its peers are told to reconnect). False if it was stopped already."""
        if self.stopped is not None:
            return False
        self.stopped = StopInfo(reason=reason, at=trio.current_time())
        event: object = Restarting() if resumes else RoomStoppedEvent(room_id=self.room_id, reason=reason)
        for member in self.members.values():
            member.notify(event)
        for member in self.members.values():
            if self.router.has_viewer(member.peer_id):
                self.router.remove_viewer(member.peer_id)
        self.members.clear()
        self.router.detach_publisher(time.monotonic())
        self.publisher_peer_id = None
        self.cancel_scope.cancel()
        return True


def new_record(
    room_id: str,
    post_id: str,
    host_user_id: str,
    *,
    target_bitrate_bps: int,
    media_lock: AbstractContextManager[Any] | None = None,
    events: EventSink = NO_EVENTS,
    created_at: float | None = None,
) -> RoomRecord:
    return RoomRecord(
        media_lock=media_lock if media_lock is not None else threading.RLock(),
        events=events,
        room_id=room_id,
        post_id=post_id,
        host_user_id=host_user_id,
        created_at=time.time() if created_at is None else created_at,
        idle_since=trio.current_time(),
        router=Router(rtcp_ssrc=secrets.randbits(32) or 1, target_bitrate_bps=target_bitrate_bps),
    )


class RoomActor:
    """One incarnation of a room's actor. It handles the room's mailbox until the
    room is stopped (cancelled) or it raises (the supervisor then restarts it)."""

    def __init__(self, record: RoomRecord, *, max_viewers: int) -> None:
        self._record = record
        self._max_viewers = max_viewers
        self._handlers: dict[type, Callable[[Any], None]] = {
            Join: self._on_join,
            Leave: self._on_leave,
            PeerConnectionState: self._on_connection_state,
            AttachMedia: self._on_attach_media,
            InjectCrash: self._on_inject_crash,
        }

    async def run(self) -> None:
        _, mailbox = self._record.mailbox
        async for message in mailbox:
            with message.reply, self._record.media_lock:  # reply closed even if the handler raises
                if self._record.stopped is not None:
                    # taken from the mailbox just before the stop closed it (trio hands over a
                    # received message even to a cancelled task): refused, never handled
                    answer(message.reply, ActorGone(f"room {self._record.room_id} stopped"))
                    continue
                self._handlers[type(message)](message)

    # ---- handlers -----------------------------------------------------------------------

    def _on_join(self, message: Join) -> None:
        record = self._record
        self._purge_gone()
        if message.user_id in record.banned_users:
            answer(message.reply, KickedOut("a moderator removed this user from the room"))
            return
        if message.role == "viewer":
            if record.viewer_count >= self._max_viewers:
                answer(message.reply, RoomFull(f"room is full ({self._max_viewers} viewers)"))
                return
        else:
            host = record.host
            if host is not None and host.user_id != message.user_id:
                answer(message.reply, HostTaken("another user is hosting this room"))
                return
            if host is not None:
                log.info("room %s: host %s replaced by %s", record.room_id, host.peer_id, message.peer_id)
                host.notify(HostReplaced())
                del record.members[host.peer_id]
                self._detach_media(host.peer_id)
        record.members[message.peer_id] = Member(
            peer_id=message.peer_id, role=message.role, user_id=message.user_id, inbox=message.inbox
        )
        record.idle_since = None
        log.info("room %s: %s %s joined (user %s)", record.room_id, message.role, message.peer_id, message.user_id)
        answer(message.reply, JoinAccepted(viewer_count=record.viewer_count, has_host=record.has_host))
        if message.role == "viewer":
            record.emit(
                "viewer_joined", peer_id=message.peer_id, user_id=message.user_id, viewer_count=record.viewer_count
            )
        self._broadcast_if_changed(skip=message.peer_id)

    def _on_leave(self, message: Leave) -> None:
        self._remove(message.peer_id)
        answer(message.reply, None)
        self._broadcast_if_changed()

    def _remove(self, peer_id: str) -> None:
        record = self._record
        member = record.members.pop(peer_id, None)
        if member is not None:
            log.info("room %s: %s %s left", record.room_id, member.role, member.peer_id)
        self._detach_media(peer_id)
        if member is not None and member.role == "viewer":
            record.emit("viewer_left", peer_id=peer_id, user_id=member.user_id, viewer_count=record.viewer_count)
        elif member is not None:
            record.emit("host_left", peer_id=peer_id, user_id=member.user_id, was_live=record.live)
            record.live = False
        if not record.members and record.idle_since is None:
            record.idle_since = trio.current_time()

    def _purge_gone(self) -> None:
        """Remove members whose session ended before its Leave was handled (queued, or lost)."""
        record = self._record
        for member in [m for m in record.members.values() if m.gone]:
            log.debug("room %s: %s %s ended; removed before its Leave", record.room_id, member.role, member.peer_id)
            self._remove(member.peer_id)

    def _on_connection_state(self, message: PeerConnectionState) -> None:
        member = self._record.members.get(message.peer_id)
        if member is not None:
            member.connected = message.connected
        answer(message.reply, None)
        self._broadcast_if_changed()

    def _on_attach_media(self, message: AttachMedia) -> None:
        """Route a negotiated connection: the host's feeds the router, a viewer's is fed by it.
        From here on its packets go connection -> router -> connections, synchronously."""
        record = self._record
        member = record.members.get(message.peer_id)
        if member is None:  # left while negotiating
            answer(message.reply, None)
            return
        connection = message.connection
        router = record.router
        now = time.monotonic()
        if member.role == "host":

            def on_rtp(data: bytes) -> None:  # the media thread, under the media lock
                arrival = time.monotonic()
                router.on_publisher_rtp(data, arrival)
                recording = record.recording
                if recording is not None:
                    recording.feed(data, arrival)

            connection.on_rtp = on_rtp
            connection.on_rtcp = lambda data: router.on_publisher_rtcp(data, time.monotonic())
            router.attach_publisher(connection.sources, connection.send_rtcp, now)
            record.publisher_peer_id = member.peer_id
            record.live_baseline = router.packets_in  # host_live once a packet of this publisher arrives
            record.publisher_sources = list(connection.sources)
            if record.recording is not None:
                record.recording.use_host(record.publisher_sources)
            log.info(
                "room %s: publisher %s attached (%s)",
                record.room_id,
                member.peer_id,
                ", ".join(f"{s.kind} pt {s.payload_type}" for s in connection.sources),
            )
        else:
            peer_id = member.peer_id
            connection.on_rtcp = lambda data: router.on_viewer_rtcp(peer_id, data, time.monotonic())
            router.add_viewer(peer_id, connection.sinks, connection.send_rtp, connection.send_rtcp, now)
            log.info(
                "room %s: viewer %s attached (%s)",
                record.room_id,
                peer_id,
                ", ".join(f"{s.kind} pt {s.payload_type}" for s in connection.sinks),
            )
        answer(message.reply, None)

    def _detach_media(self, peer_id: str) -> None:
        record = self._record
        if record.publisher_peer_id == peer_id:
            record.router.detach_publisher(time.monotonic())
            record.publisher_peer_id = None
            record.publisher_sources = []
        elif record.router.has_viewer(peer_id):
            record.router.remove_viewer(peer_id)

    def _on_inject_crash(self, message: InjectCrash) -> None:
        raise RuntimeError(f"fault injected into room {self._record.room_id}")

    # ---- helpers ------------------------------------------------------------------------

    def _snapshot(self) -> RoomChanged:
        return RoomChanged(viewer_count=self._record.viewer_count, has_host=self._record.has_host)

    def _broadcast_if_changed(self, *, skip: str | None = None) -> None:
        """Tell every member the room's state if it differs from what was last told
        (a member may have gone between two messages, see `Member.gone`)."""
        now = self._snapshot()
        if now == self._record.announced:
            return
        self._record.announced = now
        for member in self._record.members.values():
            if member.peer_id != skip:
                member.notify(now)
