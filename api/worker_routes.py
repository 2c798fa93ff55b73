"""Routes only a node's front calls on its media workers (`app.py --worker-index i`, loopback).

`POST /internal/rooms/adopt` with a room directory row: the front has claimed a room of a
dead or drained node for this worker (cluster/registry.py); the room lives here from now on,
with its id, post and host user, and its clients resume in it when they reconnect.
`POST /internal/rooms/release`: the front lost the cluster; every room here stops as for a
restart, so none runs beside the copy another node takes over.

A room across workers (actors/relays.py), set up by the front in two calls:
`POST /internal/rooms/{id}/edge` on the worker that is to hold some of its viewers (an edge;
body: the room's post and host user) answers the edge's relay address and link number (and
whether it was there already); `POST /internal/rooms/{id}/relay` on the room's worker (its
origin; body: that address and link) starts sending the host's media there. For an edge on
another node both calls carry the relay's key (hex; the fronts derive it, transport/relay_crypto.py):
the edge answers its node's announced address, and the relay is SRTP. The room's
moderation reaches its edges' viewers through `GET /internal/rooms/{id}/edge/peers` and
`POST /internal/rooms/{id}/edge/peers/{peer_id}/kick` (the front merges and tries them).
`GET /internal/http-sessions`: the ids of the WHIP and WHEP sessions live here (the front gives
back the placement of those that ended: front/whep_placement.py).
"""

from __future__ import annotations

import ipaddress
from typing import Annotated

import msgspec
from quart import Blueprint, Response

from api.context import ServerContext
from api.http_sessions import HttpSessions
from api.responses import ApiError, decode_body, json_response
from api.rest import check_api_key, written_down
from api.schemas import CreateRoomResponse, KickResponse, PeersResponse
from core.room_directory import RoomRow
from transport.relay_crypto import KEY_BYTES

RelayKey = Annotated[str, msgspec.Meta(pattern=f"^([0-9a-f]{{{2 * KEY_BYTES}}})?$")]


class EdgeRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    post_id: str
    host_user_id: str
    key: RelayKey = ""  # hex: an edge of a room on another node, its relay SRTP-keyed with this


class RelayRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    address: tuple[str, Annotated[int, msgspec.Meta(gt=0, lt=65536)]]  # the edge's relay port
    link: Annotated[int, msgspec.Meta(gt=0, lt=2**32)]  # its link's number
    key: RelayKey = ""  # hex: the edge is on another node (any address), the relay SRTP-keyed with this


def create_worker_blueprint(ctx: ServerContext, http_sessions: HttpSessions | None = None) -> Blueprint:
    internal = Blueprint("worker", __name__)

    @internal.before_request
    async def require_api_key() -> None:
        check_api_key(ctx)

    @internal.post("/internal/rooms/adopt")
    async def adopt_room() -> Response:
        row = await decode_body(RoomRow)
        adopted = await ctx.supervisor.adopt_room(row)
        await written_down(ctx)
        return json_response(
            CreateRoomResponse(
                room_id=adopted.room_id, post_id=adopted.post_id, host_token=None, host_user_id=adopted.host_user_id
            )
        )

    @internal.post("/internal/rooms/<room_id>/edge")
    async def open_edge(room_id: str) -> Response:
        body = await decode_body(EdgeRequest)
        key = bytes.fromhex(body.key) if body.key else None
        return json_response(await ctx.supervisor.open_edge(room_id, body.post_id, body.host_user_id, key))

    @internal.post("/internal/rooms/<room_id>/relay")
    async def open_relay(room_id: str) -> Response:
        body = await decode_body(RelayRequest)
        try:  # an address, never a name (no name lookups on the media thread)
            loopback = ipaddress.ip_address(body.address[0]).is_loopback
        except ValueError:
            raise ApiError("bad_request", f"a relay goes to an IP address, not {body.address[0]!r}") from None
        if not loopback and not body.key:  # the workers of a node relay over loopback only, in the clear
            raise ApiError("bad_request", f"a relay without a key goes to a loopback address, not {body.address[0]!r}")
        key = bytes.fromhex(body.key) if body.key else None
        await ctx.supervisor.open_relay(room_id, body.address, body.link, key)
        return json_response({"status": "relaying"})

    @internal.get("/internal/rooms/<room_id>/edge/peers")
    async def edge_peers(room_id: str) -> Response:
        """The sessions of the room's edge here (the front adds them to the origin's list)."""
        return json_response(PeersResponse(room_id=room_id, peers=await ctx.supervisor.peers(room_id, edge=True)))

    @internal.post("/internal/rooms/<room_id>/edge/peers/<peer_id>/kick")
    async def edge_kick(room_id: str, peer_id: str) -> Response:
        await ctx.supervisor.kick(room_id, peer_id, edge=True)
        return json_response(KickResponse(status="kicked", room_id=room_id, peer_id=peer_id))

    @internal.get("/internal/http-sessions")
    async def live_http_sessions() -> Response:
        """The WHIP and WHEP sessions live here (the front gives back the places of the others)."""
        return json_response({"sessions": http_sessions.ids() if http_sessions is not None else []})

    @internal.post("/internal/rooms/release")
    async def release_rooms() -> Response:
        """The front lost the cluster (self-fencing): every room stops here as for a restart (its
        sessions get `restarting`, 1012; no room_stopped, the directory rows stay for the node
        that takes them)."""
        await ctx.supervisor.stop_all("shutdown")
        return json_response({"status": "released"})

    return internal
