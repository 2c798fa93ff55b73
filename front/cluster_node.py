"""This node's part in a cluster (`[cluster] redis_url`): its heartbeat, where a room lives, and
the moves of a room from a node that died or drained to this one.

Every node's front answers for every room. It finds the room's row in Redis (written by the
owner's worker, cluster/redis_directory.py) and:
- the room is on this node: its worker serves it;
- the room is on another live node: the request (or WebSocket) is relayed there, once (a
  relayed request is never relayed again: `RELAYED_BY`);
- the room's node is dead (its heartbeat expired) or drained (released its rooms): this node
  claims the room in one atomic step, gives it to its least-loaded worker, and serves it.
  The room keeps its id, post and host user; its clients, reconnecting, resume in it.
A draining node (SIGTERM) takes no new room, claims none, and hands joins to the other nodes.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import socket
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import trio

from cluster.redis_client import RedisUnavailable
from cluster.registry import ClusterRegistry, NodeInfo, WorkerLoad
from cluster.resp import RespError
from core.config import Config
from core.credentials import same_secret
from front.worker_pool import WorkerPool, WorkerUnavailable, release_all

log = logging.getLogger("bitbasel.cluster")

FENCE_AFTER = 0.7  # of node_ttl_seconds without a heartbeat: this node closes its sessions
ROUTE_SECONDS = 8.0  # finding (or taking over) a room's place: then `unavailable`
RELAYED_BY = "X-BitBasel-Relayed-By"  # the node that relayed a request or WebSocket here


@dataclass(frozen=True)
class OnWorker:
    index: int


@dataclass(frozen=True)
class OnNode:
    node_id: str
    url: str


@dataclass(frozen=True)
class Nowhere:
    code: str  # "room_not_found", or "unavailable" (try again: e.g. its node is not reachable yet)
    message: str


Route = OnWorker | OnNode | Nowhere


def node_url(config: Config, port: int) -> str:
    """The base URL other nodes and clients reach this node's front at."""
    if config.cluster.node_url:
        return config.cluster.node_url.rstrip("/")
    scheme = "https" if config.server.tls else "http"
    host = config.ice.announced_address or config.server.host
    if host in ("0.0.0.0", "::", ""):
        host = socket.gethostname()
    return f"{scheme}://{host}:{port}"


def _proof(secret: bytes, node_id: str) -> str:
    return hmac.new(secret, node_id.encode(), hashlib.sha256).hexdigest()


def node_id_of(config: Config, url: str) -> str:
    return config.cluster.node_id or urlsplit(url).netloc


