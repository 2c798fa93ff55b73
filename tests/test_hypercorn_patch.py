"""What api/hypercorn_patch.py and api/body_drain.py take from Hypercorn's insides.

api/hypercorn_patch.py wraps a private method of Hypercorn 0.18
(`WSStream._handle_events`) and api/body_drain.py works around how Hypercorn
hands a request body and `http.disconnect` to the app. Neither is a contract
of Hypercorn's: the tests here pin the pieces they rely on, so that an upgrade
that moves or fixes them fails here rather than in production.

The behaviour, on a live server:
- here, a message over the limit gets close 1009 and the server closes the TCP
  connection at once, whatever the client does (the silence timeout is 600 s);
- tests/test_trust_limits.py::test_a_frame_over_hypercorns_limit_closes_1009_and_frees_the_slot:
  the same through the SDK, and the connection slot is free again at once;
- tests/test_trust_limits.py::test_an_unread_big_body_does_not_stall_the_connection:
  api/body_drain.py.
"""

from __future__ import annotations

import ast
import importlib.metadata
import inspect
import textwrap
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import trio
import wsproto
from hypercorn.config import Config as HypercornConfig
from hypercorn.protocol.events import StreamClosed
from hypercorn.protocol.h11 import H11Protocol
from hypercorn.protocol.http_stream import HTTPStream
from hypercorn.protocol.ws_stream import FrameTooLargeError, WebsocketBuffer, WSStream
from hypercorn.trio.task_group import TaskGroup
from wsproto.events import AcceptConnection, CloseConnection, Request, TextMessage

from api.hypercorn_patch import hypercorn_patch_installed, install_hypercorn_patch
from api.server import WEBSOCKET_MAX_MESSAGE_BYTES
from tests.serving import make_config, running_server

ROOT = Path(__file__).resolve().parent.parent
PATCHED_AGAINST = "0.18.0"  # read the hook again before changing this


