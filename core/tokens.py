"""Join tokens: HS256 JWTs with claims `room`, `role`, `sub`, `exp` (PROTOCOL.md).

A backend may mint them itself with any JWT library and the shared secret.
"""

from __future__ import annotations

import time
from typing import Literal

import jwt
import msgspec

from core.signaling import Role

LEEWAY_SECONDS = 30


class TokenError(Exception):
    """A token that cannot be accepted. `code` is the protocol's error code."""

    def __init__(self, code: Literal["unauthorized", "forbidden"], message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class JoinClaims(msgspec.Struct, frozen=True):
    room: str
    role: Role
    sub: str
    # a JWT NumericDate may have a fraction (e.g. a JS backend's `Date.now() / 1000 + ttl`)
    exp: int | float


class TokenIssuer:
    """Mints and checks join tokens with one shared secret."""

    def __init__(self, secret: str) -> None:
        self._secret = secret

    def mint(self, room_id: str, role: Role, user_id: str, ttl_seconds: int) -> tuple[str, int]:
        expires_at = int(time.time()) + ttl_seconds
        claims = {"room": room_id, "role": role, "sub": user_id, "exp": expires_at}
        return jwt.encode(claims, self._secret, algorithm="HS256"), expires_at

    def verify(self, token: str, *, room_id: str, role: Role) -> JoinClaims:
        """The claims of a token good for joining `room_id` as `role`, or TokenError.

        Only HS256 is accepted (so never `alg: none`, nor another HMAC); `exp`
        is required, with LEEWAY_SECONDS of leeway; `aud` is not checked. The
        error messages say what is wrong with the token, never the secret.
        """
        try:
            raw = jwt.decode(
                token,
                self._secret,
                algorithms=["HS256"],
                leeway=LEEWAY_SECONDS,
                options={"require": ["exp"], "verify_aud": False},
            )
        except jwt.ExpiredSignatureError as exc:
            raise TokenError("unauthorized", "token expired") from exc
        except jwt.InvalidTokenError as exc:
            raise TokenError("unauthorized", f"invalid token: {exc}") from exc
        except (ValueError, TypeError) as exc:  # e.g. a str PyJWT cannot encode: refuse, never crash the session
            raise TokenError("unauthorized", "invalid token") from exc
        try:
            claims = msgspec.convert(raw, JoinClaims)
        except msgspec.ValidationError as exc:
            raise TokenError("unauthorized", f"invalid token claims: {exc}") from exc
        if claims.room != room_id:
            raise TokenError("forbidden", "token is for another room")
        if role == "host" and claims.role != "host":
            raise TokenError("forbidden", "a viewer token cannot join as host")
        return claims
