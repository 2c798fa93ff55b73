"""Serving: the media port, the supervisor and Hypercorn in one Trio nursery.

The server is Trio only: media (ICE-lite, DTLS, SRTP, forwarding) runs on the
media port's tasks (transport/media_port.py), with no asyncio loop at all.
"""

from __future__ import annotations

import logging
import ssl

import msgspec
import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve

from actors.supervisor import Supervisor
from api.app import create_app, peer_environment
from api.body_drain import DrainUnreadBody
from api.context import ServerContext
from api.http_sessions import HttpSessions
from api.hypercorn_patch import install_hypercorn_patch
from api.media import MediaConnections, open_media_port
from cluster.redis_client import RedisClient
from cluster.redis_directory import RedisRoomDirectory
from core.config import Config, ConfigError
from core.credentials import redact_url
from core.room_directory import RoomDirectory, RoomDirectoryError, RoomRow, SqliteRoomDirectory
from core.tokens import TokenIssuer
from services.room_store import RoomStore
from services.webhooks import Webhooks
from transport.relay_port import RelayPort

log = logging.getLogger("bitbasel.server")

WEBSOCKET_MAX_MESSAGE_BYTES = 64 * 1024
SHUTDOWN_DEADLINE_SECONDS = 10.0
STORE_FLUSH_SECONDS = 2.0  # at shutdown, for the room directory's last writes
RECORDINGS_FINISH_SECONDS = 5.0  # at shutdown, for the recordings to finish their files
WEBHOOKS_FLUSH_SECONDS = 3.0  # at shutdown, for the last events to be delivered
#: After the WebSocket sessions ended: how long open HTTP connections get before they are closed.
HTTP_DRAIN_SECONDS = 0.25
#: How long the WebSocket sessions get to send `stopped` and close, at shutdown.
SESSIONS_DRAIN_SECONDS = 3.0


class ServerAddress(msgspec.Struct, frozen=True):
    url: str  # e.g. http://127.0.0.1:8082
    host: str
    port: int


def hypercorn_config(config: Config) -> HypercornConfig:
    hc = HypercornConfig()
    hc.bind = [
        f"[{config.server.host}]:{config.server.port}"
        if ":" in config.server.host
        else f"{config.server.host}:{config.server.port}"
    ]
    # just above 64 KiB: the signaling layer itself refuses bigger messages (close 1009)
    hc.websocket_max_message_size = WEBSOCKET_MAX_MESSAGE_BYTES + 1024
    # By the time the listener stops, every WebSocket session has been told `stopped` and has
    # ended (run_server waits for that): what is left are REST requests (milliseconds) and idle
    # keep-alive connections, which Hypercorn 0.18 would keep for its whole graceful timeout.
    hc.graceful_timeout = HTTP_DRAIN_SECONDS
    hc.accesslog = None
    hc.errorlog = logging.getLogger("bitbasel.hypercorn")
    if config.server.tls:
        hc.certfile = config.server.certfile
        hc.keyfile = config.server.keyfile
        # Hypercorn negotiates h2/http1.1 via ALPN; WebSockets go over http/1.1 here.
        hc.alpn_protocols = ["http/1.1"]
    return hc


def check_tls_files(config: Config) -> None:
    """With TLS on, load the certificate and key once now, so that a missing,
    unreadable or mismatched file stops the start with a ConfigError naming the
    keys (not a traceback from inside Hypercorn). The files are read again by Hypercorn."""
    server = config.server
    if not server.tls:
        return
    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(server.certfile, server.keyfile)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            f"server.certfile/server.keyfile: cannot load {server.certfile!r} with {server.keyfile!r}: {exc}"
        ) from exc


def _address(bind: str) -> ServerAddress:
    _, rest = bind.split("://", 1)
    host, _, port = rest.rpartition(":")
    return ServerAddress(url=bind, host=host.strip("[]"), port=int(port))


async def open_room_store(config: Config, worker_index: int | None) -> tuple[RoomStore | None, list[RoomRow]]:
    """The room directory and the rooms it holds for this server (none without one): Redis for a
    worker of a cluster node (`[cluster] redis_url`), else the SQLite file of `[cluster] state_path`.
    An unusable directory stops the start (ConfigError naming the key)."""
    cluster = config.cluster
    directory: RoomDirectory
    try:
        if cluster.redis_url and worker_index is not None:
            key = "cluster.redis_url"
            where = f"{redact_url(cluster.redis_url)} (node {cluster.node_id}, worker {worker_index})"
            directory = RedisRoomDirectory(RedisClient(cluster.redis_url), cluster.node_id, worker_index)
        elif cluster.state_path:
            key, where = "cluster.state_path", cluster.state_path
            directory = await SqliteRoomDirectory.open(cluster.state_path)
        else:
            return None, []
        rows = await directory.load()
    except RoomDirectoryError as exc:
        raise ConfigError(f"{key}: cannot use {where}: {exc}") from exc
    active = sum(1 for row in rows if row.stopped_at is None)
    log.info("room directory %s: %d active room(s) to resume", where, active)
    return RoomStore(directory), rows


