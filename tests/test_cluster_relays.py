"""A room across nodes (issue 21): node a of one media worker, node b of two, one real
redis-server on loopback, `room_viewers_per_worker = 1`. The host publishes on node a; its first
viewer joins a's worker, the next two go to node b (its share: one per worker, an edge on each,
each fed by a relay from a over UDP whose datagrams are SRTP: a capture of loopback, an
AF_PACKET socket in the test's network namespace, sees the relay header in the clear and no
plain payload), and the fourth, every worker full, joins the origin. Node b frozen (SIGSTOP of
its front and workers: a machine that stops answering, no connection closed), its viewers are
sent to reconnect once its heartbeat expires and decode again on a."""

from __future__ import annotations

import os
import signal
import socket
import struct
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx
import pytest

from tests.peer_process import PeerProcess, start_peer
from tests.redis_support import redis_server
from tests.serving import ServerProcess, prometheus_values, server_process
from tests.test_cluster import stats, wait_for

RELAY_RTP = b"\xb5\x00"  # transport/relay_port.py: magic, kind RTP
ETH_P_ALL = 0x0003


def viewers_on(node: ServerProcess) -> int:
    return sum(w["stats"]["total_viewers"] for w in stats(node)["workers"])


class LoopbackCapture:
    """Every relay RTP datagram on loopback (UDP payloads starting with the relay header)."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        self.sock.bind(("lo", 0))
        self.sock.settimeout(0.2)
        self.relay_rtp: list[bytes] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                frame, (_ifname, _proto, kind, *_rest) = self.sock.recvfrom(65536)
            except TimeoutError:
                continue
            if kind == socket.PACKET_OUTGOING:  # loopback shows each datagram twice: keep one
                continue
            ip = frame[14:]  # lo has an Ethernet header of zeros
            if len(ip) < 28 or ip[0] >> 4 != 4 or ip[9] != socket.IPPROTO_UDP:
                continue
            payload = ip[(ip[0] & 0x0F) * 4 + 8 :]
            if payload.startswith(RELAY_RTP):
                self.relay_rtp.append(payload)

    @contextmanager
    def running(self) -> Iterator[LoopbackCapture]:
        self._thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            self._thread.join()
            self.sock.close()


def first_payload_bytes(datagrams: list[bytes]) -> list[int]:
    """The first payload byte of each relayed RTP packet (its RTP header stays clear under
    SRTP). In the clear it varies little: Opus's TOC byte is the same packet after packet and
    VP8's payload descriptor takes a handful of values; encrypted, it is any byte."""
    firsts = []
    for datagram in datagrams:
        rtp = datagram[12:]  # after the relay header
        offset = 12 + 4 * (rtp[0] & 0x0F)
        if rtp[0] & 0x10:  # a header extension
            (words,) = struct.unpack_from("!H", rtp, offset + 2)
            offset += 4 + 4 * words
        if offset < len(rtp):
            firsts.append(rtp[offset])
    return firsts


@pytest.fixture
def nodes(tmp_path: Path) -> Iterator[list[ServerProcess]]:
    with redis_server() as redis_url, ExitStack() as stack:
        started = []
        for name, workers in (("a", 1), ("b", 2)):
            cluster = {
                "workers": workers,
                "redis_url": redis_url,
                "node_ttl_seconds": 2.0,
                "room_viewers_per_worker": 1,
            }
            (tmp_path / name).mkdir()
            started.append(stack.enter_context(server_process(tmp_path / name, cluster=cluster)))
        wait_for(lambda: all(len(stats(n)["nodes"]) == 2 for n in started), "both nodes see each other")
        yield started


