"""WHIP ingest and WHEP playback (RFC 9725 and the WHEP draft): `/whip/{room_id}` publishes as
the room's host, `/whep/{room_id}` watches as a viewer. Each session is a peer actor driven by
HTTP (api/http_sessions.py): the same rooms, tokens and media path as the WebSocket clients.

The statuses of PROTOCOL.md: 201 + `Location` + `ETag` (+ `Link` ice-servers) for a session;
`PATCH` with `If-Match` (428 without, 412 stale; `*` is taken, as RFC 9725 has ICE restarts
send it) answers 204 for trickled candidates (checked; an ICE-lite server needs none) and
200 + a new `ETag` + the server's fragment for an ICE restart; `DELETE` 200; 415 for another
content type, 401/403 for tokens, 404 for an unknown room or session, 503 + `Retry-After` at
capacity. Errors keep the JSON error body.
CORS is open (`*`): a bearer token is a header a page sets, never a cookie.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Awaitable, Callable

import trio
from quart import Blueprint, Response, request

from api.http_sessions import HttpSession, HttpSessions, SessionClosed
from api.responses import json_response
from api.schemas import ErrorResponse
from core.ice_servers import link_headers
from core.signaling import MAX_MESSAGE_BYTES, Answer, Error, Join, Joined, Offer, Role, encode
from media.sdp import MAX_SDP_LENGTH
from media.sdp_offer import parse_candidate_untrusted
from media.sdpfrag import (
    MAX_FRAGMENT_LENGTH,
    ice_credentials,
    parse_sdpfrag_untrusted,
    restart_fragment,
    with_ice_credentials,
)
from media.streams import SdpError

log = logging.getLogger("bitbasel.whip")

SDP = "application/sdp"
SDPFRAG = "application/trickle-ice-sdpfrag"
RETRY_AFTER_SECONDS = 5
#: A room's host user id by room id (None: no such room).
HostUserOf = Callable[[str], Awaitable[str | None]]
#: The peer's refusals (PROTOCOL.md error codes) as HTTP statuses.
STATUS_OF_ERROR = {
    "bad_message": 400,
    "bad_sdp": 400,
    "unauthorized": 401,
    "forbidden": 403,
    "kicked": 403,
    "room_not_found": 404,
    "host_taken": 409,
    "replaced": 409,
    "unsupported_codec": 422,
    "room_full": 503,
    "rate_limited": 503,
    "unavailable": 503,
    "restarting": 503,
    "timeout": 504,
}
CORS_HEADERS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Expose-Headers": "Location, ETag, Link, Accept-Post, Accept-Patch, Retry-After",
}
PREFLIGHT_HEADERS = {
    "Access-Control-Allow-Methods": "POST, PATCH, DELETE, OPTIONS",
    "Access-Control-Allow-Headers": "Authorization, Content-Type, If-Match",
    "Access-Control-Max-Age": "86400",
}


def error(status: int, code: str, message: str) -> Response:
    response = json_response(ErrorResponse(error=code, message=message), status)
    if status == 503:
        response.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
    return response


def _refused(refusal: Error) -> Response:
    return error(STATUS_OF_ERROR.get(refusal.code, 400), refusal.code, refusal.message)


def _body_refused(accept: str, media_type: str, max_bytes: int) -> Response | None:
    """415 (with `accept` naming `media_type`) for a body of another type, 413 for a declared
    length over `max_bytes`; None when the body may be read."""
    if request.mimetype != media_type:
        response = error(415, "unsupported_media_type", f"{request.method} takes {media_type}")
        response.headers[accept] = media_type
        return response
    if request.content_length is not None and request.content_length > max_bytes:
        return error(413, "too_large", f"a body over {max_bytes} bytes")
    return None


async def _text() -> str:
    body = await request.get_data(cache=False, as_text=False)
    return body.decode("utf-8", "replace") if isinstance(body, bytes) else body


def _bearer() -> str | None:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


def create_whip_blueprint(sessions: HttpSessions, *, host_user_of: HostUserOf, auth: bool) -> Blueprint:
    """`host_user_of(room_id)`: the room's host user id (None: no such room), which a WHIP
    publisher is when tokens are off (`[auth] secret` empty)."""
    doors = Blueprint("whip", __name__)

    @doors.after_request
    async def cors(response: Response) -> Response:
        response.headers.update(CORS_HEADERS)
        return response

    _add_door(doors, sessions, "whip", "host", host_user_of=host_user_of, auth=auth)
    _add_door(doors, sessions, "whep", "viewer", host_user_of=host_user_of, auth=auth)
    return doors


def _add_door(
    doors: Blueprint, sessions: HttpSessions, door: str, role: Role, *, host_user_of: HostUserOf, auth: bool
) -> None:
    name = door.upper()

    async def create(room_id: str) -> Response:
        refused = _body_refused("Accept-Post", SDP, MAX_SDP_LENGTH)
        if refused is not None:
            return refused
        offer = await _text()
        if len(offer) > MAX_SDP_LENGTH or len(encode(Offer(sdp=offer))) > MAX_MESSAGE_BYTES:
            return error(413, "too_large", f"an offer over {MAX_SDP_LENGTH} bytes (or {MAX_MESSAGE_BYTES} as JSON)")
        bearer = _bearer()
        user_id = None
        if role == "host" and not auth:  # no tokens: the publisher is the room's host user
            user_id = await host_user_of(room_id)
        session = await sessions.start(room_id, role, bearer if auth else None)
        if session is None:
            return error(503, "rate_limited", "max_connections reached")
        answered = False
        try:
            join = Join(room_id=room_id, role=role, token=bearer, user_id=user_id)
            joined = await session.socket.request(join, fenced=False)
            if isinstance(joined, Error):
                return _refused(joined)
            answer = await session.socket.request(Offer(sdp=offer))
            if isinstance(answer, Error):
                return _refused(answer)
            answered = True
        except SessionClosed:
            return error(503, "unavailable", "the session ended before it was answered; try again")
        except trio.TooSlowError:
            return error(503, "unavailable", "the room did not answer in time; try again")
        finally:
            if not answered:  # refused: the session leaves (a host refused keeps no room's seat)
                await sessions.end(session)
        assert isinstance(joined, Joined) and isinstance(answer, Answer)
        session.offer_sdp = offer
        log.info("%s session %s in %s: %s answered", name, session.session_id, room_id, role)
        response = Response(answer.sdp, status=201, content_type=SDP)
        response.headers["Location"] = f"/{door}/{room_id}/{session.session_id}"
        response.headers["ETag"] = session.etag
        for link in link_headers(joined.ice_servers):
            response.headers.add("Link", link)
        return response

    async def preflight(room_id: str, session_id: str | None = None) -> Response:
        response = Response("", status=204)
        response.headers.update(PREFLIGHT_HEADERS)
        if session_id is None:
            response.headers["Accept-Post"] = SDP
        else:
            response.headers["Accept-Patch"] = SDPFRAG
        return response

    def found(room_id: str, session_id: str) -> HttpSession | Response:
        session = sessions.get(room_id, session_id, role)
        if session is None:
            return error(404, "not_found", f"no {name} session {session_id} in {room_id}")
        if session.bearer is not None:  # tokens on: the session's own token, every time
            bearer = _bearer()
            if bearer is None:
                return error(401, "unauthorized", "'Authorization: Bearer <join token>' is required")
            if not hmac.compare_digest(bearer.encode(), session.bearer.encode()):
                return error(403, "forbidden", "this is not the token that created the session")
        return session

    async def patch(room_id: str, session_id: str) -> Response:
        session = found(room_id, session_id)
        if isinstance(session, Response):
            return session
        if_match = request.headers.get("If-Match")
        if if_match is None:
            return error(428, "precondition_required", "PATCH needs If-Match with the session's ETag")
        if if_match.strip() not in ("*", session.etag):
            return error(412, "precondition_failed", "If-Match names an older state of the session")
        refused = _body_refused("Accept-Patch", SDPFRAG, MAX_FRAGMENT_LENGTH)
        if refused is not None:
            return refused
        try:
            fragment = parse_sdpfrag_untrusted(await _text())
            for trickled in fragment.candidates:
                parse_candidate_untrusted(trickled.candidate.removeprefix("candidate:"))
            current = ice_credentials(session.offer_sdp)
        except (SdpError, ValueError) as exc:
            return error(400, "bad_sdp", str(exc))
        # Trickled candidates, checked above, go no further: the server is ICE-lite and learns the
        # client's addresses from its connectivity checks (PROTOCOL.md "Media transport").
        try:
            ufrag, pwd = fragment.ufrag, fragment.pwd
            if ufrag is not None and pwd is not None and (ufrag, pwd) != current:
                with trio.CancelScope(shield=True):  # a client gone mid-restart: the session still learns it
                    return await _restart(session, ufrag, pwd)
        except SessionClosed:
            return error(404, "not_found", f"the {name} session {session_id} has ended")
        except trio.TooSlowError:
            return error(503, "unavailable", "the session did not answer in time; try again")
        return Response("", status=204)

    async def _restart(session: HttpSession, ufrag: str, pwd: str) -> Response:
        offer = with_ice_credentials(session.offer_sdp, ufrag, pwd)
        # (a restart is refused with `bad_sdp`: an `unsupported_codec` now is the viewer's news)
        answer = await session.socket.request(Offer(sdp=offer), not_replies=frozenset({"unsupported_codec"}))
        if isinstance(answer, Error):
            return _refused(answer)
        assert isinstance(answer, Answer)
        session.offer_sdp = offer
        response = Response(restart_fragment(answer.sdp), status=200, content_type=SDPFRAG)
        response.headers["ETag"] = session.new_etag()
        log.info("%s session %s: ICE restart", name, session.session_id)
        return response

    async def delete(room_id: str, session_id: str) -> Response:
        session = found(room_id, session_id)
        if isinstance(session, Response):
            return session
        await sessions.end(session)
        return Response("", status=200)

    collection, session = f"/{door}/<room_id>", f"/{door}/<room_id>/<session_id>"
    for path, endpoint, view, method in (
        (collection, "create", create, "POST"),
        (collection, "preflight", preflight, "OPTIONS"),
        (session, "patch", patch, "PATCH"),
        (session, "delete", delete, "DELETE"),
        (session, "session_preflight", preflight, "OPTIONS"),
    ):
        # OPTIONS is the door's own (Accept-Post, CORS), not Quart's automatic answer
        doors.add_url_rule(path, f"{door}_{endpoint}", view, methods=[method], provide_automatic_options=False)
