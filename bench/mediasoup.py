"""mediasoup 3.22 (built from source, ``../shared/anchors/mediasoup``) on the workload of
``bench/rooms.py``: R rooms x V viewers. Used by ``rooms.py --only mediasoup`` (and so by
``capacity.py``), not run by itself, except as the viewer processes (``--role mediasoup-viewers``).

- :func:`start_mediasoup`: ``node server.mjs HTTP UDP 127.0.0.1`` from the build folder
  (``--mediasoup-dir``, default ``$BITBASEL_MEDIASOUP_DIR`` or ``/work/mediasoup-build``: the
  folder ``build.sh`` filled), its log in ``bench/out/rooms-mediasoup.log``; one mediasoup worker
  (the C++ process that forwards media: its pid from ``GET /stats``) under one Node.js process
  (signaling only), one WebRtcServer on one UDP port, as our server has one.
- :func:`open_publishers`: per room, an aiortc peer publishing the pre-encoded file's tracks
  (``harness.PacketTrack``): ``POST /publish`` with its offer, the answer applied.
- :func:`mediasoup_viewers_main` (``--role mediasoup-viewers``): N subscribers of one room
  (``POST /subscribe``: the server's offer, aiortc's answer to ``POST /answer``), their RTP
  counted at the DTLS transport (``harness.ViewerCounter``), never decoded; the same
  stdin/stdout protocol as ``viewers.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import httpx
import trio
import trio_asyncio
from aiortc import RTCPeerConnection, RTCSessionDescription
from harness import LOOPBACK, OUT_DIR, Child, Gate, PacketTrack, ViewerCounter, free_port, serve_viewers, spawn
from janus import close_pc, new_pc, wait_connected  # the same aiortc peers as Janus's bench
from make_media import EncodedStream

from media_server_client import aiortc_hooks as adapter
from media_server_client.containment import open_contained_loop

DEFAULT_DIR = Path(os.environ.get("BITBASEL_MEDIASOUP_DIR", "/work/mediasoup-build"))
LOG_PATH = OUT_DIR / "rooms-mediasoup.log"


def available(folder: Path = DEFAULT_DIR) -> bool:
    """The build is there: ``server.mjs`` and a compiled worker."""
    worker = folder / "node_modules/mediasoup/worker/out/Release/mediasoup-worker"
    return (folder / "server.mjs").is_file() and worker.is_file()


class MediasoupServer:
    def __init__(self, child: Child, url: str, worker_pid: int) -> None:
        self.child = child
        self.url = url
        self.worker_pid = worker_pid

    @property
    def pids(self) -> list[int]:
        """The worker (media) and node (signaling): both counted as the server's CPU."""
        return [self.worker_pid, self.child.popen.pid]


@asynccontextmanager
async def start_mediasoup(folder: Path = DEFAULT_DIR) -> AsyncIterator[MediasoupServer]:
    if not available(folder):
        raise RuntimeError(f"mediasoup is not built in {folder} (../shared/anchors/mediasoup/build.sh)")
    port, udp = free_port(), free_port()
    url = f"http://127.0.0.1:{port}"
    # its log (stdout too: node logs there, and a pipe nobody reads would stall it) to a file
    command = f'exec node server.mjs {port} {udp} 127.0.0.1 >"{LOG_PATH}" 2>&1'
    child = spawn("mediasoup", ["sh", "-c", command], OUT_DIR / "rooms-mediasoup.stderr", cwd=folder)
    try:
        async with httpx.AsyncClient(timeout=5) as http:
            with trio.fail_after(30):
                while True:
                    if child.popen.poll() is not None:
                        raise RuntimeError(f"node server.mjs exited with {child.popen.returncode} (see {LOG_PATH})")
                    try:
                        answer = await http.get(f"{url}/stats")
                        if answer.status_code == 200:
                            break
                    except httpx.TransportError:
                        pass
                    await trio.sleep(0.1)
        yield MediasoupServer(child, url, int(answer.json()["workerPid"]))
    finally:
        await child.stop()


