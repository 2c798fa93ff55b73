"""`GET /openapi.json`: an OpenAPI 3.1 description of the REST API (PROTOCOL.md).

The schemas are generated with `msgspec.json.schema_components` from the very
types the handlers decode and encode (api/schemas.py), so the document cannot
drift from what the server does on the wire; tests/test_openapi.py checks the
routes against the app's url_map and real responses against the schemas.

Not described: the pages, `/static/*`, `/ws` (WebSocket signaling, see
docs/PROTOCOL.md) and the `/debug/*` routes of `[debug] fault_injection`. WHIP and WHEP
(`/whip/*`, `/whep/*`) are described, with their own bearer (a join token).
"""

from __future__ import annotations

from typing import Any

import msgspec
from quart import Blueprint, Response

from api.schemas import (
    CreateRoomRequest,
    CreateRoomResponse,
    ErrorResponse,
    HealthResponse,
    KickResponse,
    PeersResponse,
    RecordingInfo,
    RecordingsResponse,
    RoomStats,
    ServerTotals,
    StopRoomResponse,
    TokenRequest,
    TokenResponse,
)

OPENAPI_VERSION = "3.1.0"
API_VERSION = "1"
REF = "#/components/schemas/{name}"
SECURITY_SCHEME = "bearer"

# the error codes each status stands for (PROTOCOL.md "REST")
ERRORS: dict[int, str] = {
    400: "`bad_request`: malformed JSON, a missing or wrong-typed field, a value out of range",
    401: "`unauthorized`: `[auth] api_key` is set and the request lacks `Authorization: Bearer <api_key>`",
    404: "`room_not_found`: the room is unknown or was forgotten",
    413: "`too_large`: body over 1 MiB",
    503: "`capacity`: `max_rooms` rooms are active",
}
UNAVAILABLE = "`unavailable`: the room's actor did not answer (it is stopping or restarting); try again"

_BODY_TYPES: tuple[type[msgspec.Struct], ...] = (
    CreateRoomRequest,
    CreateRoomResponse,
    TokenRequest,
    TokenResponse,
    RoomStats,
    ServerTotals,
    StopRoomResponse,
    HealthResponse,
    ErrorResponse,
    PeersResponse,
    KickResponse,
    RecordingInfo,
    RecordingsResponse,
)


def _ref(kind: type[msgspec.Struct]) -> dict[str, str]:
    return {"$ref": REF.format(name=kind.__name__)}


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def _operation(
    operation_id: str,
    summary: str,
    response: type[msgspec.Struct] | dict[str, Any],
    *,
    errors: dict[int, str],
    body: type[msgspec.Struct] | None = None,
    room_id: bool = False,
    guarded: bool = True,
    description: str | None = None,
) -> dict[str, Any]:
    responses: dict[str, Any] = {
        "200": {
            "description": "OK",
            "content": _json(response if isinstance(response, dict) else _ref(response)),
        }
    }
    if body is not None:
        errors = {400: ERRORS[400], 413: ERRORS[413], **errors}
    if guarded:
        errors = {401: ERRORS[401], **errors}
    for status in sorted(errors):
        responses[str(status)] = {"description": errors[status], "content": _json(_ref(ErrorResponse))}
    operation: dict[str, Any] = {"operationId": operation_id, "summary": summary}
    if description:
        operation["description"] = description
    if room_id:
        operation["parameters"] = [
            {
                "name": "room_id",
                "in": "path",
                "required": True,
                "description": "`room_` followed by digits, as returned by `POST /room/create`",
                "schema": {"type": "string", "examples": ["room_482913375021"]},
            }
        ]
    if body is not None:
        operation["requestBody"] = {"required": True, "content": _json(_ref(body))}
    operation["responses"] = responses
    if not guarded:
        operation["security"] = []  # open even with `[auth] api_key` set
    return operation


JOIN_TOKEN = "joinToken"
SDP = "application/sdp"
SDPFRAG = "application/trickle-ice-sdpfrag"
# the statuses of WHIP and WHEP (PROTOCOL.md; api/whip.py)
_DOOR_ERRORS = {
    "post": {
        400: "`bad_sdp` / `bad_message`: the offer cannot be used",
        401: "`unauthorized`: a join token is required (`Authorization: Bearer <token>`)",
        403: "`forbidden`: the token is not for this room and role (or the user was kicked)",
        404: "`room_not_found`",
        409: "`host_taken`: another user's host session is live (WHIP)",
        413: "`too_large`: an offer over 64 KiB",
        415: "`unsupported_media_type`: the body is not `application/sdp` (see `Accept-Post`)",
        422: "`unsupported_codec`: the offer has no codec the server forwards",
        503: "`rate_limited` (`max_connections`), `room_full` or `unavailable`, with `Retry-After`",
    },
    "patch": {
        400: "`bad_sdp`: a malformed fragment or candidate",
        401: "`unauthorized`: the session's join token is required",
        403: "`forbidden`: not the token that created the session",
        404: "`not_found`: no such session (ended, deleted, kicked or replaced)",
        412: "`precondition_failed`: `If-Match` names an older ETag",
        413: "`too_large`: body over 1 MiB",
        415: f"`unsupported_media_type`: the body is not `{SDPFRAG}`",
        428: "`precondition_required`: no `If-Match`",
        503: "`unavailable`: the session did not answer in time, with `Retry-After`",
    },
    "delete": {
        401: "`unauthorized`: the session's join token is required",
        403: "`forbidden`: not the token that created the session",
        404: "`not_found`: no such session",
    },
}


