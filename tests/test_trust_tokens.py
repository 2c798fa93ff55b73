"""Who may do what: join tokens on the WebSocket (PROTOCOL.md "Join tokens") and
the REST API key's reach, over real sockets against a server with `[auth] secret`.

Tokens here are minted the way a backend would: PyJWT with the shared secret.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import time
import warnings
from typing import Any

import httpx
import jwt
import pytest
import trio

from core.tokens import LEEWAY_SECONDS
from media_server_client.messages import Error, Ping, Pong
from media_server_client.signaling import SessionClosed, SignalingSession, connect_signaling
from tests.serving import RunningServer, http_client, make_config, running_server

SECRET = "0123456789abcdef-join-token-secret"  # >= 32 bytes
OTHER_SECRET = "another-secret-that-is-32-bytes-long"
API_KEY = "the-rest-api-key"
HOST_USER = "alice"


@pytest.fixture
async def server() -> Any:
    async with running_server(make_config(auth={"secret": SECRET})) as running:
        yield running


def mint(room_id: str, role: str, sub: str, *, exp: float | None = None, secret: str = SECRET, **extra: Any) -> str:
    """Exactly what a backend does: PyJWT, HS256, the shared secret."""
    claims: dict[str, Any] = {"room": room_id, "role": role, "sub": sub, "exp": exp or int(time.time()) + 60}
    return jwt.encode({**claims, **extra}, secret, "HS256")


def unsigned(header: dict[str, Any], claims: dict[str, Any], signature: bytes = b"") -> str:
    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    return ".".join((b64(json.dumps(header).encode()), b64(json.dumps(claims).encode()), b64(signature)))


def hs256_signed(header: dict[str, Any], claims: dict[str, Any]) -> str:
    """A token signed with the right secret but a hand-made header."""
    head = unsigned(header, claims).rsplit(".", 1)[0]
    signature = hmac.new(SECRET.encode(), head.encode(), hashlib.sha256).digest()
    return head + "." + base64.urlsafe_b64encode(signature).rstrip(b"=").decode()


async def new_room(server: RunningServer, post: str = "post", host: str = HOST_USER) -> dict[str, Any]:
    async with http_client(server) as client:
        response = await client.post("/room/create", json={"post_id": post, "host_user_id": host})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def refused(session: SignalingSession, code: str, close_code: int) -> Error:
    with pytest.raises(SessionClosed) as closed:
        await session.wait_closed()
    assert closed.value.code == close_code, closed.value
    error = closed.value.error
    assert error is not None and error.code == code, closed.value
    return error


async def join_refused(
    server: RunningServer, room_id: str, role: str, token: str | None, code: str, close_code: int, **kw: Any
) -> Error:
    async with connect_signaling(server.ws_url) as session:
        await session.send_raw(json.dumps({"type": "join", "room_id": room_id, "role": role, "token": token, **kw}))
        return await refused(session, code, close_code)


async def still_alive(session: SignalingSession) -> None:
    await session.send(Ping())
    assert await session.expect(Pong) == Pong()


async def test_join_without_a_token_is_unauthorized(server: RunningServer) -> None:
    with trio.fail_after(10):
        room_id = (await new_room(server))["room_id"]
        for role, user_id in (("viewer", "bob"), ("host", HOST_USER)):  # even the room's host user needs one
            error = await join_refused(server, room_id, role, None, "unauthorized", 4401, user_id=user_id)
            assert "token" in error.message


def bad_tokens(room_id: str) -> dict[str, str]:
    now = int(time.time())
    good_claims = {"room": room_id, "role": "viewer", "sub": "bob", "exp": now + 60}
    with warnings.catch_warnings():  # PyJWT warns that the key is short for SHA-512: that is not the point here
        warnings.simplefilter("ignore")
        hs512 = jwt.encode(good_claims, SECRET, "HS512")
    return {
        "garbage": "not-a-jwt",
        "empty": "",
        "three junk parts": "a.b.c",
        "truncated": mint(room_id, "viewer", "bob")[:-5],
        "wrong secret": mint(room_id, "viewer", "bob", secret=OTHER_SECRET),
        "expired beyond the leeway": mint(room_id, "viewer", "bob", exp=now - LEEWAY_SECONDS - 30),
        "alg none": unsigned({"alg": "none", "typ": "JWT"}, good_claims),
        "alg none, signed anyway": unsigned({"alg": "none"}, good_claims, b"x" * 32),
        "HS512 with the right secret": hs512,
        "no exp": jwt.encode({"room": room_id, "role": "viewer", "sub": "bob"}, SECRET, "HS256"),
        "exp not a number": hs256_signed({"alg": "HS256"}, {**good_claims, "exp": "soon"}),
        "sub not a string": hs256_signed({"alg": "HS256"}, {**good_claims, "sub": 42}),
        "no sub": jwt.encode({"room": room_id, "role": "viewer", "exp": now + 60}, SECRET, "HS256"),
        "unknown role": mint(room_id, "admin", "bob"),
        "not before in the future": mint(room_id, "viewer", "bob", nbf=now + 3600),
        "payload not an object": hs256_signed({"alg": "HS256"}, [1, 2]),  # type: ignore[arg-type]
    }


@pytest.mark.parametrize(
    "kind", list(bad_tokens("room_1")), ids=lambda k: k.replace(" ", "-").replace(",", "").replace("'", "")
)
async def test_bad_tokens_are_unauthorized_and_never_echo_the_secret(
    server: RunningServer, kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with trio.fail_after(10):
        room_id = (await new_room(server))["room_id"]
        token = bad_tokens(room_id)[kind]
        error = await join_refused(server, room_id, "viewer", token, "unauthorized", 4401)
    assert SECRET not in error.message and SECRET not in caplog.text
    # nor any part of it long enough to matter
    assert all(SECRET[i : i + 8] not in error.message for i in range(len(SECRET) - 7))


async def test_expiry_has_a_30_second_leeway(server: RunningServer) -> None:
    with trio.fail_after(10):
        room_id = (await new_room(server))["room_id"]
        token = mint(room_id, "viewer", "bob", exp=int(time.time()) - (LEEWAY_SECONDS - 15))
        async with connect_signaling(server.ws_url) as session:
            joined = await session.join(room_id, "viewer", token=token)
            assert joined.role == "viewer"


async def test_a_backend_minting_with_pyjwt_is_accepted(server: RunningServer) -> None:
    """Exactly the backend's code; with an integer exp and with a fractional one
    (a JWT NumericDate may have a fraction, as JS's Date.now() / 1000 gives)."""
    with trio.fail_after(10):
        room_id = (await new_room(server))["room_id"]
        for exp in (int(time.time()) + 60, time.time() + 60.5):
            token = jwt.encode({"room": room_id, "role": "viewer", "sub": "bob", "exp": exp}, SECRET, "HS256")
            async with connect_signaling(server.ws_url) as session:
                joined = await session.join(room_id, "viewer", token=token)
                assert joined.room_id == room_id and joined.role == "viewer"
                await still_alive(session)
        # unknown claims (iat, aud, iss, jti) are no reason to refuse
        extra = {"iat": int(time.time()), "aud": "media", "iss": "backend", "jti": "x1"}
        async with connect_signaling(server.ws_url) as session:
            await session.join(room_id, "viewer", token=mint(room_id, "viewer", "bob", **extra))


async def test_a_token_for_another_room_is_forbidden(server: RunningServer) -> None:
    with trio.fail_after(10):
        room_a = (await new_room(server, "post_a"))["room_id"]
        room_b = (await new_room(server, "post_b"))["room_id"]
        error = await join_refused(server, room_a, "viewer", mint(room_b, "viewer", "bob"), "forbidden", 4403)
        assert "another room" in error.message
        await join_refused(server, room_a, "host", mint(room_b, "host", HOST_USER), "forbidden", 4403)


async def test_a_token_of_a_stopped_room_never_opens_the_posts_next_room(server: RunningServer) -> None:
    with trio.fail_after(10):
        old = await new_room(server, "post_s")
        async with http_client(server) as client:
            await client.post(f"/room/{old['room_id']}/stop")
        new = await new_room(server, "post_s")
        assert new["room_id"] != old["room_id"]
        await join_refused(server, old["room_id"], "host", old["host_token"], "room_not_found", 4404)
        await join_refused(server, new["room_id"], "host", old["host_token"], "forbidden", 4403)


async def test_a_viewer_token_cannot_host_but_a_host_token_may_view(server: RunningServer) -> None:
    with trio.fail_after(10):
        room_id = (await new_room(server))["room_id"]
        viewer_token = mint(room_id, "viewer", HOST_USER)  # even with the host's own user id
        error = await join_refused(server, room_id, "host", viewer_token, "forbidden", 4403, user_id=HOST_USER)
        assert "viewer token" in error.message
        async with connect_signaling(server.ws_url) as session:
            joined = await session.join(room_id, "viewer", token=mint(room_id, "host", HOST_USER))
            assert joined.role == "viewer" and joined.viewer_count == 1


async def test_the_session_user_is_the_tokens_sub(server: RunningServer) -> None:
    """The `user_id` of the join message is ignored when a token is given: the
    token's `sub` decides who replaces whom and who is refused `host_taken`."""
    with trio.fail_after(10):
        room_id = (await new_room(server))["room_id"]
        async with connect_signaling(server.ws_url) as first:
            await first.join(room_id, "host", token=mint(room_id, "host", HOST_USER), user_id="mallory")
            # another user's host token, claiming to be alice in the message: host_taken
            await join_refused(
                server, room_id, "host", mint(room_id, "host", "mallory"), "host_taken", 4409, user_id=HOST_USER
            )
            await still_alive(first)
            # alice's token, claiming to be mallory in the message: replaces the first session
            async with connect_signaling(server.ws_url) as second:
                await second.join(room_id, "host", token=mint(room_id, "host", HOST_USER), user_id="mallory")
                await refused(first, "replaced", 4410)
                await still_alive(second)
        async with http_client(server) as client:
            stats = (await client.get(f"/room/{room_id}/stats")).json()
        assert stats["host_user_id"] == HOST_USER


async def test_tokens_from_the_rest_api_work(server: RunningServer) -> None:
    with trio.fail_after(10):
        created = await new_room(server, "post_r", "carol")
        room_id = created["room_id"]
        assert isinstance(created["host_token"], str)
        async with http_client(server) as client:

            async def token(role: str, user: str, ttl: Any = None) -> httpx.Response:
                body: dict[str, Any] = {"role": role, "user_id": user}
                if ttl is not None:
                    body["ttl_seconds"] = ttl
                return await client.post(f"/room/{room_id}/token", json=body)

            viewer = await token("viewer", "dave")
            assert viewer.status_code == 200
            assert 3590 <= viewer.json()["expires_at"] - time.time() <= 3601  # default ttl 3600
            for ttl in (1, 86400):  # the bounds are accepted ...
                bounded = await token("viewer", "dave", ttl)
                assert bounded.status_code == 200, bounded.text
                assert ttl - 5 <= bounded.json()["expires_at"] - time.time() <= ttl + 1
            for ttl in (0, 86401, -1, 10**20):  # ... and nothing beyond them
                beyond = await token("viewer", "dave", ttl)
                assert beyond.status_code == 400 and beyond.json()["error"] == "bad_request", beyond.text
            host = await token("host", "carol", 60)
        async with connect_signaling(server.ws_url) as host_session:
            joined = await host_session.join(room_id, "host", token=created["host_token"])
            assert joined.role == "host"
            async with connect_signaling(server.ws_url) as viewer_session:
                await viewer_session.join(room_id, "viewer", token=viewer.json()["token"])
                await still_alive(viewer_session)
            # the minted host token of the same user replaces the create's
            async with connect_signaling(server.ws_url) as again:
                await again.join(room_id, "host", token=host.json()["token"])
                await refused(host_session, "replaced", 4410)


async def test_the_api_key_guards_the_rest_routes_only() -> None:
    """PROTOCOL.md: with `[auth] api_key` set, the pages, static files,
    /openapi.json and /ws need no key (WebSocket sessions have join tokens)."""
    config = make_config(auth={"api_key": API_KEY, "secret": SECRET})
    with trio.fail_after(10):
        async with running_server(config) as server, http_client(server) as client:
            assert (await client.get("/stats")).status_code == 401  # guarded, as the REST tests show
            for path in ("/", "/watch/room_123", "/static/bitbasel-media.js", "/openapi.json", "/health"):
                response = await client.get(path)
                assert response.status_code == 200, (path, response.status_code, response.text[:200])
            assert (await client.options("/static/bitbasel-media.js")).status_code in (200, 204)  # a preflight
            assert (await client.get("/openapi.json")).json()["openapi"].startswith("3.1")
            keyed = {"Authorization": f"Bearer {API_KEY}"}
            created = await client.post("/room/create", json={"post_id": "p", "host_user_id": "u"}, headers=keyed)
            room_id = created.json()["room_id"]
            # a WebSocket needs no API key, only a join token (and without one it is refused as such)
            async with connect_signaling(server.ws_url) as session:
                await session.join(room_id, "viewer", token=mint(room_id, "viewer", "bob"))
                await still_alive(session)
            await join_refused(server, room_id, "viewer", None, "unauthorized", 4401)
            # the API key is not a join token either
            await join_refused(server, room_id, "viewer", API_KEY, "unauthorized", 4401)
