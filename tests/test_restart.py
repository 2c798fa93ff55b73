"""A restart loses no room: the server as a process with its SQLite room directory, killed
with SIGKILL and stopped with SIGTERM, then started again; aiortc bots in processes of their
own reconnect and the room resumes with its id, post and host user."""

from __future__ import annotations

import signal
import socket
import time
from pathlib import Path

import httpx

from tests.peer_process import PeerProcess, start_peer
from tests.serving import server_process


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_rooms_and_their_media_survive_a_kill_and_a_graceful_restart(tmp_path: Path) -> None:
    port = free_port()
    state = {"state_path": str(tmp_path / "state" / "rooms.sqlite3")}
    peers: list[PeerProcess] = []
    try:
        with server_process(tmp_path, port=port, cluster=state) as server:
            created = httpx.post(f"{server.url}/room/create", json={"post_id": "p_restart", "host_user_id": "alice"})
            room = created.json()
            gone = httpx.post(f"{server.url}/room/create", json={"post_id": "p_gone", "host_user_id": "bob"}).json()
            assert httpx.post(f"{server.url}/room/{gone['room_id']}/stop").status_code == 200
            peers.append(start_peer(server, room["room_id"], "host", user="alice"))
            viewer = PeerProcess(server, room["room_id"], "viewer")
            peers.append(viewer)
            frames = viewer.wait_frames(video=10, audio=10)[0]
            server.process.send_signal(signal.SIGKILL)  # no goodbye: the clients see the connection drop
            server.process.wait(10)

        with server_process(tmp_path, port=port, cluster=state) as server:
            stats = httpx.get(f"{server.url}/room/{room['room_id']}/stats").json()
            assert stats["is_active"] is True and stats["post_id"] == "p_restart"
            assert stats["host_user_id"] == "alice"
            assert httpx.get(f"{server.url}/room/{gone['room_id']}/stats").status_code == 404  # stopped stays so
            started = time.monotonic()
            frames = viewer.wait_frames(video=frames + 15, audio=0, timeout=30)[0]
            resumed_after_kill = time.monotonic() - started
            again = httpx.post(f"{server.url}/room/create", json={"post_id": "p_restart", "host_user_id": "alice"})
            assert again.json()["room_id"] == room["room_id"]  # the post's active room, as before the kill
            server.process.send_signal(signal.SIGTERM)  # graceful: clients are told to reconnect (1012)
            server.process.wait(15)

        with server_process(tmp_path, port=port, cluster=state) as server:
            started = time.monotonic()
            viewer.wait_frames(video=frames + 15, audio=0, timeout=30)
            resumed_after_term = time.monotonic() - started
            stats = httpx.get(f"{server.url}/room/{room['room_id']}/stats").json()
            assert stats["is_active"] is True and stats["viewer_count"] == 1 and stats["has_host"] is True
        print(f"\nmedia resumed {resumed_after_kill:.1f} s after kill -9, {resumed_after_term:.1f} s after SIGTERM")
        assert resumed_after_kill < 10 and resumed_after_term < 10
    finally:
        for peer in peers:
            peer.stop()
