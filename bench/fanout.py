"""End-to-end fan-out benchmark: one host, N viewers, the server in its own process (not a test).

Run it inside a private network namespace (only loopback exists):

    unshare -rn sh -c 'ip link set lo up && \\
        .venv/bin/python bench/fanout.py --viewers 40 --seconds 20'

What it does, in one run (see bench/README.md for what each number means):

1. loads (making it once, ``bench/make_media.py``) a pre-encoded VP8 640x360
   ~1.4 Mbit/s + Opus WebM file; nothing is encoded or decoded live;
2. measures the floor in this process: SRTP-protect (pylibsrtp) + ``sendto``
   of a 1,200-byte RTP packet on loopback, CPU us per packet
   (``time.process_time``), and aiortc's own send paths per packet;
3. starts ``app.py --port 0`` as a subprocess (loopback, generous limits),
   creates a room over REST;
4. publishes the file from this process with an aiortc host bot whose tracks
   return ``av.Packet``s (aiortc only packetizes them), looped with pts
   rewritten; a PLI makes the video jump to the next keyframe of the file,
   as a live encoder would send one;
5. starts the viewers in their own process(es) (this file, ``--role
   viewers``): real aiortc peers (``open_viewer(decode=False)``) whose
   SRTP-unprotected RTP is counted at the DTLS transport, never handed to
   aiortc's jitter buffer or decoder;
6. once every viewer has had a keyframe, measures a steady window: the
   server's CPU time from ``/proc/PID/stat`` against the room's forwarding
   counters (``GET /room/{id}/stats``) and against what the viewers counted.
   Both ends of the window are taken while the host is paused for a moment,
   so no packet is in flight when the counters are read.

Prints a table and writes ``bench/out/fanout.json``. ``--profile`` also
samples the server with py-spy during the window (which perturbs the CPU
numbers a little) and prints its top functions.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fractions
import json
import math
import os
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import av  # noqa: E402
import httpx  # noqa: E402
import pylibsrtp  # noqa: E402
import trio  # noqa: E402
import trio_asyncio  # noqa: E402
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription  # noqa: E402
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack  # noqa: E402
from make_media import OUT_DIR, EncodedStream, load_media  # noqa: E402

from media.vp8 import is_keyframe_start  # noqa: E402
from media_server_client import aiortc_hooks as adapter  # noqa: E402
from media_server_client.bots import open_host, open_viewer  # noqa: E402

LOOPBACK = ["127.0.0.1"]
CLK_TCK = os.sysconf("SC_CLK_TCK")
TARGET_RATIO = 3.0
TARGET_DELIVERY = 99.9
DRAIN_SECONDS = 0.4  # host paused this long before each end of the window is read
PROFILE_RATE = 250  # py-spy samples per second
IDLE_SECONDS = 2.0  # after the window: the server's CPU with everyone connected, host paused
JSON_PATH = OUT_DIR / "fanout.json"


# ---------------------------------------------------------------------------
# Floor and aiortc's own send paths (micro, in this process, before the load)
# ---------------------------------------------------------------------------

MICRO_PACKETS = 20_000
MICRO_ROUNDS = 5
RTP_SIZE = 1200


class PacketSource:
    """1,200-byte RTP packets with advancing sequence numbers (SRTP refuses replays)."""

    def __init__(self, ssrc: int, pt: int) -> None:
        self.ssrc, self.pt, self.seq = ssrc, pt, 0
        self.payload = bytes(RTP_SIZE - 12)

    def take(self, count: int) -> list[bytes]:
        out = []
        for _ in range(count):
            header = struct.pack("!BBHII", 0x80, self.pt, self.seq & 0xFFFF, self.seq * 3000 & 0xFFFFFFFF, self.ssrc)
            out.append(header + self.payload)
            self.seq += 1
        return out


def floor_round(packets: Sequence[bytes]) -> float:
    """CPU seconds per packet of pylibsrtp protect + sendto on loopback (DESIGN.md's floor)."""
    policy = pylibsrtp.Policy(key=os.urandom(30), ssrc_type=pylibsrtp.Policy.SSRC_ANY_OUTBOUND)
    session = pylibsrtp.Session(policy)
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        receiver.bind(("127.0.0.1", 0))
        sender.setblocking(False)
        addr = receiver.getsockname()
        protect, sendto = session.protect, sender.sendto
        start = time.process_time()
        for packet in packets:
            try:  # noqa: SIM105 (contextlib.suppress costs more in a hot loop)
                sendto(protect(packet), addr)
            except BlockingIOError:
                pass
        return (time.process_time() - start) / len(packets)
    finally:
        sender.close()
        receiver.close()


def measure_floor(rounds: int = MICRO_ROUNDS) -> list[float]:
    return [floor_round(PacketSource(1, 96).take(MICRO_PACKETS)) for _ in range(rounds)]


def shaped_floor(viewers: int, bursts_per_second: float, seconds: float = 1.0) -> float:
    """The floor with the server's traffic shape: ``viewers`` SRTP sessions and sockets, one
    packet to each per burst, a burst per host packet (sleeping in between, as the server
    does in epoll). CPU seconds per packet, counted around the bursts only.

    A tight loop keeps caches and branch predictors hot and never sleeps; sending the same
    work in bursts with sleeps in between costs more per packet on the same machine.
    """
    viewers = max(1, viewers)
    sessions = []
    sockets = []
    opened: list[socket.socket] = []
    try:
        for i in range(viewers):
            policy = pylibsrtp.Policy(key=os.urandom(30), ssrc_type=pylibsrtp.Policy.SSRC_ANY_OUTBOUND)
            sessions.append(pylibsrtp.Session(policy))
            receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            receiver.bind(("127.0.0.1", 0))
            opened.append(receiver)
            sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sender.setblocking(False)
            sockets.append((sender.sendto, receiver.getsockname(), sessions[-1].protect, PacketSource(1000 + i, 96)))
            opened.append(sender)
        bursts = max(10, int(seconds * bursts_per_second))
        packets = [source.take(bursts) for _, _, _, source in sockets]
        gap = 1.0 / bursts_per_second
        cpu = 0.0
        for b in range(bursts):
            start = time.process_time()
            for (sendto, addr, protect, _), queue in zip(sockets, packets, strict=True):
                try:  # noqa: SIM105
                    sendto(protect(queue[b]), addr)
                except BlockingIOError:
                    pass
            cpu += time.process_time() - start
            time.sleep(gap)
        return cpu / (bursts * viewers)
    finally:
        for sock in opened:
            sock.close()


async def measure_send_paths() -> dict[str, list[float]]:
    """The server's send path: a ``PeerConnection`` on a served ``MediaPort`` (127.0.0.1),
    connected to an aiortc client, then per packet ``send_rtp`` (SRTP protect + ``sendto``
    on the port's socket, counters) in a synchronous loop. Runs under trio.
    """
    from media_server_client.containment import open_contained_loop
    from transport import IceSettings, MediaPort, MediaSettings, PeerConnection, TransportCounters
    from transport.dtls import process_certificate

    ice = IceSettings(host_addresses=LOOPBACK, announced_address="", stun_servers=[])
    media = MediaSettings(video_bitrate_kbps=1500, max_framerate=30, audio_bitrate_kbps=128)
    port = MediaPort(LOOPBACK, 0)
    viewer = PeerConnection(port, process_certificate(), "viewer", ice, media, TransportCounters())
    connected = trio.Event()
    viewer.on_state = lambda state: connected.set() if state == "connected" else None
    async with open_contained_loop(), trio.open_nursery() as nursery:
        await nursery.start(port.serve)
        client = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        try:
            client.addTransceiver("video", direction="recvonly")
            adapter.restrict_host_addresses(client, LOOPBACK)
            await trio_asyncio.aio_as_trio(client.setLocalDescription)(
                await trio_asyncio.aio_as_trio(client.createOffer)()
            )
            answer = viewer.accept_offer(client.localDescription.sdp)
            remote = RTCSessionDescription(sdp=answer, type="answer")
            await trio_asyncio.aio_as_trio(client.setRemoteDescription)(remote)
            with trio.fail_after(15):
                await connected.wait()
            for dtls in adapter.dtls_transports(client):  # the client only reads its socket
                adapter.tap_srtp_receive(dtls, lambda data: None, lambda data: None)
            sink = viewer.sinks[0]
            source = PacketSource(sink.ssrc, sink.payload_type)

            def fast_round(packets: list[bytes]) -> float:
                send = viewer.send_rtp
                start = time.process_time()
                for packet in packets:
                    send(packet)
                return (time.process_time() - start) / len(packets)

            results: dict[str, list[float]] = {"server send_rtp": []}
            for _ in range(MICRO_ROUNDS):
                results["server send_rtp"].append(fast_round(source.take(MICRO_PACKETS)))
                await trio.sleep(0.05)  # let the client drain
            return results
        finally:
            viewer.close()
            await trio_asyncio.aio_as_trio(client.close)()
            nursery.cancel_scope.cancel()


# ---------------------------------------------------------------------------
# The host's tracks: pre-encoded frames as av.Packet, looped, paced, pausable
# ---------------------------------------------------------------------------


class Gate:
    """Open/closed; closing it pauses every PacketTrack that shares it."""

    def __init__(self) -> None:
        self._open = asyncio.Event()
        self._open.set()

    def close(self) -> None:
        self._open.clear()

    def open(self) -> None:
        self._open.set()

    @property
    def is_open(self) -> bool:
        return self._open.is_set()

    async def wait(self) -> None:
        await self._open.wait()


class PacketTrack(MediaStreamTrack):
    """Returns the file's encoded frames as ``av.Packet`` (aiortc's sender packetizes, never
    encodes), looped forever at the file's frame rate, pts always increasing.

    ``request_keyframe()`` (wired to the sender's PLI handling) makes the next frame the
    next keyframe of the file, like an encoder asked for one.
    """

    def __init__(self, stream: EncodedStream, gate: Gate) -> None:
        super().__init__()
        self.kind = stream.kind
        self._stream = stream
        self._gate = gate
        self._time_base = fractions.Fraction(1, stream.clock_rate)
        self._index = 0  # next frame of the file
        self._count = 0  # frames returned so far (pts)
        self._start: float | None = None
        self._keyframe_wanted = False
        self.keyframes_requested = 0

    def request_keyframe(self) -> None:
        self.keyframes_requested += 1
        self._keyframe_wanted = True

    async def recv(self) -> av.Packet[Any]:
        if self.readyState != "live":
            raise MediaStreamError
        if not self._gate.is_open:
            paused = time.monotonic()
            await self._gate.wait()
            if self._start is not None:  # no catch-up burst after a pause
                self._start += time.monotonic() - paused
        stream = self._stream
        if self._start is None:
            self._start = time.monotonic()
        due = self._start + self._count * stream.frame_seconds
        await asyncio.sleep(max(0.0, due - time.monotonic()))
        if self.readyState != "live":
            raise MediaStreamError
        if self._keyframe_wanted:
            self._keyframe_wanted = False
            keys = stream.keyframes
            n = len(keys)
            if not keys[self._index % n]:
                self._index = next(i for i in range(self._index, self._index + n) if keys[i % n]) % n
        packet = av.Packet(stream.frames[self._index])
        packet.pts = self._count * stream.frame_ticks
        packet.time_base = self._time_base
        self._index = (self._index + 1) % len(stream.frames)
        self._count += 1
        return packet


# ---------------------------------------------------------------------------
# Viewer process (--role viewers): N aiortc viewers, RTP counted, nothing decoded
# ---------------------------------------------------------------------------


class KindCounter:
    """Packets of one kind and their (per viewer, rewritten) sequence numbers."""

    __slots__ = ("base", "count", "highest")

    def __init__(self) -> None:
        self.count = 0
        self.base = -1  # extended seq of the first packet
        self.highest = -1  # highest extended seq

    def add(self, seq: int) -> None:
        self.count += 1
        highest = self.highest
        if highest < 0:
            self.base = self.highest = seq
            return
        delta = (seq - highest) & 0xFFFF
        if delta and delta < 0x8000:
            self.highest = highest + delta

    def expected(self) -> int:
        return 0 if self.highest < 0 else self.highest - self.base + 1


class ViewerCounter:
    """The callback on one viewer's DTLS transport: every clear RTP packet, counted."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.video_pt = -1
        self.audio_pt = -1
        self.video = KindCounter()
        self.audio = KindCounter()
        self.other = 0
        self.started = time.monotonic()
        self.connected_after: float | None = None
        self.first_keyframe_after: float | None = None

    def on_rtp(self, data: bytes) -> None:
        if len(data) < 12:
            return
        pt = data[1] & 0x7F
        seq = data[2] << 8 | data[3]
        if pt == self.video_pt:
            self.video.add(seq)
            if self.first_keyframe_after is None and _rtp_keyframe_start(data):
                self.first_keyframe_after = time.monotonic() - self.started
        elif pt == self.audio_pt:
            self.audio.add(seq)
        else:
            self.other += 1

    def snapshot(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "video": self.video.count,
            "audio": self.audio.count,
            "video_expected": self.video.expected(),
            "audio_expected": self.audio.expected(),
            "other": self.other,
            "connected_after": self.connected_after,
            "first_keyframe_after": self.first_keyframe_after,
        }


def _rtp_keyframe_start(data: bytes) -> bool:
    first = data[0]
    offset = 12 + 4 * (first & 0x0F)
    if first & 0x10 and len(data) >= offset + 4:
        offset += 4 + 4 * int.from_bytes(data[offset + 2 : offset + 4], "big")
    end = len(data) - (data[-1] if first & 0x20 else 0)
    return offset < end and is_keyframe_start(data[offset:end])


def payload_type(sdp: str, codec: str) -> int:
    for line in sdp.splitlines():
        if line.startswith("a=rtpmap:") and f" {codec}/".lower() in line.lower():
            return int(line.split(":", 1)[1].split()[0])
    raise ValueError(f"no {codec} in the answer")


def emit(event: str, **fields: Any) -> None:
    print(json.dumps({"event": event, **fields}), flush=True)


async def viewers_main(url: str, room_id: str, count: int, first_index: int, stagger: float) -> None:
    counters: list[ViewerCounter] = []
    quit_now = trio.Event()

    async def one_viewer(index: int) -> None:
        counter = ViewerCounter(index)
        counters.append(counter)
        async with open_viewer(url, room_id, user_id=f"viewer{index}", host_addresses=LOOPBACK, decode=False) as bot:
            sdp = bot.pc.remoteDescription.sdp
            counter.video_pt = payload_type(sdp, "VP8")
            counter.audio_pt = payload_type(sdp, "opus")
            for dtls in adapter.dtls_transports(bot.pc):
                adapter.tap_srtp_receive(dtls, counter.on_rtp, lambda data: None)
            await bot.wait_connected()
            counter.connected_after = time.monotonic() - counter.started
            await quit_now.wait()

    async def commands() -> None:
        stdin = trio.lowlevel.FdStream(os.dup(0))
        lines = LineReader(stdin)
        while True:
            line = await lines.next()
            if line is None or line.strip() == "quit":
                quit_now.set()
                return
            if line.strip() == "snap":
                emit("snap", viewers=[c.snapshot() for c in counters], cpu=_own_cpu())

    async def progress() -> None:
        announced = False
        while True:
            await trio.sleep(0.5)
            connected = sum(c.connected_after is not None for c in counters)
            keyframed = sum(c.first_keyframe_after is not None for c in counters)
            emit("progress", connected=connected, keyframe=keyframed)
            if keyframed == count and not announced:
                announced = True
                emit("ready")

    async with trio_asyncio.open_loop(), trio.open_nursery() as nursery:
        nursery.start_soon(commands)
        progress_scope = trio.CancelScope()

        async def run_progress() -> None:
            with progress_scope:
                await progress()

        nursery.start_soon(run_progress)
        async with trio.open_nursery() as viewers:
            for i in range(count):
                viewers.start_soon(one_viewer, first_index + i)
                await trio.sleep(stagger)
        progress_scope.cancel()
    emit("closed")


def _own_cpu() -> float:
    t = os.times()
    return t.user + t.system


class LineReader:
    def __init__(self, stream: trio.abc.ReceiveStream) -> None:
        self._stream = stream
        self._buffer = bytearray()

    async def next(self) -> str | None:
        while b"\n" not in self._buffer:
            chunk = await self._stream.receive_some(65536)
            if not chunk:
                return None
            self._buffer += chunk
        line, _, rest = bytes(self._buffer).partition(b"\n")
        self._buffer = bytearray(rest)
        return line.decode()


# ---------------------------------------------------------------------------
# Orchestration (main process): server, host, viewer processes, the window
# ---------------------------------------------------------------------------


class Child:
    """A subprocess we started (``subprocess.Popen`` on the main thread, see :func:`spawn`):
    its stdout read line by line, its stdin written; always reaped by :meth:`stop`."""

    def __init__(self, name: str, popen: subprocess.Popen[bytes]) -> None:
        self.name = name
        self.popen = popen
        assert popen.stdout is not None
        self._stdout = trio.lowlevel.FdStream(os.dup(popen.stdout.fileno()))
        popen.stdout.close()
        self._stdin: trio.lowlevel.FdStream | None = None
        if popen.stdin is not None:
            self._stdin = trio.lowlevel.FdStream(os.dup(popen.stdin.fileno()))
            popen.stdin.close()
        self.lines = LineReader(self._stdout)

    @property
    def pid(self) -> int:
        return self.popen.pid

    async def send(self, line: str) -> None:
        assert self._stdin is not None
        await self._stdin.send_all(line.encode() + b"\n")

    async def event(self, wanted: str, within: float) -> dict[str, Any]:
        """The next JSON line with event == wanted (others are skipped), within ``within`` s."""
        with trio.fail_after(within):
            while True:
                line = await self.lines.next()
                if line is None:
                    raise RuntimeError(f"{self.name} exited (code {self.popen.poll()}) waiting for {wanted!r}")
                try:
                    message = json.loads(line)
                except ValueError:
                    continue
                if message.get("event") == wanted:
                    return dict(message)
                if message.get("event") == "error":
                    raise RuntimeError(f"{self.name}: {message}")

    async def _wait(self, seconds: float) -> None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            await trio.to_thread.run_sync(self.popen.wait, seconds)

    async def stop(self, sig: int = signal.SIGTERM, grace: float = 10.0) -> None:
        with trio.CancelScope(shield=True):
            if self.popen.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    self.popen.send_signal(sig)
                await self._wait(grace)
            if self.popen.poll() is None:
                self.popen.kill()
                await self._wait(5)
            for stream in (self._stdin, self._stdout):
                if stream is not None:
                    await stream.aclose()


def _die_with_parent() -> None:
    """In the child, before exec: SIGTERM when the thread that forked it ends, i.e. when
    the bench process dies, however it dies (so fork from the main thread only)."""
    import ctypes

    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def _popen(argv: list[str], log_path: Path, stdin: bool) -> subprocess.Popen[bytes]:
    with open(log_path, "wb") as log:
        return subprocess.Popen(
            argv,
            stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=log,
            cwd=str(ROOT),
            preexec_fn=_die_with_parent,
        )


async def spawn(name: str, argv: list[str], log_path: Path, stdin: bool = False) -> Child:
    # Not trio.lowlevel.open_process: it forks from a worker thread, and PDEATHSIG fires
    # when that thread is retired (after ~10 s idle), killing the child mid-run.
    assert threading.current_thread() is threading.main_thread()
    return Child(name, _popen(argv, log_path, stdin))


def proc_cpu_ticks(pid: int) -> int:
    """utime + stime of a process (all its threads), in clock ticks."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # fields 14 and 15 of proc(5)


def proc_runtime_ns(pid: int) -> int:
    """Time on CPU in ns, summed over threads (schedstat: finer than clock ticks)."""
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                total += int(f.read().split()[0])
        except OSError:
            continue
    return total


@dataclass
class Snapshot:
    wall: float
    server_ticks: int
    server_ns: int
    forwarding: dict[str, Any]
    viewers: list[dict[str, Any]]
    viewer_cpu: float
    main_cpu: float


@dataclass
class Result:
    viewers: int
    seconds: float
    media: dict[str, Any]
    floor_us: float
    floor_rounds_us: list[float]
    send_paths_us: dict[str, float]
    server_us_per_packet: float
    server_us_per_packet_schedstat: float
    ratio: float
    packets_in: int
    packets_out: int
    packets_received: int
    retransmissions: int
    drops: dict[str, int]
    delivery_vs_out_pct: float
    delivery_vs_in_pct: float
    seq_gaps: int
    server_cpu_pct: float
    viewer_procs_cpu_pct: float
    main_cpu_pct: float
    first_keyframe_median_s: float
    first_keyframe_p90_s: float
    connected_median_s: float
    keyframes_requested: int
    target_met: bool
    server_idle_cpu_pct: float = math.nan
    shaped_floor_us: float = math.nan
    shaped_ratio: float = math.nan
    profile: dict[str, Any] = field(default_factory=dict)


def server_toml(viewers: int) -> str:
    return f"""
[server]
host = "127.0.0.1"
port = 0
max_connections = {max(1000, viewers * 2)}
max_messages_per_second = 1000

[rooms]
max_rooms = 10
max_viewers_per_room = {max(100, viewers + 10)}

[ice]
host_addresses = ["127.0.0.1"]
udp_port = 0
stun_servers = []
"""


async def start_server(args: argparse.Namespace) -> tuple[Child, str]:
    config = OUT_DIR / "fanout-server.toml"
    config.write_text(server_toml(args.viewers))
    argv = [sys.executable, args.server_script, "--config", str(config), "--port", "0", "--log-level", "WARNING"]
    child = await spawn("server", argv, OUT_DIR / "fanout-server.log")
    with trio.fail_after(30):
        while True:
            line = await child.lines.next()
            if line is None:
                raise RuntimeError(f"server exited (see {OUT_DIR / 'fanout-server.log'})")
            if line.startswith("listening on "):
                return child, line.split()[-1]


async def snapshot(
    http: httpx.AsyncClient, room_id: str, server: Child, viewer_children: list[Child], gate: Gate
) -> Snapshot:
    """Pause the host, let in-flight packets land, read every counter, resume."""
    gate.close()
    try:
        await trio.sleep(DRAIN_SECONDS)
        ticks = proc_cpu_ticks(server.pid)
        ns = proc_runtime_ns(server.pid)
        wall = time.monotonic()
        for child in viewer_children:
            await child.send("snap")
        snaps = [await child.event("snap", 15) for child in viewer_children]
        response = await http.get(f"/room/{room_id}/stats")
        response.raise_for_status()
        forwarding = response.json()["forwarding"]
        if forwarding is None:
            raise RuntimeError("the room has no forwarding stats (stopped?)")
    finally:
        gate.open()
    viewers = [v for snap in snaps for v in snap["viewers"]]
    viewer_cpu = sum(float(snap["cpu"]) for snap in snaps)
    return Snapshot(wall, ticks, ns, forwarding, viewers, viewer_cpu, _own_cpu())


def _py_spy() -> str | None:
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    return spy if Path(spy).exists() else None


async def run_profile(pid: int, seconds: float) -> dict[str, Any]:
    spy = _py_spy()
    if spy is None:
        print("--profile: py-spy not found (.venv/bin/pip install py-spy)", file=sys.stderr)
        return {}
    out = OUT_DIR / "fanout-profile.txt"
    argv = [spy, "record", "-p", str(pid), "-d", str(max(1, int(seconds))), "-r", str(PROFILE_RATE), "--nonblocking"]
    argv += ["-f", "raw", "-o", str(out)]
    with trio.move_on_after(seconds + 30):
        await trio.run_process(argv, capture_stdout=True, capture_stderr=True, check=False)
    if not out.exists():
        return {}
    return summarize_profile(out)


#: Where a sample of the server's stack is counted: the first marker found in it.
PROFILE_CATEGORIES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("RTCP in and out (viewers' RR/NACK/PLI, host SR, reports)", ("_rtcp",)),
    ("viewer send: SRTP protect (pylibsrtp)", ("PeerConnection.send_rtp", "Session.protect")),
    ("viewer send: sendto (syscall)", ("MediaPort.sendto",)),
    ("viewer send: PeerConnection bookkeeping", ("PeerConnection.send_rtp",)),
    ("router per viewer: header rewrite, body share (_fan_out)", ("Router._fan_out",)),
    ("router per host packet: parse, stats, cache, NACK", ("Router.on_publisher_rtp",)),
    ("receive: SRTP unprotect", ("PeerConnection.receive_srtp",)),
    ("receive: recvfrom, demux, session look-up", ("MediaPort._read", "MediaPort._handle")),
    ("epoll wait (trio EpollIOManager.get_events)", ("EpollIOManager.get_events",)),
    ("STUN, DTLS, timers, consent", ("_handle_stun", "receive_dtls", "_run_timers", "on_timer")),
    ("REST, WebSocket, actors", ("hypercorn", "quart", "actors/", "api/")),
    ("trio scheduling (everything else)", ()),
)


