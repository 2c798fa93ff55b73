"""Messages between actors, one msgspec struct each.

Requests to an actor carry `reply`, a one-slot channel (see actors/mailbox.py).
The answer structs double as REST response bodies (api/schemas.py re-exports
them), so what the handlers return and what /openapi.json says are one type.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import msgspec
import trio

from core.room_directory import RoomRow
from core.signaling import LayerName, Quality, QualityReason, Role, StopReason
from media.router import RouterStatistics
from media.streams import SinkStream, SourceStream
from services.recordings import Recording
from transport.settings import TransportCounters

Reply = trio.MemorySendChannel[Any]


# ---- answers (also REST bodies) ----------------------------------------------------


class RoomStats(msgspec.Struct, frozen=True):
    room_id: str
    post_id: str
    is_active: bool
    viewer_count: int
    has_host: bool
    stop_reason: StopReason | None
    host_joined: bool  # a host session is joined (connected or not)
    host_user_id: str
    created_at: float  # unix seconds
    restarts: int  # times the room actor was restarted after a crash
    bytes_sent: int  # media bytes (SRTP/SRTCP datagrams) sent to this room's viewers
    bytes_received: int  # media bytes received from this room's host
    forwarding: RouterStatistics | None = None  # the data plane's counters (None once stopped)


class RoomCreated(msgspec.Struct, frozen=True):
    room_id: str
    post_id: str
    host_user_id: str
    existing: bool  # true when an active room for the post was returned


class RoomRef(msgspec.Struct, frozen=True):
    """How to reach an active room actor."""

    room_id: str
    post_id: str
    host_user_id: str
    mailbox: trio.MemorySendChannel[Any]
    counters: TransportCounters  # the room's media byte counters, given to its peers' connections


class JoinAccepted(msgspec.Struct, frozen=True):
    viewer_count: int
    has_host: bool


# ---- supervisor requests -------------------------------------------------------------


class CreateRoom(msgspec.Struct, frozen=True):
    post_id: str
    host_user_id: str
    reply: Reply
    record: bool = False  # start a recording with the room


class AdoptRoom(msgspec.Struct, frozen=True):
    """A room another node held (it died or drained), to live on here with its id, post and host
    user. Answer: RoomCreated (`existing` when this server has it already), or Capacity."""

    row: RoomRow
    reply: Reply


class OpenEdge(msgspec.Struct, frozen=True):
    """This worker is to hold viewers of a room whose host is on another worker of the node, or
    (``key``: the relay's SRTP key) on another node (an edge of it, actors/relays.py). Answer:
    EdgeOpened (the one there is, or a new one)."""

    room_id: str
    post_id: str
    host_user_id: str
    reply: Reply
    key: bytes | None = None


class EdgeOpened(msgspec.Struct, frozen=True):
    address: tuple[str, int]  # the edge's relay port (loopback; or the node's first media address when keyed)
    link: int  # its link's number there: the origin sends to it
    existing: bool  # the edge was there already
    relayed: bool  # its origin has been heard (else the origin is asked to relay to it again)


class OpenRelay(msgspec.Struct, frozen=True):
    """The room (its origin) sends its host's media to an edge from now on. Answer: None."""

    room_id: str
    address: tuple[str, int]  # the edge's relay port
    link: int  # the edge's link number
    reply: Reply
    key: bytes | None = None  # an edge on another node: the relay's SRTP key (transport/relay_crypto.py)


class RelayControl(msgspec.Struct, frozen=True):
    """A relay's control message arrived (actors/relays.py), for the room's actor."""

    relay_id: str
    message: Any  # actors.relays.RelayMessage
    reply: Reply


class StartRecording(msgspec.Struct, frozen=True):
    """Answer: the room's services.recordings.Recording (a new one, or the one in progress).
    The supervisor forwards it to the room's actor, which owns the room's recording."""

    room_id: str
    reply: Reply


class StopRecording(msgspec.Struct, frozen=True):
    """Answer: the stopped services.recordings.Recording (wait for it to be finished).
    Forwarded to the room's actor like StartRecording."""

    room_id: str
    reply: Reply


class StopRoom(msgspec.Struct, frozen=True):
    room_id: str
    reason: StopReason
    reply: Reply


class FindRoom(msgspec.Struct, frozen=True):
    """Answer: RoomRef for an active room, RoomStats for a stopped one, or RoomNotFound."""

    room_id: str
    reply: Reply


class GetRoomStats(msgspec.Struct, frozen=True):
    """Answer: RoomStats (active or stopped room) or RoomNotFound."""

    room_id: str
    reply: Reply


class GetTotals(msgspec.Struct, frozen=True):
    """Answer: actors.supervisor.ServerTotals."""

    reply: Reply


class GetPeers(msgspec.Struct, frozen=True):
    """Answer: list[PeerInfo] of the room's joined sessions (moderation)."""

    room_id: str
    reply: Reply
    edge: bool = False  # the room's edge on this worker (its origin is elsewhere), not the room


class KickPeer(msgspec.Struct, frozen=True):
    """Answer: None once the session was told (it then closes with `kicked`). Forwarded by
    the supervisor to the room's actor, which bans the user and tells the session."""

    room_id: str
    peer_id: str
    reply: Reply
    edge: bool = False  # the room's edge on this worker, not the room


class PeerInfo(msgspec.Struct, frozen=True):
    peer_id: str
    role: Role
    user_id: str
    joined_at: float  # unix seconds
    connection_state: str  # "connecting" (no peer connection up yet) or "connected"
    bytes_received: int  # host: RTP bytes received from it (0 for a viewer)
    bytes_sent: int  # viewer: RTP payload bytes forwarded to it (0 for a host)
    # viewer: the layer it is sent (low, medium, high, audio_only; None before video) and what
    # the server estimates its link carries (bits a second, its REMB included); None for a host
    video_layer: str | None = None
    estimate_bps: int | None = None


class GetKeyframe(msgspec.Struct, frozen=True):
    """Answer: the newest whole keyframe of an active room's host (bytes: VP8, or H.264 in
    Annex B; Router.latest_keyframe), or None (then a
    keyframe has been asked of the host: try again shortly). Forwarded to the room's actor."""

    room_id: str
    reply: Reply


class GetMetrics(msgspec.Struct, frozen=True):
    """Answer: actors.supervisor.ServerMetrics (for GET /metrics)."""

    reply: Reply


# ---- room requests -------------------------------------------------------------------


class InjectCrash(msgspec.Struct, frozen=True):
    """Debug only: the room actor raises while handling it."""

    reply: Reply


class RecordingEnded(msgspec.Struct, frozen=True):
    """A recording of the room ended by itself (its size or time limit, a disk error): the
    actor stops feeding it if it is still the room's. Nobody waits for the answer."""

    recording: Recording
    reply: Reply


class Join(msgspec.Struct, frozen=True):
    peer_id: str
    role: Role
    user_id: str
    inbox: trio.MemorySendChannel[Any]  # where the room sends PeerEvents to this peer
    reply: Reply


class Leave(msgspec.Struct, frozen=True):
    peer_id: str
    reply: Reply


class MediaEndpoint(Protocol):
    """What the room needs of a peer's negotiated connection (transport.PeerConnection):
    what it sends or receives, and how to send to it (synchronous, never blocking, from the
    media thread or Trio's)."""

    @property
    def sources(self) -> list[SourceStream]: ...  # a host's streams

    @property
    def sinks(self) -> list[SinkStream]: ...  # a viewer's streams

    def send_rtp(self, data: bytes) -> None: ...
    def send_rtcp(self, data: bytes) -> None: ...


PacketHandler = Callable[[bytes], None]


class MediaRoute(msgspec.Struct, frozen=True):
    """The answer to AttachMedia: what the peer's connection calls for each packet it
    receives (on the media thread). The peer installs them on its own connection."""

    on_rtp: PacketHandler | None  # a host's RTP (None for a viewer: it sends none we use)
    on_rtcp: PacketHandler


class AttachMedia(msgspec.Struct, frozen=True):
    """A peer's connection negotiated its offer: route its media (host: publisher;
    viewer: a new downstream). Answer: MediaRoute."""

    peer_id: str
    endpoint: MediaEndpoint
    reply: Reply


class ChooseQuality(msgspec.Struct, frozen=True):
    """A viewer's `set_quality`: the layers it may get from now on. Answer: None."""

    peer_id: str
    quality: Quality
    reply: Reply


class PeerConnectionState(msgspec.Struct, frozen=True):
    """A peer's WebRTC connection became connected (True) or not (False)."""

    peer_id: str
    connected: bool
    reply: Reply


# ---- events from a room to its peers -------------------------------------------------


class RoomChanged(msgspec.Struct, frozen=True):
    viewer_count: int
    has_host: bool


class Restarting(msgspec.Struct, frozen=True):
    """The server is restarting with its room directory: the room goes on after it; reconnect."""


class RoomStoppedEvent(msgspec.Struct, frozen=True):
    room_id: str
    reason: StopReason


class Kicked(msgspec.Struct, frozen=True):
    """A moderator removed this session (POST /room/{id}/peers/{peer_id}/kick)."""


class QualityChanged(msgspec.Struct, frozen=True):
    """To a viewer: the layer it is sent changed (its `quality` message)."""

    layer: LayerName | None
    width: int | None
    height: int | None
    reason: QualityReason


class LayersNeeded(msgspec.Struct, frozen=True):
    """To a simulcast host: the rids viewers need now (its `layers` message)."""

    active: list[str]


class HostReplaced(msgspec.Struct, frozen=True):
    """This host session was replaced by a new session of the same user."""
