"""The ICE servers a session's client is given in `joined` (`ice_servers`), sans-IO.

The server itself is an ICE-lite agent and contacts none of them. Clients get:
the configured STUN servers (`[ice] stun_servers`, no credentials), and the TURN
servers (`[ice] turn_servers`) with credentials minted for that session the way
coturn's `use-auth-secret` (the "TURN REST API") checks them: the username is
`<expiry unix time>:<user id>`, the credential is base64(HMAC-SHA1(secret,
username)). coturn needs only the same `static-auth-secret`; no user database,
nothing to revoke: a credential lapses at its expiry (`turn_credential_ttl_seconds`).
"""

from __future__ import annotations

import base64
import hashlib
import hmac

import msgspec


class IceServer(msgspec.Struct, frozen=True, omit_defaults=True):
    """One entry of `RTCConfiguration.iceServers`, as the browser API spells it."""

    urls: list[str]
    username: str | None = None
    credential: str | None = None


def turn_credentials(secret: str, user_id: str, *, now: float, ttl_seconds: int) -> tuple[str, str]:
    """(username, credential) valid until `now + ttl_seconds`, for coturn's `use-auth-secret`.

    A colon in `user_id` is kept: coturn reads the expiry before the first colon."""
    if not secret:
        raise ValueError("a TURN secret is required")
    if ttl_seconds <= 0:
        raise ValueError("ttl_seconds must be positive")
    username = f"{int(now) + ttl_seconds}:{user_id}"
    digest = hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    return username, base64.b64encode(digest).decode("ascii")


def ice_servers_for(
    user_id: str,
    *,
    now: float,
    stun_servers: list[str],
    turn_servers: list[str],
    turn_secret: str,
    ttl_seconds: int,
) -> list[IceServer]:
    """What `joined.ice_servers` carries for a session of `user_id` (empty by default)."""
    servers = [IceServer(urls=list(stun_servers))] if stun_servers else []
    if turn_servers:
        username, credential = turn_credentials(turn_secret, user_id, now=now, ttl_seconds=ttl_seconds)
        servers.append(IceServer(urls=list(turn_servers), username=username, credential=credential))
    return servers


def link_headers(servers: list[IceServer]) -> list[str]:
    """The same servers as WHIP/WHEP `Link` header values (RFC 9725 4.6): one per URL,
    `rel="ice-server"`, with the TURN credentials as `username` / `credential`."""
    out: list[str] = []
    for server in servers:
        params = ""
        if server.username is not None and server.credential is not None:
            params = (
                f'; username="{_quoted(server.username)}"; credential="{_quoted(server.credential)}"'
                '; credential-type="password"'
            )
        out.extend(f'<{url}>; rel="ice-server"{params}' for url in server.urls)
    return out


def _quoted(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')
