"""Where a viewer's WebSocket goes when its room has more viewers than one worker should carry
(``[cluster] room_viewers_per_worker``, issue 21).

The front counts the viewer sessions it pipes to each worker, per room. A viewer joins the
room's own worker (its *origin*: where the host publishes) while that has fewer than the limit
of the room's viewers; past it, a worker that already holds some of the room's viewers (an
*edge*) and has room under the limit, else the worker with the fewest of the room's viewers
then the fewest sessions; when every worker is at the limit, the one with the fewest of the
room's viewers. Before a viewer goes to an edge, the edge is made sure of (api/worker_routes.py:
``/internal/rooms/{id}/edge`` on the edge, then ``/relay`` on the origin when the edge is new),
once at a time per room. If that fails the viewer joins the origin: placement never refuses,
but for ``[rooms] max_viewers_per_room``: every viewer of a room comes through its origin
node's front, which counts them all wherever they sit, so the limit holds across workers and
nodes exactly (each worker's own check works on the counts it last heard).

In a cluster, once every worker of the node has the limit, the next viewers go to another live
node (up to the limit times its workers; then the next node): its front makes sure of the edge
the viewer joins there (``POST /cluster/rooms/{id}/edge``, front/remote_edges.py), the origin
relays to each such edge over SRTP with the key both fronts derive (transport/relay_crypto.py),
and the viewer's WebSocket is relayed to that node's front, which pipes it to that edge. A node
that does not make the edge is passed over for PASS_OVER_SECONDS: its viewers, reconnecting, join
here or on another node.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx
import trio

from front.cluster_node import RELAYED_BY, ClusterNode, OnNode
from front.worker_pool import WorkerPool
from transport.relay_crypto import relay_key

log = logging.getLogger("bitbasel.front")

EDGE_SETUP_SECONDS = 5.0
#: A node that did not make an edge is passed over this long (its heartbeat may outlive it).
PASS_OVER_SECONDS = 10.0

#: Where a viewer goes: a worker of this node (its index), or another node (its id) as counted.
Place = int | str


def remote_relay_key(secret: bytes, room_id: str, edge_node_id: str) -> bytes:
    """The SRTP key of the relay from a room's origin to its edge on node ``edge_node_id``: both
    fronts derive it from the cluster's secret; nothing of it crosses between nodes."""
    return relay_key(secret, f"{room_id}>{edge_node_id}")