def statements(function: Callable[..., Any]) -> list[str]:
    """Every statement and expression of `function`'s own source (not a wrapper's), normalised."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(inspect.unwrap(function))))
    return [ast.unparse(node) for node in ast.walk(tree) if isinstance(node, (ast.stmt, ast.expr))]


def except_body(function: Callable[..., Any], exception: str) -> list[str]:
    tree = ast.parse(textwrap.dedent(inspect.getsource(inspect.unwrap(function))))
    handlers = [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.ExceptHandler) and node.type is not None and ast.unparse(node.type) == exception
    ]
    assert len(handlers) == 1, f"{function.__qualname__}: {len(handlers)} `except {exception}`"
    return [ast.unparse(statement) for statement in handlers[0].body]


# ---- the pin ------------------------------------------------------------------------


def test_hypercorn_is_the_version_the_hooks_were_written_for() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    pins = [d for d in pyproject["project"]["dependencies"] if d.startswith("hypercorn")]
    assert pins == [f"hypercorn=={PATCHED_AGAINST}"]
    assert importlib.metadata.version("hypercorn") == PATCHED_AGAINST


# ---- api/hypercorn_patch.py ---------------------------------------------------------


def test_the_hooked_method_still_breaks_out_after_close_1009() -> None:
    """The bug the patch fixes: on a message over the limit, `_handle_events` sends
    close 1009 and `break`s, leaving the stream open (no `StreamClosed`, buffer kept)."""
    handle_events = vars(WSStream)["_handle_events"]
    assert inspect.iscoroutinefunction(handle_events)
    assert inspect.iscoroutinefunction(inspect.unwrap(handle_events))
    assert except_body(handle_events, "FrameTooLargeError") == [
        "await self._send_wsproto_event(CloseConnection(code=CloseReason.MESSAGE_TOO_BIG))",
        "break",
    ]
    assert "self.buffer.extend(event)" in statements(handle_events)


def test_the_buffer_stays_over_its_limit_after_too_large() -> None:
    """What the patch tests after the method returns: `buffer.length > buffer.max_length`."""
    buffer = WebsocketBuffer(max_length=10)
    buffer.extend(TextMessage(data="x" * 10, message_finished=False))
    with pytest.raises(FrameTooLargeError):
        buffer.extend(TextMessage(data="x"))
    assert buffer.length > buffer.max_length
    buffer.clear()
    assert buffer.length == 0


async def test_the_stream_has_what_the_patch_uses() -> None:
    """`stream.buffer`, `.closed`, `.stream_id`, `.send` and the `StreamClosed` event."""
    sent: list[object] = []

    async def send(event: object) -> None:
        sent.append(event)

    config = HypercornConfig()
    config.websocket_max_message_size = 1234
    stream = WSStream(None, config, None, None, False, None, None, send, 7)  # type: ignore[arg-type]
    assert (stream.buffer.max_length, stream.closed, stream.stream_id) == (1234, False, 7)
    await stream.send(StreamClosed(stream_id=stream.stream_id))
    assert sent == [StreamClosed(stream_id=7)]
    # the HTTP/1.1 protocol ends the connection on a stream's StreamClosed
    assert "await self._maybe_recycle()" in statements(H11Protocol.stream_send)
    assert "await self.send(Closed())" in statements(H11Protocol._maybe_recycle)


def test_install_is_idempotent() -> None:
    install_hypercorn_patch()
    install_hypercorn_patch()
    assert hypercorn_patch_installed()
    wrapper = vars(WSStream)["_handle_events"]
    assert wrapper.__wrapped__ is inspect.unwrap(wrapper)  # wrapped once, not twice


async def test_a_message_over_the_limit_gets_1009_and_the_tcp_connection_closes_at_once() -> None:
    """A bare WebSocket client that never answers the close: the server still closes
    the TCP connection, at once (without the patch: only at the silence timeout)."""
    config = make_config(server={"silence_timeout_seconds": 600})
    with trio.fail_after(20):
        async with running_server(config) as server:
            host, port = server.address.host, server.address.port
            stream = await trio.open_tcp_stream(host, port)
            ws = wsproto.WSConnection(wsproto.ConnectionType.CLIENT)
            await stream.send_all(ws.send(Request(host=f"{host}:{port}", target="/ws")))
            events: list[object] = []
            while not any(isinstance(e, AcceptConnection) for e in events):
                ws.receive_data(await stream.receive_some())
                events.extend(ws.events())
            await stream.send_all(ws.send(TextMessage(data="x" * (WEBSOCKET_MAX_MESSAGE_BYTES + 6 * 1024))))
            with trio.fail_after(3):
                while data := await stream.receive_some():
                    ws.receive_data(data)
                    events.extend(ws.events())
            closes = [e for e in events if isinstance(e, CloseConnection)]
            assert [c.code for c in closes] == [1009]
            await stream.aclose()


# ---- api/body_drain.py --------------------------------------------------------------


def test_the_disconnect_waits_behind_the_unread_body_in_one_bounded_queue() -> None:
    """Why the middleware drains, and why before the last send: the app's receive
    queue holds `max_app_queue_size` events, and the response's last send ends the
    stream from within itself (`_send_closed` -> StreamClosed -> `_maybe_recycle` ->
    `_close_stream` -> `handle`), which puts `http.disconnect` on that same queue:
    it blocks while unread body chunks fill it."""
    assert isinstance(HypercornConfig().max_app_queue_size, int)
    assert any(
        s.startswith("trio.open_memory_channel") and s.endswith("(config.max_app_queue_size)")
        for s in statements(TaskGroup.spawn_app)
    )
    assert "await self._send_closed()" in statements(HTTPStream.app_send)
    assert "await self.send(StreamClosed(stream_id=self.stream_id))" in statements(HTTPStream._send_closed)
    assert "await self._close_stream()" in statements(H11Protocol._maybe_recycle)
    assert "await self.stream.handle(StreamClosed(stream_id=STREAM_ID))" in statements(H11Protocol._close_stream)
    assert "await self.app_put({'type': 'http.disconnect'})" in statements(HTTPStream.handle)