def _frame_name(frame: str) -> str:
    """'fn (path/file.py:123)' -> 'fn (path/file.py)'."""
    name, _, where = frame.partition(" (")
    return f"{name} ({where.rsplit(':', 1)[0]})" if where else name


def summarize_profile(path: Path, top: int = 15) -> dict[str, Any]:
    """py-spy raw output (collapsed stacks with line numbers) -> shares by category and the
    functions with most self samples. Shares are of the samples taken in the window."""
    categories = dict.fromkeys((name for name, _ in PROFILE_CATEGORIES), 0)
    own: dict[str, int] = {}
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        frames = [f for f in stack.split(";") if f]
        lowered = [f.lower() for f in frames]
        if frames:
            leaf = _frame_name(frames[-1])
            own[leaf] = own.get(leaf, 0) + count
        for name, markers in PROFILE_CATEGORIES:
            if all(any(m.lower() in f for f in lowered) for m in markers):
                categories[name] += count
                break
    if not total:
        return {}
    return {
        "samples": total,
        "categories_pct": {name: 100 * n / total for name, n in categories.items()},
        "self_pct": {f: 100 * own[f] / total for f in sorted(own, key=lambda f: -own[f])[:top]},
    }


async def bench(args: argparse.Namespace, floor_rounds: list[float], paths: dict[str, list[float]]) -> Result:
    video, audio = load_media()
    gate = Gate()
    children: list[Child] = []
    try:
        server, base_url = await start_server(args)
        children.append(server)
        print(f"server pid {server.pid} at {base_url}", flush=True)
        ws_url = base_url.replace("http", "ws", 1) + "/ws"
        async with httpx.AsyncClient(base_url=base_url, timeout=10) as http:
            response = await http.post("/room/create", json={"post_id": "bench", "host_user_id": "host"})
            response.raise_for_status()
            room_id = response.json()["room_id"]
            async with trio_asyncio.open_loop():
                video_track, audio_track = PacketTrack(video, gate), PacketTrack(audio, gate)
                async with open_host(
                    ws_url, room_id, user_id="host", tracks=[video_track, audio_track], host_addresses=LOOPBACK
                ) as host:
                    for sender in host.pc.getSenders():
                        if sender.track is video_track and not args.ignore_pli:
                            # aiortc's sender turns a PLI into _send_keyframe(), which only
                            # affects its encoder: the file jumps to its next keyframe instead
                            sender._send_keyframe = video_track.request_keyframe  # type: ignore[method-assign]
                    with trio.fail_after(20):
                        await host.wait_connected()
                    print("host connected; starting viewers", flush=True)
                    viewer_children = await start_viewers(args, ws_url, room_id)
                    children += viewer_children
                    await wait_ready(viewer_children, args.viewers, within=args.join_timeout)
                    await trio.sleep(1.0)  # let the joins' keyframes and RTCP settle
                    keyframes_before = video_track.keyframes_requested
                    start = await snapshot(http, room_id, server, viewer_children, gate)
                    print(f"window: {args.seconds:.0f} s", flush=True)
                    if args.profile:
                        async with trio.open_nursery() as nursery:
                            profile_box: list[dict[str, Any]] = []

                            async def profile() -> None:
                                profile_box.append(await run_profile(server.pid, args.seconds))

                            nursery.start_soon(profile)
                            await trio.sleep(args.seconds)
                        profile_rows = profile_box[0] if profile_box else {}
                    else:
                        await trio.sleep(args.seconds)
                        profile_rows = {}
                    end = await snapshot(http, room_id, server, viewer_children, gate)
                    keyframes_requested = video_track.keyframes_requested - keyframes_before
                    gate.close()  # the host stops sending: the server's idle cost, then everyone leaves
                    await trio.sleep(0.2)
                    idle_ns0, idle_t0 = proc_runtime_ns(server.pid), time.monotonic()
                    await trio.sleep(IDLE_SECONDS)
                    idle_pct = 100 * (proc_runtime_ns(server.pid) - idle_ns0) / 1e9 / (time.monotonic() - idle_t0)
                    for child in viewer_children:
                        await child.send("quit")
                    with trio.move_on_after(20):
                        for child in viewer_children:
                            await child.event("closed", 20)
                    gate.open()  # so that the tracks' recv() sees they were stopped
    finally:
        for child in reversed(children):
            await child.stop()
    result = compute(args, video, audio, floor_rounds, paths, start, end, keyframes_requested, profile_rows)
    result.server_idle_cpu_pct = idle_pct
    return result


