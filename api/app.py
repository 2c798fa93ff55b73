"""The Quart-Trio application: blueprints and error handlers over one ServerContext."""

from __future__ import annotations

import time
from functools import partial

from quart_trio import QuartTrio

from actors.errors import ActorGone, ActorTimeout, RoomNotFound
from actors.messages import RoomRef
from actors.peer import PeerEnvironment
from actors.supervisor import SupervisorClient
from api.context import ServerContext
from api.http_sessions import HttpSessions
from api.openapi import create_openapi_blueprint
from api.pages import create_pages_blueprint
from api.responses import MAX_BODY_BYTES
from api.rest import create_debug_blueprint, create_rest_blueprint, register_error_handlers
from api.whip import create_whip_blueprint
from api.worker_routes import create_worker_blueprint
from api.ws import create_ws_blueprint
from core.config import IceConfig
from core.ice_servers import IceServer, ice_servers_for


def peer_environment(ctx: ServerContext) -> PeerEnvironment:
    """What every peer actor (WebSocket, WHIP and WHEP sessions) is given."""
    return PeerEnvironment(
        supervisor=ctx.supervisor,
        tokens=ctx.tokens,
        connections=ctx.media,
        max_messages_per_second=ctx.config.server.max_messages_per_second,
        silence_timeout_seconds=ctx.config.server.silence_timeout_seconds,
        connect_timeout_seconds=ctx.config.server.connect_timeout_seconds,
        ice_servers=partial(_ice_servers, ctx.config.ice),
    )


def create_app(ctx: ServerContext, http_sessions: HttpSessions | None = None) -> QuartTrio:
    """`http_sessions` (running: api/server.py starts it) serves WHIP and WHEP; without it those
    routes are absent."""
    app = QuartTrio("bitbasel_media_server", static_folder=None)  # web/ is served by api/pages.py
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES
    app.register_blueprint(create_rest_blueprint(ctx))
    if ctx.worker_index is not None:
        app.register_blueprint(create_worker_blueprint(ctx, http_sessions))
    if ctx.config.debug.fault_injection:
        app.register_blueprint(create_debug_blueprint(ctx))
    app.register_blueprint(create_ws_blueprint(peer_environment(ctx), ctx.sessions))
    if http_sessions is not None:
        host_user_of = partial(_host_user_of, ctx.supervisor)
        whip = create_whip_blueprint(http_sessions, host_user_of=host_user_of, auth=ctx.tokens is not None)
        app.register_blueprint(whip)
    app.register_blueprint(create_pages_blueprint())
    app.register_blueprint(create_openapi_blueprint())
    register_error_handlers(app)
    return app


async def _host_user_of(supervisor: SupervisorClient, room_id: str) -> str | None:
    try:
        found = await supervisor.find_room(room_id)
    except (RoomNotFound, ActorGone, ActorTimeout):
        return None
    return found.host_user_id if isinstance(found, RoomRef) else None


def _ice_servers(ice: IceConfig, user_id: str) -> list[IceServer]:
    return ice_servers_for(
        user_id,
        now=time.time(),
        stun_servers=ice.stun_servers,
        turn_servers=ice.turn_servers,
        turn_secret=ice.turn_secret,
        ttl_seconds=ice.turn_credential_ttl_seconds,
    )
