"""The node's front with `[cluster] workers = N` (N > 1): media workers, one process each.

Each worker is a whole server (`app.py --worker-index i`: its own Trio loop, its own UDP media
port `udp_port + i`, its own room directory `state_path.worker<i>`) listening for HTTP on a
loopback port only the front uses. The front:

- **supervises** them the way rooms are supervised: a worker that exits is logged and started
  again (the same index: the same UDP port and room directory, so its rooms come back and
  their clients resume when they reconnect, as after any restart);
- **places** a new room on the least-loaded worker (fewest sessions, then fewest rooms), and
  keeps `room -> worker`; a post's next room goes where its last one went;
- **relays** REST for a room to its worker, `GET /stats` summed over the workers (with a
  per-worker breakdown), anything else to the first ready worker, and each WebSocket to the
  worker of the room its `join` names (frames piped both ways, the close code passed on).
  Media never crosses the front: a worker's answer carries that worker's candidates.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve
from quart import Response, request, websocket
from quart_trio import QuartTrio
from trio_websocket import ConnectionClosed, HandshakeError, open_websocket_url

from core.config import Config

log = logging.getLogger("bitbasel.front")

ROOT = Path(__file__).resolve().parent.parent
WORKER_START_SECONDS = 30.0
RESTART_BACKOFF_SECONDS = 0.5
PROXY_TIMEOUT_SECONDS = 15.0
#: Close codes that describe a connection lost, never sent in a close frame (RFC 6455 7.4.1).
UNSENDABLE_CLOSE_CODES = frozenset({1005, 1006, 1015})
CLOSE_SERVICE_RESTART = 1012  # retryable: the JS client and the bots reconnect
HOP_HEADERS = {"connection", "keep-alive", "transfer-encoding", "upgrade", "host", "content-length"}


def worker_count(config: Config) -> int:
    return config.cluster.workers or (os.cpu_count() or 1)


@dataclass
class Worker:
    index: int
    url: str = ""
    pid: int = 0
    restarts: int = 0
    ready: trio.Event = field(default_factory=trio.Event)


@dataclass
class Front:
    config: Config
    worker_argv: list[str]  # app.py's arguments for a worker, without --worker-index
    workers: list[Worker] = field(default_factory=list)
    room_worker: dict[str, int] = field(default_factory=dict)
    post_worker: dict[str, int] = field(default_factory=dict)
    http: httpx.AsyncClient | None = None

    # ---- workers ------------------------------------------------------------------------

    async def supervise(self, worker: Worker, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        started = False
        while True:
            argv = [sys.executable, str(ROOT / "app.py"), *self.worker_argv, "--worker-index", str(worker.index)]
            process = await trio.lowlevel.open_process(argv, stdout=subprocess.PIPE, cwd=str(ROOT))
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
                if not url:
                    continue
                worker.url = url
                worker.ready.set()
                log.info("worker %d (pid %d) serving on %s", worker.index, process.pid, url)
                if not started:
                    started = True
                    task_status.started()
                code = await process.wait()
            finally:
                with trio.CancelScope(shield=True):
                    if process.returncode is None:
                        process.send_signal(signal.SIGTERM)
                        with trio.move_on_after(12):
                            await process.wait()
                        if process.returncode is None:
                            process.kill()
                            await process.wait()
            worker.ready = trio.Event()
            worker.restarts += 1
            log.error("worker %d (pid %d) exited with %s; starting it again", worker.index, worker.pid, code)
            await trio.sleep(RESTART_BACKOFF_SECONDS)

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

    async def _worker_stats(self, worker: Worker) -> dict[str, Any] | None:
        assert self.http is not None
        try:
            response = await self.http.get(worker.url + "/stats", headers=_auth(request.headers))
            return dict(response.json()) if response.status_code == 200 else None
        except (httpx.HTTPError, ValueError):
            return None

    async def least_loaded(self) -> int:
        loads: dict[int, tuple[float, float]] = {}

        async def load_of(worker: Worker) -> None:
            if worker.ready.is_set():
                stats = await self._worker_stats(worker)
                if stats is not None:
                    loads[worker.index] = (stats.get("total_peers", 0), stats.get("active_rooms", 0))

        async with trio.open_nursery() as nursery:
            for worker in self.workers:
                nursery.start_soon(load_of, worker)
        if not loads:
            return 0
        return min(loads, key=lambda i: (loads[i], i))

    async def worker_of_room(self, room_id: str) -> int | None:
        index = self.room_worker.get(room_id)
        if index is not None:
            return index
        assert self.http is not None
        for worker in self.workers:  # not placed by this front (it restarted): ask them
            if not worker.ready.is_set():
                continue
            try:
                found = await self.http.get(f"{worker.url}/room/{room_id}/stats", headers=_auth(request.headers))
            except httpx.HTTPError:
                continue
            if found.status_code == 200:
                self.room_worker[room_id] = worker.index
                return worker.index
        return None

    # ---- relaying -------------------------------------------------------------------------

    async def forward(self, index: int, path: str) -> Response:
        worker = await self.ready_worker(index)
        assert self.http is not None
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_HEADERS}
        body = await request.get_data()
        outgoing = self.http.build_request(
            request.method, worker.url + path, params=request.args, content=body, headers=headers
        )
        try:
            answer = await self.http.send(outgoing, stream=True)  # a recording may be gigabytes: streamed
        except httpx.HTTPError as exc:
            return _error(503, "unavailable", f"worker {index} did not answer: {exc}; try again")
        out = {k: v for k, v in answer.headers.items() if k.lower() not in HOP_HEADERS | {"content-encoding"}}
        if "content-length" in answer.headers:
            out["Content-Length"] = answer.headers["content-length"]
        return Response(_relay_body(answer), status=answer.status_code, headers=out)


async def _relay_body(answer: httpx.Response) -> AsyncIterator[bytes]:
    try:
        async for chunk in answer.aiter_raw():
            yield chunk
    finally:
        await answer.aclose()


def _auth(headers: Any) -> dict[str, str]:
    value = headers.get("Authorization")
    return {"Authorization": value} if value else {}


def _error(status: int, code: str, message: str) -> Response:
    return Response(json.dumps({"error": code, "message": message}), status=status, content_type="application/json")


def create_front_app(front: Front) -> QuartTrio:
    app = QuartTrio("bitbasel_media_front", static_folder=None)

    @app.post("/room/create")
    async def create_room() -> Response:
        try:
            body = json.loads(await request.get_data() or b"{}")
        except ValueError:
            body = {}
        post = body.get("post_id") or body.get("classroom_id") if isinstance(body, dict) else None
        index = front.post_worker.get(post) if isinstance(post, str) else None
        if index is None:
            index = await front.least_loaded()
        response = await front.forward(index, "/room/create")
        if response.status_code == 200:
            data = await response.get_data()
            response = Response(data, status=200, content_type="application/json")
            created = json.loads(data)
            front.room_worker[created["room_id"]] = index
            front.post_worker[created["post_id"]] = index
        return response

    @app.route("/room/<room_id>/<path:rest>", methods=["GET", "POST"])
    async def room_route(room_id: str, rest: str) -> Response:
        index = await front.worker_of_room(room_id)
        if index is None:
            if rest == "recordings":  # a listing is empty, never 404
                return Response(json.dumps({"room_id": room_id, "recordings": []}), content_type="application/json")
            return _error(404, "room_not_found", f"no room {room_id}")
        return await front.forward(index, f"/room/{room_id}/{rest}")

    @app.get("/stats")
    async def stats() -> Response:
        per_worker: list[dict[str, Any]] = []
        totals: dict[str, float] = {}
        for worker in front.workers:
            snap = await front._worker_stats(worker) if worker.ready.is_set() else None
            rooms = sorted(room for room, index in front.room_worker.items() if index == worker.index)
            per_worker.append(
                {"index": worker.index, "pid": worker.pid, "restarts": worker.restarts, "rooms": rooms, "stats": snap}
            )
            for key, value in (snap or {}).items():
                if isinstance(value, int | float) and not isinstance(value, bool):
                    totals[key] = totals.get(key, 0) + value
        return Response(json.dumps({**totals, "workers": per_worker}), content_type="application/json")

    @app.websocket("/ws")
    async def ws() -> None:
        first = await websocket.receive()
        try:
            join = json.loads(first)
            room_id = join.get("room_id") if isinstance(join, dict) else None
        except (TypeError, ValueError):
            room_id = None
        index = await front.worker_of_room(room_id) if isinstance(room_id, str) else None
        worker = await front.ready_worker(index if index is not None else 0)
        ws_url = worker.url.replace("http", "ws", 1) + "/ws"
        try:
            async with open_websocket_url(ws_url, message_queue_size=64) as upstream:
                await upstream.send_message(first)
                async with trio.open_nursery() as nursery:

                    async def to_worker() -> None:
                        while True:
                            await upstream.send_message(await websocket.receive())

                    async def to_client() -> None:
                        try:
                            while True:
                                await websocket.send(await upstream.get_message())
                        except ConnectionClosed as closed:
                            reason = closed.reason
                            code = reason.code if reason is not None and reason.code else None
                            if code is None or code in UNSENDABLE_CLOSE_CODES:  # the worker vanished
                                code, text = CLOSE_SERVICE_RESTART, "the room's worker is restarting: reconnect"
                            else:
                                text = (reason.reason if reason is not None else None) or ""
                            await websocket.close(code, text)
                        nursery.cancel_scope.cancel()

                    nursery.start_soon(to_worker)
                    nursery.start_soon(to_client)
        except (OSError, trio.TooSlowError, ConnectionClosed, HandshakeError):
            await websocket.close(1013, "the room's worker is unavailable: try again")

    @app.route("/", defaults={"path": ""}, methods=["GET", "POST"])
    @app.route("/<path:path>", methods=["GET", "POST"])
    async def anything(path: str) -> Response:
        return await front.forward(0, "/" + path)

    return app


async def run_front(
    config: Config,
    shutdown: trio.Event,
    worker_argv: list[str],
    *,
    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Start the workers, serve the front until `shutdown`, then stop the workers (SIGTERM)."""
    count = worker_count(config)
    front = Front(config, worker_argv, workers=[Worker(i) for i in range(count)])
    hc = HypercornConfig()
    hc.bind = [f"{config.server.host}:{config.server.port}"]
    hc.accesslog = None
    hc.errorlog = None
    async with httpx.AsyncClient(timeout=PROXY_TIMEOUT_SECONDS) as http, trio.open_nursery() as nursery:
        front.http = http
        async with trio.open_nursery() as starting:
            for worker in front.workers:
                starting.start_soon(nursery.start, front.supervise, worker)
        app = create_front_app(front)
        stop_accepting = trio.Event()
        binds: list[str] = await nursery.start(
            lambda task_status: serve(app, hc, shutdown_trigger=stop_accepting.wait, task_status=task_status)
        )
        log.info("front with %d workers on %s", count, binds[0])
        task_status.started(binds[0])
        await shutdown.wait()
        stop_accepting.set()
        nursery.cancel_scope.cancel()  # each worker's supervisor sends it SIGTERM and waits for it