async def start_viewers(args: argparse.Namespace, ws_url: str, room_id: str) -> list[Child]:
    procs = max(1, min(args.viewer_procs, args.viewers))
    children = []
    first = 0
    for p in range(procs):
        count = args.viewers // procs + (1 if p < args.viewers % procs else 0)
        argv = [sys.executable, __file__, "--role", "viewers", "--url", ws_url, "--room", room_id]
        argv += ["--viewers", str(count), "--first-index", str(first), "--stagger", str(args.stagger * procs)]
        children.append(await spawn(f"viewers{p}", argv, OUT_DIR / f"fanout-viewers{p}.log", stdin=True))
        first += count
    return children


async def wait_ready(children: list[Child], total: int, within: float) -> None:
    with trio.fail_after(within):
        async with trio.open_nursery() as nursery:
            for child in children:
                nursery.start_soon(child.event, "ready", within)
    print(f"all {total} viewers connected and got a keyframe", flush=True)


def compute(
    args: argparse.Namespace,
    video: EncodedStream,
    audio: EncodedStream,
    floor_rounds: list[float],
    paths: dict[str, list[float]],
    start: Snapshot,
    end: Snapshot,
    keyframes_requested: int,
    profile_rows: dict[str, Any],
) -> Result:
    f0, f1 = start.forwarding, end.forwarding
    packets_in = f1["packets_in"] - f0["packets_in"]
    packets_out = f1["packets_out"] - f0["packets_out"]
    before = {v["index"]: v for v in start.viewers}
    received = 0
    gaps = 0
    for v in end.viewers:
        b = before[v["index"]]
        got = v["video"] + v["audio"] - b["video"] - b["audio"]
        expected = v["video_expected"] + v["audio_expected"] - b["video_expected"] - b["audio_expected"]
        received += got
        gaps += max(0, expected - got)
    wall = end.wall - start.wall
    cpu_s = (end.server_ticks - start.server_ticks) / CLK_TCK
    cpu_ns_s = (end.server_ns - start.server_ns) / 1e9
    per_packet = 1e6 * cpu_s / packets_out if packets_out else math.nan
    per_packet_ns = 1e6 * cpu_ns_s / packets_out if packets_out else math.nan
    floor_us = 1e6 * min(floor_rounds)
    delivery_out = 100 * received / packets_out if packets_out else math.nan
    delivery_in = 100 * received / (packets_in * args.viewers) if packets_in else math.nan
    firsts = [v["first_keyframe_after"] for v in end.viewers if v["first_keyframe_after"] is not None]
    connects = [v["connected_after"] for v in end.viewers if v["connected_after"] is not None]
    drops = {
        k: f1["drops"].get(k, 0) - f0["drops"].get(k, 0) for k in f1["drops"] if f1["drops"][k] != f0["drops"].get(k)
    }
    ratio = per_packet / floor_us
    return Result(
        viewers=args.viewers,
        seconds=wall,
        media={
            "video_kbps": round(video.bitrate / 1e3),
            "audio_kbps": round(audio.bitrate / 1e3),
            "size": "640x360@30",
            "keyframe_every_s": 2,
        },
        floor_us=floor_us,
        floor_rounds_us=[1e6 * r for r in floor_rounds],
        send_paths_us={name: 1e6 * min(values) for name, values in paths.items()},
        server_us_per_packet=per_packet,
        server_us_per_packet_schedstat=per_packet_ns,
        ratio=ratio,
        packets_in=packets_in,
        packets_out=packets_out,
        packets_received=received,
        retransmissions=f1["retransmissions"] - f0["retransmissions"],
        drops=drops,
        delivery_vs_out_pct=delivery_out,
        delivery_vs_in_pct=delivery_in,
        seq_gaps=gaps,
        server_cpu_pct=100 * cpu_s / wall,
        viewer_procs_cpu_pct=100 * (end.viewer_cpu - start.viewer_cpu) / wall,
        main_cpu_pct=100 * (end.main_cpu - start.main_cpu) / wall,
        first_keyframe_median_s=statistics.median(firsts) if firsts else math.nan,
        first_keyframe_p90_s=_percentile(firsts, 0.9),
        connected_median_s=statistics.median(connects) if connects else math.nan,
        keyframes_requested=keyframes_requested,
        target_met=delivery_out >= TARGET_DELIVERY and delivery_in >= TARGET_DELIVERY and ratio <= TARGET_RATIO,
        profile=profile_rows,
    )


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def table(r: Result) -> str:
    rows: list[tuple[str, str]] = [
        ("floor: SRTP protect + sendto, CPU us/pkt (best of 10x20k)", f"{r.floor_us:.2f}"),
        ("server CPU us per forwarded pkt (/proc utime+stime)", f"{r.server_us_per_packet:.2f}"),
        ("  ratio server / floor (target <= 3x)", f"{r.ratio:.2f}x"),
        ("  same from schedstat (ns clock)", f"{r.server_us_per_packet_schedstat:.2f}"),
        ("floor shaped like the server (bursts of N, sleeps), us/pkt", f"{r.shaped_floor_us:.2f}"),
        ("  ratio server / shaped floor", f"{r.shaped_ratio:.2f}x"),
    ]
    for name, micros in r.send_paths_us.items():
        rows.append((f"{name}, CPU us/pkt (micro)", f"{micros:.2f}  ({micros / r.floor_us:.2f}x floor)"))
    rows += [
        ("delivery: received / server packets_out", f"{r.delivery_vs_out_pct:.3f} %"),
        ("delivery: received / (packets_in x viewers)", f"{r.delivery_vs_in_pct:.3f} %"),
        ("packets in / out / received", f"{r.packets_in:,} / {r.packets_out:,} / {r.packets_received:,}"),
        ("sequence gaps seen by viewers", f"{r.seq_gaps:,}"),
        ("retransmissions / drops (server)", f"{r.retransmissions} / {r.drops or '{}'}"),
        ("viewers / window seconds", f"{r.viewers} / {r.seconds:.1f}"),
        ("out packets per second", f"{r.packets_out / r.seconds:,.0f}"),
        (
            "server CPU, % of one core (idle: all connected, host paused)",
            f"{r.server_cpu_pct:.1f} ({r.server_idle_cpu_pct:.1f})",
        ),
        ("viewer process(es) / bench+host CPU, % of one core", f"{r.viewer_procs_cpu_pct:.1f} / {r.main_cpu_pct:.1f}"),
        (
            "first keyframe after join: median (p90)",
            f"{r.first_keyframe_median_s:.2f} s ({r.first_keyframe_p90_s:.2f} s)",
        ),
        ("ICE+DTLS connected after join: median", f"{r.connected_median_s:.2f} s"),
        ("host keyframes asked for in the window (PLI)", f"{r.keyframes_requested}"),
        ("target (delivery >= 99.9 %, ratio <= 3x)", "MET" if r.target_met else "MISSED"),
    ]
    width = max(len(k) for k, _ in rows)
    lines = [f"{'metric':<{width}}  value", f"{'-' * width}  {'-' * 30}"]
    lines += [f"{k:<{width}}  {v}" for k, v in rows]
    media = r.media
    head = (
        f"fan-out: {r.viewers} viewers, {r.seconds:.1f} s window, VP8 {media['size']} "
        f"{media['video_kbps']} kbit/s + Opus {media['audio_kbps']} kbit/s, pre-encoded"
    )
    return head + "\n" + "\n".join(lines)


