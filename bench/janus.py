"""Janus 1.1 (Debian's ``janus``) on the workload of ``bench/rooms.py``: R rooms x V viewers.

Used by ``bench/rooms.py`` (its ``--janus`` / ``--no-janus``), not run by itself, except as
the viewer processes (``--role janus-viewers``).

- :func:`start_janus`: ``janus`` as a child process with a generated config directory (the
  system's ``/etc/janus/*.jcfg`` copied, then ``janus.jcfg``, the HTTP transport and the
  VideoRoom plugin's files rewritten): the plain HTTP REST API on 127.0.0.1 and a free port,
  no STUN/TURN, half-trickle (candidates in the SDP, as aiortc does), an RTP port range,
  every plugin but VideoRoom and every transport but HTTP disabled, no event handlers or
  loggers, its log in ``bench/out/rooms-janus.log``.

  Janus skips every interface flagged ``IFF_LOOPBACK`` when it gathers candidates (src/ice.c),
  and so does libnice, so in a namespace where only ``lo`` exists it would offer none. It is
  started with a tiny ``LD_PRELOAD`` shim (built here with ``cc``, cached in ``bench/out/``)
  whose ``getifaddrs`` clears that flag, and ``ice_enforce_list = "127.0.0.1"``: Janus then
  gathers on 127.0.0.1 exactly, like our server and the aiortc peers. Nothing else changes.
- :class:`JanusSession`: a Janus API session over HTTP (httpx): create, attach, messages with
  their transaction, the session's events by long-poll GET, a keepalive.
- :func:`open_publisher`: an aiortc peer publishing tracks to a room (``join`` as publisher,
  ``configure`` with the offer, Janus's answer applied).
- :func:`janus_viewers_main` (``--role janus-viewers``): N subscribers to one feed (``join``
  as subscriber, Janus's offer, aiortc's answer with ``start``), their RTP counted at the DTLS
  transport (``harness.ViewerCounter``), never decoded; the same stdin/stdout protocol as
  ``viewers.py`` (``harness.serve_viewers``: progress, ready, snap, quit, closed).
- :func:`open_publishers`: one such publisher per room (each room created first), the
  pre-encoded file's tracks (``harness.PacketTrack``), all connected when entered.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import httpx
import trio
import trio_asyncio
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamTrack
from harness import LOOPBACK, OUT_DIR, Child, Gate, PacketTrack, ViewerCounter, free_port, serve_viewers, spawn
from make_media import EncodedStream

from media_server_client import aiortc_hooks as adapter
from media_server_client.containment import open_contained_loop

JANUS = "/usr/bin/janus"
SYSTEM_CONFIG = Path("/etc/janus")
PLUGIN = "janus.plugin.videoroom"
LOG_PATH = OUT_DIR / "rooms-janus.log"
SHIM_SOURCE = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <ifaddrs.h>
#include <net/if.h>
int getifaddrs(struct ifaddrs **ifap) {
    static int (*real)(struct ifaddrs **);
    if (!real) real = (int (*)(struct ifaddrs **))dlsym(RTLD_NEXT, "getifaddrs");
    int rc = real(ifap);
    if (rc == 0)
        for (struct ifaddrs *i = *ifap; i; i = i->ifa_next) i->ifa_flags &= ~IFF_LOOPBACK;
    return rc;
}
"""


def available() -> bool:
    return Path(JANUS).exists()


# ---------------------------------------------------------------------------
# The Janus process
# ---------------------------------------------------------------------------


def loopback_shim() -> Path:
    """The ``getifaddrs`` shim (see the module's docstring), built once."""
    out = OUT_DIR / "janus-loopback-shim.so"
    source = OUT_DIR / "janus-loopback-shim.c"
    if out.exists() and source.exists() and source.read_text() == SHIM_SOURCE:
        return out
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        raise RuntimeError("Janus needs a C compiler here (cc) to build its loopback shim")
    source.write_text(SHIM_SOURCE)
    subprocess.run([compiler, "-shared", "-fPIC", "-O2", "-o", str(out), str(source), "-ldl"], check=True)
    return out


def _system_folder(text: str, key: str, default: str) -> str:
    match = re.search(rf'^\s*{key}\s*=\s*"([^"]+)"', text, re.MULTILINE)
    return match.group(1) if match else default


