"""Where a viewer's WebSocket goes when its room has more viewers than one worker should carry
(``[cluster] room_viewers_per_worker``, issue 21).

The front counts the viewer sessions it pipes to each worker, per room. A viewer joins the
room's own worker (its *origin*: where the host publishes) while that has fewer than the limit
of the room's viewers; past it, a worker that already holds some of the room's viewers (an
*edge*) and has room under the limit, else the worker with the fewest of the room's viewers
then the fewest sessions; when every worker is at the limit, the one with the fewest of the
room's viewers. Before a viewer goes to an edge, the edge is made sure of (api/worker_routes.py:
``/internal/rooms/{id}/edge`` on the edge, then ``/relay`` on the origin when the edge is new),
once at a time per room. If that fails the viewer joins the origin: placement never refuses.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx
import trio

from front.worker_pool import WorkerPool

log = logging.getLogger("bitbasel.front")

EDGE_SETUP_SECONDS = 5.0


@dataclass
class ViewerPlacement:
    pool: WorkerPool
    limit: int  # viewers of a room per worker; 0: all on the origin
    viewers: Counter[tuple[str, int]] = field(default_factory=Counter)  # (room, worker) -> piped viewer sessions
    _room_info: dict[str, tuple[str, str]] = field(default_factory=dict)  # room -> (post, host user)
    # room -> (its origin, {edge worker: the edge's relay address and link}): relayed again after
    # the origin's worker restarts (``origin_restarted``)
    _edges: dict[str, tuple[int, dict[int, tuple[list[Any], int]]]] = field(default_factory=dict)
    _locks: dict[str, trio.Lock] = field(default_factory=dict)

    async def place(self, room_id: str, origin: int) -> int:
        """The worker a new viewer of the room joins (see the module's docstring), counted
        there from now on: call :meth:`left` when its session ends."""
        if self.limit == 0 or len(self.pool.workers) < 2 or self.viewers[(room_id, origin)] < self.limit:
            self.viewers[(room_id, origin)] += 1  # no await since the check: no other viewer in between
            return origin
        lock = self._locks.setdefault(room_id, trio.Lock())
        async with lock:  # one placement past the limit at a time: an edge is made once
            index = self._choose(room_id, origin)
            if index != origin:
                try:
                    with trio.fail_after(EDGE_SETUP_SECONDS):
                        await self._ensure_edge(room_id, origin, index)
                except (httpx.HTTPError, trio.TooSlowError, EdgeRefused) as exc:
                    log.warning("room %s: no edge on worker %d (%s); the viewer joins the origin", room_id, index, exc)
                    index = origin
            self.viewers[(room_id, index)] += 1
            return index

    def left(self, room_id: str, index: int) -> None:
        """A viewer placed by :meth:`place` ended its session."""
        key = (room_id, index)
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
        pool = self.pool
        for room_id, (origin, edges) in list(self._edges.items()):
            if origin != index:
                continue
            for edge_index, (address, link) in edges.items():
                try:
                    with trio.fail_after(EDGE_SETUP_SECONDS):
                        worker = await pool.ready_worker(origin)
                        response = await pool.http.post(
                            f"{worker.url}/internal/rooms/{room_id}/relay",
                            json={"address": address, "link": link},
                            headers=pool.auth,
                        )
                except (httpx.HTTPError, trio.TooSlowError) as exc:
                    log.warning("room %s: no relay again to worker %d (%s)", room_id, edge_index, exc)
                    continue
                if response.status_code == 200:
                    log.info("room %s: worker %d relays to worker %d again", room_id, origin, edge_index)

    def edges_of(self, room_id: str, origin: int) -> list[int]:
        """The workers other than the origin that hold viewers of the room now."""
        return sorted(index for room, index in self.viewers if room == room_id and index != origin)

    def _choose(self, room_id: str, origin: int) -> int:
        counts = {w.index: self.viewers[(room_id, w.index)] for w in self.pool.workers if w.ready.is_set()}
        others = {i: n for i, n in counts.items() if i != origin}
        if not others:
            return origin
        filling = [i for i, n in others.items() if 0 < n < self.limit]
        if filling:
            return min(filling, key=lambda i: (-others[i], i))  # fill the fullest edge first
        sessions = Counter[int]()
        for (_room, index), n in self.viewers.items():
            sessions[index] += n
        return min(others, key=lambda i: (others[i], sessions[i], i))

    async def _ensure_edge(self, room_id: str, origin: int, index: int) -> None:
        pool = self.pool
        post_id, host_user_id = await self._info(room_id, origin)
        edge_worker = await pool.ready_worker(index)
        response = await pool.http.post(
            f"{edge_worker.url}/internal/rooms/{room_id}/edge",
            json={"post_id": post_id, "host_user_id": host_user_id},
            headers=pool.auth,
        )
        if response.status_code != 200:
            raise EdgeRefused(f"worker {index}: {response.status_code} {response.text[:200]}")
        edge = response.json()
        self._edges.setdefault(room_id, (origin, {}))[1][index] = (edge["address"], edge["link"])
        if edge["existing"] and edge["relayed"]:
            return
        origin_worker = await pool.ready_worker(origin)
        response = await pool.http.post(
            f"{origin_worker.url}/internal/rooms/{room_id}/relay",
            json={"address": edge["address"], "link": edge["link"]},
            headers=pool.auth,
        )
        if response.status_code != 200:
            raise EdgeRefused(f"worker {origin} (origin): {response.status_code} {response.text[:200]}")
        log.info(
            "room %s: viewers beyond %d go to worker %d, relayed from worker %d", room_id, self.limit, index, origin
        )

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


class EdgeRefused(Exception):
    """A worker did not set up its part of an edge."""
