"""A room: its entry in the supervisor's registry, the state its actor owns, and the actor.

**Who writes what.** A `RoomRecord` is the supervisor's: identity (id, post, host user,
creation time) and lifecycle (mailbox, cancel scope, stop, restarts and crash times). Its
`state`, a `RoomState`, is the room's: members, bans, idleness, the publisher, liveness,
the recording. Only code running in the room's own task writes the state: the
actor's handlers, its ticker (router timers, `host_live`, members whose session ended), and
its teardown once the room is stopped. The supervisor only reads it (stats, peers, idle
sweep) and sends the actor messages for everything else: a kick, a recording, a keyframe
for a thumbnail. Everything runs on the one Trio thread and no handler awaits, so a reader
never sees half a handler.

**The media thread and the lock.** Media never passes through the actor: the host's packets
go connection -> router -> viewers' connections on the media thread (transport/media_port.py),
holding the media port's lock. The actor takes that lock only around single router calls
(attach or detach a publisher, add or remove a viewer, a timer tick, a keyframe request) and
to swap the recording the host's packets feed; never around a whole handler. Stats read the
router's counters without it (each is a plain int, read whole under the GIL).

**A restart keeps** the state as it was: members and their inboxes, the router with the
publisher and viewers attached, bans, the recording, liveness, counters, so no viewer is
dropped and no packet lost (media never waited for the actor). **It re-derives**, before
the new incarnation handles a message (`_reconcile`), what a handler that raised half-way
may have left inconsistent: members whose session ended are removed; the router keeps only
viewers that are members and a publisher that is the joined host; idleness follows the
members; `live` is off without a publisher; a recording that has ended is let go; the room's
state is announced again if it changed. The message being handled when the actor crashed is
not retried: its caller got `ActorGone` (its reply channel closed) and decides (a peer
retries its join, REST answers 503).

**Membership cannot leak**: a member's inbox is the send side of its session's event
channel, and a session closes the receive side first thing when it ends, whatever ends it
(cancellation included). A member whose inbox has no open receiver is gone: it is not
counted, and the ticker removes it within a second even if its `Leave` never arrives.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol

import trio

from actors.errors import ActorGone, HostTaken, KickedOut, PeerNotFound, RecordingNotFound, RoomFull
from actors.events import NO_EVENTS, EventSink
from actors.mailbox import answer, open_mailbox, tell
from actors.messages import (
    AttachMedia,
    ChooseQuality,
    GetKeyframe,
    HostReplaced,
    InjectCrash,
    Join,
    JoinAccepted,
    Kicked,
    KickPeer,
    LayersNeeded,
    Leave,
    MediaRoute,
    OpenRelay,
    PeerConnectionState,
    PeerInfo,
    QualityChanged,
    RecordingEnded,
    RelayControl,
    Restarting,
    RoomChanged,
    RoomStats,
    RoomStoppedEvent,
    StartRecording,
    StopRecording,
)
from actors.relays import (
    ORIGIN_RETURN_SECONDS,
    STATE_EVERY_SECONDS,
    EdgeFeed,
    EdgeOfOrigin,
    EdgeState,
    OriginRelays,
    OriginState,
    decode,
    encode,
)
from core.signaling import Role, StopReason
from media.layers import Quality
from media.router import QualityChange, Router
from services.recordings import Recording
from transport.relay_port import RelayLink, RelayPort
from transport.settings import TransportCounters

log = logging.getLogger("bitbasel.room")

#: How often the room's ticker runs: RTCP toward the host, keyframe retries, `host_live`.
TICK_SECONDS = 0.1
#: Every this many ticks (a second), members whose session ended without a Leave are removed.
PURGE_EVERY_TICKS = 10
#: Every this many ticks each end of a relay sends its state (actors/relays.py).
RELAY_STATE_EVERY_TICKS = round(STATE_EVERY_SECONDS / TICK_SECONDS)
#: An edge's publisher in its router: the relay from the origin.
RELAY_PUBLISHER = "relay"


@dataclass(slots=True)
class Member:
    peer_id: str
    role: Role
    user_id: str
    inbox: trio.MemorySendChannel[Any]
    connected: bool = False
    joined_at: float = field(default_factory=time.time)  # unix seconds
    quality: Quality = "auto"  # a viewer's `set_quality` (kept for its media, which may come later)

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
class RoomState:
    """What the room's actor owns (see the module's docstring); the supervisor reads it."""

    router: Router
    counters: TransportCounters = field(default_factory=TransportCounters)  # its connections write them
    members: dict[str, Member] = field(default_factory=dict)
    idle_since: float | None = None  # trio clock; None while a session is joined
    banned_users: set[str] = field(default_factory=set)  # kicked: refused if they join again
    publisher_peer_id: str | None = None  # whose connection feeds the router
    recording: Recording | None = None  # fed by the host's packets on the media thread
    live: bool = False  # host_live sent, host_left not yet
    live_baseline: int = 0  # router.packets_in when the current publisher was attached
    layers_told: list[str] | None = None  # the rids last named to the host (dynacast)
    recorded_epoch: int | None = None  # the video layer the recording took (router.recorded_epoch)
    announced: RoomChanged = field(default_factory=lambda: RoomChanged(viewer_count=0, has_host=False))
    relays: OriginRelays = field(default_factory=OriginRelays)  # as an origin: its edges
    edge: EdgeFeed | None = None  # as an edge: its link to the origin (set when the edge is made)

    @property
    def host(self) -> Member | None:
        return next((m for m in self.members.values() if m.role == "host" and not m.gone), None)

    @property
    def viewer_count(self) -> int:
        return sum(1 for m in self.members.values() if m.role == "viewer" and not m.gone)

    @property
    def room_viewer_count(self) -> int:
        """Every viewer of the room, wherever it sits: an origin's own and its edges'; an edge
        says what its origin last said (its own viewers included, half a second late at most)."""
        if self.edge is not None:
            origin = self.edge.origin
            return max(origin.viewer_count, self.viewer_count) if origin is not None else self.viewer_count
        return self.viewer_count + self.relays.viewer_count

    @property
    def has_host(self) -> bool:
        if self.edge is not None:
            return self.edge.origin is not None and self.edge.origin.has_host
        host = self.host
        return host is not None and host.connected

    def peers(self) -> list[PeerInfo]:
        """The joined sessions, for moderators."""
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
                    video_layer=self.router.viewer_layer(member.peer_id),
                    estimate_bps=self.router.viewer_estimate(member.peer_id),
                )
            )
        return infos


@dataclass(slots=True, frozen=True)
class StopInfo:
    reason: StopReason
    at: float  # trio clock
    resumes: bool = False  # the server is restarting with its room directory: the room goes on there


@dataclass(slots=True)
class RoomRecord:
    """The supervisor's registry entry of a room (see the module's docstring)."""

    room_id: str
    post_id: str
    host_user_id: str
    created_at: float  # unix seconds
    state: RoomState
    # held around single router calls (the media thread drives the router too)
    media_lock: AbstractContextManager[Any] = field(default_factory=threading.RLock)
    events: EventSink = field(default_factory=lambda: NO_EVENTS)  # webhooks
    stopped: StopInfo | None = None
    restarts: int = 0  # times the room's actor was started again after a crash
    crash_times: deque[float] = field(default_factory=deque)  # within the restart window
    mailbox: tuple[trio.MemorySendChannel[Any], trio.MemoryReceiveChannel[Any]] = field(default_factory=open_mailbox)
    cancel_scope: trio.CancelScope = field(default_factory=trio.CancelScope)

    def emit(self, event_type: str, **data: Any) -> None:
        self.events.emit(event_type, self.room_id, self.post_id, **data)

    def stats(self) -> RoomStats:
        state, active = self.state, self.stopped is None
        return RoomStats(
            room_id=self.room_id,
            post_id=self.post_id,
            is_active=active,
            viewer_count=state.room_viewer_count if active else 0,
            has_host=state.has_host if active else False,
            stop_reason=self.stopped.reason if self.stopped else None,
            host_joined=active and state.host is not None,
            host_user_id=self.host_user_id,
            created_at=self.created_at,
            restarts=self.restarts,
            bytes_sent=state.counters.bytes_sent,
            bytes_received=state.counters.bytes_received,
            forwarding=state.router.statistics() if active else None,
        )


def new_record(
    room_id: str,
    post_id: str,
    host_user_id: str,
    *,
    router: Router,
    media_lock: AbstractContextManager[Any] | None = None,
    events: EventSink = NO_EVENTS,
    created_at: float | None = None,
) -> RoomRecord:
    return RoomRecord(
        room_id=room_id,
        post_id=post_id,
        host_user_id=host_user_id,
        created_at=time.time() if created_at is None else created_at,
        state=RoomState(router=router, idle_since=trio.current_time()),
        media_lock=media_lock if media_lock is not None else threading.RLock(),
        events=events,
    )


class RoomServices(Protocol):
    """What a room's actor asks of the server: recordings run in the supervisor's nursery
    (they outlive an actor's crash), and the room directory keeps whether to record."""

    def start_recording(self, record: RoomRecord) -> Recording: ...
    def save_row(self, record: RoomRecord, *, recording: bool) -> None: ...
    def stop_edge(self, record: RoomRecord, reason: StopReason | None) -> None: ...

    @property
    def relay_port(self) -> RelayPort | None: ...


def no_fault(where: str) -> None:
    """The fault hook of production: nothing happens at `where`."""


class RoomActor:
    """One incarnation of a room's actor. It handles the room's mailbox and runs its ticker
    until the room is stopped (cancelled) or it raises (the supervisor then starts the next
    incarnation on the same record). `fault(where)` is called at named points in the middle
    of each handler: tests make it raise to crash the actor there."""

    def __init__(
        self,
        record: RoomRecord,
        services: RoomServices,
        *,
        max_viewers: int,
        fault: Callable[[str], None] = no_fault,
    ) -> None:
        self._record = record
        self._state = record.state
        self._services = services
        self._max_viewers = max_viewers
        self._fault = fault
        self._handlers: dict[type, Callable[[Any], None]] = {
            Join: self._on_join,
            Leave: self._on_leave,
            PeerConnectionState: self._on_connection_state,
            ChooseQuality: self._on_choose_quality,
            AttachMedia: self._on_attach_media,
            KickPeer: self._on_kick,
            StartRecording: self._on_start_recording,
            StopRecording: self._on_stop_recording,
            RecordingEnded: self._on_recording_ended,
            GetKeyframe: self._on_keyframe,
            InjectCrash: self._on_inject_crash,
            OpenRelay: self._on_open_relay,
            RelayControl: self._on_relay_control,
        }

    async def run(self) -> None:
        self._reconcile()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._tick)
            _, mailbox = self._record.mailbox
            async for message in mailbox:
                with message.reply:  # closed even if the handler raises: the caller gets ActorGone
                    if self._record.stopped is not None:
                        # taken from the mailbox just before the stop closed it (trio hands over a
                        # received message even to a cancelled task): refused, never handled
                        answer(message.reply, ActorGone(f"room {self._record.room_id} stopped"))
                        continue
                    self._handlers[type(message)](message)
            nursery.cancel_scope.cancel()  # the mailbox was closed: the room stopped

    # ---- handlers -----------------------------------------------------------------------

    def _on_join(self, message: Join) -> None:
        state = self._state
        state.members.pop(message.peer_id, None)  # the same join again (sent again after a crash)
        self._purge_gone()
        if message.user_id in state.banned_users:
            answer(message.reply, KickedOut("a moderator removed this user from the room"))
            return
        if message.role == "viewer":
            if state.room_viewer_count >= self._max_viewers:
                answer(message.reply, RoomFull(f"room is full ({self._max_viewers} viewers)"))
                return
        elif state.edge is not None:
            answer(message.reply, HostTaken("the host publishes on the room's origin, not on this worker"))
            return
        else:
            host = state.host
            if host is not None and host.user_id != message.user_id:
                answer(message.reply, HostTaken("another user is hosting this room"))
                return
            if host is not None:  # the same user again: the new session takes over (no host_left)
                log.info("room %s: host %s replaced by %s", self._record.room_id, host.peer_id, message.peer_id)
                host.notify(HostReplaced())
                del state.members[host.peer_id]
                self._detach_media(host.peer_id)
        state.members[message.peer_id] = Member(
            peer_id=message.peer_id, role=message.role, user_id=message.user_id, inbox=message.inbox
        )
        state.idle_since = None
        self._fault("join")
        log.info(
            "room %s: %s %s joined (user %s)", self._record.room_id, message.role, message.peer_id, message.user_id
        )
        answer(message.reply, JoinAccepted(viewer_count=state.room_viewer_count, has_host=state.has_host))
        if message.role == "viewer":
            self._record.emit(
                "viewer_joined", peer_id=message.peer_id, user_id=message.user_id, viewer_count=state.room_viewer_count
            )
        self._broadcast_if_changed(skip=message.peer_id)

    def _on_leave(self, message: Leave) -> None:
        self._remove(message.peer_id)
        answer(message.reply, None)
        self._broadcast_if_changed()

    def _remove(self, peer_id: str) -> None:
        state, record = self._state, self._record
        member = state.members.pop(peer_id, None)
        self._fault("leave")
        if member is not None:
            log.info("room %s: %s %s left", record.room_id, member.role, member.peer_id)
        self._detach_media(peer_id)
        if member is not None and member.role == "viewer":
            record.emit("viewer_left", peer_id=peer_id, user_id=member.user_id, viewer_count=state.room_viewer_count)
        elif member is not None:
            record.emit("host_left", peer_id=peer_id, user_id=member.user_id, was_live=state.live)
            state.live = False
        if not state.members and state.idle_since is None:
            state.idle_since = trio.current_time()

    def _purge_gone(self) -> None:
        """Remove members whose session ended before its Leave was handled (queued, or lost)."""
        for member in [m for m in self._state.members.values() if m.gone]:
            log.debug("room %s: %s %s ended before its Leave", self._record.room_id, member.role, member.peer_id)
            self._remove(member.peer_id)

    def _on_connection_state(self, message: PeerConnectionState) -> None:
        member = self._state.members.get(message.peer_id)
        if member is not None:
            member.connected = message.connected
        self._fault("connection_state")
        answer(message.reply, None)
        self._broadcast_if_changed()

    def _on_choose_quality(self, message: ChooseQuality) -> None:
        member = self._state.members.get(message.peer_id)
        if member is not None and member.role == "viewer":
            member.quality = message.quality
            with self._record.media_lock:
                self._state.router.set_quality(message.peer_id, message.quality, time.monotonic())
        answer(message.reply, None)

    def _on_attach_media(self, message: AttachMedia) -> None:
        """Route a negotiated connection: the host's feeds the router, a viewer's is fed by it.
        The answer is what the peer's connection calls for the packets it receives."""
        state, record = self._state, self._record
        member = state.members.get(message.peer_id)
        if member is None:  # left while negotiating
            answer(message.reply, ActorGone(f"session {message.peer_id} left the room"))
            return
        endpoint = message.endpoint
        router = state.router
        peer_id = member.peer_id
        if member.role == "host":
            with record.media_lock:
                state.live_baseline = router.packets_in  # host_live once a packet of this publisher arrives
                router.attach_publisher(endpoint.sources, endpoint.send_rtcp, time.monotonic())
                state.publisher_peer_id = peer_id
                state.layers_told = None  # a new host is told the layers needed afresh
                if state.recording is not None:
                    state.recording.use_host(router.publisher_streams())
            self._fault("attach_media")
            log.info("room %s: publisher %s attached (%s)", record.room_id, peer_id, _streams(endpoint.sources))
            self._tell_edges()
            answer(
                message.reply, MediaRoute(on_rtp=self._publisher_rtp(peer_id), on_rtcp=self._publisher_rtcp(peer_id))
            )
        else:
            with record.media_lock:
                router.add_viewer(
                    peer_id, endpoint.sinks, endpoint.send_rtp, endpoint.send_rtcp, time.monotonic(), member.quality
                )
            self._fault("attach_media")
            log.info("room %s: viewer %s attached (%s)", record.room_id, peer_id, _streams(endpoint.sinks))
            answer(message.reply, MediaRoute(on_rtp=None, on_rtcp=self._viewer_rtcp(peer_id)))

    def _publisher_rtp(self, peer_id: str) -> Callable[[bytes], None]:
        state = self._state
        router = state.router

        def on_rtp(data: bytes) -> None:  # the media thread, under the media lock
            if state.publisher_peer_id != peer_id:  # a replaced host's last packets
                return
            arrival = time.monotonic()
            router.on_publisher_rtp(data, arrival)
            recording = state.recording
            if recording is not None and router.recordable(data):  # the top layer of a simulcast host
                recording.feed(data, arrival)

        return on_rtp

    def _publisher_rtcp(self, peer_id: str) -> Callable[[bytes], None]:
        state = self._state

        def on_rtcp(data: bytes) -> None:
            if state.publisher_peer_id == peer_id:
                state.router.on_publisher_rtcp(data, time.monotonic())

        return on_rtcp

    def _viewer_rtcp(self, peer_id: str) -> Callable[[bytes], None]:
        router = self._state.router
        return lambda data: router.on_viewer_rtcp(peer_id, data, time.monotonic())

    def _detach_media(self, peer_id: str) -> None:
        state = self._state
        if state.publisher_peer_id == peer_id:
            with self._record.media_lock:
                state.router.detach_publisher(time.monotonic())
                state.publisher_peer_id = None
            self._tell_edges()
        elif state.router.has_viewer(peer_id):
            with self._record.media_lock:
                state.router.remove_viewer(peer_id)

    def _on_kick(self, message: KickPeer) -> None:
        """Tell the session it is kicked; it sends `error` `kicked` and closes (4451), then
        leaves the room like any session that ends. Its user may not come back."""
        state, record = self._state, self._record
        member = state.members.get(message.peer_id)
        if member is None or member.gone:
            answer(message.reply, PeerNotFound(f"no session {message.peer_id} in room {record.room_id}"))
            return
        state.banned_users.add(member.user_id)  # its client must not come back; if it does, it is refused
        self._fault("kick")
        if not member.notify(Kicked()):
            answer(message.reply, ActorGone(f"session {message.peer_id} is busy; try again"))
            return
        log.info("room %s: %s %s (user %s) kicked", record.room_id, member.role, member.peer_id, member.user_id)
        answer(message.reply, None)

    def _on_start_recording(self, message: StartRecording) -> None:
        state, record = self._state, self._record
        if state.recording is not None:
            answer(message.reply, state.recording)
            return
        recording = self._services.start_recording(record)
        with record.media_lock:  # the room has it from the start: a crash from here on cannot orphan it
            state.recording = recording
            if state.publisher_peer_id is not None:
                recording.use_host(state.router.publisher_streams())
                state.router.request_keyframe(time.monotonic())  # the file starts at a keyframe
        self._fault("start_recording")
        self._services.save_row(record, recording=True)
        log.info("room %s: recording %s started", record.room_id, recording.recording_id)
        answer(message.reply, recording)

    def _on_stop_recording(self, message: StopRecording) -> None:
        recording = self._state.recording
        if recording is None:
            answer(message.reply, RecordingNotFound(f"room {self._record.room_id} is not recording"))
            return
        self._services.save_row(self._record, recording=False)
        self._fault("stop_recording")
        self._let_go_of_recording("api")
        answer(message.reply, recording)

    def _on_recording_ended(self, message: RecordingEnded) -> None:
        if self._state.recording is message.recording:
            self._let_go_of_recording(message.recording.stop_reason or "ended")
        answer(message.reply, None)

    def _let_go_of_recording(self, reason: str) -> None:
        recording = self._state.recording
        if recording is None:
            return
        with self._record.media_lock:
            self._state.recording = None  # the media thread stops feeding it
        recording.stop(reason)

    def _on_keyframe(self, message: GetKeyframe) -> None:
        """The newest whole keyframe in the router's cache (read without the lock: cached
        packets are never changed in place); if none, a keyframe is asked of the host."""
        state = self._state
        frame = state.router.latest_keyframe()
        if frame is None and state.publisher_peer_id is not None:
            with self._record.media_lock:
                state.router.request_keyframe(time.monotonic())
        answer(message.reply, frame)

    def _on_inject_crash(self, message: InjectCrash) -> None:
        raise RuntimeError(f"fault injected into room {self._record.room_id}")

    # ---- relays: this room across workers (actors/relays.py) ------------------------------

    def _on_open_relay(self, message: OpenRelay) -> None:
        """As the origin: send the host's media to an edge from now on."""
        state, record = self._state, self._record
        port = self._services.relay_port
        if port is None or state.edge is not None:
            answer(message.reply, ActorGone(f"room {record.room_id} cannot relay from this worker"))
            return
        router = state.router
        relay_id = ""

        def on_rtcp(data: bytes) -> None:  # the media thread, under the lock
            router.on_relay_rtcp(relay_id, data, time.monotonic())

        link = port.open(
            _ignore, on_rtcp, relay_control_receiver(port, record.mailbox[0], lambda: relay_id), key=message.key
        )
        relay_id = str(link.number)
        port.connect(link, message.address, message.link)
        with record.media_lock:
            router.add_relay(relay_id, link.send_rtp, link.send_rtcp)
        state.relays.edges[relay_id] = EdgeOfOrigin(link)
        where = "another node's" if message.key is not None else "an"
        log.info("room %s: relaying to %s edge at %s (relay %s)", record.room_id, where, message.address, relay_id)
        self._tell_edge(link)
        answer(message.reply, None)

    def _on_relay_control(self, message: RelayControl) -> None:
        state = self._state
        control = message.message
        if isinstance(control, EdgeState):
            edge = state.relays.edges.get(message.relay_id)
            if edge is not None:
                edge.viewer_count = control.viewer_count
                state.banned_users.update(control.banned_users)
                if control.needed_rids is not None:
                    with self._record.media_lock:
                        state.router.set_relay_needs(message.relay_id, control.needed_rids)
        elif isinstance(control, OriginState) and state.edge is not None:
            self._follow_origin(state.edge, control)
        answer(message.reply, None)
        self._broadcast_if_changed()

    def _follow_origin(self, feed: EdgeFeed, origin: OriginState) -> None:
        """As an edge: the router's publisher follows the origin's host (and its layers'
        SSRCs, bans); a stopped origin stops this edge (its viewers are told the room stopped)."""
        state, record = self._state, self._record
        feed.origin = origin
        if origin.stopped is not None:
            self._services.stop_edge(record, origin.stopped)  # type: ignore[arg-type]
            return
        state.banned_users.update(origin.banned_users)
        with record.media_lock:
            if origin.streams != feed.attached:
                if origin.streams is None:
                    state.router.detach_publisher(time.monotonic())
                else:
                    state.router.attach_publisher(origin.streams, feed.link.send_rtcp, time.monotonic())
                log.info("room %s (edge): the origin's host %s", record.room_id, "on" if origin.streams else "off")
            state.router.learn_layer_ssrcs(origin.layer_ssrcs)
        feed.attached = origin.streams
        state.publisher_peer_id = RELAY_PUBLISHER if origin.streams is not None else None

    def _origin_state(self) -> OriginState:
        state = self._state
        streams = state.router.publisher_streams() if state.publisher_peer_id is not None else None
        return OriginState(
            streams,
            state.has_host,
            state.room_viewer_count,
            layer_ssrcs=state.router.layer_ssrcs(),
            banned_users=sorted(state.banned_users),
        )

    def _tell_edge(self, link: RelayLink) -> None:
        link.send_control(encode(self._origin_state()))

    def _tell_edges(self) -> None:
        if self._state.relays.edges:
            payload = encode(self._origin_state())
            for edge in self._state.relays.edges.values():
                edge.link.send_control(payload)

    def _relay_tick(self, now: float, needed: list[str]) -> None:
        """Twice a second: each end of a relay says its state (an edge: with ``needed``, the
        rids its viewers need, from this tick); a silent end is let go."""
        state, record = self._state, self._record
        feed = state.edge
        if feed is not None:
            if feed.silent(now, ORIGIN_RETURN_SECONDS):
                log.warning("room %s (edge): its origin did not come back; its viewers reconnect", record.room_id)
                self._services.stop_edge(record, None)
                return
            if feed.silent(now) and feed.origin is not None:
                log.warning("room %s (edge): its origin went silent; waiting for it", record.room_id)
                feed.origin = None  # no host for now (room_update); the link takes the next origin
                self._broadcast_if_changed()
            feed.link.send_control(encode(EdgeState(state.viewer_count, needed, sorted(state.banned_users))))
            return
        if state.relays.viewer_count:  # the room's viewers on other workers keep it from being idle
            state.idle_since = None
        elif not state.members and state.idle_since is None:
            state.idle_since = trio.current_time()
        for relay_id in state.relays.gone(now):
            log.warning("room %s: the edge of relay %s went silent; relay dropped", record.room_id, relay_id)
            edge = state.relays.edges.pop(relay_id)
            with record.media_lock:
                state.router.remove_relay(relay_id)
            edge.link.close()
            self._broadcast_if_changed()
        self._tell_edges()

    # ---- the ticker -----------------------------------------------------------------------

    async def _tick(self) -> None:
        """RTCP toward the host (RR, REMB, NACK), pending keyframe requests, the viewers'
        layers; the viewers told their layer and the host the layers needed; `host_live` once
        the attached host's first packet has arrived (within a tick of it); and, once a second,
        members whose session ended without a Leave are removed."""
        state, record = self._state, self._record
        ticks = 0
        while True:
            await trio.sleep(TICK_SECONDS)
            now = time.monotonic()
            with record.media_lock:
                state.router.tick(now)
                changes = state.router.take_quality_changes()
                needed = state.router.needed_rids(now)
                recorded = state.router.recorded_epoch
                if recorded != state.recorded_epoch:  # the recording takes another layer: a new segment
                    state.recorded_epoch = recorded
                    if state.recording is not None and recorded is not None:
                        state.recording.recorder.host_changed()
                        state.router.request_keyframe(now)
            self._tell_layers(changes, needed)
            arrived = state.router.packets_in > state.live_baseline
            if not state.live and state.publisher_peer_id is not None and arrived:
                host = state.host  # told before it is marked: a crash in between tells it twice, never not
                record.emit("host_live", peer_id=state.publisher_peer_id, user_id=host.user_id if host else None)
                self._fault("live")
                state.live = True
            ticks += 1
            if ticks % RELAY_STATE_EVERY_TICKS == 0 and (state.edge is not None or state.relays.edges):
                self._relay_tick(now, needed)
            if ticks % PURGE_EVERY_TICKS == 0 and any(m.gone for m in state.members.values()):
                self._purge_gone()
                self._broadcast_if_changed()

    def _tell_layers(self, changes: list[QualityChange], needed: list[str]) -> None:
        """Each viewer whose layer changed gets its `quality`; the host the rids needed, when
        they changed (a host without simulcast is never told)."""
        state = self._state
        for change in changes:
            member = state.members.get(change.viewer_id)
            if member is not None:
                member.notify(QualityChanged(change.layer, change.width, change.height, change.reason))
        host = state.host
        if host is None or host.peer_id != state.publisher_peer_id or not needed or needed == state.layers_told:
            return
        if host.notify(LayersNeeded(active=needed)):
            state.layers_told = needed

    # ---- restart and stop -------------------------------------------------------------------

    def _reconcile(self) -> None:
        """Re-derive what a handler that raised half-way may have left inconsistent (see the
        module's docstring). A no-op on a consistent state."""
        state = self._state
        self._purge_gone()
        viewers = {m.peer_id for m in state.members.values() if m.role == "viewer"}
        for peer_id in state.router.viewer_ids():
            if peer_id not in viewers:
                with self._record.media_lock:
                    state.router.remove_viewer(peer_id)
        host = state.host
        relayed = state.edge is not None and state.publisher_peer_id == RELAY_PUBLISHER
        if (
            state.publisher_peer_id is not None
            and not relayed
            and (host is None or host.peer_id != state.publisher_peer_id)
        ):
            self._detach_media(state.publisher_peer_id)
        if state.publisher_peer_id is None:
            state.live = False
        if state.members:
            state.idle_since = None
        elif state.idle_since is None:
            state.idle_since = trio.current_time()
        if state.recording is not None and state.recording.stop_reason is not None:
            self._let_go_of_recording(state.recording.stop_reason)
        self._broadcast_if_changed()

    @staticmethod
    def tear_down(record: RoomRecord) -> None:
        """The stopped room's last act, in its own task: tell every member, let the router and
        the recording go. The supervisor has marked the stop (`record.stopped`)."""
        stopped = record.stopped
        assert stopped is not None
        state = record.state
        event: object = (
            Restarting() if stopped.resumes else RoomStoppedEvent(room_id=record.room_id, reason=stopped.reason)
        )
        for member in state.members.values():
            member.notify(event)
        stopped_state = encode(OriginState(None, False, 0, stopped.reason)) if not stopped.resumes else None
        with record.media_lock:
            for peer_id in state.router.viewer_ids():
                state.router.remove_viewer(peer_id)
            state.router.detach_publisher(time.monotonic())
            recording, state.recording = state.recording, None
            for relay_id, edge in state.relays.edges.items():
                if stopped_state is not None:  # its edges stop too (after a restart they would reattach)
                    edge.link.send_control(stopped_state)
                state.router.remove_relay(relay_id)
                edge.link.close()
            state.relays.edges.clear()
            if state.edge is not None:
                state.edge.link.close()
        state.members.clear()
        state.publisher_peer_id = None
        state.live = False
        if recording is not None:
            recording.stop("shutdown" if stopped.reason == "shutdown" else "room_stopped")

    # ---- helpers ------------------------------------------------------------------------

    def _broadcast_if_changed(self, *, skip: str | None = None) -> None:
        """Tell every member the room's state if it differs from what was last told
        (a member may have gone between two messages, see `Member.gone`)."""
        state = self._state
        now = RoomChanged(viewer_count=state.room_viewer_count, has_host=state.has_host)
        if now == state.announced:
            return
        state.announced = now
        self._tell_edges()
        for member in state.members.values():
            if member.peer_id != skip:
                member.notify(now)


def relay_control_receiver(
    port: RelayPort, mailbox: trio.MemorySendChannel[Any], relay_id: Callable[[], str]
) -> Callable[[bytes], None]:
    """A relay link's control messages (actors/relays.py), decoded on the media thread and
    handed to the room's actor; what does not decode is dropped."""

    def on_control(payload: bytes) -> None:
        message = decode(payload)
        if message is not None:
            port.call_in_trio(tell, mailbox, lambda reply: RelayControl(relay_id(), message, reply))

    return on_control


def _ignore(data: bytes) -> None:
    """What an origin's link does with RTP from its edge: there is none."""


def _streams(streams: list[Any]) -> str:
    return ", ".join(f"{s.kind} pt {s.payload_type}" for s in streams)
