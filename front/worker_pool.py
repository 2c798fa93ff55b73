"""A node's media workers (`[cluster] workers = N`): one process each, supervised by the front.

Each worker is a whole server (`app.py --worker-index i`: its own Trio loop, its own UDP media
port `udp_port + i`, its own room directory) listening for HTTP on a loopback port only the
front uses. A worker that exits is logged and started again (the same index: the same UDP port
and room directory, so its rooms come back and their clients resume when they reconnect, as
after any restart). A new room goes to the least-loaded worker (fewest sessions, then rooms).
"""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import msgspec
import trio

from cluster.registry import WorkerLoad
from core.room_directory import RoomRow

log = logging.getLogger("bitbasel.front")

ROOT = Path(__file__).resolve().parent.parent
WORKER_START_SECONDS = 30.0
WORKER_STOP_SECONDS = 25.0  # above a worker's own shutdown budget (sessions, recordings, webhooks)
RESTART_BACKOFF_SECONDS = 0.5


@dataclass
class Worker:
    index: int
    url: str = ""
    pid: int = 0
    restarts: int = 0
    ready: trio.Event = field(default_factory=trio.Event)
    process: trio.Process | None = None


class WorkerUnavailable(Exception):
    """A worker did not answer (it is starting again, or it refused)."""


