"""`[cluster] workers = 2`: the front places rooms on its media workers, relays REST and
signaling to the room's worker (media goes straight to it), sums /stats, and starts a worker
that died again, whose room then resumes when its clients reconnect (aiortc bots in their own
processes, the server as a process)."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import httpx

from tests.peer_process import PeerProcess, start_peer
from tests.serving import prometheus_values, server_process


def node_metrics(url: str) -> dict[str, float]:
    """The front's /metrics: 'name{labels}' -> value."""
    return prometheus_values(httpx.get(f"{url}/metrics", timeout=10).text)


def test_two_workers_share_the_rooms_and_a_killed_worker_comes_back_with_its_room(tmp_path: Path) -> None:
    cluster = {"workers": 2, "state_path": str(tmp_path / "state" / "rooms.sqlite3")}
    peers: list[PeerProcess] = []
    try:
        with server_process(tmp_path, cluster=cluster) as front:

            def stats() -> dict[str, Any]:
                return dict(httpx.get(f"{front.url}/stats", timeout=10).json())

            rooms = [  # the first one recorded: its worker writes the file, the front relays it
                httpx.post(
                    f"{front.url}/room/create", json={"post_id": f"p{i}", "host_user_id": "alice", "record": i == 0}
                ).json()
                for i in range(2)
            ]
            placed = stats()
            assert placed["active_rooms"] == 2
            assert sorted(len(w["rooms"]) for w in placed["workers"]) == [1, 1]  # one room on each worker
            room_id = rooms[0]["room_id"]
            peers.append(start_peer(front, room_id, "host", user="alice"))
            viewer = PeerProcess(front, room_id, "viewer")
            peers.append(viewer)
            frames = viewer.wait_frames(video=10, audio=10)[0]
            during = stats()
            assert during["total_hosts"] == 1 and during["total_viewers"] == 1
            [owner] = [w for w in during["workers"] if room_id in w["rooms"]]
            assert owner["stats"]["total_viewers"] == 1  # the session is on the room's worker
            metrics = node_metrics(front.url)  # every worker's, summed by the front
            assert metrics["bitbasel_workers"] == metrics["bitbasel_workers_scraped"] == 2
            assert metrics["bitbasel_rooms"] == 2 and metrics['bitbasel_sessions{role="viewer"}'] == 1
            assert metrics["bitbasel_rtp_received_packets_total"] > 0

            os.kill(owner["pid"], signal.SIGKILL)
            started = time.monotonic()
            viewer.wait_frames(video=frames + 15, audio=0, timeout=30)  # the bots reconnect; media resumes
            resumed = time.monotonic() - started
            after = stats()
            [again] = [w for w in after["workers"] if w["index"] == owner["index"]]
            assert again["restarts"] == 1 and again["pid"] != owner["pid"]
            room = httpx.get(f"{front.url}/room/{room_id}/stats").json()
            assert room["is_active"] is True and room["post_id"] == "p0" and room["host_user_id"] == "alice"
            other = httpx.get(f"{front.url}/room/{rooms[1]['room_id']}/stats").json()
            assert other["is_active"] is True  # the other worker's room never noticed
            # the restored room records again (its directory row says so); the file comes through the front
            recording = httpx.post(f"{front.url}/room/{room_id}/recording/stop", timeout=20).json()
            assert recording["state"] == "ready" and recording["bytes"] > 0, recording
            webm = httpx.get(f"{front.url}/room/{room_id}/recordings/{recording['recording_id']}.webm", timeout=20)
            assert webm.status_code == 200 and webm.content[:4] == b"\x1a\x45\xdf\xa3"
            assert len(webm.content) == recording["bytes"] == int(webm.headers["content-length"])
        print(f"\nmedia resumed {resumed:.1f} s after the room's worker was killed")
        assert resumed < 15
    finally:
        for peer in peers:
            peer.stop()
