"""The node's front: with `[cluster] workers = N` (N > 1) over media workers, and with
`[cluster] redis_url` also a node of a cluster.

- **Workers** (front/worker_pool.py): whole servers on loopback, supervised and restarted.
- **Relaying**: REST for a room goes to its worker, `GET /stats` sums the workers (with a
  per-worker breakdown), `GET /metrics` sums their expositions (front/metrics.py), anything
  else goes to the first ready worker, and each WebSocket to the worker of the room its `join`
  names (frames piped both ways, the close code passed on).
  Media never crosses the front: a worker's answer carries that worker's candidates.
- **Cluster** (front/cluster_node.py): a new room goes to the least-loaded node; a request or
  WebSocket for a room on another node is relayed to that node's front; a room whose node died
  or drained is taken over here. `GET /stats` covers every live node (`nodes`). On SIGTERM the
  node drains: its clients get `reconnect` (another node's URL), then its workers close their
  sessions with 1012 and the rooms resume on the nodes the clients reach.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import httpx
import msgspec
import trio
from hypercorn.trio import serve
from quart import Response, request, websocket
from quart_trio import QuartTrio
from trio_websocket import ConnectionClosed, HandshakeError, open_websocket_url
from werkzeug.datastructures import Headers

from api.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from api.rest import ROOM_ID
from api.server import hypercorn_config
from api.whip import RETRY_AFTER_SECONDS
from cluster.redis_client import RedisClient, RedisUnavailable
from cluster.registry import ClusterRegistry
from cluster.resp import RespError
from core.config import Config, ConfigError
from core.credentials import bears_api_key, redact_url
from core.signaling import Error, Reconnect, encode
from front.canonical_path import CanonicalPaths, is_internal, relayed_path
from front.cluster_node import (
    RELAYED_BY,
    ClusterNode,
    Nowhere,
    OnNode,
    OnWorker,
    Route,
    node_id_of,
    node_url,
)
from front.metrics import render as node_metrics
from front.metrics import scrape_workers
from front.remote_edges import EDGE_OF, RemoteEdgeRefused, RemoteEdgeRequest, RemoteEdges
from front.viewer_placement import EDGE_SETUP_SECONDS, Place, RoomFull, ViewerPlacement, place_key
from front.whep_placement import WhepPlacement
from front.worker_pool import Worker, WorkerPool, add_numbers

log = logging.getLogger("bitbasel.front")
logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per relayed request and heartbeat poll: too many

PROXY_TIMEOUT = httpx.Timeout(15.0, connect=2.0)  # a dead node is refused or unreachable quickly
NODE_STATS_SECONDS = 3.0
#: Close codes that describe a connection lost, never sent in a close frame (RFC 6455 7.4.1).
UNSENDABLE_CLOSE_CODES = frozenset({1005, 1006, 1015})
CLOSE_SERVICE_RESTART = 1012  # retryable: the JS client and the bots reconnect
CLOSE_TRY_AGAIN = 1013
CLOSE_ROOM_FULL = 4429  # as a worker closes for `room_full` (actors/peer.py)
KICK_PATH = re.compile(r"peers/([A-Za-z0-9_-]{1,64})/kick")
HOP_HEADERS = {"connection", "keep-alive", "transfer-encoding", "upgrade", "host", "content-length"}


def worker_count(config: Config) -> int:
    return config.cluster.workers or (os.cpu_count() or 1)


class RelayFailed(Exception):
    pass


@dataclass
class Front:
    config: Config
    pool: WorkerPool
    cluster: ClusterNode | None = None
    placement: ViewerPlacement | None = None  # a room's viewers over the workers ([cluster] room_viewers_per_worker)
    remote_edges: RemoteEdges | None = None  # in a cluster: rooms of other nodes with viewers here
    whep: WhepPlacement | None = None  # WHEP viewers over the workers, like the WebSocket ones
    drained: trio.Event = field(default_factory=trio.Event)  # set when a cluster node starts draining

    def relayed(self, headers: Any) -> bool:
        return self.cluster is not None and self.cluster.is_relayed(headers.get(RELAYED_BY))

    def authorized(self, headers: Any) -> bool:
        """The caller bears the API key (when one is set): for what the front answers itself."""
        return bears_api_key(headers.get("Authorization"), self.config.auth.api_key)

    async def route(self, room_id: str, *, relayed: bool) -> Route:
        if not ROOM_ID.fullmatch(room_id):  # no room has that id: never a lookup (a path, a key) built of it
            return Nowhere("room_not_found", f"no room {room_id}")
        if self.cluster is not None:
            return await self.cluster.locate(room_id, relayed=relayed)
        index = await self.pool.worker_of_room(room_id)
        return OnWorker(index) if index is not None else Nowhere("room_not_found", f"no room {room_id}")

    async def base_url(self, route: OnWorker | OnNode) -> tuple[str, dict[str, str]]:
        """Where a route's requests go, and the headers that mark them relayed by this node."""
        if isinstance(route, OnWorker):
            return (await self.pool.ready_worker(route.index)).url, {}
        assert self.cluster is not None
        return route.url, {RELAYED_BY: self.cluster.relay_header()}

    async def relay(self, base_url: str, path: str, extra_headers: dict[str, str]) -> Response:
        """The current request sent on to `base_url`; its answer streamed back. `path` is
        canonical (front/canonical_path.py): the worker or node reads that very path, and never
        one under /internal (whichever route asks)."""
        if is_internal(path):
            return _error(404, "not_found", f"no route {path}")
        http = self.pool.http
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_HEADERS | {RELAYED_BY.lower()}}
        headers |= extra_headers
        body = await request.get_data()
        outgoing = http.build_request(
            request.method, base_url + relayed_path(path), params=request.args, content=body, headers=headers
        )
        try:
            answer = await http.send(outgoing, stream=True)  # a recording may be gigabytes: streamed
        except httpx.HTTPError as exc:
            raise RelayFailed(f"{base_url} did not answer: {exc}") from exc
        # multi_items: a header sent more than once (WHIP's `Link`s) stays apart, never comma-joined
        skipped = HOP_HEADERS | {"content-encoding"}
        out = Headers([(k, v) for k, v in answer.headers.multi_items() if k.lower() not in skipped])
        if "content-length" in answer.headers:
            out["Content-Length"] = answer.headers["content-length"]
        return Response(_RelayedBody(answer), status=answer.status_code, headers=out)

    async def relay_to(self, route: OnWorker | OnNode, path: str) -> Response:
        try:
            base, headers = await self.base_url(route)
            return await self.relay(base, path, headers)
        except (RelayFailed, trio.TooSlowError) as exc:
            return _error(503, "unavailable", f"{exc or 'a worker is starting'}; try again")

    def edge_urls(self, room_id: str, edges: list[int]) -> list[tuple[str, dict[str, str]]]:
        """Where the room's edges answer for their sessions (``<url>/peers``,
        ``<url>/peers/{id}/kick``), with the headers to send: this node's serving workers (one
        starting again is left out), then the other nodes that hold some of its viewers."""
        workers = self.pool.workers
        urls = [
            (f"{workers[i].url}/internal/rooms/{room_id}/edge", self.pool.auth)
            for i in edges
            if workers[i].ready.is_set()
        ]
        if self.placement is not None and self.cluster is not None:
            header = {RELAYED_BY: self.cluster.relay_header()}
            urls += [
                (f"{node.url}/cluster/rooms/{room_id}/edge", header) for node in self.placement.remote_edges_of(room_id)
            ]
        return urls

    async def peers_with_edges(self, room_id: str, origin: int, edges: list[tuple[str, dict[str, str]]]) -> Response:
        """`GET /room/{id}/peers` of a room across workers: the origin's sessions and its edges'."""
        http, auth = self.pool.http, self.pool.auth
        worker = await self.pool.ready_worker(origin)
        answer = await http.get(f"{worker.url}/room/{room_id}/peers", headers=auth)
        if answer.status_code != 200:
            return Response(answer.content, status=answer.status_code, content_type="application/json")
        listing = answer.json()
        for edge_url, headers in edges:
            with contextlib.suppress(httpx.HTTPError, ValueError, KeyError):
                more = await http.get(f"{edge_url}/peers", headers=headers)
                if more.status_code == 200:
                    listing["peers"] += more.json()["peers"]
        return Response(json.dumps(listing), content_type="application/json")

    async def kick_with_edges(
        self, room_id: str, peer_id: str, origin: int, edges: list[tuple[str, dict[str, str]]]
    ) -> Response:
        """`POST /room/{id}/peers/{peer}/kick` of a room across workers: the session is on the
        origin or on one of its edges."""
        http, auth = self.pool.http, self.pool.auth
        worker = await self.pool.ready_worker(origin)
        answer = await http.post(f"{worker.url}/room/{room_id}/peers/{peer_id}/kick", headers=auth)
        for edge_url, headers in edges if answer.status_code == 404 else []:
            with contextlib.suppress(httpx.HTTPError):
                tried = await http.post(f"{edge_url}/peers/{peer_id}/kick", headers=headers)
                if tried.status_code == 200:
                    answer = tried
                    break
        return Response(answer.content, status=answer.status_code, content_type="application/json")

    async def stats(self, *, relayed: bool) -> dict[str, Any]:
        local = await self.pool.node_stats()
        if self.cluster is None:
            return local
        cluster = self.cluster
        local["node_id"] = cluster.node_id
        if relayed:
            return local
        nodes: dict[str, dict[str, Any] | None] = {cluster.node_id: local}
        await cluster.refresh()

        async def stats_of(node_id: str, url: str) -> None:
            try:
                with trio.fail_after(NODE_STATS_SECONDS):
                    answer = await self.pool.http.get(
                        url + "/stats", headers={RELAYED_BY: cluster.relay_header(), **self.pool.auth}
                    )
                nodes[node_id] = dict(answer.json()) if answer.status_code == 200 else None
            except (httpx.HTTPError, ValueError, trio.TooSlowError):
                nodes[node_id] = None

        async with trio.open_nursery() as nursery:
            for node in cluster.live.values():
                if node.node_id != cluster.node_id:
                    nursery.start_soon(stats_of, node.node_id, node.url)
        totals: dict[str, float] = {}
        breakdown = []
        for node_id in sorted(nodes):
            info = cluster.live.get(node_id)
            add_numbers(totals, nodes[node_id])
            breakdown.append(
                {
                    "node_id": node_id,
                    "url": redact_url(info.url if info else cluster.url),
                    "draining": info.draining if info else cluster.draining,
                    "stats": nodes[node_id],
                }
            )
        return {**totals, "node_id": cluster.node_id, "workers": local["workers"], "nodes": breakdown}

    def reconnect_message(self) -> str:
        other = self.cluster.other_node() if self.cluster is not None else None
        url = other.url.replace("http", "ws", 1) + "/ws" if other is not None else None
        return encode(Reconnect(reason="node_draining", url=url))