def write_config(folder: Path, http_port: int) -> None:
    """Copy the system's config files into ``folder``, then rewrite the three that are used."""
    for path in SYSTEM_CONFIG.glob("*.jcfg"):
        shutil.copy(path, folder / path.name)
    system = (SYSTEM_CONFIG / "janus.jcfg").read_text()
    lib = "/usr/lib/x86_64-linux-gnu/janus"
    folders = {
        key: _system_folder(system, key, f"{lib}/{name}")
        for key, name in (
            ("plugins_folder", "plugins"),
            ("transports_folder", "transports"),
            ("events_folder", "events"),
            ("loggers_folder", "loggers"),
        )
    }

    def others(kind: str, keep: str) -> str:
        names = sorted(p.name for p in Path(folders[kind]).glob("libjanus_*.so"))
        return ",".join(name for name in names if name != keep)

    (folder / "janus.jcfg").write_text(f"""
general: {{
    configs_folder = "{folder}"
    plugins_folder = "{folders["plugins_folder"]}"
    transports_folder = "{folders["transports_folder"]}"
    events_folder = "{folders["events_folder"]}"
    loggers_folder = "{folders["loggers_folder"]}"
    debug_level = 3
    debug_timestamps = true
    debug_colors = false
    server_name = "rooms-bench"
    interface = "127.0.0.1"
    session_timeout = 60
}}
certificates: {{
}}
media: {{
    rtp_port_range = "20000-40000"
}}
nat: {{
    nice_debug = false
    full_trickle = false
    ice_enforce_list = "127.0.0.1"
    ignore_mdns = true
}}
plugins: {{
    disable = "{others("plugins_folder", "libjanus_videoroom.so")}"
}}
transports: {{
    disable = "{others("transports_folder", "libjanus_http.so")}"
}}
loggers: {{
    disable = "{others("loggers_folder", "")}"
}}
events: {{
    broadcast = false
    disable = "{others("events_folder", "")}"
}}
""")
    (folder / "janus.transport.http.jcfg").write_text(f"""
general: {{
    json = "plain"
    base_path = "/janus"
    http = true
    port = {http_port}
    ip = "127.0.0.1"
    https = false
}}
admin: {{
    admin_http = false
    admin_https = false
}}
cors: {{
}}
""")
    (folder / "janus.plugin.videoroom.jcfg").write_text("general: {\n}\n")  # rooms: created over the API


@asynccontextmanager
async def start_janus() -> AsyncIterator[tuple[Child, str]]:
    """``janus`` running, its API answering: (the child, its base URL ``http://127.0.0.1:P/janus``)."""
    shim = loopback_shim()
    port = free_port()
    url = f"http://127.0.0.1:{port}/janus"
    with tempfile.TemporaryDirectory(prefix="rooms-janus-") as tmp:
        folder = Path(tmp)
        write_config(folder, port)
        argv = [JANUS, "-F", str(folder), "-C", str(folder / "janus.jcfg"), "-N", "-L", str(LOG_PATH), "-o"]
        # Janus logs to its file (-L), never to stdout
        child = spawn("janus", argv, OUT_DIR / "rooms-janus.stderr", env=dict(os.environ, LD_PRELOAD=str(shim)))
        popen = child.popen
        try:
            async with httpx.AsyncClient(timeout=5) as http:
                with trio.fail_after(30):
                    while True:
                        if popen.poll() is not None:
                            raise RuntimeError(f"janus exited with {popen.returncode} (see {LOG_PATH})")
                        try:
                            if (await http.get(f"{url}/info")).status_code == 200:
                                break
                        except httpx.TransportError:
                            pass
                        await trio.sleep(0.1)
            yield child, url
        finally:
            await child.stop()


# ---------------------------------------------------------------------------
# The Janus API over HTTP
# ---------------------------------------------------------------------------


class JanusError(RuntimeError):
    pass


