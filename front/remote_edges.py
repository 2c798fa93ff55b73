"""The rooms of other nodes this node holds viewers of (issue 21), on its front.

A room's origin node, once its own workers have their share of the room's viewers
(front/viewer_placement.py), asks another node for an edge: ``POST /cluster/rooms/{id}/edge``
(the caller proves it is a node of the cluster with ``X-BitBasel-Relayed-By``). This node puts
the edge on one of its workers (the one it already has for the room, else its least-loaded), SRTP-
keyed with the key both fronts derive (front/viewer_placement.py's ``remote_relay_key``), and
answers the edge's public relay address and link. The origin then relays to it and sends the
viewers' WebSockets here, relayed: they go to that worker (``worker_of``). The origin's
moderation reaches the edge's sessions through ``/cluster/rooms/{id}/edge/peers[/{peer}/kick]``.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx
import msgspec

from front.viewer_placement import remote_relay_key
from front.worker_pool import WorkerPool

log = logging.getLogger("bitbasel.front")


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
    _workers: dict[str, int] = field(default_factory=dict)  # room -> the worker holding its edge here
    _viewers: Counter[str] = field(default_factory=Counter)  # room -> viewer sessions piped to that edge

    async def open(self, room_id: str, post_id: str, host_user_id: str) -> dict[str, Any]:
        """Make sure of the room's edge here; its worker's answer (address, link, existing, relayed)."""
        pool = self.pool
        index = self._workers.get(room_id)
        if index is None:
            index = await pool.least_loaded()
        worker = await pool.ready_worker(index)
        key = remote_relay_key(self.secret, room_id, self.node_id).hex()
        body = {"post_id": post_id, "host_user_id": host_user_id, "key": key}
        answer = await pool.http.post(f"{worker.url}/internal/rooms/{room_id}/edge", json=body, headers=pool.auth)
        if answer.status_code != 200:
            raise RemoteEdgeRefused(answer.status_code, answer.text)
        if room_id not in self._workers:
            log.info("room %s: an edge on worker %d for its origin on another node", room_id, index)
        self._workers[room_id] = index
        return dict(answer.json())

    def worker_of(self, room_id: str) -> int | None:
        """The worker of the room's edge here, if this node holds one."""
        return self._workers.get(room_id)

    def joined(self, room_id: str) -> None:
        self._viewers[room_id] += 1

    def left(self, room_id: str) -> None:
        """A viewer of the edge ended its session; with the last, the room is forgotten here
        (its edge stops by itself once idle, actors/supervisor.py)."""
        self._viewers[room_id] -= 1
        if self._viewers[room_id] <= 0:
            del self._viewers[room_id]
            self._workers.pop(room_id, None)

    async def forward(self, method: str, room_id: str, rest: str) -> httpx.Response | None:
        """The origin's moderation call ``rest`` (``peers`` or ``peers/{id}/kick``) on the room's
        edge here; None when this node holds none."""
        index = self._workers.get(room_id)
        if index is None:
            return None
        worker = await self.pool.ready_worker(index)
        url = f"{worker.url}/internal/rooms/{room_id}/edge/{rest}"
        return await self.pool.http.request(method, url, headers=self.pool.auth)
