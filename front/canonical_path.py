"""The one path a request to a front names, decided before routing (issue 18 row 7).

Hypercorn hands the app `path` percent-decoded once and `raw_path` as sent; neither has its
dot segments resolved. The front used to check `path` for `/internal` and relay it, and httpx
(and the worker) resolved `/x/../internal/rooms/release` or
`/room/<id>/..%2F..%2Finternal/rooms/release` into the workers' own routes afterwards. So the
front now resolves the path once, before anything looks at it:

- the target's path (an absolute-form target `http://host/...` gives its path);
- percent-decoded once, as Hypercorn and the worker decode it (`%2e`, `%2F`, any case);
- backslashes read as slashes;
- empty and `.` segments dropped, `..` segments applied (never above the root); a trailing
  slash kept, as RFC 3986 keeps it.

It routes on that path, refuses `/internal` under any spelling (`is_internal`), and relays
that very path (`relayed_path`: percent-encoded so that the worker, decoding once, reads the
path the front decided on, and no client library on the way finds a dot segment to resolve).
"""

from __future__ import annotations

from typing import cast
from urllib.parse import quote, unquote

from hypercorn.typing import ASGIFramework, ASGIReceiveCallable, ASGISendCallable, Scope

#: What stays as it is in a relayed path: RFC 3986 `pchar`s and `/`; anything else (`%`, `?`,
#: `#`, `\`, spaces, non-ASCII) is percent-encoded.
PATH_SAFE = "/!$&'()*+,;=:@-._~"
INTERNAL = "internal"  # the workers' routes for their front (api/worker_routes.py)


def canonical_path(raw_path: bytes) -> str:
    """The decoded path `raw_path` names once resolved: starts with `/`, no empty, `.` or `..`
    segment, no backslash."""
    text = raw_path.decode("latin-1")
    if not text.startswith("/"):  # absolute form (`http://host/path`), `*`, or a path without its `/`
        _, separator, rest = text.partition("://")
        text = "/" + (rest.partition("/")[2] if separator else text)
    parts = unquote(text).replace("\\", "/").split("/")
    segments: list[str] = []
    for part in parts:
        if part == "..":
            if segments:
                segments.pop()
        elif part not in ("", "."):
            segments.append(part)
    trailing_slash = bool(segments) and parts[-1] in ("", ".", "..")
    return "/" + "/".join(segments) + ("/" if trailing_slash else "")


def is_internal(path: str) -> bool:
    """`path` (canonical) is `/internal` or under it, in any letter case."""
    return path.split("/", 2)[1].lower() == INTERNAL


def relayed_path(path: str) -> str:
    """The canonical `path` as it goes on the wire to a worker or node, which decodes it once."""
    return quote(path, safe=PATH_SAFE)


class CanonicalPaths:
    """ASGI middleware: each HTTP request and WebSocket reaches the app with its canonical
    path (`path`, and `raw_path` encoding it), so that routing, checks and relaying all see
    the same path."""

    def __init__(self, app: ASGIFramework) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable) -> None:
        if scope["type"] == "http" or scope["type"] == "websocket":
            raw = scope.get("raw_path") or quote(scope["path"]).encode()  # raw_path is optional in ASGI
            path = canonical_path(raw)
            scope = cast(Scope, {**scope, "path": path, "raw_path": relayed_path(path).encode()})
        await self.app(scope, receive, send)
