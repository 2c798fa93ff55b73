"""The REST routes of PROTOCOL.md. Handlers talk to actors only through the
supervisor's client (request/reply over memory channels)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import trio
from quart import Blueprint, Response, request
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException

from actors.errors import ActorRefusal, RoomNotFound
from actors.messages import RoomStats
from api.context import ServerContext
from api.metrics import CONTENT_TYPE, render
from api.responses import ApiError, decode_body, json_response
from api.runtime import runtime_stats
from api.schemas import (
    CrashResponse,
    CreateRoomRequest,
    CreateRoomResponse,
    ErrorResponse,
    HealthResponse,
    KickResponse,
    PeersResponse,
    RecordingsResponse,
    StopRoomResponse,
    TokenRequest,
    TokenResponse,
)
from core.credentials import bears_api_key
from services.recordings import recordings_of

# Routes of this blueprint need the bearer key when `[auth] api_key` is set;
# /health, the pages, static files, /openapi.json and /ws do not.
OPEN_ENDPOINTS = frozenset({"rest.health", "rest.metrics"})  # /metrics checks its own access
HOST_TOKEN_TTL_SECONDS = 3600
RECORDING_FINISH_SECONDS = 10.0
STORE_WAIT_SECONDS = 2.0
RECORDING_ID = re.compile(r"rec_[0-9A-Za-z_]{1,64}")
ROOM_ID = re.compile(r"room_[0-9]{1,32}")
RECORDING_TYPES = {"webm": "video/webm", "mkv": "video/x-matroska"}  # by the file's extension


def check_api_key(ctx: ServerContext) -> None:
    """Raise `unauthorized` unless the request bears the API key (when one is set).
    Compared in constant time, as bytes (core/credentials.py)."""
    if not bears_api_key(request.headers.get("Authorization"), ctx.config.auth.api_key):
        raise ApiError("unauthorized", "missing or wrong 'Authorization: Bearer <api_key>'")


def create_rest_blueprint(ctx: ServerContext) -> Blueprint:
    rest = Blueprint("rest", __name__)

    @rest.before_request
    async def require_api_key() -> None:
        if request.endpoint not in OPEN_ENDPOINTS:
            check_api_key(ctx)

    @rest.get("/metrics")
    async def metrics() -> Response:
        access = ctx.config.metrics.access
        if access == "off":
            raise ApiError("not_found", "GET /metrics is off ([metrics] access)")
        if access == "api_key":
            check_api_key(ctx)
        body = render(
            await ctx.supervisor.metrics(),
            ctx.media.port,
            loop_lag=ctx.loop_lag.histogram.snapshot(),
            open_sessions=ctx.sessions.open,
            close_codes=ctx.sessions.close_codes,
            webhooks=ctx.webhooks.statistics.as_dict() if ctx.webhooks.enabled else None,
            relay=ctx.relay_port.statistics if ctx.relay_port is not None else None,
        )
        return Response(body, status=200, content_type=CONTENT_TYPE)

    @rest.get("/health")
    async def health() -> Response:
        return json_response(HealthResponse(status="healthy", service="media_server"))

    @rest.post("/room/create")
    async def create_room() -> Response:
        body = await decode_body(CreateRoomRequest)
        post_id = body.post_id if body.post_id is not None else body.classroom_id
        if post_id is None:
            raise ApiError("bad_request", "Object missing required field `post_id`")
        created = await ctx.supervisor.create_room(post_id, body.host_user_id, record=body.record)
        await written_down(ctx)
        host_token = None
        if ctx.tokens is not None:
            host_token, _ = ctx.tokens.mint(created.room_id, "host", created.host_user_id, HOST_TOKEN_TTL_SECONDS)
        return json_response(
            CreateRoomResponse(
                room_id=created.room_id,
                post_id=created.post_id,
                host_token=host_token,
                host_user_id=created.host_user_id,
            )
        )

    @rest.post("/room/<room_id>/stop")
    async def stop_room(room_id: str) -> Response:
        await ctx.supervisor.stop_room(room_id, "api")
        await written_down(ctx)
        return json_response(StopRoomResponse(status="stopped", room_id=room_id))

    @rest.get("/room/<room_id>/stats")
    async def room_stats(room_id: str) -> Response:
        return json_response(await ctx.supervisor.room_stats(room_id))

    @rest.get("/room/<room_id>/peers")
    async def room_peers(room_id: str) -> Response:
        return json_response(PeersResponse(room_id=room_id, peers=await ctx.supervisor.peers(room_id)))

    @rest.post("/room/<room_id>/peers/<peer_id>/kick")
    async def kick_peer(room_id: str, peer_id: str) -> Response:
        await ctx.supervisor.kick(room_id, peer_id)
        return json_response(KickResponse(status="kicked", room_id=room_id, peer_id=peer_id))

    @rest.get("/room/<room_id>/thumbnail.jpg")
    async def thumbnail(room_id: str) -> Response:
        picture = await ctx.thumbnails.jpeg(room_id)
        headers = {"Cache-Control": "max-age=3", "X-Frame-Size": f"{picture.width}x{picture.height}"}
        return Response(picture.jpeg, status=200, content_type="image/jpeg", headers=headers)

    @rest.post("/room/<room_id>/recording/start")
    async def start_recording(room_id: str) -> Response:
        recording = await ctx.supervisor.start_recording(room_id)
        return json_response(recording.info())

    @rest.post("/room/<room_id>/recording/stop")
    async def stop_recording(room_id: str) -> Response:
        recording = await ctx.supervisor.stop_recording(room_id)
        with trio.move_on_after(RECORDING_FINISH_SECONDS):
            await recording.wait_done()  # the file's last bytes, sizes and duration
        return json_response(recording.info())

    @rest.get("/room/<room_id>/recordings")
    async def list_recordings(room_id: str) -> Response:
        if not ROOM_ID.fullmatch(room_id):
            return json_response(RecordingsResponse(room_id=room_id, recordings=[]))
        directory = Path(ctx.config.recordings.directory)
        found = await trio.to_thread.run_sync(recordings_of, directory, room_id)
        return json_response(RecordingsResponse(room_id=room_id, recordings=found))

    @rest.get("/room/<room_id>/recordings/<recording_id>.webm")
    async def download_recording(room_id: str, recording_id: str) -> Response:
        return await _recording_file(room_id, recording_id, "webm")

    @rest.get("/room/<room_id>/recordings/<recording_id>.mkv")
    async def download_matroska_recording(room_id: str, recording_id: str) -> Response:
        return await _recording_file(room_id, recording_id, "mkv")

    async def _recording_file(room_id: str, recording_id: str, extension: str) -> Response:
        """A finished recording's file: `.webm` (VP8, or audio only) or `.mkv` (H.264), the one
        its `file` names; the other extension is 404 like an unknown id."""
        if not RECORDING_ID.fullmatch(recording_id) or not ROOM_ID.fullmatch(room_id):
            raise ApiError("not_found", "no such recording")
        folder = Path(ctx.config.recordings.directory) / room_id
        path = folder / f"{recording_id}.{extension}"
        ready = folder / f"{recording_id}.json"
        if not await trio.to_thread.run_sync(ready.is_file):  # only finished recordings
            raise ApiError("not_found", f"no finished recording {recording_id} in room {room_id}")
        try:
            size = (await trio.to_thread.run_sync(path.stat)).st_size
        except FileNotFoundError:
            raise ApiError("not_found", f"recording {recording_id} has no .{extension} file") from None
        if size == 0:
            raise ApiError("not_found", f"recording {recording_id} has no media (no host sent any while it ran)")
        headers = {
            "Content-Disposition": f'attachment; filename="{room_id}_{recording_id}.{extension}"',
            "Content-Length": str(size),
        }
        return Response(_file_chunks(path), status=200, content_type=RECORDING_TYPES[extension], headers=headers)

    @rest.get("/stats")
    async def server_stats() -> Response:
        return json_response(await ctx.supervisor.totals())

    @rest.post("/room/<room_id>/token")
    async def mint_token(room_id: str) -> Response:
        body = await decode_body(TokenRequest)
        found = await ctx.supervisor.find_room(room_id)
        if isinstance(found, RoomStats):
            raise RoomNotFound(f"room {room_id} is stopped")
        if ctx.tokens is None:
            return json_response(TokenResponse(token=None, expires_at=None))
        token, expires_at = ctx.tokens.mint(room_id, body.role, body.user_id, body.ttl_seconds)
        return json_response(TokenResponse(token=token, expires_at=expires_at))

    return rest


async def written_down(ctx: ServerContext) -> None:
    """With a room directory, answer once the change is in it (a kill -9 right after the answer
    loses nothing); bounded, the answer does not depend on it."""
    if ctx.store is not None:
        with trio.move_on_after(STORE_WAIT_SECONDS):
            await ctx.store.flush()


async def _file_chunks(path: Path, chunk_bytes: int = 1 << 20) -> AsyncIterator[bytes]:
    """A file in 1 MiB chunks, each read in a worker thread (a recording can be gigabytes)."""
    file = await trio.to_thread.run_sync(path.open, "rb")
    try:
        while chunk := await trio.to_thread.run_sync(file.read, chunk_bytes):
            yield chunk
    finally:
        file.close()


def create_debug_blueprint(ctx: ServerContext) -> Blueprint:
    """Only registered with `[debug] fault_injection = true`: room crashes on demand, and
    the process's task, fd and memory counts (`GET /debug/runtime`)."""
    debug = Blueprint("debug", __name__)

    @debug.before_request
    async def require_api_key() -> None:
        check_api_key(ctx)

    @debug.get("/debug/runtime")
    async def runtime() -> Response:
        return json_response(runtime_stats(ctx.media.port))

    @debug.post("/debug/room/<room_id>/crash")
    async def crash_room(room_id: str) -> Response:
        await ctx.supervisor.crash_room(room_id)
        return json_response(CrashResponse(status="crashed", room_id=room_id))

    return debug