@dataclass
class ClusterNode:
    registry: ClusterRegistry
    url: str
    pool: WorkerPool
    ttl_seconds: float
    secret: bytes = b""  # the cluster's (in Redis): proves a request was relayed by a node (RELAYED_BY)
    draining: bool = False
    last_beat: float = 0.0  # trio time of the latest heartbeat Redis took
    fenced: trio.Event = field(default_factory=trio.Event)  # set: this node's sessions must end
    loads: list[WorkerLoad] = field(default_factory=list)  # the workers', as of the latest beat
    live: dict[str, NodeInfo] = field(default_factory=dict)  # as of the latest heartbeat
    live_read: trio.Event = field(default_factory=trio.Event)  # set (and replaced) each time `live` is read
    redis_ok: bool = True

    @property
    def node_id(self) -> str:
        return self.registry.node_id

    # ---- heartbeats -------------------------------------------------------------------------

    async def beat(self) -> None:
        with trio.move_on_after(self.ttl_seconds / 4):  # a busy worker never holds the heartbeat up
            self.loads = await self.pool.loads()
        workers = self.loads
        info = NodeInfo(
            node_id=self.node_id,
            url=self.url,
            draining=self.draining,
            rooms=sum(w.rooms for w in workers),
            sessions=sum(w.sessions for w in workers),
            workers=workers,
            at=time.time(),
        )
        try:
            await self.registry.heartbeat(info)
            self.last_beat = trio.current_time()
            if self.fenced.is_set():
                self.fenced = trio.Event()
                log.warning("cluster: heartbeats go through again; this node serves rooms again")
            self._set_live(await self.registry.live_nodes())
        except Exception as exc:
            if self.redis_ok:
                log.error(
                    "cluster: heartbeat failed (%s); other nodes take this node's rooms after %.0f s",
                    exc,
                    self.ttl_seconds,
                )
            self.redis_ok = False
            return
        if not self.redis_ok:
            log.warning("cluster: heartbeats go through again")
        self.redis_ok = True

    async def heartbeats(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """A beat every third of the TTL, on a fixed schedule (a slow beat does not push the next)."""
        period = self.ttl_seconds / 3
        next_beat = trio.current_time()
        await self.beat()
        task_status.started()
        while True:
            next_beat = max(next_beat + period, trio.current_time())
            await trio.sleep_until(next_beat)
            await self.beat()

    async def fence(self) -> None:
        """Self-fencing: once this node's heartbeat is older than FENCE_AFTER of the TTL, the other
        nodes are about to take its rooms over; its sessions end (1012, they reconnect and find the
        rooms where they are then) rather than go on beside the new owner's."""
        while True:
            await trio.sleep(self.ttl_seconds / 10)
            lapsed = trio.current_time() - self.last_beat
            if not self.fenced.is_set() and lapsed > FENCE_AFTER * self.ttl_seconds:
                log.error("cluster: no heartbeat for %.1f s: closing this node's sessions (its rooms move)", lapsed)
                self.fenced.set()
                await release_all(self.pool)

    async def refresh(self) -> None:
        """The live nodes as Redis has them now (the heartbeat task refreshes them every beat)."""
        try:
            self._set_live(await self.registry.live_nodes())
        except (RedisUnavailable, RespError) as exc:
            log.warning("cluster: the live nodes could not be read (%s); using the last view", exc)

    def _set_live(self, live: dict[str, NodeInfo]) -> None:
        self.live = live
        self.live_read.set()
        self.live_read = trio.Event()

    async def wait_gone(self, node_id: str) -> None:
        """Return once ``node_id`` is no longer among the live nodes (its heartbeat expired or
        it left), as the heartbeats read them."""
        while node_id in self.live:
            await self.live_read.wait()

    async def drain(self) -> None:
        """Take no new rooms or joins, and free this node's rooms for the others."""
        self.draining = True
        with trio.move_on_after(2):
            await self.beat()
        try:
            released = await self.registry.release_rooms()
            log.info("cluster: draining; %d room(s) released to the other nodes", released)
        except (RedisUnavailable, RespError) as exc:
            log.error("cluster: could not release rooms (%s); they move when this node's heartbeat expires", exc)

    async def leave(self) -> None:
        try:
            await self.registry.leave()
        except (RedisUnavailable, RespError) as exc:
            log.warning("cluster: could not remove this node's heartbeat: %s", exc)

    # ---- relayed requests -------------------------------------------------------------------

    def relay_header(self) -> str:
        """`<node id> <HMAC of it>`: a client cannot pass for a node (RELAYED_BY changes routing)."""
        return f"{self.node_id} {_proof(self.secret, self.node_id)}"

    def is_relayed(self, value: str | None) -> bool:
        """The header proves a node relayed the request; anything else (a client's guess, bytes
        that are not ASCII) is not relayed."""
        node_id, _, proof = (value or "").partition(" ")
        return bool(node_id) and same_secret(proof, _proof(self.secret, node_id))

    # ---- where things go --------------------------------------------------------------------

    def other_node(self) -> NodeInfo | None:
        """The least-loaded other live node that takes rooms."""
        others = [n for n in self.live.values() if n.node_id != self.node_id and not n.draining]
        return min(others, key=lambda n: (n.load, n.node_id)) if others else None

    def node_for_new_room(self) -> NodeInfo | None:
        """The least-loaded live node that takes rooms, this one on a tie; None = this one."""
        takers = [n for n in self.live.values() if not n.draining]
        if not self.draining and self.node_id not in self.live:
            return None  # this node's heartbeat is not through: keep the room here
        if not takers:
            return None
        best = min(takers, key=lambda n: (n.load, n.node_id != self.node_id, n.node_id))
        return None if best.node_id == self.node_id else best

    async def _live(self, node_id: str) -> NodeInfo | None:
        if not node_id:
            return None
        known = self.live.get(node_id)
        if known is not None:
            return known
        if await self.registry.is_live(node_id):  # newer than this node's view
            self._set_live(await self.registry.live_nodes())
            return self.live.get(node_id)
        return None

    async def locate(self, room_id: str, *, relayed: bool) -> Route:
        """Where `room_id` is served; within ROUTE_SECONDS, else `unavailable` (try again)."""
        try:
            with trio.move_on_after(ROUTE_SECONDS):
                return await self._locate(room_id, relayed=relayed)
        except (RedisUnavailable, RespError) as exc:
            return Nowhere("unavailable", f"the room directory did not answer ({exc}); try again")
        return Nowhere("unavailable", f"room {room_id} could not be placed within {ROUTE_SECONDS:g} s; try again")

    async def _locate(self, room_id: str, *, relayed: bool) -> Route:
        for _ in range(3):  # another node may claim the room between our reads
            place = await self.registry.room(room_id)
            if place is None:
                return Nowhere("room_not_found", f"no room {room_id}")
            if place.node == self.node_id and not self.draining:
                if place.worker < len(self.pool.workers):
                    if place.row.stopped_at is None and room_id not in self.pool.room_worker:
                        # not placed or taken over by this front in its life (it restarted, or a
                        # takeover was cut short): make sure its worker holds it (adopt is idempotent)
                        try:
                            await self.pool.adopt(place.worker, place.row)
                        except WorkerUnavailable as exc:
                            return Nowhere("unavailable", f"room {room_id}: {exc}; try again")
                    return OnWorker(place.worker)
            elif place.node and place.node != self.node_id and (owner := await self._live(place.node)) is not None:
                if relayed:
                    return Nowhere("unavailable", f"room {room_id} is on node {owner.node_id}; try again")
                return OnNode(owner.node_id, owner.url)
            if place.row.stopped_at is not None:
                return Nowhere("room_not_found", f"room {room_id} is stopped")
            if self.draining:  # another node takes the room (a relayed request is not relayed again)
                other = self.other_node() if not relayed else None
                if other is None:
                    return Nowhere("unavailable", f"room {room_id} is moving to another node; try again")
                return OnNode(other.node_id, other.url)
            index = await self.pool.least_loaded()
            if await self.registry.claim(room_id, owner=place.node, worker=index):
                gone = f"node {place.node} is gone" if place.node and place.node != self.node_id else "it was released"
                log.warning("cluster: room %s taken over by worker %d (%s)", room_id, index, gone)
                try:
                    await self.pool.adopt(index, place.row)
                except WorkerUnavailable as exc:  # it stays this node's: the next request adopts it again
                    log.error("cluster: room %s: %s", room_id, exc)
                    return Nowhere("unavailable", f"room {room_id} is being taken over here; try again")
                return OnWorker(index)
        return Nowhere("unavailable", f"room {room_id} is moving between nodes; try again")
