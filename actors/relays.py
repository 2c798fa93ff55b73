"""A room across the workers of a node (issue 21): its origin and its edges.

The **origin** is the room where its host publishes; an **edge** is the same room on another
worker, for the viewers placed there (``[cluster] room_viewers_per_worker``, the front
decides). Between them one relay link (transport/relay_port.py): the host's RTP and RTCP go
down it unchanged (media/router.py's relays, on the media thread), the edge's keyframe
requests and NACKs come up. Beside the media, each end sends the other its state twice a
second on the link's control channel (msgspec JSON), which also tells each end the other is
alive:

- the origin: the host's streams (None: no publisher), whether the room has a host, every
  viewer of the room (its own and each edge's), whether the room stopped;
- an edge: how many viewers it has, and the host's layers they need (the origin keeps those
  flowing: dynacast over the relay).

An edge not heard for ``RELAY_TIMEOUT_SECONDS`` is dropped by its origin. An origin not heard
for that long is lost: the edge's viewers are told the room has no host. The edge's link takes
the next origin that names it once the last has been silent a second (the origin's worker
restarted with the room, and the front relayed to the edge again: the viewers only saw a gap);
after ``ORIGIN_RETURN_SECONDS`` the edge stops as for a restart (its viewers reconnect, and the
front places them again).

The room actor owns both objects below (actors/room.py); their methods run on the Trio thread,
the link's callbacks on the media thread (under the media lock), which hand control messages to
the room's mailbox.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Final

import msgspec

from media.streams import SourceStream
from transport.relay_port import RelayLink

log = logging.getLogger("bitbasel.relay")

#: How often each end of a relay sends its state (and proves it is alive).
STATE_EVERY_SECONDS: Final = 0.5
#: A relay end not heard for this long is gone (an edge: its origin is lost for now).
RELAY_TIMEOUT_SECONDS: Final = 3.0
#: An edge whose origin is lost waits this long for it to come back (its worker restarted: the
#: front relays to the edge again), its viewers kept; then it stops and they reconnect.
ORIGIN_RETURN_SECONDS: Final = 10.0


class OriginState(msgspec.Struct, frozen=True, tag="origin"):
    streams: list[SourceStream] | None  # the host's, as its router forwards them; None: no publisher
    has_host: bool
    viewer_count: int  # every viewer of the room, wherever it is
    stopped: str | None = None  # the room stopped (its reason)
    # the simulcast layers' SSRCs: a host stops sending the rid once its layers are reported on
    layer_ssrcs: dict[int, str] = msgspec.field(default_factory=dict)
    banned_users: list[str] = msgspec.field(default_factory=list)  # kicked: refused on the edges too


class EdgeState(msgspec.Struct, frozen=True, tag="edge"):
    viewer_count: int
    needed_rids: list[str] | None = None  # the host's rids its viewers need (dynacast); None: any
    banned_users: list[str] = msgspec.field(default_factory=list)  # kicked there: refused everywhere


RelayMessage = OriginState | EdgeState
_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(RelayMessage)


def encode(message: RelayMessage) -> bytes:
    return _encoder.encode(message)


def decode(payload: bytes) -> RelayMessage | None:
    """A control message, or None (counted by the caller) for anything else."""
    try:
        message: RelayMessage = _decoder.decode(payload)
    except msgspec.DecodeError:
        return None
    return message


@dataclass(slots=True)
class EdgeOfOrigin:
    """The origin's view of one of its edges."""

    link: RelayLink
    viewer_count: int = 0
    opened_at: float = field(default_factory=time.monotonic)

    def silent(self, now: float) -> bool:
        return now - max(self.link.last_heard, self.opened_at) > RELAY_TIMEOUT_SECONDS


@dataclass(slots=True)
class OriginRelays:
    """The origin's edges, by relay id (its link's number here)."""

    edges: dict[str, EdgeOfOrigin] = field(default_factory=dict)

    @property
    def viewer_count(self) -> int:
        return sum(edge.viewer_count for edge in self.edges.values())

    def gone(self, now: float) -> list[str]:
        """The edges not heard for RELAY_TIMEOUT_SECONDS (a new one: from its opening)."""
        return [relay_id for relay_id, edge in self.edges.items() if edge.silent(now)]


@dataclass(slots=True)
class EdgeFeed:
    """An edge room's link to its origin, and what the origin last said."""

    link: RelayLink
    opened_at: float = field(default_factory=time.monotonic)
    origin: OriginState | None = None  # None until the origin's first state
    attached: list[SourceStream] | None = None  # the streams the router was given

    def silent(self, now: float, timeout: float = RELAY_TIMEOUT_SECONDS) -> bool:
        heard = max(self.link.last_heard, self.opened_at)
        return now - heard > timeout