class _RelayedBody:
    """A relayed answer's body, chunk by chunk. Quart closes a response body with `aclose`,
    which here releases the upstream answer even when not one chunk was read (a generator's
    `finally` would not run then, and the connection would never go back to the pool)."""

    def __init__(self, answer: httpx.Response) -> None:
        self._answer = answer
        self._chunks = answer.aiter_raw()

    def __aiter__(self) -> _RelayedBody:
        return self

    async def __anext__(self) -> bytes:
        try:
            return await self._chunks.__anext__()
        except BaseException:
            await self.aclose()
            raise

    async def aclose(self) -> None:
        await self._answer.aclose()


def _error(status: int, code: str, message: str) -> Response:
    return Response(json.dumps({"error": code, "message": message}), status=status, content_type="application/json")


def _post_of(body: str | bytes) -> str | None:
    try:
        fields = json.loads(body or b"{}")
    except ValueError:
        return None
    post = fields.get("post_id") or fields.get("classroom_id") if isinstance(fields, dict) else None
    return post if isinstance(post, str) else None


def create_front_app(front: Front) -> QuartTrio:
    app = QuartTrio("bitbasel_media_front", static_folder=None)
    app.asgi_app = CanonicalPaths(app.asgi_app)  # type: ignore[method-assign]  # routes see resolved paths only
    pool = front.pool

    @app.post("/room/create")
    async def create_room() -> Response:
        post = _post_of(await request.get_data())
        cluster = front.cluster
        index: int | None = None
        if cluster is not None:
            relayed = front.relayed(request.headers)
            try:
                existing = await cluster.registry.active_room_of_post(post) if post else None
            except (RedisUnavailable, RespError) as exc:
                return _error(503, "unavailable", f"the room directory did not answer ({exc}); try again")
            route = await cluster.locate(existing, relayed=relayed) if existing else None
            if isinstance(route, OnNode):  # the post's room is there: it answers `existing`
                return await front.relay_to(route, "/room/create")
            if isinstance(route, OnWorker):  # here (maybe just taken over): that worker answers `existing`
                index = route.index
            elif isinstance(route, Nowhere) and route.code != "room_not_found":
                return _error(503, route.code, route.message)
            elif not relayed and (target := cluster.node_for_new_room()) is not None:
                try:
                    return await front.relay(target.url, "/room/create", {RELAYED_BY: cluster.relay_header()})
                except RelayFailed as exc:
                    log.warning("cluster: node %s did not take a new room (%s)", target.node_id, exc)
            if index is None and cluster.draining:
                return _error(503, "unavailable", "this node is stopping and no other node takes rooms; try again")
        if index is None and post:
            index = pool.post_worker.get(post)
        if index is None:
            index = await pool.least_loaded()
        response = await front.relay_to(OnWorker(index), "/room/create")
        if response.status_code == 200:
            data = await response.get_data()
            response = Response(data, status=200, content_type="application/json")
            created = json.loads(data)
            pool.placed(created["room_id"], created["post_id"], index)
        return response

    @app.route("/room/<room_id>/<path:rest>", methods=["GET", "POST"])
    async def room_route(room_id: str, rest: str) -> Response:
        route = await front.route(room_id, relayed=front.relayed(request.headers))
        if isinstance(route, Nowhere):
            if rest == "recordings" and route.code == "room_not_found":  # a listing is empty, never 404
                return Response(json.dumps({"room_id": room_id, "recordings": []}), content_type="application/json")
            return _error(404 if route.code == "room_not_found" else 503, route.code, route.message)
        edges = (
            front.edge_urls(room_id, front.placement.edges_of(room_id, route.index))
            if front.placement and isinstance(route, OnWorker)
            else []
        )
        if edges and isinstance(route, OnWorker) and front.authorized(request.headers):
            if request.method == "GET" and rest == "peers":
                return await front.peers_with_edges(room_id, route.index, edges)
            if request.method == "POST" and (kick := KICK_PATH.fullmatch(rest)):
                return await front.kick_with_edges(room_id, kick.group(1), route.index, edges)
        return await front.relay_to(route, f"/room/{room_id}/{rest}")

    @app.post("/cluster/rooms/<room_id>/edge")
    async def cluster_edge(room_id: str) -> Response:
        """Another node (the room's origin) puts some of the room's viewers here (front/remote_edges.py)."""
        edges = front.remote_edges
        if edges is None or not front.relayed(request.headers) or not ROOM_ID.fullmatch(room_id):
            return _error(404, "not_found", f"no route /cluster/rooms/{room_id}/edge")
        try:
            body = msgspec.json.decode(await request.get_data(), type=RemoteEdgeRequest)
        except msgspec.DecodeError as exc:
            return _error(400, "bad_request", f"an edge request: {exc}")
        if front.cluster is not None and front.cluster.draining:
            return _error(503, "unavailable", "this node is stopping")
        try:
            with trio.fail_after(EDGE_SETUP_SECONDS):
                answer = await edges.open(room_id, body.post_id, body.host_user_id)
        except (httpx.HTTPError, trio.TooSlowError, ValueError) as exc:
            return _error(503, "unavailable", f"no edge here: {exc or 'a worker is starting'}")
        except RemoteEdgeRefused as exc:
            return _error(503, "unavailable", f"no edge here: {exc}")
        return Response(json.dumps(answer), content_type="application/json")

    @app.route("/cluster/rooms/<room_id>/edge/<path:rest>", methods=["GET", "POST"])
    async def cluster_edge_sessions(room_id: str, rest: str) -> Response:
        """The origin node's moderation of the room's viewers here: `peers`, `peers/{id}/kick`."""
        edges = front.remote_edges
        known = (rest == "peers" and request.method == "GET") or (
            KICK_PATH.fullmatch(rest) and request.method == "POST"
        )
        if edges is None or not front.relayed(request.headers) or not known or not ROOM_ID.fullmatch(room_id):
            return _error(404, "not_found", f"no route /cluster/rooms/{room_id}/edge/{rest}")
        try:
            with trio.fail_after(EDGE_SETUP_SECONDS):
                answers = await edges.forward(request.method, room_id, rest)
        except (httpx.HTTPError, trio.TooSlowError) as exc:
            return _error(503, "unavailable", f"the edges did not answer: {exc or 'a worker is starting'}")
        if rest == "peers":  # every edge's sessions here
            peers = [p for answer in answers if answer.status_code == 200 for p in answer.json()["peers"]]
            return Response(json.dumps({"room_id": room_id, "peers": peers}), content_type="application/json")
        kicked = [answer for answer in answers if answer.status_code == 200]
        if not kicked:
            return _error(404, "not_found", f"no session {rest.split('/')[1]} on the edges of room {room_id} here")
        return Response(kicked[0].content, status=200, content_type="application/json")

    @app.get("/metrics")
    async def metrics() -> Response:
        """Every worker's /metrics summed (front/metrics.py); access as the workers' own."""
        access = front.config.metrics.access
        if access == "off":
            return _error(404, "not_found", "GET /metrics is off ([metrics] access)")
        if access == "api_key" and not front.authorized(request.headers):
            return _error(401, "unauthorized", "missing or wrong API key (Authorization: Bearer <key>)")
        body = node_metrics(await scrape_workers(front.pool))
        return Response(body, status=200, content_type=METRICS_CONTENT_TYPE)

    @app.get("/stats")
    async def stats() -> Response:
        if not front.authorized(request.headers):
            return _error(401, "unauthorized", "missing or wrong API key (Authorization: Bearer <key>)")
        return Response(
            json.dumps(await front.stats(relayed=front.relayed(request.headers))), content_type="application/json"
        )

    @app.websocket("/ws")
    async def ws() -> None:
        first: str | bytes = ""
        with trio.move_on_after(front.config.server.silence_timeout_seconds):
            first = await websocket.receive()  # a worker answers a silent or empty one as the protocol says
        try:
            join = json.loads(first)
            room_id = join.get("room_id") if isinstance(join, dict) else None
            role = join.get("role") if isinstance(join, dict) else None
        except (TypeError, ValueError):
            room_id = role = None
        relayed = front.relayed(websocket.headers)
        route: Route = Nowhere("room_not_found", "")
        # a viewer the room's origin node placed on this node's edge of it (marked so by that node)
        marked = isinstance(room_id, str) and websocket.headers.get(EDGE_OF) == room_id
        remote_edges = front.remote_edges if relayed and role == "viewer" and marked else None
        edge_index = remote_edges.place(room_id) if remote_edges is not None and isinstance(room_id, str) else None
        if edge_index is not None:
            route = OnWorker(edge_index)
        elif isinstance(room_id, str):
            route = await front.route(room_id, relayed=relayed)
        if isinstance(route, Nowhere):
            if route.code != "room_not_found":
                await websocket.send(encode(Error(code=route.code, message=route.message)))
                await websocket.close(CLOSE_TRY_AGAIN, "try again")
                return
            route = OnWorker(0)  # a worker answers the join as the protocol says (room_not_found, bad_message)
            role = None  # and no placement for a room that is not there
        placement = front.placement if edge_index is None else None
        placed: tuple[str, Place] | None = None
        if isinstance(route, OnWorker) and role == "viewer" and isinstance(room_id, str) and placement is not None:
            try:
                choice = await placement.place(room_id, route.index)  # counted there from now on
            except RoomFull as full:
                await websocket.send(encode(Error(code="room_full", message=str(full))))
                await websocket.close(CLOSE_ROOM_FULL, "room full")
                return
            route = choice if isinstance(choice, OnNode) else OnWorker(choice)
            placed = (room_id, place_key(choice))
        try:
            try:
                base, headers = await front.base_url(route)
            except trio.TooSlowError:
                await websocket.close(CLOSE_TRY_AGAIN, "the room's worker is starting: try again")
                return
            if placed is not None and isinstance(route, OnNode) and isinstance(room_id, str):
                headers[EDGE_OF] = room_id  # placed on that node's edge (front/remote_edges.py)
            await _pipe(
                front,
                base.replace("http", "ws", 1) + "/ws",
                headers,
                first,
                direct=not relayed,
                remote=isinstance(route, OnNode),
                node_id=route.node_id if isinstance(route, OnNode) else None,
            )
        finally:
            if placement is not None and placed is not None:
                placement.left(*placed)
            if remote_edges is not None and edge_index is not None and isinstance(room_id, str):
                remote_edges.left(room_id, edge_index)

    async def whip_whep(door: str, room_id: str, session_id: str | None = None) -> Response:
        """WHIP and WHEP go to the room's worker (or node), where their sessions live: every
        request of a session names its room. An unknown room is answered by a worker (404 with
        the doors' headers)."""
        route = await front.route(room_id, relayed=front.relayed(request.headers))
        path = f"/{door}/{room_id}" + (f"/{session_id}" if session_id else "")
        if isinstance(route, Nowhere) and route.code != "room_not_found":
            response = _error(503, route.code, route.message)
        elif isinstance(route, Nowhere):
            response = await front.relay_to(OnWorker(0), path)
        elif door == "whep" and front.whep is not None and isinstance(route, OnWorker):
            response = await _placed_whep(front.whep, room_id, session_id, route.index, path)
        else:
            response = await front.relay_to(route, path)
        # the front's own refusals answer as the doors do: readable cross-origin, retryable
        response.headers.setdefault("Access-Control-Allow-Origin", "*")
        if response.status_code == 503:
            response.headers.setdefault("Retry-After", str(RETRY_AFTER_SECONDS))
        return response

    async def _placed_whep(
        whep: WhepPlacement, room_id: str, session_id: str | None, origin: int, path: str
    ) -> Response:
        """A WHEP request of a room whose origin is this node's worker ``origin``: a new session
        is placed over the workers (front/whep_placement.py); a session's request goes to the
        worker its id names."""
        if session_id is not None:
            located = whep.located(session_id)
            if located is None:  # not an id this front gave out: the origin answers (404)
                return await front.relay_to(OnWorker(origin), path)
            worker, inner = located
            response = await front.relay_to(OnWorker(worker), f"/whep/{room_id}/{inner}")
            if request.method == "DELETE" and response.status_code in (200, 404):
                whep.forget(session_id)
            return response
        if request.method != "POST":
            return await front.relay_to(OnWorker(origin), path)
        try:
            choice = await whep.placement.place(room_id, origin, other_nodes=False)
        except RoomFull as full:
            return _error(503, "room_full", str(full))
        assert isinstance(choice, int)
        recorded = False
        try:
            response = await front.relay_to(OnWorker(choice), path)
            location = response.headers.get("Location")
            if response.status_code == 201 and location:
                key = whep.record(room_id, choice, location.rsplit("/", 1)[1])
                recorded = True
                response.headers["Location"] = f"/whep/{room_id}/{key}"
            return response
        finally:
            if not recorded:  # refused, or the client went: the place is given back
                whep.placement.left(room_id, choice)

    door_routes = (("/<room_id>", ["POST", "OPTIONS"]), ("/<room_id>/<session_id>", ["PATCH", "DELETE", "OPTIONS"]))
    for door in ("whip", "whep"):
        for path, methods in door_routes:
            app.add_url_rule(
                f"/{door}{path}",
                f"{door}{path.count('/')}",
                partial(whip_whep, door),
                methods=methods,
                provide_automatic_options=False,
            )

    @app.route("/", defaults={"path": ""}, methods=["GET", "POST"])
    @app.route("/<path:path>", methods=["GET", "POST"])
    async def anything(path: str) -> Response:
        if is_internal("/" + path):  # the workers' routes for their front only; `path` is resolved
            return _error(404, "not_found", f"no route /{path}")
        return await front.relay_to(OnWorker(0), "/" + path)

    return app