class JanusSession:
    """One Janus session: requests, and its events by long-poll (:meth:`run`, in a nursery)."""

    _transactions = itertools.count(1)

    def __init__(self, http: httpx.AsyncClient, url: str) -> None:
        self.http = http
        self.url = url
        self.session_id = 0
        self._waiting: dict[str, trio.MemorySendChannel[dict[str, Any]]] = {}

    def _transaction(self) -> str:
        return f"t{os.getpid()}-{next(self._transactions)}"

    async def _post(self, path: str, message: dict[str, Any]) -> dict[str, Any]:
        response = await self.http.post(path, json=message)
        response.raise_for_status()
        reply: dict[str, Any] = response.json()
        if reply.get("janus") == "error":
            raise JanusError(f"{message.get('janus')}: {reply.get('error')}")
        return reply

    async def create(self) -> None:
        reply = await self._post(self.url, {"janus": "create", "transaction": self._transaction()})
        self.session_id = int(reply["data"]["id"])

    @property
    def path(self) -> str:
        return f"{self.url}/{self.session_id}"

    async def attach(self) -> int:
        message = {"janus": "attach", "plugin": PLUGIN, "transaction": self._transaction()}
        return int((await self._post(self.path, message))["data"]["id"])

    async def request(self, handle: int, body: dict[str, Any]) -> dict[str, Any]:
        """A synchronous plugin request (``create`` a room...): the plugin's data."""
        message = {"janus": "message", "body": body, "transaction": self._transaction()}
        reply = await self._post(f"{self.path}/{handle}", message)
        data: dict[str, Any] = reply["plugindata"]["data"]
        if "error" in data:
            raise JanusError(f"{body.get('request')}: {data['error']}")
        return data

    async def message(
        self, handle: int, body: dict[str, Any], jsep: dict[str, str] | None = None, within: float = 30
    ) -> tuple[dict[str, Any], dict[str, str] | None]:
        """An asynchronous plugin request (join, configure, start): its event's data and jsep."""
        transaction = self._transaction()
        message: dict[str, Any] = {"janus": "message", "body": body, "transaction": transaction}
        if jsep is not None:
            message["jsep"] = jsep
        send, receive = trio.open_memory_channel[dict[str, Any]](1)
        self._waiting[transaction] = send
        try:
            await self._post(f"{self.path}/{handle}", message)
            with trio.fail_after(within):
                event = await receive.receive()
        finally:
            self._waiting.pop(transaction, None)
        data: dict[str, Any] = event.get("plugindata", {}).get("data", {})
        if "error" in data:
            raise JanusError(f"{body.get('request')}: {data['error']}")
        return data, event.get("jsep")

    async def run(self) -> None:
        """Long-poll the session's events (every GET is a keepalive too); explicit keepalives."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._keepalive)
            while True:
                response = await self.http.get(self.path, params={"maxev": 20}, timeout=60)
                response.raise_for_status()
                events = response.json()
                for event in events if isinstance(events, list) else [events]:
                    if event.get("janus") != "event":
                        continue  # webrtcup, media, keepalive... (an "ack" comes as the POST's reply)
                    channel = self._waiting.pop(event.get("transaction", ""), None)
                    if channel is not None:
                        channel.send_nowait(event)

    async def _keepalive(self) -> None:
        while True:
            await trio.sleep(20)
            await self._post(self.path, {"janus": "keepalive", "transaction": self._transaction()})

    async def destroy(self) -> None:
        with contextlib.suppress(httpx.HTTPError, JanusError):
            await self._post(self.path, {"janus": "destroy", "transaction": self._transaction()})


@asynccontextmanager
async def open_session(http: httpx.AsyncClient, url: str) -> AsyncIterator[JanusSession]:
    session = JanusSession(http, url)
    await session.create()
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(session.run)
            try:
                yield session
            finally:
                nursery.cancel_scope.cancel()  # the long-poll first: a destroyed session's GET is a 404
    finally:
        with trio.CancelScope(shield=True), trio.move_on_after(5):
            await session.destroy()


async def create_room(session: JanusSession, room: int) -> None:
    handle = await session.attach()
    body = {"request": "create", "room": room, "description": f"bench {room}", "publishers": 1}
    body |= {"audiocodec": "opus", "videocodec": "vp8"}
    await session.request(handle, body)
    with contextlib.suppress(httpx.HTTPError, JanusError):
        await session._post(f"{session.path}/{handle}", {"janus": "detach", "transaction": session._transaction()})


# ---------------------------------------------------------------------------
# aiortc peers
# ---------------------------------------------------------------------------


def new_pc() -> RTCPeerConnection:
    return RTCPeerConnection(RTCConfiguration(iceServers=[]))  # no iceServers: aiortc would add a public STUN


async def wait_connected(pc: RTCPeerConnection, within: float = 30) -> None:
    with trio.fail_after(within):
        while pc.connectionState != "connected":
            if pc.connectionState in ("failed", "closed"):
                raise RuntimeError(f"peer connection {pc.connectionState}")
            await trio.sleep(0.05)


async def close_pc(pc: RTCPeerConnection) -> None:
    with trio.CancelScope(shield=True), trio.move_on_after(10):
        await trio_asyncio.aio_as_trio(pc.close)()


class Publisher:
    def __init__(self, pc: RTCPeerConnection, room: int, feed: int) -> None:
        self.pc = pc
        self.room = room
        self.feed = feed
        self.sent = 0

    def record(self, data: bytes) -> None:
        self.sent += 1


@asynccontextmanager
async def open_publisher(session: JanusSession, room: int, tracks: list[MediaStreamTrack]) -> AsyncIterator[Publisher]:
    """Publish ``tracks`` to ``room`` (connected when entered); RTP packets sent counted."""
    handle = await session.attach()
    joined, _ = await session.message(
        handle, {"request": "join", "ptype": "publisher", "room": room, "display": "host"}
    )
    pc = new_pc()
    try:
        for track in tracks:
            pc.addTransceiver(track, direction="sendonly")
        adapter.restrict_host_addresses(pc, LOOPBACK)
        await trio_asyncio.aio_as_trio(pc.setLocalDescription)(await trio_asyncio.aio_as_trio(pc.createOffer)())
        offer = {"type": "offer", "sdp": pc.localDescription.sdp}
        _, answer = await session.message(handle, {"request": "configure", "audio": True, "video": True}, offer)
        if answer is None:
            raise JanusError("configure: no answer")
        await trio_asyncio.aio_as_trio(pc.setRemoteDescription)(RTCSessionDescription(**answer))
        publisher = Publisher(pc, room, int(joined["id"]))
        adapter.observe_rtp_sent(pc, publisher.record)
        await wait_connected(pc)
        yield publisher
    finally:
        await close_pc(pc)


@asynccontextmanager
async def open_publishers(
    http: httpx.AsyncClient, url: str, rooms: Sequence[int], video: EncodedStream, audio: EncodedStream, gate: Gate
) -> AsyncIterator[list[Publisher]]:
    """Each room created and a publisher of the file in it (a session each), all connected when
    entered (inside a trio-asyncio loop); the publishers in the order they connected."""
    publishers: list[Publisher] = []
    connected = trio.Semaphore(0)
    stop = trio.Event()

    async def host(room: int) -> None:
        tracks = [PacketTrack(video, gate), PacketTrack(audio, gate)]
        async with open_session(http, url) as session:
            await create_room(session, room)
            async with open_publisher(session, room, tracks) as publisher:
                publishers.append(publisher)
                connected.release()
                await stop.wait()
        for track in tracks:
            track.stop()

    async with trio.open_nursery() as nursery:
        for room in rooms:
            nursery.start_soon(host, room)
        with trio.fail_after(60):
            for _ in rooms:
                await connected.acquire()
        try:
            yield publishers
        finally:
            stop.set()


# ---------------------------------------------------------------------------
# Viewer process (--role janus-viewers): N subscribers, RTP counted, nothing decoded
# ---------------------------------------------------------------------------


async def janus_viewers_main(url: str, room: int, feed: int, count: int, first_index: int, stagger: float) -> None:
    async def join(session: JanusSession, counter: ViewerCounter, quit_now: trio.Event) -> None:
        handle = await session.attach()
        body = {"request": "join", "ptype": "subscriber", "room": room, "streams": [{"feed": feed}]}
        _, offer = await session.message(handle, body)
        if offer is None:
            raise JanusError("join: no offer")
        pc = new_pc()
        try:
            await trio_asyncio.aio_as_trio(pc.setRemoteDescription)(RTCSessionDescription(**offer))
            adapter.restrict_host_addresses(pc, LOOPBACK)
            await trio_asyncio.aio_as_trio(pc.setLocalDescription)(await trio_asyncio.aio_as_trio(pc.createAnswer)())
            counter.set_payload_types(offer["sdp"])
            for dtls in adapter.dtls_transports(pc):
                adapter.tap_srtp_receive(dtls, counter.on_rtp, lambda data: None)
            answer = {"type": "answer", "sdp": pc.localDescription.sdp}
            await session.message(handle, {"request": "start", "room": room}, answer)
            await wait_connected(pc)
            counter.connected()
            await quit_now.wait()
        finally:
            await close_pc(pc)

    async with (
        open_contained_loop(),
        httpx.AsyncClient(timeout=15) as http,
        open_session(http, url) as session,
    ):
        await serve_viewers(count, first_index, stagger, lambda counter, quit_now: join(session, counter, quit_now))


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--role", choices=["janus-viewers"], required=True)
    parser.add_argument("--url", required=True, help="Janus's API, http://127.0.0.1:PORT/janus")
    parser.add_argument("--room", type=int, required=True)
    parser.add_argument("--feed", type=int, required=True, help="the publisher's id")
    parser.add_argument("--viewers", type=int, default=1)
    parser.add_argument("--first-index", type=int, default=0)
    parser.add_argument("--stagger", type=float, default=0.05)
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the bench stops us (quit / SIGTERM)
    trio.run(janus_viewers_main, args.url, args.room, args.feed, args.viewers, args.first_index, args.stagger)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
