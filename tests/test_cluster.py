"""`[cluster] redis_url`: three nodes of two media workers each on this machine, one real
redis-server on loopback (tests/redis_support.py), aiortc bots in their own processes.

Any node creates, reports and joins any room; signaling goes to the room's node, media straight
to its worker. A node killed with kill -9 takes its workers with it and its room resumes on a
live node with the same id, post and host user; a node stopped with SIGTERM sends its clients
to another node (`reconnect`) and its room resumes there."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.browser_support import CHROMIUM, JS_FRAMES_DECODED_OVER, chromium_browser, poll_page
from tests.peer_process import PeerProcess, start_peer
from tests.redis_support import TcpProxy, redis_server
from tests.serving import ServerProcess, server_process

SUMMED = ("active_rooms", "total_peers", "total_hosts", "total_viewers")


def stats(node: ServerProcess) -> dict[str, Any]:
    return dict(httpx.get(f"{node.url}/stats", timeout=10).json())


def node_of_room(node: ServerProcess, room_id: str) -> str:
    [holder] = [n["node_id"] for n in stats(node)["nodes"] if n["stats"] and n["stats"]["active_rooms"]]
    return str(holder)


def wait_for(check: Any, what: str, timeout: float = 15) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if found := check():
            return found
        time.sleep(0.2)
    raise AssertionError(f"not within {timeout} s: {what}")


@pytest.fixture
def nodes(tmp_path: Path) -> Iterator[list[ServerProcess]]:
    with redis_server() as redis_url, ExitStack() as stack:
        cluster = {"workers": 2, "redis_url": redis_url, "node_ttl_seconds": 2.0}
        started = []
        for name in "abc":
            (tmp_path / name).mkdir()
            started.append(stack.enter_context(server_process(tmp_path / name, cluster=cluster)))
        wait_for(lambda: all(len(stats(n)["nodes"]) == 3 for n in started), "every node sees the other two")
        yield started


def test_any_node_serves_the_room_and_it_resumes_elsewhere_when_its_node_is_killed(nodes: list[ServerProcess]) -> None:
    a, b, c = nodes
    room = httpx.post(f"{a.url}/room/create", json={"post_id": "art-1", "host_user_id": "alice"}).json()
    room_id = room["room_id"]
    a_id = stats(a)["node_id"]
    assert node_of_room(b, room_id) == a_id  # every node empty: the room stays on the node asked
    again = httpx.post(f"{c.url}/room/create", json={"post_id": "art-1", "host_user_id": "alice"}).json()
    assert again["room_id"] == room_id  # the post's active room, wherever it is asked for
    forged = {"X-BitBasel-Relayed-By": f"{a_id} not-the-cluster's-proof"}  # a client passing for a node
    spoofed = httpx.post(f"{b.url}/room/create", json={"post_id": "art-1", "host_user_id": "alice"}, headers=forged)
    assert spoofed.json()["room_id"] == room_id
    row = {"room_id": "room_000000000001", "post_id": "x", "host_user_id": "mallory", "created_at": 0.0}
    assert httpx.post(f"{a.url}/internal/rooms/adopt", json=row).status_code == 404  # the workers' route only

    peers: list[PeerProcess] = []
    try:
        peers.append(start_peer(b, room_id, "host", user="alice"))  # the host through node b
        viewers = [PeerProcess(c, room_id, "viewer") for _ in range(2)]  # the viewers through node c
        peers += viewers
        frames = min(v.wait_frames(video=10, audio=10)[0] for v in viewers)

        seen = [stats(n) for n in nodes]
        for field in SUMMED:  # every node reports the same cluster
            assert len({s[field] for s in seen}) == 1, (field, [s[field] for s in seen])
        assert seen[0]["active_rooms"] == 1 and seen[0]["total_hosts"] == 1 and seen[0]["total_viewers"] == 2
        [holder] = [n for n in seen[0]["nodes"] if n["node_id"] == a_id]
        assert holder["stats"]["total_peers"] == 3  # every session on the room's node, whichever node it came through
        for node in nodes:
            answer = httpx.get(f"{node.url}/room/{room_id}/stats").json()
            assert answer["is_active"] and answer["viewer_count"] == 2 and answer["has_host"], answer
        worker_pids = [w["pid"] for w in holder["stats"]["workers"]]

        os.kill(a.process.pid, signal.SIGKILL)  # the node's front; its workers die with it
        killed = time.monotonic()
        for viewer in viewers:
            viewer.wait_frames(video=frames + 15, audio=0, timeout=30)
        resumed = time.monotonic() - killed
        print(f"\nmedia resumed {resumed:.1f} s after the room's node was killed")
        assert resumed < 10
        for pid in worker_pids:
            wait_for(lambda pid=pid: not os.path.exists(f"/proc/{pid}") or _zombie(pid), f"worker {pid} gone", 5)

        holder_now = node_of_room(b, room_id)
        assert holder_now != a_id and holder_now in {stats(b)["node_id"], stats(c)["node_id"]}
        for node in (b, c):
            answer = httpx.get(f"{node.url}/room/{room_id}/stats").json()
            assert (answer["room_id"], answer["post_id"], answer["host_user_id"]) == (room_id, "art-1", "alice")
            assert answer["is_active"] and answer["has_host"] and answer["viewer_count"] == 2, answer
        assert len(stats(b)["nodes"]) == 2
    finally:
        for peer in peers:
            peer.stop()


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1].startswith("Z")
    except (OSError, IndexError):
        return True


def test_a_node_stopped_with_sigterm_sends_its_clients_to_another_node(nodes: list[ServerProcess]) -> None:
    a, b, _ = nodes
    room_id = httpx.post(f"{a.url}/room/create", json={"post_id": "art-2", "host_user_id": "bob"}).json()["room_id"]
    a_id = stats(a)["node_id"]
    peers: list[PeerProcess] = []
    try:
        host = start_peer(a, room_id, "host", user="bob")  # straight to the node that will stop
        peers.append(host)
        viewer = PeerProcess(b, room_id, "viewer")
        peers.append(viewer)
        frames = viewer.wait_frames(video=10, audio=10)[0]

        a.process.send_signal(signal.SIGTERM)
        stopped = time.monotonic()
        redirected = host.wait_redirected(timeout=10)
        assert redirected.endswith("/ws") and redirected != a.ws_url
        viewer.wait_frames(video=frames + 15, audio=0, timeout=30)
        print(f"\nmedia resumed {time.monotonic() - stopped:.1f} s after SIGTERM of the room's node")
        assert a.process.wait(20) == 0
        assert node_of_room(b, room_id) != a_id
        answer = httpx.get(f"{b.url}/room/{room_id}/stats").json()
        assert answer["is_active"] and answer["has_host"] and answer["host_user_id"] == "bob"
        # the stopped node is gone from the cluster at once (it removed its heartbeat)
        assert a_id not in {n["node_id"] for n in stats(b)["nodes"]}
        # and a new room goes to a live node
        created = httpx.post(f"{b.url}/room/create", json={"post_id": "art-3", "host_user_id": "carol"})
        assert created.status_code == 200
    finally:
        for peer in peers:
            peer.stop()


@pytest.mark.browser
@pytest.mark.skipif(not CHROMIUM.exists(), reason=f"Chromium is not installed at {CHROMIUM}")
def test_the_js_client_follows_reconnect_to_another_node(nodes: list[ServerProcess]) -> None:
    a, b, _ = nodes
    room_id = httpx.post(f"{a.url}/room/create", json={"post_id": "art-4", "host_user_id": "dora"}).json()["room_id"]
    host = start_peer(b, room_id, "host", user="dora")
    try:
        with chromium_browser() as browser:
            page = browser.new_context().new_page()
            page.goto(f"{a.url}/watch/{room_id}")  # the page and its WebSocket on node a
            page.wait_for_function("() => !!(window.bitbasel && window.bitbasel.session)")
            poll_page(page, JS_FRAMES_DECODED_OVER, 10, timeout=30, what="frames through node a")
            first_peer = page.evaluate("window.bitbasel.session.peerId")
            page.evaluate(
                """() => { window.redirects = [];
                   window.bitbasel.session.addEventListener('reconnect', (e) => window.redirects.push(e.detail)); }"""
            )

            a.process.send_signal(signal.SIGTERM)
            redirect = poll_page(page, "() => window.redirects[0]", timeout=10, what="a reconnect message")
            assert redirect["reason"] == "node_draining" and redirect["url"] in {b.ws_url, nodes[2].ws_url}
            assert page.evaluate("window.bitbasel.session.url") == redirect["url"]
            poll_page(
                page, "(first) => window.bitbasel.session.peerId && window.bitbasel.session.peerId !== first",
                first_peer, timeout=30, what="a new session on another node",
            )  # fmt: skip
            poll_page(page, JS_FRAMES_DECODED_OVER, 10, timeout=30, what="frames through the new node")
            assert page.evaluate("window.bitbasel.session.state") == "live"
    finally:
        host.stop()


def test_a_node_that_loses_redis_closes_its_sessions_and_its_room_moves(tmp_path: Path) -> None:
    """Self-fencing: node a reaches Redis through a proxy that is then cut (a partition b does
    not see). Before b may take a's room over, a has closed its sessions, so the room never runs
    on two nodes; the clients, reconnecting through b, resume on b."""
    with redis_server() as redis_url, ExitStack() as stack:
        proxy = TcpProxy(int(redis_url.rsplit(":", 1)[1].split("/")[0]))
        stack.callback(proxy.cut)
        nodes = []
        for name, url in (("a", f"redis://127.0.0.1:{proxy.port}/0"), ("b", redis_url)):
            (tmp_path / name).mkdir()
            cluster = {"workers": 1, "redis_url": url, "node_ttl_seconds": 3.0}
            nodes.append(stack.enter_context(server_process(tmp_path / name, cluster=cluster)))
        a, b = nodes
        wait_for(lambda: all(len(stats(n)["nodes"]) == 2 for n in nodes), "both nodes see each other")
        created = httpx.post(f"{a.url}/room/create", json={"post_id": "art-5", "host_user_id": "erin"})
        room_id = created.json()["room_id"]
        a_id, b_id = stats(a)["node_id"], stats(b)["node_id"]
        assert node_of_room(b, room_id) == a_id
        peers: list[PeerProcess] = []
        try:
            peers.append(start_peer(b, room_id, "host", user="erin"))  # both through b, served by a
            viewer = PeerProcess(b, room_id, "viewer")
            peers.append(viewer)
            frames = viewer.wait_frames(video=10, audio=10)[0]
            assert stats(a)["workers"][0]["stats"]["total_peers"] == 2

            proxy.cut()
            cut = time.monotonic()
            # a ends its sessions before its heartbeat expires (0.7 of the TTL) ...
            wait_for(lambda: stats(a)["workers"][0]["stats"]["total_peers"] == 0, "a closed its sessions", 10)
            fenced_after = time.monotonic() - cut
            # ... and the clients resume on b, which takes the room once a's heartbeat is gone
            frames = viewer.latest_frames()[0]
            viewer.wait_frames(video=frames + 15, audio=0, timeout=30)
            resumed = time.monotonic() - cut
            print(
                f"\nnode a closed its sessions {fenced_after:.1f} s after losing Redis; media back in {resumed:.1f} s"
            )
            assert fenced_after < 3.0 + 1.0 and resumed < 15
            assert node_of_room(b, room_id) == b_id
            assert stats(a)["workers"][0]["stats"]["total_peers"] == 0  # not served on two nodes
            answer = httpx.get(f"{b.url}/room/{room_id}/stats").json()
            assert (answer["post_id"], answer["host_user_id"], answer["viewer_count"]) == ("art-5", "erin", 1)
        finally:
            for peer in peers:
                peer.stop()