def test_viewers_past_a_nodes_share_go_to_another_node_over_srtp_and_back_when_it_dies(
    nodes: list[ServerProcess],
) -> None:
    a, b = nodes
    peers: list[PeerProcess] = []
    try:
        with LoopbackCapture().running() as capture:
            room_id = httpx.post(f"{a.url}/room/create", json={"post_id": "p", "host_user_id": "alice"}).json()[
                "room_id"
            ]
            peers.append(start_peer(a, room_id, "host", user="alice"))
            viewers = []
            for i in range(4):  # one after the other: the first two are placed before the next come
                viewer = PeerProcess(a, room_id, "viewer", user=f"viewer{i}")
                peers.append(viewer)
                viewers.append(viewer)
                viewer.wait_frames(video=5, audio=5)
            for viewer in viewers:
                viewer.wait_frames(video=30, audio=30)
            assert (viewers_on(a), viewers_on(b)) == (2, 2)
            b_workers = [w["stats"] for w in stats(b)["workers"]]
            assert [w["total_viewers"] for w in b_workers] == [1, 1]  # node b's share: one per worker
            assert all(w["total_hosts"] == 0 and w["active_rooms"] == 0 for w in b_workers)
            room = wait_for(
                lambda: (r := httpx.get(f"{a.url}/room/{room_id}/stats", timeout=10).json())["viewer_count"] == 4 and r,
                "the room counting its viewers on both nodes",
            )
            assert room["has_host"] is True
            # moderation reaches node b's edge: listed through node a
            listed = httpx.get(f"{a.url}/room/{room_id}/peers", timeout=10).json()["peers"]
            assert [p["role"] for p in listed].count("viewer") == 4, listed
            # and kicks there: the last listed is one of node b's (the origin's sessions come first)
            response = httpx.post(f"{a.url}/room/{room_id}/peers/{listed[-1]['peer_id']}/kick", timeout=10)
            assert response.status_code == 200, response.text
            wait_for(lambda: viewers_on(b) == 1, "the kicked session gone from node b")
            before = [viewer.latest_frames()[0] for viewer in viewers[1:3]]
            time.sleep(2)
            after = [viewer.latest_frames()[0] for viewer in viewers[1:3]]
            on_b = [viewer for viewer, b4, now in zip(viewers[1:3], before, after, strict=True) if now - b4 >= 5]
            assert len(on_b) == 1, (before, after)  # the kicked bot gets nothing more
            # the node-to-node routes answer nodes only: a client's request, or a forged proof, is 404
            forged = {"X-BitBasel-Relayed-By": f"{stats(a)['node_id']} not-the-cluster's-proof"}
            for headers in ({}, forged):
                refused = httpx.post(
                    f"{b.url}/cluster/rooms/{room_id}/edge", json={"post_id": "p", "host_user_id": "x"}, headers=headers
                )
                assert refused.status_code == 404, refused.text
                assert httpx.get(f"{b.url}/cluster/rooms/{room_id}/edge/peers", headers=headers).status_code == 404
            # node b's relay port took the relay, every datagram authentic
            relay = prometheus_values(httpx.get(f"{b.url}/metrics", timeout=10).text)
            assert relay['bitbasel_relay_datagrams_total{kind="datagrams_received"}'] > 100
            assert relay['bitbasel_relay_datagrams_total{kind="unauthentic"}'] == 0

        firsts = first_payload_bytes(capture.relay_rtp)
        distinct = len(set(firsts))
        print(f"\n{len(firsts)} relay RTP datagrams on loopback; {distinct} distinct first payload bytes")
        assert len(firsts) >= 150
        assert distinct >= 48  # in the clear: under ten (Opus's TOC, VP8's descriptor); SRTP: ~150 of 200

        # node b freezes: nothing of it closes; node a sends b's viewers to reconnect once b's
        # heartbeat expires (2 s), and places them on itself
        frozen = [b.process.pid, *[w["pid"] for w in stats(b)["workers"]]]
        counts = [viewer.latest_frames()[0] for viewer in on_b]
        for pid in frozen:
            os.kill(pid, signal.SIGSTOP)
        stopped_at = time.monotonic()
        try:
            for viewer, count in zip(on_b, counts, strict=True):
                viewer.wait_frames(video=count + 10, audio=0, timeout=20)
            back_in = time.monotonic() - stopped_at
            print(f"node b frozen: its viewers decoding again on node a after {back_in:.1f} s")
            assert back_in < 10.0
            assert wait_for(lambda: viewers_on(a) == 3, "the three viewers left all on node a")
        finally:
            for pid in frozen:
                os.kill(pid, signal.SIGKILL)
    finally:
        for peer in peers:
            peer.stop()