async def post(http: httpx.AsyncClient, url: str, body: dict[str, str]) -> dict[str, str]:
    answer = await http.post(url, content=json.dumps(body), headers={"content-type": "application/json"})
    if answer.status_code != 200:
        raise RuntimeError(f"{url}: {answer.status_code} {answer.text[:200]}")
    return dict(answer.json())


class Publisher:
    def __init__(self, pc: RTCPeerConnection, room: str) -> None:
        self.pc = pc
        self.room = room
        self.sent = 0

    def record(self, data: bytes) -> None:
        self.sent += 1


@asynccontextmanager
async def open_publishers(
    http: httpx.AsyncClient, url: str, rooms: Sequence[str], video: EncodedStream, audio: EncodedStream, gate: Gate
) -> AsyncIterator[list[Publisher]]:
    """A publisher of the file in each room, all connected when entered (inside a trio-asyncio
    loop); RTP packets sent counted."""
    publishers: list[Publisher] = []
    pcs: list[RTCPeerConnection] = []
    tracks: list[PacketTrack] = []
    try:
        for room in rooms:
            pc = new_pc()
            pcs.append(pc)
            for track in (PacketTrack(video, gate), PacketTrack(audio, gate)):
                tracks.append(track)
                pc.addTransceiver(track, direction="sendonly")
            adapter.restrict_host_addresses(pc, LOOPBACK)
            await trio_asyncio.aio_as_trio(pc.setLocalDescription)(await trio_asyncio.aio_as_trio(pc.createOffer)())
            answer = await post(http, f"{url}/publish", {"room": room, "sdp": pc.localDescription.sdp})
            await trio_asyncio.aio_as_trio(pc.setRemoteDescription)(RTCSessionDescription(answer["sdp"], "answer"))
            publisher = Publisher(pc, room)
            adapter.observe_rtp_sent(pc, publisher.record)
            publishers.append(publisher)
        for pc in pcs:
            await wait_connected(pc)
        yield publishers
    finally:
        for track in tracks:
            track.stop()
        for pc in pcs:
            await close_pc(pc)


async def mediasoup_viewers_main(url: str, room: str, count: int, first_index: int, stagger: float) -> None:
    async def join(http: httpx.AsyncClient, counter: ViewerCounter, quit_now: trio.Event) -> None:
        offer = await post(http, f"{url}/subscribe", {"room": room})
        pc = new_pc()
        try:
            await trio_asyncio.aio_as_trio(pc.setRemoteDescription)(RTCSessionDescription(offer["sdp"], "offer"))
            adapter.restrict_host_addresses(pc, LOOPBACK)
            await trio_asyncio.aio_as_trio(pc.setLocalDescription)(await trio_asyncio.aio_as_trio(pc.createAnswer)())
            counter.set_payload_types(offer["sdp"])
            for dtls in adapter.dtls_transports(pc):
                adapter.tap_srtp_receive(dtls, counter.on_rtp, lambda data: None)
            await post(http, f"{url}/answer", {"id": offer["id"], "sdp": pc.localDescription.sdp})
            await wait_connected(pc)
            counter.connected()
            await quit_now.wait()
        finally:
            await close_pc(pc)

    async with open_contained_loop(), httpx.AsyncClient(timeout=15) as http:
        await serve_viewers(count, first_index, stagger, lambda counter, quit_now: join(http, counter, quit_now))


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--role", choices=["mediasoup-viewers"], required=True)
    parser.add_argument("--url", required=True, help="server.mjs's base URL, http://127.0.0.1:PORT")
    parser.add_argument("--room", required=True)
    parser.add_argument("--viewers", type=int, default=1)
    parser.add_argument("--first-index", type=int, default=0)
    parser.add_argument("--stagger", type=float, default=0.05)
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the bench stops us (quit / SIGTERM)
    trio.run(mediasoup_viewers_main, args.url, args.room, args.viewers, args.first_index, args.stagger)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