def profile_table(profile: dict[str, Any], us_per_packet: float, cpu_seconds: float) -> str:
    sampled = profile["samples"] / PROFILE_RATE
    lines = [
        f"py-spy, server process: {profile['samples']} samples = {sampled:.2f} s sampled as busy, "
        f"/proc says {cpu_seconds:.2f} s CPU (the excess: waits py-spy could not tell from work, likely in epoll)"
    ]
    lines.append(f"{'share':>7} {'us/fwd pkt':>10}  where")
    for name, pct in sorted(profile["categories_pct"].items(), key=lambda kv: -kv[1]):
        lines.append(f"{pct:>6.1f}% {pct * us_per_packet / 100:>10.2f}  {name}")
    lines.append("")
    lines.append(f"{'self':>7} {'us/fwd pkt':>10}  function")
    for name, pct in profile["self_pct"].items():
        lines.append(f"{pct:>6.1f}% {pct * us_per_packet / 100:>10.2f}  {name}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--viewers", type=int, default=40)
    parser.add_argument("--seconds", type=float, default=20.0, help="length of the measured window")
    parser.add_argument("--viewer-procs", type=int, default=1, help="processes the viewers are spread over")
    parser.add_argument("--stagger", type=float, default=0.05, help="seconds between two viewers' joins")
    parser.add_argument("--join-timeout", type=float, default=60.0)
    parser.add_argument("--profile", action="store_true", help="py-spy the server during the window")
    parser.add_argument(
        "--server-script",
        default="app.py",
        help="what the server process runs (experiments: a script that patches something, then runs app.py)",
    )
    parser.add_argument(
        "--ignore-pli",
        action="store_true",
        help="the host ignores PLIs (a late viewer waits for the file's next keyframe, every 2 s)",
    )
    parser.add_argument("--role", choices=["bench", "viewers"], default="bench", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--room", help=argparse.SUPPRESS)
    parser.add_argument("--first-index", type=int, default=0, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def _run_with_deadline(fn: Callable[..., Awaitable[Any]], deadline: float, *args: Any) -> Any:
    """trio.run(fn(*args)) bounded by ``deadline`` s; SIGINT / SIGTERM cancel it (so every
    child process is stopped by the ``finally`` blocks) and then raise KeyboardInterrupt."""

    async def bounded() -> Any:
        box: list[Any] = []
        interrupted: list[int] = []
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async with trio.open_nursery() as nursery:

                async def watch() -> None:
                    async for signum in signals:
                        interrupted.append(signum)
                        nursery.cancel_scope.cancel()
                        return

                async def work() -> None:
                    with trio.fail_after(deadline):
                        box.append(await fn(*args))
                    nursery.cancel_scope.cancel()

                nursery.start_soon(watch)
                nursery.start_soon(work)
        if interrupted:
            raise KeyboardInterrupt(f"signal {interrupted[0]}")
        return box[0]

    return trio.run(bounded)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    if args.role == "viewers":
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # the bench stops us (quit / SIGTERM)
        trio.run(viewers_main, args.url, args.room, args.viewers, args.first_index, args.stagger)
        return 0
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    load_media()
    print("measuring the floor and the server's send path ...", flush=True)
    floor_rounds = measure_floor()
    paths = trio.run(measure_send_paths)
    budget = args.seconds + args.join_timeout + 90
    try:
        result: Result = _run_with_deadline(bench, budget, args, floor_rounds, paths)
    except KeyboardInterrupt:
        print("interrupted: server, host and viewers stopped", file=sys.stderr)
        return 130
    floor_after = measure_floor()
    result.floor_rounds_us += [1e6 * r for r in floor_after]
    bursts_per_second = result.packets_in / result.seconds if result.seconds > 0 else 200.0
    result.shaped_floor_us = 1e6 * min(shaped_floor(args.viewers, bursts_per_second) for _ in range(3))
    result.shaped_ratio = result.server_us_per_packet / result.shaped_floor_us
    result.floor_us = min(result.floor_rounds_us)
    result.ratio = result.server_us_per_packet / result.floor_us
    result.target_met = (
        result.delivery_vs_out_pct >= TARGET_DELIVERY
        and result.delivery_vs_in_pct >= TARGET_DELIVERY
        and result.ratio <= TARGET_RATIO
    )
    print()
    print(table(result))
    if result.profile:
        print()
        cpu_seconds = result.server_cpu_pct * result.seconds / 100
        print(profile_table(result.profile, result.server_us_per_packet, cpu_seconds))
    JSON_PATH.write_text(json.dumps(asdict(result), indent=2))
    print(f"\nwrote {JSON_PATH}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
