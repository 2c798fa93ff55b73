"""The rooms of other nodes this node holds viewers of (issue 21), on its front.

A room's origin node, once its own workers have their share of the room's viewers
(front/viewer_placement.py), asks another node for an edge: ``POST /cluster/rooms/{id}/edge``
(the caller proves it is a node of the cluster with ``X-BitBasel-Relayed-By``). This node puts
the edge on one of its workers (the fullest of its edges of the room under
``room_viewers_per_worker``, else a worker with none, the least busy), SRTP-keyed with the key
both fronts derive (front/viewer_placement.py's ``remote_relay_key``), and answers the edge's
public relay address and link. The origin relays to each such edge and sends the viewers'
WebSockets here, relayed: each goes to an edge the same way (``place``). So a node takes up to
its workers times the limit of a room's viewers, each edge fed straight from the origin (one
hop). The origin's moderation reaches the edges' sessions through
``/cluster/rooms/{id}/edge/peers[/{peer}/kick]``.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx
import msgspec

from front.viewer_placement import remote_relay_key
from front.worker_pool import WorkerPool

log = logging.getLogger("bitbasel.front")

#: A room's edges here are forgotten once none has had a viewer for this long (the edges
#: themselves stop after 10 s without one, actors/supervisor.py).
FORGET_AFTER_SECONDS = 30.0
#: The header with which the origin's front relays a viewer's WebSocket to this node's edge
#: of the room (its value: the room id), beside the relayed-by proof.
EDGE_OF = "X-BitBasel-Edge-Of"


class RemoteEdgeRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The body of ``POST /cluster/rooms/{id}/edge``."""

    post_id: str
    host_user_id: str


class RemoteEdgeRefused(Exception):
    def __init__(self, status: int, text: str) -> None:
        super().__init__(f"{status} {text[:200]}")
        self.status = status


@dataclass
class RemoteEdges:
    pool: WorkerPool
    node_id: str
    secret: bytes  # the cluster's
    limit: int  # [cluster] room_viewers_per_worker: an edge worker's share of a room
    _edges: dict[str, set[int]] = field(default_factory=dict)  # room -> the workers holding an edge of it here
    _viewers: Counter[tuple[str, int]] = field(default_factory=Counter)  # (room, worker) -> piped viewer sessions
    _idle_since: dict[str, float] = field(default_factory=dict)  # room -> when its last viewer here left

    async def open(self, room_id: str, post_id: str, host_user_id: str) -> dict[str, Any]:
        """Make sure of the edge the room's next viewer here joins; its worker's answer
        (address, link, existing, relayed): the origin relays to each edge of the node."""
        pool = self.pool
        self._forget_idle(time.monotonic())
        index = self._next_worker(room_id)
        if index is None:
            held = self._edges.get(room_id, set())
            ready = [w.index for w in pool.workers if w.ready.is_set() and w.index not in held]
            index = min(ready, key=lambda i: (self._sessions(i), i)) if ready else await pool.least_loaded()
        worker = await pool.ready_worker(index)
        key = remote_relay_key(self.secret, room_id, self.node_id).hex()
        body = {"post_id": post_id, "host_user_id": host_user_id, "key": key}
        answer = await pool.http.post(f"{worker.url}/internal/rooms/{room_id}/edge", json=body, headers=pool.auth)
        if answer.status_code != 200:
            raise RemoteEdgeRefused(answer.status_code, answer.text)
        edges = self._edges.setdefault(room_id, set())
        if index not in edges:
            log.info("room %s: an edge on worker %d for its origin on another node", room_id, index)
        edges.add(index)
        if not any(room == room_id for room, _ in self._viewers):
            self._idle_since.setdefault(room_id, time.monotonic())
        return dict(answer.json())

    def _forget_idle(self, now: float) -> None:
        for room_id, since in list(self._idle_since.items()):
            if now - since > FORGET_AFTER_SECONDS:
                del self._idle_since[room_id]
                self._edges.pop(room_id, None)

    def _next_worker(self, room_id: str) -> int | None:
        """Of the workers with an edge of the room, the fullest under the limit; None if all are full."""
        ready = {w.index for w in self.pool.workers if w.ready.is_set()}
        filling = [i for i in self._edges.get(room_id, ()) if i in ready and self._viewers[(room_id, i)] < self.limit]
        return min(filling, key=lambda i: (-self._viewers[(room_id, i)], i)) if filling else None

    def _sessions(self, index: int) -> int:
        return sum(n for (_room, i), n in self._viewers.items() if i == index)

    def place(self, room_id: str) -> int | None:
        """The worker a viewer the room's origin sent here joins (counted there until
        :meth:`left`), or None when this node holds no edge of the room."""
        edges = self._edges.get(room_id)
        if not edges:
            return None
        index = self._next_worker(room_id)
        if index is None:  # every edge full (placements crossed): the least full
            index = min(edges, key=lambda i: (self._viewers[(room_id, i)], i))
        self._viewers[(room_id, index)] += 1
        self._idle_since.pop(room_id, None)
        return index

    def left(self, room_id: str, index: int) -> None:
        """A viewer placed by :meth:`place` ended its session; FORGET_AFTER_SECONDS after the
        room's last here, the room is forgotten (its edges stop by themselves once idle,
        actors/supervisor.py)."""
        self._viewers[(room_id, index)] -= 1
        if self._viewers[(room_id, index)] <= 0:
            del self._viewers[(room_id, index)]
            if not any(room == room_id for room, _ in self._viewers):
                self._idle_since[room_id] = time.monotonic()

    async def forward(self, method: str, room_id: str, rest: str) -> list[httpx.Response]:
        """The origin's moderation call ``rest`` (``peers`` or ``peers/{id}/kick``) on each of
        the room's edges here."""
        answers = []
        for index in sorted(self._edges.get(room_id, ())):
            worker = await self.pool.ready_worker(index)
            url = f"{worker.url}/internal/rooms/{room_id}/edge/{rest}"
            answers.append(await self.pool.http.request(method, url, headers=self.pool.auth))
        return answers