def register_error_handlers(app: QuartTrio) -> None:
    from api.responses import error_response

    @app.errorhandler(ApiError)
    async def on_api_error(exc: ApiError) -> Response:
        return error_response(exc.code, exc.message)

    @app.errorhandler(ActorRefusal)
    async def on_refusal(exc: ActorRefusal) -> Response:
        code = exc.code if exc.code in {"room_not_found", "not_found", "capacity"} else "unavailable"
        return error_response(code, exc.message)

    @app.errorhandler(404)
    async def on_not_found(_: Exception) -> Response:
        return error_response("not_found", f"no route {request.path}")

    @app.errorhandler(405)
    async def on_bad_method(_: Exception) -> Response:
        return error_response("method_not_allowed", f"{request.method} is not allowed on {request.path}")

    @app.errorhandler(413)
    async def on_too_large(_: Exception) -> Response:
        return error_response("too_large", "body over 1 MiB")

    @app.errorhandler(HTTPException)
    async def on_other_http_error(exc: HTTPException) -> Response:
        # any other HTTP error keeps the error shape: e.g. 400 for `GET /ws` without an upgrade
        # (routing redirects never get here)
        status = exc.code or 500
        code = "bad_request" if status == 400 else (exc.name or "error").lower().replace(" ", "_")
        return json_response(ErrorResponse(error=code, message=exc.description or exc.name), status)