async def _pipe(
    front: Front,
    ws_url: str,
    headers: dict[str, str],
    first: str | bytes,
    *,
    direct: bool,
    remote: bool,
    node_id: str | None = None,
) -> None:
    """Frames both ways between the client and `ws_url` until either side closes, or (`node_id`:
    the other end is that node) until that node's heartbeat expires: a node that vanished
    without closing its connections (a machine down, a partition) sends its clients to reconnect
    within the heartbeat's TTL, not at a TCP timeout."""
    extra = [(k.lower().encode(), v.encode()) for k, v in headers.items()]
    try:
        async with open_websocket_url(
            ws_url, extra_headers=extra, message_queue_size=64, connect_timeout=5
        ) as upstream:
            await upstream.send_message(first)
            async with trio.open_nursery() as nursery:

                async def to_upstream() -> None:
                    while True:
                        await upstream.send_message(await websocket.receive())

                async def to_client() -> None:
                    try:
                        while True:
                            await websocket.send(await upstream.get_message())
                    except ConnectionClosed as closed:
                        reason = closed.reason
                        code = reason.code if reason is not None and reason.code else None
                        if code is None or code in UNSENDABLE_CLOSE_CODES:  # the worker or node vanished
                            code, text = CLOSE_SERVICE_RESTART, "the room's server is restarting: reconnect"
                        else:
                            text = (reason.reason if reason is not None else None) or ""
                        await websocket.close(code, text)
                    nursery.cancel_scope.cancel()

                async def on_drain() -> None:
                    await front.drained.wait()
                    await websocket.send(front.reconnect_message())
                    if remote:  # this node's workers do not hold the room: end the relay here
                        await websocket.close(CLOSE_SERVICE_RESTART, "this node is stopping: reconnect")
                        nursery.cancel_scope.cancel()

                async def on_fence(cluster: ClusterNode) -> None:
                    await cluster.fenced.wait()
                    await websocket.close(CLOSE_SERVICE_RESTART, "this node lost the cluster: reconnect")
                    nursery.cancel_scope.cancel()  # the worker sees the close: the session ends there too

                async def on_node_gone(cluster: ClusterNode, node: str) -> None:
                    await cluster.wait_gone(node)
                    await websocket.close(CLOSE_SERVICE_RESTART, "the room's node is gone: reconnect")
                    nursery.cancel_scope.cancel()

                nursery.start_soon(to_upstream)
                nursery.start_soon(to_client)
                if node_id is not None and front.cluster is not None:
                    nursery.start_soon(on_node_gone, front.cluster, node_id)
                if direct and front.cluster is not None:
                    nursery.start_soon(on_drain)
                if not remote and front.cluster is not None:
                    nursery.start_soon(on_fence, front.cluster)
    except (OSError, trio.TooSlowError, ConnectionClosed, HandshakeError):
        await websocket.close(CLOSE_TRY_AGAIN, "the room's server is unavailable: try again")