async def run_server(
    config: Config,
    shutdown: trio.Event,
    *,
    worker_index: int | None = None,
    task_status: trio.TaskStatus[ServerAddress] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve until `shutdown` is set, then stop every room (peers are told
    `stopped`/`shutdown`), stop accepting, and return within the deadline.
    Raises ConfigError (before serving) when TLS is on and its files cannot be used."""
    check_tls_files(config)
    install_hypercorn_patch()
    if not config.auth.secret:
        log.warning(
            "[auth] secret is empty: join tokens are NOT required; anyone may join any room, and publish to it "
            "over WHIP as its host (replacing the live one)"
        )
    if not config.auth.api_key:
        log.warning("[auth] api_key is empty: the REST API is open to anyone who can reach it")
    media_port = open_media_port(config)  # binds now: a port in use stops the start (ConfigError)
    # a worker of a node's front relays rooms to the other workers (actors/relays.py), and in a
    # cluster to other nodes' workers (SRTP), which reach it at its first media host address
    # (an interface's: the nodes' own network, not the clients' announced one)
    relay_port = None
    if worker_index is not None and config.cluster.redis_url:
        relay_port = RelayPort(media_port, "0.0.0.0", announced_host=media_port.addresses[0])
    elif worker_index is not None:
        relay_port = RelayPort(media_port)
    webhooks = Webhooks(config.webhooks)
    store, restored = await open_room_store(config, worker_index)
    async with trio.open_nursery() as nursery:
        await nursery.start(media_port.serve)
        await nursery.start(webhooks.run)
        if store is not None:
            await nursery.start(store.run)
        supervisor = Supervisor(
            max_rooms=config.rooms.max_rooms,
            max_viewers_per_room=config.rooms.max_viewers_per_room,
            idle_timeout_seconds=config.rooms.idle_timeout_seconds,
            target_bitrate_bps=config.video.target_bitrate_kbps * 1000,
            media_lock=media_port.lock,
            events=webhooks,
            recordings=config.recordings,
            store=store,
            restored=restored,
            relay_port=relay_port,
        )
        client = await nursery.start(supervisor.run)
        ctx = ServerContext(
            config=config,
            supervisor=client,
            tokens=TokenIssuer(config.auth.secret) if config.auth.secret else None,
            media=MediaConnections(config, media_port),
            webhooks=webhooks,
            store=store,
            worker_index=worker_index,
            relay_port=relay_port,
        )
        nursery.start_soon(ctx.loop_lag.run)
        http_sessions = HttpSessions(peer_environment(ctx), ctx.sessions)  # WHIP and WHEP
        await nursery.start(http_sessions.run)
        app = create_app(ctx, http_sessions)
        stop_accepting = trio.Event()
        http_done = trio.Event()

        async def serve_http(*, task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED) -> None:
            try:
                await serve(
                    DrainUnreadBody(app),
                    hypercorn_config(config),
                    shutdown_trigger=stop_accepting.wait,
                    task_status=task_status,
                )
            finally:
                http_done.set()

        binds: list[str] = await nursery.start(serve_http)
        task_status.started(_address(binds[0]))
        await shutdown.wait()
        log.info("shutting down: stopping every room, then the listener")
        with trio.move_on_after(SHUTDOWN_DEADLINE_SECONDS) as deadline:
            await client.stop_all("shutdown")  # every session is told `stopped` and closes
            with trio.move_on_after(SESSIONS_DRAIN_SECONDS):
                await ctx.sessions.wait_all_left()
            stop_accepting.set()
            await http_done.wait()  # Hypercorn gives open HTTP connections HTTP_DRAIN_SECONDS
        if deadline.cancelled_caught:
            log.warning("shutdown deadline of %.0f s passed: cancelling what is left", SHUTDOWN_DEADLINE_SECONDS)
        with trio.move_on_after(RECORDINGS_FINISH_SECONDS):
            await supervisor.wait_recordings_finished()  # their files' sizes and duration
        with trio.move_on_after(WEBHOOKS_FLUSH_SECONDS):
            await webhooks.flush()  # room_stopped, recording_ready
        if store is not None:
            with trio.move_on_after(STORE_FLUSH_SECONDS):
                await store.flush()  # what the restarted server will find
        nursery.cancel_scope.cancel()
    if store is not None:
        with trio.CancelScope(shield=True):
            await store.directory.aclose()
