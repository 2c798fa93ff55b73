"""WHEP viewers placed over a node's workers as WebSocket viewers are (``[cluster]
room_viewers_per_worker``, front/viewer_placement.py), and counted against ``[rooms]
max_viewers_per_room`` by the room's origin front with them.

A WebSocket viewer's place is given back when its connection through the front ends; a WHEP
session has no such connection. So the front names the worker in the session's URL
(``/whep/{room_id}/{worker}.{session_id}``: its PATCH and DELETE go back there), gives the place
back on its DELETE, and every RECONCILE_SECONDS asks each worker holding its WHEP sessions
which are still live (``GET /internal/http-sessions``), giving back the places of the others
(ended by a kick, the room's stop, a lost peer connection, the worker's restart).

Not yet: placing WHEP viewers on other nodes (their sessions would have to be found there too):
past every worker's share they join a worker of this node.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import httpx
import trio

from front.viewer_placement import ViewerPlacement
from front.worker_pool import WorkerPool

log = logging.getLogger("bitbasel.front")

RECONCILE_SECONDS = 2.0


@dataclass
class WhepPlacement:
    pool: WorkerPool
    placement: ViewerPlacement
    _sessions: dict[str, tuple[str, int]] = field(default_factory=dict)  # "{worker}.{session}" -> (room, worker)

    def located(self, session_id: str) -> tuple[int, str] | None:
        """(worker, the worker's session id) of a session id this front gave out, else None."""
        worker, dot, inner = session_id.partition(".")
        if not dot or not worker.isdigit() or not inner:
            return None
        index = int(worker)
        return (index, inner) if any(w.index == index for w in self.pool.workers) else None

    def record(self, room_id: str, worker: int, session_id: str) -> str:
        """A session made on ``worker`` (its place counted by ``placement.place``): the id the
        client is given."""
        key = f"{worker}.{session_id}"
        self._sessions[key] = (room_id, worker)
        return key

    def forget(self, key: str) -> None:
        """The session ended: its place is given back (once)."""
        entry = self._sessions.pop(key, None)
        if entry is not None:
            self.placement.left(*entry)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            await trio.sleep(RECONCILE_SECONDS)
            await self.reconcile()

    async def reconcile(self) -> None:
        """Give back the places of sessions their worker no longer has (a worker that does not
        answer now is asked again next time)."""
        for worker in sorted({w for _, w in self._sessions.values()}):
            # only those recorded before the question: a session recorded since may be younger
            # than the worker's answer (it exists there before its 201 reached this front)
            asked = [k for k, (_, w) in self._sessions.items() if w == worker]
            try:
                ready = await self.pool.ready_worker(worker)
                with trio.fail_after(RECONCILE_SECONDS):
                    answer = await self.pool.http.get(f"{ready.url}/internal/http-sessions", headers=self.pool.auth)
                live = set(answer.json()["sessions"]) if answer.status_code == 200 else None
            except (httpx.HTTPError, trio.TooSlowError, ValueError, KeyError, TypeError):
                live = None
            if live is None:
                continue
            ended = [k for k in asked if k.partition(".")[2] not in live]
            for key in ended:
                self.forget(key)
            if ended:
                log.info("worker %d: %d WHEP session(s) ended there; their places are given back", worker, len(ended))