async def run_front(
    config: Config,
    shutdown: trio.Event,
    worker_argv: list[str],
    *,
    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the front, start the workers (and join the cluster), serve until `shutdown`; then
    drain (a cluster node), stop the workers (SIGTERM) and the front."""
    count = worker_count(config)
    hc = hypercorn_config(config)  # the server's: TLS when configured, the same limits
    async with httpx.AsyncClient(timeout=PROXY_TIMEOUT) as http, trio.open_nursery() as nursery:
        pool = WorkerPool(list(worker_argv), http, config.auth.api_key, [Worker(i) for i in range(count)])
        placement = ViewerPlacement(pool, config.cluster.room_viewers_per_worker, config.rooms.max_viewers_per_room)
        pool.after_restart = placement.origin_restarted
        front = Front(config, pool, placement=placement, whep=WhepPlacement(pool, placement))
        stop_accepting = trio.Event()
        app = create_front_app(front)
        binds: list[str] = await nursery.start(
            lambda task_status: serve(app, hc, shutdown_trigger=stop_accepting.wait, task_status=task_status)
        )
        redis: RedisClient | None = None
        if config.cluster.redis_url:
            url = node_url(config, int(binds[0].rsplit(":", 1)[1]))
            node_id = node_id_of(config, url)
            redis = RedisClient(config.cluster.redis_url)
            registry = ClusterRegistry(redis, node_id, ttl_seconds=config.cluster.node_ttl_seconds)
            try:
                secret = await registry.relay_secret()
            except (RedisUnavailable, RespError) as exc:
                where = redact_url(config.cluster.redis_url)
                raise ConfigError(f"cluster.redis_url: cannot use {where}: {exc}") from exc
            front.cluster = ClusterNode(registry, url, pool, config.cluster.node_ttl_seconds, secret=secret)
            placement.cluster = front.cluster
            front.remote_edges = RemoteEdges(pool, node_id, secret, config.cluster.room_viewers_per_worker)
            pool.argv += ["--node-id", node_id]
        async with trio.open_nursery() as starting:
            for worker in pool.workers:
                starting.start_soon(nursery.start, pool.supervise, worker)
        assert front.whep is not None
        await nursery.start(front.whep.run)
        heartbeats = trio.CancelScope()
        if front.cluster is not None:
            cluster = front.cluster

            async def beat(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
                with heartbeats:
                    await cluster.heartbeats(task_status=task_status)

            await nursery.start(beat)
            nursery.start_soon(cluster.fence)
            log.info(
                "node %s (%s) in the cluster at %s",
                front.cluster.node_id,
                redact_url(front.cluster.url),
                redact_url(config.cluster.redis_url),
            )
        log.info("front with %d workers on %s", count, binds[0])
        task_status.started(binds[0])
        await shutdown.wait()
        if front.cluster is not None:
            await front.cluster.drain()
            front.drained.set()
            await trio.sleep(0.1)  # the `reconnect` messages go out before the workers close their sessions
        await pool.stop()  # their sessions are closed with 1012 (relayed to the clients)
        stop_accepting.set()
        heartbeats.cancel()  # so that no beat brings the node back after it left
        if front.cluster is not None:
            await front.cluster.leave()
        nursery.cancel_scope.cancel()
    if redis is not None:
        await redis.aclose()