@dataclass
class WorkerPool:
    argv: list[str]  # app.py's arguments for a worker, without --worker-index
    http: httpx.AsyncClient
    api_key: str
    workers: list[Worker]
    room_worker: dict[str, int] = field(default_factory=dict)  # rooms placed by this front
    post_worker: dict[str, int] = field(default_factory=dict)  # a post's next room where its last went
    stopping: bool = False
    # called (awaited) each time a worker is serving again after a restart, with its index
    after_restart: Callable[[int], Awaitable[None]] | None = None

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}

    # ---- processes --------------------------------------------------------------------------

    async def supervise(self, worker: Worker, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        started = False
        while not self.stopping:
            argv = [sys.executable, str(ROOT / "app.py"), *self.argv, "--worker-index", str(worker.index)]
            # its stdin stays open: the worker ends when it closes, i.e. when this front is gone (app.py)
            process = await trio.lowlevel.open_process(
                argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=str(ROOT)
            )
            worker.process = process
            code: int | None = None
            try:
                worker.pid = process.pid
                try:
                    url = await self._listening_url(process)
                except (RuntimeError, trio.TooSlowError):
                    if not started:
                        raise  # the first start fails: the front does not start
                    log.exception("worker %d did not start again", worker.index)
                    url = ""
                if url:
                    worker.url = url
                    worker.ready.set()
                    log.info("worker %d (pid %d) serving on %s", worker.index, process.pid, url)
                    if not started:
                        started = True
                        task_status.started()
                    elif self.after_restart is not None:
                        try:
                            await self.after_restart(worker.index)
                        except Exception:  # a bug there must not stop the worker's supervision
                            log.exception("after worker %d restarted", worker.index)
                    code = await process.wait()
            finally:
                with trio.CancelScope(shield=True):
                    await self._terminate(process)
            worker.ready = trio.Event()
            if self.stopping:
                log.info("worker %d (pid %d) stopped", worker.index, worker.pid)
                return
            worker.restarts += 1
            log.error("worker %d (pid %d) exited with %s; starting it again", worker.index, worker.pid, code)
            await trio.sleep(RESTART_BACKOFF_SECONDS)

    @staticmethod
    async def _terminate(process: trio.Process) -> None:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
            with trio.move_on_after(WORKER_STOP_SECONDS):
                await process.wait()
            if process.returncode is None:
                process.kill()
                await process.wait()

    async def stop(self) -> None:
        """SIGTERM every worker (their sessions are told `restarting`, 1012) and wait for them."""
        self.stopping = True
        async with trio.open_nursery() as nursery:
            for worker in self.workers:
                if worker.process is not None:
                    nursery.start_soon(self._terminate, worker.process)

    @staticmethod
    async def _listening_url(process: trio.Process) -> str:
        assert process.stdout is not None
        buffer = b""
        with trio.fail_after(WORKER_START_SECONDS):
            while b"\n" not in buffer:
                chunk = await process.stdout.receive_some(4096)
                if not chunk:
                    raise RuntimeError(f"a worker exited before serving (code {await process.wait()})")
                buffer += chunk
        line = buffer.split(b"\n", 1)[0].decode().strip()
        if not line.startswith("listening on "):
            raise RuntimeError(f"a worker said {line!r} instead of 'listening on'")
        return line.removeprefix("listening on ")

    async def ready_worker(self, index: int) -> Worker:
        worker = self.workers[index]
        with trio.fail_after(WORKER_START_SECONDS):
            await worker.ready.wait()
        return worker

    # ---- what the workers hold --------------------------------------------------------------

    async def worker_stats(self, worker: Worker) -> dict[str, Any] | None:
        try:
            response = await self.http.get(worker.url + "/stats", headers=self.auth)
            return dict(response.json()) if response.status_code == 200 else None
        except (httpx.HTTPError, ValueError):
            return None

    async def snapshot(self) -> list[tuple[Worker, dict[str, Any] | None]]:
        """Each worker with its `/stats` (None while it is not ready or did not answer)."""
        found: dict[int, dict[str, Any] | None] = {}

        async def stats_of(worker: Worker) -> None:
            found[worker.index] = await self.worker_stats(worker) if worker.ready.is_set() else None

        async with trio.open_nursery() as nursery:
            for worker in self.workers:
                nursery.start_soon(stats_of, worker)
        return [(worker, found.get(worker.index)) for worker in self.workers]

    async def loads(self) -> list[WorkerLoad]:
        """Each worker's sessions and rooms (0 for one that did not answer)."""
        return [
            WorkerLoad(worker.index, worker.pid, worker.restarts, *_rooms_and_sessions(stats))
            for worker, stats in await self.snapshot()
        ]

    async def least_loaded(self) -> int:
        """The answering worker with the fewest sessions, then rooms (0 when none answers)."""
        loads = {
            worker.index: _rooms_and_sessions(stats)[::-1]
            for worker, stats in await self.snapshot()
            if stats is not None
        }
        return min(loads, key=lambda i: (loads[i], i)) if loads else 0

    async def node_stats(self) -> dict[str, Any]:
        """The workers' `/stats` summed, with a per-worker breakdown (`workers`)."""
        per_worker: list[dict[str, Any]] = []
        totals: dict[str, float] = {}
        for worker, snap in await self.snapshot():
            rooms = sorted(room for room, index in self.room_worker.items() if index == worker.index)
            per_worker.append(
                {"index": worker.index, "pid": worker.pid, "restarts": worker.restarts, "rooms": rooms, "stats": snap}
            )
            add_numbers(totals, snap)
        return {**totals, "workers": per_worker}

    async def worker_of_room(self, room_id: str) -> int | None:
        index = self.room_worker.get(room_id)
        if index is not None:
            return index
        for worker in self.workers:  # not placed by this front (it restarted): ask them
            if not worker.ready.is_set():
                continue
            try:
                found = await self.http.get(f"{worker.url}/room/{room_id}/stats", headers=self.auth)
            except httpx.HTTPError:
                continue
            if found.status_code == 200:
                self.room_worker[room_id] = worker.index
                return worker.index
        return None

    def placed(self, room_id: str, post_id: str, index: int) -> None:
        self.room_worker[room_id] = index
        self.post_worker[post_id] = index

    async def adopt(self, index: int, row: RoomRow) -> None:
        """Give worker `index` a room another node held (api/worker_routes.py); a room it holds
        already is answered as such."""
        try:
            worker = await self.ready_worker(index)
        except trio.TooSlowError as exc:
            raise WorkerUnavailable(f"worker {index} is not up") from exc
        try:
            answer = await self.http.post(
                worker.url + "/internal/rooms/adopt", content=msgspec.json.encode(row), headers=self.auth
            )
        except httpx.HTTPError as exc:
            raise WorkerUnavailable(f"worker {index} did not answer: {exc}") from exc
        if answer.status_code != 200:
            raise WorkerUnavailable(f"worker {index} refused room {row.room_id}: {answer.text}")
        self.placed(row.room_id, row.post_id, index)


async def release_all(pool: WorkerPool) -> None:
    """Self-fencing: every worker stops its rooms as for a restart, and this front forgets where
    rooms were (a room that comes back here is adopted again)."""
    pool.room_worker.clear()
    pool.post_worker.clear()

    async def release(worker: Worker) -> None:
        if worker.ready.is_set():
            try:
                await pool.http.post(worker.url + "/internal/rooms/release", headers=pool.auth)
            except httpx.HTTPError as exc:
                log.error("worker %d did not release its rooms: %s", worker.index, exc)

    async with trio.open_nursery() as nursery:
        for worker in pool.workers:
            nursery.start_soon(release, worker)


def _rooms_and_sessions(stats: dict[str, Any] | None) -> tuple[int, int]:
    return int((stats or {}).get("active_rooms", 0)), int((stats or {}).get("total_peers", 0))


def add_numbers(totals: dict[str, float], stats: dict[str, Any] | None) -> None:
    for key, value in (stats or {}).items():
        if isinstance(value, int | float) and not isinstance(value, bool):
            totals[key] = totals.get(key, 0) + value
