"""Drain a request body the app did not read, so its connection is not stuck.

Hypercorn (0.18, HTTP/1.1) hands body chunks to the app through a bounded
queue (`max_app_queue_size` chunks). When the app answers without reading a
big body (a 413, a 404, a 401, `GET /stats` with a body...), Quart stops
reading that queue, Hypercorn's reader blocks on it, and so does the
`http.disconnect` it sends when the response is done: the connection is never
recycled nor closed, the client's next request on it hangs, and the server
keeps the task and socket forever, even after the client leaves. Any client
could pile these up, API key or not.

So when the app has answered all but the last chunk, this wrapper reads and
discards what is left of the body (bounded), which lets Hypercorn finish the
exchange normally: the connection serves its next request, or is closed.

It uses only the ASGI interface, but what it works around is Hypercorn's inner
workings: tests/test_hypercorn_patch.py pins them (an upgrade that changes them
fails there), and tests/test_trust_limits.py::test_an_unread_big_body_does_not_stall_the_connection
checks the behaviour on a live server.
"""

from __future__ import annotations

import logging
from typing import Any, cast

import trio
from hypercorn.typing import (
    ASGIFramework,
    ASGIReceiveCallable,
    ASGIReceiveEvent,
    ASGISendCallable,
    ASGISendEvent,
    Scope,
)

log = logging.getLogger("bitbasel.http")

DRAIN_MAX_BYTES = 16 * 1024 * 1024
DRAIN_MAX_SECONDS = 30.0


class DrainUnreadBody:
    """ASGI middleware: before the last chunk of an HTTP response goes out, read
    what is left of the request body (Hypercorn hands the app `http.disconnect`
    from within that last send, through the same queue)."""

    def __init__(self, app: ASGIFramework) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        finished = trio.Event()

        async def tracked() -> ASGIReceiveEvent:
            message = await receive()
            if message["type"] != "http.request" or not message["more_body"]:
                finished.set()
            return message

        async def drain() -> None:
            drained = 0

            async def read_rest(cancel_scope: trio.CancelScope) -> None:
                nonlocal drained
                while drained <= DRAIN_MAX_BYTES and not finished.is_set():
                    drained += len(cast(dict[str, Any], await tracked()).get("body", b""))
                cancel_scope.cancel()

            # Quart may still be reading too: whoever gets the last message sets `finished`
            with trio.move_on_after(DRAIN_MAX_SECONDS):
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(read_rest, nursery.cancel_scope)
                    await finished.wait()
                    nursery.cancel_scope.cancel()
            if not finished.is_set():
                log.warning(
                    "%s %s: gave up draining an unread request body after %d bytes",
                    scope.get("method"),
                    scope.get("path"),
                    drained,
                )

        async def sending(message: ASGISendEvent) -> None:
            last = message["type"] == "http.response.body" and not message.get("more_body", False)
            if last and not finished.is_set():
                await drain()
            await send(message)

        await self.app(scope, tracked, sending)