def _door_operation(door: str, method: str, summary: str, ok: dict[str, Any], description: str) -> dict[str, Any]:
    session = method in ("patch", "delete")
    parameters = [
        {
            "name": "room_id",
            "in": "path",
            "required": True,
            "description": "`room_` followed by digits, as returned by `POST /room/create`",
            "schema": {"type": "string", "examples": ["room_482913375021"]},
        }
    ]
    if session:
        parameters.append(
            {
                "name": "session_id",
                "in": "path",
                "required": True,
                "description": "the last part of the `Location` that created the session",
                "schema": {"type": "string"},
            }
        )
    responses = dict(ok)
    for status, text in sorted(_DOOR_ERRORS[method].items()):
        responses[str(status)] = {"description": text, "content": _json(_ref(ErrorResponse))}
    operation: dict[str, Any] = {
        "operationId": f"{door}{method.capitalize()}",
        "summary": summary,
        "description": description,
        "parameters": parameters,
        "responses": responses,
        "security": [{JOIN_TOKEN: []}, {}],
    }
    if method == "post":
        operation["requestBody"] = {"required": True, "content": {SDP: {"schema": {"type": "string"}}}}
    elif method == "patch":
        operation["requestBody"] = {"required": True, "content": {SDPFRAG: {"schema": {"type": "string"}}}}
    return operation


def _doors() -> dict[str, Any]:
    """WHIP (RFC 9725) and WHEP: the same shape, a host's and a viewer's door."""
    header = {"schema": {"type": "string"}}
    paths: dict[str, Any] = {}
    for door, who in (("whip", "publish as the room's host"), ("whep", "watch as a viewer")):
        name = door.upper()
        created = {
            "201": {
                "description": "the session: its SDP answer (ICE-lite, one BUNDLE group, rtcp-mux)",
                "headers": {"Location": header, "ETag": header, "Link": header},
                "content": {SDP: {"schema": {"type": "string"}}},
            }
        }
        patched = {
            "200": {
                "description": "an ICE restart: the server's new credentials and candidates, and a new ETag",
                "headers": {"ETag": header},
                "content": {SDPFRAG: {"schema": {"type": "string"}}},
            },
            "204": {"description": "trickled candidates taken"},
        }
        preflight = {
            "204": {"description": "what the door takes (`Accept-Post` / `Accept-Patch`) and CORS", "headers": {}}
        }
        paths[f"/{door}/{{room_id}}"] = {
            "post": _door_operation(
                door,
                "post",
                f"{name}: {who}",
                created,
                f"The body is the SDP offer. `Location: /{door}/{{room_id}}/{{session_id}}` names the session; "
                '`Link: <turn:...>; rel="ice-server"` headers carry TURN servers with minted credentials. '
                + (
                    "The publisher is the room's host like a WebSocket host (it replaces a session of the same "
                    "user); H.264 and VP8 are taken (`[video] codecs`)."
                    if door == "whip"
                    else "A viewer like a WebSocket viewer (it may come before the host is live)."
                ),
            ),
            "options": {
                "operationId": f"{door}Options",
                "summary": f"{name}: `Accept-Post` and CORS preflight",
                "security": [],
                "responses": preflight,
            },
        }
        paths[f"/{door}/{{room_id}}/{{session_id}}"] = {
            "patch": _door_operation(
                door,
                "patch",
                f"{name}: trickle ICE or an ICE restart",
                patched,
                "`If-Match` with the session's ETag (or `*`). A fragment with new `a=ice-ufrag`/`a=ice-pwd` "
                "restarts ICE (200); candidates alone are taken (204).",
            ),
            "delete": _door_operation(
                door,
                "delete",
                f"{name}: end the session",
                {"200": {"description": "ended: the session has left its room"}},
                "The session leaves its room at once; its URL answers 404 from then on.",
            ),
        }
    return paths


