"""A room across the workers of a node (issue 21): `[cluster] workers = 2` and
`room_viewers_per_worker = 2`. The host's worker (the origin) takes the room's first two
viewers; the next two go to the other worker (an edge), fed by a relay of the host's media
(actors/relays.py, transport/relay_port.py); every viewer decodes, the room counts all four,
and the host publishes once. aiortc bots in their own processes, the server as a process."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import httpx
import trio
from trio_websocket import open_websocket_url

from tests.peer_process import PeerProcess, start_peer
from tests.serving import create_room, server_process


def test_viewers_past_a_workers_share_go_to_an_edge_fed_by_a_relay(tmp_path: Path) -> None:
    cluster = {"workers": 2, "room_viewers_per_worker": 2}
    peers: list[PeerProcess] = []
    try:
        with server_process(tmp_path, cluster=cluster) as front:

            def stats() -> dict[str, Any]:
                return dict(httpx.get(f"{front.url}/stats", timeout=10).json())

            def room() -> dict[str, Any]:
                return dict(httpx.get(f"{front.url}/room/{room_id}/stats", timeout=10).json())

            room_id = httpx.post(f"{front.url}/room/create", json={"post_id": "p", "host_user_id": "alice"}).json()[
                "room_id"
            ]
            peers.append(start_peer(front, room_id, "host", user="alice"))
            viewers = []
            for i in range(4):  # one after the other: the first two are placed before the next come
                viewer = PeerProcess(front, room_id, "viewer", user=f"viewer{i}")
                peers.append(viewer)
                viewers.append(viewer)
                viewer.wait_frames(video=5, audio=5)
            for viewer in viewers:
                viewer.wait_frames(video=30, audio=30)

            placed = stats()
            per_worker = sorted(w["stats"]["total_viewers"] for w in placed["workers"])
            assert per_worker == [2, 2], placed["workers"]
            [origin] = [w for w in placed["workers"] if room_id in w["rooms"]]
            [edge] = [w for w in placed["workers"] if w is not origin]
            assert origin["stats"]["total_hosts"] == 1 and edge["stats"]["total_hosts"] == 0
            assert edge["stats"]["active_rooms"] == 0  # an edge is not a room of its own
            # the host's media reaches the node once: the edge receives nothing from a client
            assert edge["stats"]["total_bytes_received"] == 0 < origin["stats"]["total_bytes_received"]
            deadline = time.monotonic() + 5
            while room()["viewer_count"] != 4 and time.monotonic() < deadline:  # edges report twice a second
                time.sleep(0.1)
            stats_now = room()
            assert stats_now["viewer_count"] == 4 and stats_now["has_host"] is True, stats_now
            # the edge's keyframe requests (its viewers joining) reached the host through the origin
            assert stats_now["forwarding"]["keyframe_requests"]["relay"] >= 1, stats_now["forwarding"]

            # moderation reaches the edge: the front lists the sessions of both workers (the
            # origin's first) and kicks one on the edge
            def listed() -> list[dict[str, Any]]:
                return list(httpx.get(f"{front.url}/room/{room_id}/peers", timeout=10).json()["peers"])

            sessions = listed()
            assert [p["role"] for p in sessions].count("viewer") == 4 and len(sessions) == 5, sessions
            kicked = sessions[-1]["peer_id"]  # an edge's session
            response = httpx.post(f"{front.url}/room/{room_id}/peers/{kicked}/kick", timeout=10)
            assert response.status_code == 200, response.text
            deadline = time.monotonic() + 5
            while any(p["peer_id"] == kicked for p in listed()):
                assert time.monotonic() < deadline, "the kicked session is still listed"
                time.sleep(0.1)
            before = [viewer.latest_frames()[0] for viewer in viewers[2:]]
            time.sleep(2)
            after = [viewer.latest_frames()[0] for viewer in viewers[2:]]
            gone = [viewer for viewer, b, a in zip(viewers[2:], before, after, strict=True) if a - b < 5]
            assert len(gone) == 1, (before, after)  # the kicked bot gets nothing more

            # the edge worker dies: its viewers reconnect (to a live worker) and decode again within
            # 5 s; the origin's never notice
            on_origin, on_edge = viewers[:2], [viewer for viewer in viewers[2:] if viewer not in gone]
            for viewer in on_origin + on_edge:
                viewer.latest_frames()
            marks = [len(viewer.gaps_ms) for viewer in on_origin]
            counts = [viewer.frames[0] for viewer in on_edge]
            os.kill(edge["pid"], signal.SIGKILL)
            killed_at = time.monotonic()
            for viewer, count in zip(on_edge, counts, strict=True):
                viewer.wait_frames(video=count + 10, audio=0, timeout=10)
            back_in = time.monotonic() - killed_at
            for viewer in on_origin:
                viewer.wait_frames(video=viewer.frames[0] + 15, audio=0)
            gaps = [max(viewer.gaps_ms[mark:]) for viewer, mark in zip(on_origin, marks, strict=True)]
            print(f"\nedge worker killed: its viewers decoding again after {back_in:.1f} s; origin gaps {gaps} ms")
            assert back_in < 5.0
            assert max(gaps) <= 200, gaps

    finally:
        for peer in peers:
            peer.stop()


def test_an_edge_keeps_its_viewers_while_the_origins_worker_restarts(tmp_path: Path) -> None:
    """The origin's worker dies: the room comes back on it (its room directory), the host
    reconnects there, the front relays to the edge again, and the edge's viewer decodes again in
    the same session (only a gap: no reconnection of its own)."""
    cluster = {"workers": 2, "room_viewers_per_worker": 1, "state_path": str(tmp_path / "state" / "rooms.sqlite3")}
    peers: list[PeerProcess] = []
    try:
        with server_process(tmp_path, cluster=cluster) as front:

            def listed() -> list[dict[str, Any]]:
                return list(httpx.get(f"{front.url}/room/{room_id}/peers", timeout=10).json()["peers"])

            room_id = httpx.post(f"{front.url}/room/create", json={"post_id": "p", "host_user_id": "alice"}).json()[
                "room_id"
            ]
            peers.append(start_peer(front, room_id, "host", user="alice"))
            on_origin = PeerProcess(front, room_id, "viewer")
            peers.append(on_origin)
            on_origin.wait_frames(video=5, audio=5)
            on_edge = PeerProcess(front, room_id, "viewer")
            peers.append(on_edge)
            on_edge.wait_frames(video=30, audio=30)
            workers = httpx.get(f"{front.url}/stats", timeout=10).json()["workers"]
            [origin] = [w for w in workers if room_id in w["rooms"]]
            [edge] = [w for w in workers if w is not origin]
            assert edge["stats"]["total_viewers"] == 1
            edge_session = listed()[-1]["peer_id"]  # the origin's sessions come first

            os.kill(origin["pid"], signal.SIGKILL)
            killed_at = time.monotonic()
            count = on_edge.latest_frames()[0]
            on_edge.wait_frames(video=count + 15, audio=0, timeout=30)
            back_in = time.monotonic() - killed_at
            print(f"\norigin worker killed: the edge's viewer decoding again after {back_in:.1f} s")
            assert back_in < 5.0  # a gap: the worker's restart and the host's reconnection
            assert edge_session in {p["peer_id"] for p in listed()}  # the same session: no reconnection
            after = httpx.get(f"{front.url}/stats", timeout=10).json()["workers"]
            assert [w["pid"] for w in after if w["index"] == edge["index"]] == [edge["pid"]]
    finally:
        for peer in peers:
            peer.stop()


async def test_max_viewers_per_room_holds_exactly_across_workers(tmp_path: Path) -> None:
    """Eight viewers join at once a room of `max_viewers_per_room = 3` spread one per worker:
    the front counts every viewer of the room wherever it goes, so exactly three join and five
    get `room_full` (each worker alone would admit on counts up to half a second old)."""
    cluster = {"workers": 2, "room_viewers_per_worker": 1}
    with server_process(tmp_path, cluster=cluster, rooms={"max_viewers_per_room": 3}) as front:
        async with httpx.AsyncClient(base_url=front.url, timeout=10) as client:
            room_id = await create_room(client, "full")
        firsts: list[str] = []
        everyone_answered = trio.Event()

        async def join() -> None:
            async with open_websocket_url(front.ws_url) as ws:
                await ws.send_message(json.dumps({"type": "join", "room_id": room_id, "role": "viewer"}))
                first = json.loads(await ws.get_message())
                firsts.append(first["code"] if first["type"] == "error" else first["type"])
                if len(firsts) == 8:
                    everyone_answered.set()
                with trio.move_on_after(10):  # hold the session until all have their answer
                    await everyone_answered.wait()

        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                for _ in range(8):
                    nursery.start_soon(join)
        assert sorted(firsts) == ["joined"] * 3 + ["room_full"] * 5, firsts
