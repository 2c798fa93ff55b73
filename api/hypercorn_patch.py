"""One fix to Hypercorn 0.18's WebSocket stream, installed by `run_server`.

When a client sends a message over `websocket_max_message_size`, Hypercorn's
`WSStream._handle_events` sends close 1009 and `break`s out of its event loop
without ending the stream: the app is never told, the client's close reply is
dropped with the rest of that batch of events, and the TCP connection stays
open until our silence timeout ends the session (a minute), holding a
connection slot and a peer task. Anyone could pile those up.

The fix wraps that method: once it returns with the buffer over the limit, the
stream is ended the way Hypercorn ends it after a close handshake
(`StreamClosed`): the app gets `websocket.disconnect`, the TCP connection is
closed. tests/test_hypercorn_patch.py pins what the wrapper relies on (the
version, the `break` after close 1009, the buffer and stream attributes, the
`StreamClosed` path), so an upgrade that moves or fixes it is noticed, and shows
on a live server that the TCP connection is closed at once; the same through the
SDK, with the connection slot freed, is
tests/test_trust_limits.py::test_a_frame_over_hypercorns_limit_closes_1009_and_frees_the_slot.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Coroutine
from typing import Any

from hypercorn.protocol.events import StreamClosed
from hypercorn.protocol.ws_stream import WSStream

_PATCHED_FLAG = "_bitbasel_closes_on_too_big"


HandleEvents = Callable[[WSStream], Coroutine[Any, Any, None]]


def _closing_on_too_big(handle_events: HandleEvents) -> HandleEvents:
    @functools.wraps(handle_events)
    async def handle_events_then_close(stream: WSStream) -> None:
        await handle_events(stream)
        if stream.buffer.length > stream.buffer.max_length and not stream.closed:
            stream.buffer.clear()
            await stream.send(StreamClosed(stream_id=stream.stream_id))

    setattr(handle_events_then_close, _PATCHED_FLAG, True)
    return handle_events_then_close


def install_hypercorn_patch() -> None:
    """Idempotent."""
    if not getattr(WSStream._handle_events, _PATCHED_FLAG, False):
        WSStream._handle_events = _closing_on_too_big(WSStream._handle_events)  # type: ignore[method-assign,assignment]


def hypercorn_patch_installed() -> bool:
    return bool(getattr(WSStream._handle_events, _PATCHED_FLAG, False))