def _download_recording(operation_id: str, summary: str, media_type: str, what: str) -> dict[str, Any]:
    """A recording's download: its file is the one the listing's `file` names (`.webm` or `.mkv`)."""
    download = _operation(
        operation_id,
        summary,
        {},
        room_id=True,
        errors={404: "`not_found`: no finished recording of that id in the room with a file of this extension"},
        description=f"`{media_type}`: {what}. A recording's `file` (and `format`) says which extension it has.",
    )
    download["responses"]["200"]["content"] = {media_type: {"schema": {"type": "string", "format": "binary"}}}
    download["parameters"].append(
        {
            "name": "recording_id",
            "in": "path",
            "required": True,
            "description": "a `recording_id` from `GET /room/{room_id}/recordings`",
            "schema": {"type": "string", "examples": ["rec_20261130T010203_1a2b3c4d"]},
        }
    )
    return download


def build_openapi() -> dict[str, Any]:
    """The OpenAPI 3.1 document of the REST API (a fresh dict each call)."""
    _, components = msgspec.json.schema_components(_BODY_TYPES, ref_template=REF)
    # the one rule msgspec cannot express: `post_id` or `classroom_id` must be a string
    components["CreateRoomRequest"]["anyOf"] = [
        {"required": [name], "properties": {name: {"type": "string"}}} for name in ("post_id", "classroom_id")
    ]
    room_errors = {404: ERRORS[404], 503: UNAVAILABLE}
    metrics = _operation(
        "metrics",
        "Prometheus metrics",
        {},
        errors={404: '`[metrics] access = "off"`'},
        description=(
            "The text exposition format of Prometheus (`text/plain; version=0.0.4`): rooms, sessions by "
            "role, RTP packets and bytes in and out, drops by reason, NACKs served, PLIs sent, keyframe "
            "waits, the forwarding delay and the event loop's lag as histograms, WebSocket closes by "
            'code, room restarts. Needs the API key unless `[metrics] access = "open"`.'
        ),
    )
    metrics["responses"]["200"]["content"] = {"text/plain": {"schema": {"type": "string"}}}
    kick = _operation(
        "kickPeer",
        "Remove a session from a room (moderation)",
        KickResponse,
        room_id=True,
        errors={404: "`room_not_found`, or `not_found`: no such session in the room", 503: UNAVAILABLE},
        description=(
            "No body. The session gets `error` `kicked` and close 4451, after which its client must not "
            "reconnect; everyone else carries on. It then leaves the room like any ended session."
        ),
    )
    kick["parameters"].append(
        {
            "name": "peer_id",
            "in": "path",
            "required": True,
            "description": "a `peer_id` from `GET /room/{room_id}/peers` (or the session's `joined`)",
            "schema": {"type": "string", "examples": ["peer_3f9a1c2b7d4e"]},
        }
    )
    thumbnail = _operation(
        "roomThumbnail",
        "The host's latest keyframe as a JPEG (for a 'live now' picture)",
        {},
        room_id=True,
        errors={404: "`room_not_found`, or `not_found`: no video from the host yet", 503: UNAVAILABLE},
        description=(
            "`image/jpeg` of the host's frame size (also in `X-Frame-Size: WxH`). Decoded from the newest "
            "keyframe only when asked, then kept for 3 s; with no keyframe at hand one is asked of the host "
            "and the request waits up to 2.5 s."
        ),
    )
    thumbnail["responses"]["200"]["content"] = {"image/jpeg": {"schema": {"type": "string", "format": "binary"}}}
    download = _download_recording(
        "downloadRecording",
        "A finished recording's WebM file (a VP8 host's, or audio only)",
        "video/webm",
        "the host's VP8 and Opus as sent, no transcoding",
    )
    download_mkv = _download_recording(
        "downloadMatroskaRecording",
        "A finished recording's Matroska file (an H.264 host's)",
        "video/x-matroska",
        "the host's H.264 (avcC, 4-byte NAL lengths) and Opus as sent, no transcoding",
    )
    paths: dict[str, Any] = {
        "/room/{room_id}/recording/start": {
            "post": _operation(
                "startRecording",
                "Record the room's host (or get the recording in progress)",
                RecordingInfo,
                room_id=True,
                errors=room_errors,
                description=(
                    "No body. The host's VP8 + Opus go to a WebM file, its H.264 + Opus to a Matroska file, as "
                    "sent (no transcoding; the listing's `file` names it), from its next "
                    "keyframe, through the host leaving and coming back, until stopped, the room stops, or "
                    "`[recordings] max_seconds` / `max_bytes`. `POST /room/create` with `record: true` starts one "
                    "with the room. A `recording_ready` webhook follows each finished file."
                ),
            ),
        },
        "/room/{room_id}/recording/stop": {
            "post": _operation(
                "stopRecording",
                "Stop the room's recording; answered once the file is finished",
                RecordingInfo,
                room_id=True,
                errors={404: "`room_not_found`, or `not_found`: the room is not recording", 503: UNAVAILABLE},
            ),
        },
        "/room/{room_id}/recordings": {
            "get": _operation(
                "listRecordings",
                "The room's finished recordings (also after the room is gone; none: an empty list)",
                RecordingsResponse,
                room_id=True,
                errors={},
            ),
        },
        "/room/{room_id}/recordings/{recording_id}.webm": {"get": download},
        "/room/{room_id}/recordings/{recording_id}.mkv": {"get": download_mkv},
        "/metrics": {"get": metrics},
        "/room/{room_id}/thumbnail.jpg": {"get": thumbnail},
        "/health": {
            "get": _operation("health", "Liveness check", HealthResponse, errors={}, guarded=False),
        },
        "/room/create": {
            "post": _operation(
                "createRoom",
                "Create the room of a post (or return the post's active room)",
                CreateRoomResponse,
                body=CreateRoomRequest,
                errors={503: ERRORS[503]},
                description=(
                    "`post_id` (or the seed's `classroom_id`; `post_id` wins if both are given) is required. "
                    "While a room for the post is active, that room is returned. `host_token` is a host join "
                    "token for the room (valid one hour), or null when `[auth] secret` is empty. "
                    "Unknown body fields are ignored."
                ),
            ),
        },
        "/room/{room_id}/stop": {
            "post": _operation(
                "stopRoom",
                "Stop a room (again on a stopped room: same answer)",
                StopRoomResponse,
                room_id=True,
                errors=room_errors,
                description="No body. Every session of the room is told `stopped` (reason `api`) and closed.",
            ),
        },
        "/room/{room_id}/stats": {
            "get": _operation(
                "roomStats",
                "A room's statistics (a stopped room's for `idle_timeout_seconds`, then 404)",
                RoomStats,
                room_id=True,
                errors=room_errors,
            ),
        },
        "/room/{room_id}/peers": {
            "get": _operation(
                "roomPeers",
                "The sessions joined to an active room (moderation)",
                PeersResponse,
                room_id=True,
                errors=room_errors,
                description=(
                    "Each joined session: `peer_id`, `role`, `user_id`, `joined_at` (unix s), "
                    "`connection_state` (`connecting` or `connected`), `bytes_received` (a host's RTP bytes), "
                    "`bytes_sent` (RTP payload bytes forwarded to a viewer). 404 for a stopped room."
                ),
            ),
        },
        "/room/{room_id}/peers/{peer_id}/kick": {"post": kick},
        "/room/{room_id}/token": {
            "post": _operation(
                "createToken",
                "Mint a join token for a room",
                TokenResponse,
                body=TokenRequest,
                room_id=True,
                errors=room_errors,
                description=(
                    "An HS256 JWT with claims `room`, `role`, `sub` (= `user_id`) and `exp`, signed with "
                    "`[auth] secret`; `token` and `expires_at` are null when the secret is empty. "
                    "404 for a stopped room too."
                ),
            ),
        },
        "/stats": {
            "get": _operation("serverStats", "Server-wide totals", ServerTotals, errors={}),
        },
        **_doors(),
        "/openapi.json": {
            "get": _operation(
                "openapi",
                "This document",
                {"type": "object", "required": ["openapi", "paths"]},
                errors={},
                guarded=False,
            ),
        },
    }
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "BitBasel Media Server",
            "version": API_VERSION,
            "description": (
                "REST API of the BitBasel Media Server (a WebRTC SFU). Every error is "
                '`{"error": CODE, "message": TEXT}`; an unknown route is 404 `not_found` and a wrong method '
                "405 `method_not_allowed`. When `[auth] api_key` is set, every route but `/health` and "
                "`/openapi.json` needs `Authorization: Bearer <api_key>`. WebSocket signaling (`GET /ws`) is "
                "described in docs/PROTOCOL.md."
            ),
        },
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {
                SECURITY_SCHEME: {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "`[auth] api_key` (when empty, the REST API is open)",
                },
                JOIN_TOKEN: {
                    "type": "http",
                    "scheme": "bearer",
                    "bearerFormat": "JWT",
                    "description": (
                        "WHIP and WHEP: a join token of the room (a host token for WHIP, a viewer or host token "
                        "for WHEP); not needed when `[auth] secret` is empty"
                    ),
                },
            },
        },
        "security": [{SECURITY_SCHEME: []}],
    }


def create_openapi_blueprint() -> Blueprint:
    openapi = Blueprint("openapi", __name__)
    document = msgspec.json.encode(build_openapi())

    @openapi.get("/openapi.json")
    async def openapi_json() -> Response:
        return Response(document, status=200, content_type="application/json")

    return openapi
