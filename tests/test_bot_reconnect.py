"""Bots reconnect after an abnormal close and end cleanly on a final one.

The signaling of a bot goes through a loopback TCP relay the test can cut
(a lost connection is a 1006 for the bot); media goes directly over UDP.
"""

from __future__ import annotations

import socket
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest
import trio
import trio.testing
import trio_asyncio
from aiortc.mediastreams import MediaStreamError
from trio_websocket import CloseReason, ConnectionClosed

from media_server_client.bots import Backoff, LentTrack, _keepalive, open_host, open_viewer, reconnects_after
from media_server_client.signaling import SessionClosed
from media_server_client.sources import TestPatternTrack, ToneTrack
from tests.media_support import LOOPBACK, create_room, host, media_server, room_stats, viewer
from tests.serving import app_process

FAST = Backoff(initial=0.05, maximum=0.5)
SMALL = {"width": 160, "height": 120, "fps": 15}


def small_tracks() -> list[TestPatternTrack | ToneTrack]:
    return [TestPatternTrack(**SMALL), ToneTrack()]


class Relay:
    """A loopback TCP relay to `target_port`: `abort()` cuts every current connection
    (both ends see EOF, no WebSocket close frame), `close()` also stops listening."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self._connections: set[trio.CancelScope] = set()
        self._scope = trio.CancelScope()

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    async def serve(self, task_status: trio.TaskStatus[Relay] = trio.TASK_STATUS_IGNORED) -> None:
        with self._scope:
            listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
            self.port = listeners[0].socket.getsockname()[1]
            task_status.started(self)
            await trio.serve_listeners(self._relay, listeners)

    def abort(self) -> int:
        for scope in self._connections:
            scope.cancel()
        return len(self._connections)

    def close(self) -> None:
        self._scope.cancel()

    async def _relay(self, client: trio.SocketStream) -> None:
        with trio.CancelScope() as scope:
            self._connections.add(scope)
            try:
                async with (
                    client,
                    await trio.open_tcp_stream("127.0.0.1", self.target_port) as upstream,
                    trio.open_nursery() as nursery,
                ):
                    nursery.start_soon(self._pump, client, upstream, nursery.cancel_scope)
                    nursery.start_soon(self._pump, upstream, client, nursery.cancel_scope)
            except OSError:
                pass  # the server is not there: the client sees its connection closed
            finally:
                self._connections.discard(scope)

    @staticmethod
    async def _pump(source: trio.SocketStream, sink: trio.SocketStream, done: trio.CancelScope) -> None:
        try:
            async for chunk in source:
                await sink.send_all(chunk)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        done.cancel()


def frames_at_least(video: int):  # type: ignore[no-untyped-def]
    return lambda s: s.video_frames >= video


async def test_a_viewer_reconnects_after_its_signaling_connection_is_lost() -> None:
    with trio.fail_after(60):
        async with media_server() as server, trio.open_nursery() as nursery:
            relay: Relay = await nursery.start(Relay(server.address.port).serve)
            room_id = await create_room(server)
            async with (
                host(server, room_id, tracks=small_tracks()),
                open_viewer(relay.ws_url, room_id, host_addresses=LOOPBACK, backoff=FAST) as v,
            ):
                await v.wait_for(frames_at_least(10))
                first_peer, first_pc = v.peer_id, v.pc
                assert relay.abort() == 1
                # joined counts the viewer itself: 1 means the old session was already gone, else wait for it
                await v.wait_for(lambda s: s.reconnects == 1 and s.room.viewer_count == 1)
                stats = await room_stats(server, room_id)
                assert stats["viewer_count"] == 1 and stats["has_host"] is True
                count = v.state.video_frames
                await v.wait_for(frames_at_least(count + 10))
                assert v.peer_id != first_peer and v.pc is not first_pc
                assert first_pc.connectionState == "closed"
                assert v.state.last_close is not None and v.state.last_close.code == 1006
                assert v.state.closed is None and v.state.connection_state == "connected"
                assert (await room_stats(server, room_id))["viewer_count"] == 1
            nursery.cancel_scope.cancel()
    assert v.state.reconnects == 1


async def test_a_host_reconnects_and_publishes_its_tracks_again() -> None:
    with trio.fail_after(60):
        async with media_server() as server, trio.open_nursery() as nursery:
            relay: Relay = await nursery.start(Relay(server.address.port).serve)
            room_id = await create_room(server)
            tracks = small_tracks()
            async with (
                viewer(server, room_id, kinds=("video",)) as v,
                open_host(
                    relay.ws_url, room_id, user_id="alice", tracks=tracks, host_addresses=LOOPBACK, backoff=FAST
                ) as h,
            ):
                await v.wait_for(frames_at_least(10))
                assert relay.abort() == 1
                await h.wait_for(lambda s: s.reconnects == 1)
                await h.wait_connected()
                lent = [sender.track for sender in h.pc.getSenders()]
                assert {t.source for t in lent if isinstance(t, LentTrack)} == set(tracks)  # the same tracks again
                count = v.state.video_frames
                await v.wait_for(lambda s: s.video_frames >= count + 10 and s.room.has_host)
                stats = await room_stats(server, room_id)
                assert stats["has_host"] is True and stats["viewer_count"] == 1
                assert h.state.closed is None and v.state.reconnects == 0

            nursery.cancel_scope.cancel()
    assert all(track.readyState == "ended" for track in tracks)  # stopped when the host was left


async def test_a_lent_track_ends_without_ending_its_source() -> None:
    """aiortc stops a sender's track when the sender's loop ends (e.g. the server closed DTLS
    first: a draining node, a restart); the host bot lends each connection a stand-in, so the
    source goes on to the next connection (tests/test_cluster.py shows it end to end)."""
    async with trio_asyncio.open_loop():
        source = ToneTrack()
        lent = LentTrack(source)
        frame = await trio_asyncio.aio_as_trio(lent.recv)()
        assert frame.samples > 0
        lent.stop()
        with pytest.raises(MediaStreamError):
            await trio_asyncio.aio_as_trio(lent.recv)()
        assert source.readyState == "live"
        assert (await trio_asyncio.aio_as_trio(LentTrack(source).recv)()).samples > 0  # the next connection's
        source.stop()
        with pytest.raises(MediaStreamError):
            await trio_asyncio.aio_as_trio(LentTrack(source).recv)()


async def test_a_bot_gives_up_after_reconnect_for_and_0_never_reconnects() -> None:
    with trio.fail_after(60):
        async with media_server() as server, trio.open_nursery() as nursery:
            relay: Relay = await nursery.start(Relay(server.address.port).serve)
            room_id = await create_room(server)
            async with (
                open_viewer(relay.ws_url, room_id, host_addresses=LOOPBACK, decode=False, reconnect_for=0) as never,
                open_viewer(
                    relay.ws_url, room_id, host_addresses=LOOPBACK, decode=False, reconnect_for=1.0, backoff=FAST
                ) as patient,
            ):
                await never.wait_connected()
                await patient.wait_connected()
                relay.close()  # connections cut, and new ones refused
                started = trio.current_time()
                await never.wait_for(lambda s: s.closed is not None)
                assert never.state.closed is not None and never.state.closed.code == 1006
                assert never.state.connection_state == "closed"
                state = await patient.wait_for(lambda s: s.closed is not None)
                waited = trio.current_time() - started
                assert state.closed is not None and state.closed.code == 1006
                assert "gave up" in (state.closed.reason or "") and state.reconnects == 0
                assert 0.5 <= waited < 5, waited
            nursery.cancel_scope.cancel()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


async def test_a_viewer_ends_cleanly_when_its_room_did_not_survive_a_server_restart(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text('[server]\nhost = "127.0.0.1"\n[ice]\nhost_addresses = ["127.0.0.1"]\n')
    port = _free_port()
    args = ("--config", str(config), "--port", str(port))
    base = f"http://127.0.0.1:{port}"
    with trio.fail_after(90), ExitStack() as processes:
        # app_process blocks until the server prints its line: enter it in a thread
        first, line = await trio.to_thread.run_sync(processes.enter_context, app_process(*args))
        assert line == f"listening on {base}", line
        async with trio_asyncio.open_loop():
            async with httpx.AsyncClient(base_url=base, timeout=10) as client:
                response = await client.post("/room/create", json={"post_id": "p", "host_user_id": "alice"})
                room_id = response.json()["room_id"]
            async with open_viewer(f"ws://127.0.0.1:{port}/ws", room_id, host_addresses=LOOPBACK) as v:
                await v.wait_connected()
                first.kill()  # kill -9: no close frame, no `stopped`
                await trio.to_thread.run_sync(first.wait)
                await v.wait_for(lambda s: s.last_close is not None)
                assert v.state.closed is None  # not final: the bot tries again
                _, line = await trio.to_thread.run_sync(processes.enter_context, app_process(*args))
                assert line == f"listening on {base}", line
                state = await v.wait_for(lambda s: s.closed is not None)
            assert state.closed is not None and state.closed.code == 4404 and state.closed.final
            assert state.closed.error is not None and state.closed.error.code == "room_not_found"
            assert state.reconnects == 0 and state.connection_state == "closed"


@pytest.mark.parametrize(
    ("code", "stopped", "again"),
    [
        (1006, False, True),
        (1011, False, True),
        (1012, False, True),
        (1013, False, True),
        (4408, False, True),
        (4429, False, True),
        (1000, True, False),
        (1001, True, False),
        (1000, False, False),
        (4401, False, False),
        (4403, False, False),
        (4404, False, False),
        (4410, False, False),
        (4400, False, False),
        (4415, False, False),
        (None, False, False),
    ],
)
def test_which_closes_are_retried(code: int | None, stopped: bool, again: bool) -> None:
    assert reconnects_after(SessionClosed(code, None, None), stopped=stopped) is again


def test_the_backoff_doubles_up_to_its_cap_with_downward_jitter() -> None:
    backoff = Backoff(initial=0.25, maximum=5.0, factor=2.0, jitter=0.25)
    assert [backoff.delay(n, rand=0.0) for n in range(1, 9)] == [0.25, 0.5, 1.0, 2.0, 4.0, 5.0, 5.0, 5.0]
    assert backoff.delay(3, rand=0.999) == pytest.approx(0.75, rel=1e-3)
    assert backoff.delay(10_000, rand=0.5) == pytest.approx(5.0 * 0.875)
    for attempt in range(1, 50):
        assert 0.75 * min(5.0, 0.25 * 2 ** (attempt - 1)) <= backoff.delay(attempt) <= 5.0
    assert Backoff(jitter=0).delay(2) == 0.5


async def test_the_keepalive_ends_quietly_on_a_closed_connection(autojump_clock: trio.testing.MockClock) -> None:
    class ClosedSession:
        sent = 0

        async def send(self, message: object) -> None:
            self.sent += 1
            raise ConnectionClosed(CloseReason(1006, None))

    session = ClosedSession()
    with trio.fail_after(60):
        await _keepalive(session)  # type: ignore[arg-type]
    assert session.sent == 1