@dataclass
class ViewerPlacement:
    pool: WorkerPool
    limit: int  # viewers of a room per worker; 0: all on the origin
    max_per_room: int  # [rooms] max_viewers_per_room
    cluster: ClusterNode | None = None  # set when the node is in a cluster: other nodes take edges
    viewers: Counter[tuple[str, Place]] = field(default_factory=Counter)  # (room, place) -> piped viewer sessions
    totals: Counter[str] = field(default_factory=Counter)  # room -> its viewer sessions here, placed or being placed
    _room_info: dict[str, tuple[str, str]] = field(default_factory=dict)  # room -> (post, host user)
    # room -> (its origin, {edge's relay address: its link and key (hex, "" on this node)}): relayed
    # again after the origin's worker restarts (``origin_restarted``)
    _edges: dict[str, tuple[int, dict[tuple[str, int], tuple[int, str]]]] = field(default_factory=dict)
    _locks: dict[str, trio.Lock] = field(default_factory=dict)
    _passed_over: dict[str, float] = field(default_factory=dict)  # node -> trio time until which it is

    async def place(self, room_id: str, origin: int, *, other_nodes: bool = True) -> int | OnNode:
        """The worker (or other node) a new viewer of the room joins (see the module's
        docstring), counted there from now on: call :meth:`left` with :func:`place_key` of it
        when its session ends. Raises RoomFull at ``max_per_room``. ``other_nodes=False``: a
        worker of this node only (WHEP viewers, front/whep_placement.py)."""
        if self.totals[room_id] >= self.max_per_room:
            raise RoomFull(f"room is full ({self.max_per_room} viewers)")
        self.totals[room_id] += 1  # before any await: no other viewer passes the check meanwhile
        alone = len(self.pool.workers) < 2 and self.cluster is None
        if self.limit == 0 or alone or self.viewers[(room_id, origin)] < self.limit:
            self.viewers[(room_id, origin)] += 1  # no await since the check: no other viewer in between
            return origin
        try:
            choice = await self._place_past_limit(room_id, origin, other_nodes)
        except BaseException:  # cancelled (the client went): not counted
            self._uncount(room_id)
            raise
        self.viewers[(room_id, place_key(choice))] += 1
        return choice

    async def _place_past_limit(self, room_id: str, origin: int, other_nodes: bool) -> int | OnNode:
        lock = self._locks.setdefault(room_id, trio.Lock())
        async with lock:  # one placement past the limit at a time: an edge is made once
            choice = self._choose(room_id, origin, other_nodes)
            if choice != origin:
                try:
                    with trio.fail_after(EDGE_SETUP_SECONDS):
                        await self._ensure_edge(room_id, origin, choice)
                except (httpx.HTTPError, trio.TooSlowError, ValueError, KeyError, EdgeRefused) as exc:
                    where = f"node {choice.node_id}" if isinstance(choice, OnNode) else f"worker {choice}"
                    log.warning("room %s: no edge on %s (%s); the viewer joins the origin", room_id, where, exc)
                    if isinstance(choice, OnNode):
                        self._passed_over[choice.node_id] = trio.current_time() + PASS_OVER_SECONDS
                    choice = origin
            return choice

    def _uncount(self, room_id: str) -> None:
        self.totals[room_id] -= 1
        if self.totals[room_id] <= 0:
            del self.totals[room_id]

    def left(self, room_id: str, place: Place) -> None:
        """A viewer placed by :meth:`place` ended its session."""
        self._uncount(room_id)
        key = (room_id, place)
        self.viewers[key] -= 1
        if self.viewers[key] <= 0:
            del self.viewers[key]
            if not any(room == room_id for room, _ in self.viewers):  # the room has no viewer left here
                self._room_info.pop(room_id, None)
                self._edges.pop(room_id, None)
                lock = self._locks.get(room_id)
                if lock is not None and not lock.locked() and not lock.statistics().tasks_waiting:
                    del self._locks[room_id]

    async def origin_restarted(self, index: int) -> None:
        """Worker ``index`` started again: each room it is the origin of (back from its room
        directory) relays again to the edges that kept that room's viewers."""
        for room_id, (origin, edges) in list(self._edges.items()):
            if origin != index:
                continue
            for address, (link, key) in edges.items():
                try:
                    with trio.fail_after(EDGE_SETUP_SECONDS):
                        await self._relay(room_id, origin, list(address), link, key)
                except (httpx.HTTPError, trio.TooSlowError, EdgeRefused) as exc:
                    log.warning("room %s: no relay again to %s:%d (%s)", room_id, *address, exc)
                    continue
                log.info("room %s: worker %d relays to %s:%d again", room_id, origin, *address)

    def edges_of(self, room_id: str, origin: int) -> list[int]:
        """The workers other than the origin that hold viewers of the room now."""
        return sorted(p for room, p in self.viewers if room == room_id and isinstance(p, int) and p != origin)

    def remote_edges_of(self, room_id: str) -> list[OnNode]:
        """The other live nodes that hold viewers of the room now."""
        live = self.cluster.live if self.cluster is not None else {}
        places = sorted(p for room, p in self.viewers if room == room_id and isinstance(p, str))
        return [OnNode(node, live[node].url) for node in places if node in live]

    def _choose(self, room_id: str, origin: int, other_nodes: bool) -> int | OnNode:
        counts = {w.index: self.viewers[(room_id, w.index)] for w in self.pool.workers if w.ready.is_set()}
        counts.setdefault(origin, self.viewers[(room_id, origin)])
        others = {i: n for i, n in counts.items() if i != origin}
        filling = [i for i, n in others.items() if 0 < n < self.limit]
        if filling:
            return min(filling, key=lambda i: (-others[i], i))  # fill the fullest edge first
        sessions = Counter[Place]()
        for (_room, place), n in self.viewers.items():
            sessions[place] += n
        local = min(others, key=lambda i: (others[i], sessions[i], i)) if others else origin
        if counts[local] < self.limit:
            return local
        other = self._other_node(room_id) if other_nodes else None
        return other or local  # every worker here has its share

    def _other_node(self, room_id: str) -> OnNode | None:
        """Another live node for the room's next viewer: the fullest of those under their share
        (the limit times their workers) that hold some, else the least-loaded one that holds
        none; None when all are full."""
        cluster = self.cluster
        if cluster is None:
            return None
        now = trio.current_time()
        nodes = [
            n
            for n in cluster.live.values()
            if n.node_id != cluster.node_id and not n.draining and self._passed_over.get(n.node_id, now) <= now
        ]
        held = {n.node_id: self.viewers[(room_id, n.node_id)] for n in nodes}
        filling = [n for n in nodes if 0 < held[n.node_id] < self.limit * max(len(n.workers), 1)]
        if filling:
            best = min(filling, key=lambda n: (-held[n.node_id], n.node_id))
            return OnNode(best.node_id, best.url)
        fresh = [n for n in nodes if held[n.node_id] == 0]
        if not fresh:
            return None
        best = min(fresh, key=lambda n: (n.load, n.node_id))
        return OnNode(best.node_id, best.url)

    async def _ensure_edge(self, room_id: str, origin: int, choice: int | OnNode) -> None:
        pool = self.pool
        post_id, host_user_id = await self._info(room_id, origin)
        body = {"post_id": post_id, "host_user_id": host_user_id}
        if isinstance(choice, OnNode):
            assert self.cluster is not None
            response = await pool.http.post(
                f"{choice.url}/cluster/rooms/{room_id}/edge",
                json=body,
                headers={RELAYED_BY: self.cluster.relay_header()},
            )
            key = remote_relay_key(self.cluster.secret, room_id, choice.node_id).hex()
        else:
            edge_worker = await pool.ready_worker(choice)
            response = await pool.http.post(
                f"{edge_worker.url}/internal/rooms/{room_id}/edge", json=body, headers=pool.auth
            )
            key = ""
        if response.status_code != 200:
            raise EdgeRefused(f"{_named(place_key(choice))}: {response.status_code} {response.text[:200]}")
        edge = response.json()
        address = (str(edge["address"][0]), int(edge["address"][1]))
        self._edges.setdefault(room_id, (origin, {}))[1][address] = (int(edge["link"]), key)
        if edge["existing"] and edge["relayed"]:
            return
        await self._relay(room_id, origin, edge["address"], edge["link"], key)
        log.info(
            "room %s: viewers beyond %d go to %s, relayed from worker %d",
            room_id,
            self.limit,
            _named(place_key(choice)),
            origin,
        )

    async def _relay(self, room_id: str, origin: int, address: list[Any], link: int, key: str) -> None:
        """The origin's worker relays the room to an edge (SRTP-keyed with ``key`` on another node)."""
        pool = self.pool
        origin_worker = await pool.ready_worker(origin)
        response = await pool.http.post(
            f"{origin_worker.url}/internal/rooms/{room_id}/relay",
            json={"address": address, "link": link, "key": key},
            headers=pool.auth,
        )
        if response.status_code != 200:
            raise EdgeRefused(f"worker {origin} (origin): {response.status_code} {response.text[:200]}")

    async def _info(self, room_id: str, origin: int) -> tuple[str, str]:
        info = self._room_info.get(room_id)
        if info is None:
            worker = await self.pool.ready_worker(origin)
            response = await self.pool.http.get(f"{worker.url}/room/{room_id}/stats", headers=self.pool.auth)
            if response.status_code != 200:
                raise EdgeRefused(f"the room's stats: {response.status_code}")
            stats = response.json()
            info = self._room_info[room_id] = (stats["post_id"], stats["host_user_id"])
        return info


def place_key(choice: int | OnNode) -> Place:
    """How :meth:`ViewerPlacement.place`'s answer is counted (and given back to ``left``)."""
    return choice.node_id if isinstance(choice, OnNode) else choice


def _named(place: Place) -> str:
    return f"node {place}" if isinstance(place, str) else f"worker {place}"


class RoomFull(Exception):
    """The room has ``max_viewers_per_room`` viewers (``room_full`` to the viewer)."""


class EdgeRefused(Exception):
    """A worker (or another node) did not set up its part of an edge."""
