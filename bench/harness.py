"""What the end-to-end benchmarks share (``fanout.py``, ``rooms.py``, ``janus.py``, ``soak.py``,
``loop_lag.py``): not a benchmark itself.

- **Processes** (:func:`spawn`, :class:`Child`): the server, Janus, viewer and worker processes,
  each started from the main thread with ``PR_SET_PDEATHSIG`` (they die with the bench), its
  stdout read line by line (JSON events, :func:`emit`), its stdin written (commands), always
  reaped by :meth:`Child.stop`. :func:`run_bounded` runs a bench under a deadline, SIGINT and
  SIGTERM cancelling it so that every ``finally`` stops its children.
- **CPU from /proc**: :func:`proc_cpu_ticks` (``/proc/PID/stat``), :func:`proc_runtime_ns`
  (every thread's ``schedstat``), :func:`machine_ticks`, :func:`udp_drops`, :func:`udp_sockets`.
- **The server** (:func:`start_server`): ``app.py`` of a checkout (``--server-root DIR``,
  default this one; its own directory first on ``sys.path``, so its packages are the ones
  loaded), alone in its process with a generated config (:func:`server_toml`), loopback only,
  ``--port 0``; :class:`Server` knows its URLs, its API key and its processes (front and
  workers). Rooms over REST (:func:`create_rooms`), counters (:meth:`Server.forwarding`,
  :func:`read_metrics`, :class:`Histogram`), REST load (:func:`rest_load`).
- **Hosts**: :class:`PacketTrack` publishes the pre-encoded file of ``make_media.py`` as it is
  (aiortc only packetizes), paced, looped, paused by a :class:`Gate`; :func:`open_hosts` runs
  one aiortc host per room.
- **Viewer processes** (``viewers.py``; ``janus.py --role janus-viewers``): :func:`serve_viewers`
  is their side of the protocol (``progress``/``ready`` events, ``snap``/``quit`` commands,
  ``closed``), :class:`ViewerCounter` counts each viewer's clear RTP at the DTLS transport;
  :func:`start_viewer_procs`, :func:`wait_ready` and :func:`quit_viewers` are the bench's side.
- **Windows**: :func:`read_point` reads every counter with the hosts paused (nothing in
  flight), :func:`summarize_window` turns two points into CPU per packet, cores, rooms per core,
  delivery; :func:`table` prints aligned columns.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fractions
import json
import math
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent  # this checkout: the default --server-root
sys.path.insert(0, str(BENCH_DIR))
# the bots and the viewers are this checkout's (not those of the tree the venv was installed
# from, when the venv is shared between worktrees)
sys.path.insert(1, str(ROOT / "clients" / "python"))

import av  # noqa: E402
import httpx  # noqa: E402
import trio  # noqa: E402
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack  # noqa: E402
from make_media import OUT_DIR, EncodedStream  # noqa: E402

from media_server_client.aiortc_hooks import pace_rtp_sent  # noqa: E402
from media_server_client.bots import open_host  # noqa: E402

LOOPBACK = ["127.0.0.1"]
CLK_TCK = os.sysconf("SC_CLK_TCK")
DRAIN_SECONDS = 0.4  # hosts paused this long before each end of a window is read


# ---------------------------------------------------------------------------
# Processes
# ---------------------------------------------------------------------------


def emit(event: str, **fields: Any) -> None:
    """One JSON line on stdout: how a child process talks to the bench."""
    print(json.dumps({"event": event, **fields}), flush=True)


def own_cpu() -> float:
    """This process's CPU seconds (user + system)."""
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


def stdin_lines() -> LineReader:
    """This (child) process's commands, one a line."""
    return LineReader(trio.lowlevel.FdStream(os.dup(0)))


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


def spawn(
    name: str,
    argv: list[str],
    log_path: Path,
    stdin: bool = False,
    *,
    cwd: Path = ROOT,
    env: dict[str, str] | None = None,
) -> Child:
    """Start ``argv`` (its stderr to ``log_path``). From the main thread only: not
    trio.lowlevel.open_process, which forks from a worker thread, and PDEATHSIG fires when that
    thread is retired (after ~10 s idle), killing the child mid-run."""
    assert threading.current_thread() is threading.main_thread()
    with open(log_path, "wb") as log:
        popen = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=log,
            cwd=str(cwd),
            env=env,
            preexec_fn=_die_with_parent,
        )
    return Child(name, popen)


def run_bounded(fn: Callable[..., Awaitable[Any]], deadline: float, *args: Any) -> tuple[Any, int | None, bool]:
    """``trio.run(fn(*args))`` bounded by ``deadline`` s; SIGINT / SIGTERM cancel it (so every
    child process is stopped by the ``finally`` blocks). Returns (its result or None, the
    signal that interrupted it or None, whether the deadline passed)."""
    box: list[Any] = []
    interrupted: list[int] = []
    late: list[bool] = []

    async def bounded() -> None:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async with trio.open_nursery() as nursery:

                async def watch() -> None:
                    async for signum in signals:
                        interrupted.append(signum)
                        nursery.cancel_scope.cancel()
                        return

                async def work() -> None:
                    with trio.move_on_after(deadline) as scope:
                        box.append(await fn(*args))
                    late.append(scope.cancelled_caught)
                    nursery.cancel_scope.cancel()

                nursery.start_soon(watch)
                nursery.start_soon(work)

    trio.run(bounded)
    return (box[0] if box else None), (interrupted[0] if interrupted else None), bool(late and late[0])


def run_bench(fn: Callable[..., Awaitable[Any]], deadline: float, *args: Any) -> tuple[Any, int]:
    """:func:`run_bounded`, an interruption or a missed deadline said on stderr: (the result, 0),
    or (None, the exit code: 130 interrupted, 1 too late)."""
    result, interrupted, late = run_bounded(fn, deadline, *args)
    if interrupted is not None:
        print(f"interrupted (signal {interrupted}): server, host and viewers stopped", file=sys.stderr)
        return None, 130
    if late or result is None:
        print(f"the run did not finish within {deadline:.0f} s: server, host and viewers stopped", file=sys.stderr)
        return None, 1
    return result, 0


# ---------------------------------------------------------------------------
# CPU, sockets and ports from /proc
# ---------------------------------------------------------------------------


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


def machine_ticks() -> tuple[int, int]:
    """(busy, total) clock ticks of all CPUs since boot (/proc/stat)."""
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    total = sum(values[:8])
    return total - idle, total


def udp_sockets(pid: int) -> str:
    """``ss -uanp``'s lines of the process's UDP sockets."""
    try:
        out = subprocess.run(["ss", "-uanp"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return "(ss not available)"
    lines = [line for line in out.splitlines() if f"pid={pid}," in line]
    return "\n".join(lines) or "(no UDP socket of the server?)"


def udp_drops(pids: list[int]) -> int:
    """Datagrams the kernel dropped on these processes' UDP sockets (a full receive buffer: a
    server that fell behind), from /proc/net/udp's `drops` column."""
    inodes = set()
    for pid in pids:
        fd_dir = Path(f"/proc/{pid}/fd")
        for fd in fd_dir.iterdir() if fd_dir.exists() else []:
            with contextlib.suppress(OSError):
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
    drops = 0
    for table_path in ("/proc/net/udp", "/proc/net/udp6"):
        with contextlib.suppress(OSError):
            for line in Path(table_path).read_text().splitlines()[1:]:
                fields = line.split()
                if len(fields) >= 13 and fields[9] in inodes:
                    drops += int(fields[12])
    return drops


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# ---------------------------------------------------------------------------
# The server under test
# ---------------------------------------------------------------------------


def add_server_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--server-root",
        type=Path,
        default=ROOT,
        help="the checkout whose app.py is the server (default: this one): measure a 'before' tree "
        "and an 'after' tree with the same bench code",
    )


def add_viewer_arguments(parser: argparse.ArgumentParser, viewers: int, procs: int, join_timeout: float) -> None:
    """The options of one room's viewers (``start_viewer_procs``)."""
    parser.add_argument("--viewers", type=int, default=viewers)
    parser.add_argument("--viewer-procs", type=int, default=procs, help="processes the viewers are spread over")
    parser.add_argument("--stagger", type=float, default=0.05, help="seconds between two viewers' joins")
    parser.add_argument("--join-timeout", type=float, default=join_timeout)


def use_server_root(root: Path) -> Path:
    """The checkout ``root`` checked, and first on this process's ``sys.path`` (so that what the
    bench imports of the server itself, e.g. fanout's send-path micro, is that checkout's)."""
    root = root.resolve()
    if not (root / "app.py").is_file():
        raise SystemExit(f"--server-root {root}: no app.py there")
    if str(root) in sys.path:
        sys.path.remove(str(root))
    sys.path.insert(0, str(root))
    return root


def describe_root(root: Path) -> str:
    """``root`` and its commit (``+changes`` when its work tree differs from it)."""
    try:
        commit = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return str(root)
    return f"{root} ({commit or '?'}{' +changes' if dirty else ''})"


def server_toml(
    *,
    max_rooms: int,
    max_viewers_per_room: int,
    max_connections: int = 1000,
    max_messages_per_second: int | None = None,
    fault_injection: bool = False,
    workers: int | None = None,
    room_viewers_per_worker: int | None = None,
    api_key: str = "",
) -> str:
    """A config for a bench server: loopback only, any free ports, no STUN. ``workers``,
    ``room_viewers_per_worker``: its ``[cluster]`` (a room's viewers past the latter on one
    worker go to another, fed by a relay)."""
    text = f"""
[server]
host = "127.0.0.1"
port = 0
max_connections = {max_connections}
"""
    if max_messages_per_second is not None:
        text += f"max_messages_per_second = {max_messages_per_second}\n"
    text += f"""
[rooms]
max_rooms = {max_rooms}
max_viewers_per_room = {max_viewers_per_room}

[ice]
host_addresses = ["127.0.0.1"]
udp_port = 0
stun_servers = []
"""
    if api_key:
        text += f'\n[auth]\napi_key = "{api_key}"\n'
    if fault_injection:
        text += "\n[debug]\nfault_injection = true  # GET /debug/runtime\n"
    if workers is not None or room_viewers_per_worker is not None:
        text += "\n[cluster]\n"
        if workers is not None:
            text += f"workers = {workers}\n"
        if room_viewers_per_worker is not None:
            text += f"room_viewers_per_worker = {room_viewers_per_worker}\n"
    return text


@dataclass
class Server:
    """``app.py`` running in its own process."""

    child: Child
    base_url: str
    root: Path
    log_path: Path
    api_key: str = ""
    workers: int = 1

    @property
    def pid(self) -> int:
        return self.child.pid

    @property
    def ws_url(self) -> str:
        return self.base_url.replace("http", "ws", 1) + "/ws"

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}

    def http(self, timeout: float = 15, **options: Any) -> httpx.AsyncClient:
        """A REST client of the server (with its API key when it has one)."""
        return httpx.AsyncClient(base_url=self.base_url, timeout=timeout, headers=self.headers, **options)

    async def pids(self, http: httpx.AsyncClient) -> list[int]:
        """The server's processes: the front, and with ``[cluster] workers`` every worker."""
        if self.workers == 1:
            return [self.pid]
        return [self.pid, *[worker["pid"] for worker in (await get_json(http, "/stats"))["workers"]]]

    async def forwarding(self, http: httpx.AsyncClient, room_ids: Sequence[str]) -> list[dict[str, Any]]:
        """Each room's ``forwarding`` counters (``GET /room/{id}/stats``)."""
        rooms = []
        for room_id in room_ids:
            forwarding = (await get_json(http, f"/room/{room_id}/stats"))["forwarding"]
            if forwarding is None:
                raise RuntimeError(f"room {room_id} has no forwarding stats (stopped?)")
            rooms.append(forwarding)
        return rooms


async def start_server(
    name: str,
    toml: str,
    *,
    root: Path = ROOT,
    script: str = "app.py",
    log_level: str = "WARNING",
    host: str | None = None,
    api_key: str = "",
    workers: int = 1,
) -> Server:
    """``root``'s ``script`` (``app.py``) started with ``toml`` as its config
    (``bench/out/NAME-server.toml``), its stderr in ``bench/out/NAME-server.log``, in ``root``
    (so that its own packages are the ones it imports); returns once it listens."""
    config = OUT_DIR / f"{name}-server.toml"
    config.write_text(toml)
    log_path = OUT_DIR / f"{name}-server.log"
    argv = [sys.executable, str(root / script), "--config", str(config)]
    if host is not None:
        argv += ["--host", host]
    argv += ["--port", "0", "--log-level", log_level]
    child = spawn("server", argv, log_path, cwd=root)
    try:
        with trio.fail_after(30):
            while True:
                line = await child.lines.next()
                if line is None:
                    raise RuntimeError(f"the server exited (code {child.popen.poll()}; see {log_path})")
                if line.startswith("listening on "):
                    return Server(child, line.split()[-1], root, log_path, api_key, workers)
    except BaseException:
        await child.stop()
        raise


async def get_json(http: httpx.AsyncClient, path: str) -> Any:
    response = await http.get(path)
    response.raise_for_status()
    return response.json()


async def create_room(http: httpx.AsyncClient, post_id: str, host_user_id: str = "host") -> str:
    response = await http.post("/room/create", json={"post_id": post_id, "host_user_id": host_user_id})
    response.raise_for_status()
    return str(response.json()["room_id"])


async def create_rooms(http: httpx.AsyncClient, count: int, prefix: str = "p") -> list[str]:
    return [await create_room(http, f"{prefix}{index}") for index in range(count)]


# ---------------------------------------------------------------------------
# GET /metrics: counters and histograms
# ---------------------------------------------------------------------------


async def read_metrics(http: httpx.AsyncClient, url: str = "/metrics") -> dict[str, float]:
    """The server's ``GET /metrics`` (Prometheus text; ``url``: another process's, such as one
    worker's): ``{'name{labels}': value}``."""
    response = await http.get(url)
    response.raise_for_status()
    values: dict[str, float] = {}
    for line in response.text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            values[key] = float(value)
    return values


@dataclass(frozen=True)
class Histogram:
    """A Prometheus histogram of ``GET /metrics``: counts per bucket (not cumulative), the last
    bucket above every bound. Quantiles are bucket upper bounds: an over-estimate, never under."""

    bounds: tuple[float, ...]  # upper bounds, seconds
    counts: tuple[int, ...]  # len(bounds) + 1
    sum: float  # seconds

    @classmethod
    def from_metrics(cls, metrics: dict[str, float], name: str) -> Histogram:
        prefix = f'{name}_bucket{{le="'
        cumulative = sorted(
            (float(key[len(prefix) : -2]), int(value)) for key, value in metrics.items() if key.startswith(prefix)
        )
        if not cumulative:
            raise KeyError(f"no histogram {name} in GET /metrics")
        bounds = tuple(bound for bound, _ in cumulative if math.isfinite(bound))
        counts = []
        seen = 0
        for _, total in cumulative:
            counts.append(total - seen)
            seen = total
        if len(counts) == len(bounds):  # no +Inf bucket
            counts.append(0)
        return cls(bounds, tuple(counts), metrics.get(f"{name}_sum", math.nan))

    def since(self, earlier: Histogram) -> Histogram:
        """What was counted between ``earlier`` and this one."""
        if earlier.bounds != self.bounds:
            raise ValueError("histograms of different buckets")
        counts = tuple(now - then for now, then in zip(self.counts, earlier.counts, strict=True))
        return Histogram(self.bounds, counts, self.sum - earlier.sum)

    @property
    def total(self) -> int:
        return sum(self.counts)

    @property
    def mean(self) -> float:
        return self.sum / self.total if self.total else math.nan

    def quantile(self, q: float) -> float:
        """The upper bound (s) of the bucket holding quantile ``q``; inf above the last bound,
        nan when nothing was counted."""
        total = self.total
        if total == 0:
            return math.nan
        rank = max(1, math.ceil(q * total))
        seen = 0
        for index, count in enumerate(self.counts):
            seen += count
            if seen >= rank:
                return self.bounds[index] if index < len(self.bounds) else math.inf
        return math.inf

    def max_bucket(self) -> tuple[float, float]:
        """(lower, upper) bound in s of the highest bucket counted in: where the maximum lies."""
        for index in range(len(self.counts) - 1, -1, -1):
            if self.counts[index]:
                lower = self.bounds[index - 1] if index > 0 else 0.0
                return lower, self.bounds[index] if index < len(self.bounds) else math.inf
        return math.nan, math.nan


def upto_ms(seconds: float) -> str:
    """A bucket's upper bound: '<= 1.5 ms'."""
    if math.isnan(seconds):
        return "-"
    return f"<= {seconds * 1000:g} ms" if math.isfinite(seconds) else "above the last bucket"


def bucket_ms(bounds: tuple[float, float]) -> str:
    """A bucket: '(1.5, 2] ms'."""
    lower, upper = bounds
    if math.isnan(lower):
        return "-"
    if not math.isfinite(upper):
        return f"> {lower * 1000:g} ms"
    return f"({lower * 1000:g}, {upper * 1000:g}] ms"


# ---------------------------------------------------------------------------
# REST load
# ---------------------------------------------------------------------------


async def rest_load(
    base_url: str, headers: dict[str, str], paths: Sequence[str], per_second: float, latencies: list[float]
) -> None:
    """``GET`` each of ``paths`` in turn at ``per_second``, each request on its own task (never
    waiting for the previous one), until cancelled; each latency appended (inf: failed)."""

    async def one(http: httpx.AsyncClient, path: str) -> None:
        start = time.monotonic()
        try:
            (await http.get(path)).raise_for_status()
            latencies.append(time.monotonic() - start)
        except httpx.HTTPError:
            latencies.append(math.inf)

    limits = httpx.Limits(max_connections=int(per_second) + 10)
    async with (
        httpx.AsyncClient(base_url=base_url, timeout=15, limits=limits, headers=headers) as http,
        trio.open_nursery() as nursery,
    ):
        next_at = trio.current_time()
        for index in range(10**9):
            nursery.start_soon(one, http, paths[index % len(paths)])
            next_at += 1.0 / per_second
            await trio.sleep_until(next_at)


def latency_summary(latencies: list[float]) -> dict[str, Any]:
    """Requests, failures, p50 / p99 / max of the answered ones (ms)."""
    answered = sorted(latency for latency in latencies if latency != math.inf)

    def at(q: float) -> float:
        return 1e3 * answered[min(len(answered) - 1, int(q * len(answered)))] if answered else math.nan

    return {
        "requests": len(latencies),
        "failed": len(latencies) - len(answered),
        "request_p50_ms": at(0.5),
        "request_p99_ms": at(0.99),
        "request_max_ms": 1e3 * answered[-1] if answered else math.nan,
    }


# ---------------------------------------------------------------------------
# The hosts' tracks: pre-encoded frames as av.Packet, looped, paced, pausable
# ---------------------------------------------------------------------------


class Gate:
    """Open/closed; closing it pauses every PacketTrack that shares it (they wait in asyncio:
    :meth:`wait`) and ``raw_host.py``'s hosts (in trio: :meth:`wait_in_trio`). Opened and
    closed from trio (``read_point``)."""

    def __init__(self) -> None:
        self._open = asyncio.Event()
        self._open.set()
        self._reopened = trio.Event()
        self._reopened.set()

    def close(self) -> None:
        self._open.clear()
        if self._reopened.is_set():
            self._reopened = trio.Event()

    def open(self) -> None:
        self._open.set()
        self._reopened.set()

    @property
    def is_open(self) -> bool:
        return self._open.is_set()

    async def wait(self) -> None:
        await self._open.wait()

    async def wait_in_trio(self) -> None:
        await self._reopened.wait()


def next_keyframe(keyframes: Sequence[bool], index: int) -> int:
    """The index of the first keyframe at or after ``index`` in a looped file: where a file
    jumps when its host is asked for a keyframe, as an encoder would make one."""
    n = len(keyframes)
    return next(i for i in range(index, index + n) if keyframes[i % n]) % n


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
            self._index = next_keyframe(stream.keyframes, self._index)
        packet = av.Packet(stream.frames[self._index])
        packet.pts = self._count * stream.frame_ticks
        packet.time_base = self._time_base
        self._index = (self._index + 1) % len(stream.frames)
        self._count += 1
        return packet


def answer_pli(host: Any, video_track: PacketTrack) -> None:
    """aiortc's sender turns a PLI into ``_send_keyframe()``, which only affects its encoder:
    here the file jumps to its next keyframe instead."""
    for sender in host.pc.getSenders():
        if sender.track is video_track:
            sender._send_keyframe = video_track.request_keyframe


@asynccontextmanager
async def open_hosts(
    ws_url: str,
    room_ids: Sequence[str],
    video: EncodedStream,
    audio: EncodedStream,
    gate: Gate,
    *,
    pli: bool = True,
    pacing_bps: float | None = None,
    within: float = 60,
    video_codec: str | None = None,
) -> AsyncIterator[list[PacketTrack]]:
    """One aiortc host per room publishing the file (inside a trio-asyncio loop), all connected
    when entered; their video tracks (PLIs counted there) in the rooms' order. ``pli``: a PLI
    makes the file jump to its next keyframe (else the host ignores it). ``pacing_bps``: RTP
    sent no faster than this, as libwebrtc paces (None: aiortc's way, each frame's packets
    back to back). ``video_codec``: what the file is and the host offers alone ("H264"; default:
    aiortc's list, which gives VP8)."""
    connected = trio.Semaphore(0)
    stop = trio.Event()
    video_tracks = [PacketTrack(video, gate) for _ in room_ids]

    async def host(room_id: str, video_track: PacketTrack) -> None:
        audio_track = PacketTrack(audio, gate)
        tracks = [video_track, audio_track]
        async with open_host(
            ws_url, room_id, user_id="host", tracks=tracks, host_addresses=LOOPBACK, video_codec=video_codec
        ) as h:
            if pli:
                answer_pli(h, video_track)
            await h.wait_connected()
            if pacing_bps is not None:
                pace_rtp_sent(h.pc, pacing_bps)
            connected.release()
            await stop.wait()

    async with trio.open_nursery() as nursery:
        for room_id, video_track in zip(room_ids, video_tracks, strict=True):
            nursery.start_soon(host, room_id, video_track)
        with trio.fail_after(within):
            for _ in room_ids:
                await connected.acquire()
        try:
            yield video_tracks
        finally:
            stop.set()


# ---------------------------------------------------------------------------
# Viewer processes: their side (serve_viewers) and the bench's
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


def vp8_keyframe_start(payload: bytes) -> bool:
    """The first packet of a VP8 keyframe: S=1, PID=0 (RFC 7741 descriptor), then P bit == 0."""
    if not payload or (payload[0] & 0x17) != 0x10:
        return False
    i = 1
    if payload[0] & 0x80:  # X: extension byte, then the optional fields it announces
        if len(payload) < 2:
            return False
        x = payload[1]
        i = 2
        if x & 0x80:  # I: picture id, 7 or 15 bits
            if i >= len(payload):
                return False
            i += 2 if payload[i] & 0x80 else 1
        if x & 0x40:  # L: TL0PICIDX
            i += 1
        if x & 0x30:  # T or K: TID/Y/KEYIDX
            i += 1
    return i < len(payload) and not (payload[i] & 0x01)


def h264_keyframe_start(payload: bytes) -> bool:
    """The first packet of an H.264 keyframe: an SPS or IDR alone, in a STAP-A's first unit, or
    an FU-A's start fragment of an IDR (RFC 6184)."""
    if not payload:
        return False
    nal = payload[0] & 0x1F
    if nal == 24 and len(payload) > 3:  # STAP-A: size (2 bytes), then the first unit's header
        nal = payload[3] & 0x1F
    elif nal == 28 and len(payload) > 1:  # FU-A: the start bit and the fragmented unit's type
        return bool(payload[1] & 0x80) and payload[1] & 0x1F in (5, 7)
    return nal in (5, 7)


def rtp_keyframe_start(data: bytes, *, h264: bool = False) -> bool:
    first = data[0]
    offset = 12 + 4 * (first & 0x0F)
    if first & 0x10 and len(data) >= offset + 4:
        offset += 4 + 4 * int.from_bytes(data[offset + 2 : offset + 4], "big")
    end = len(data) - (data[-1] if first & 0x20 else 0)
    payload = data[offset:end]
    return offset < end and (h264_keyframe_start(payload) if h264 else vp8_keyframe_start(payload))


def payload_type(sdp: str, codec: str) -> int:
    for line in sdp.splitlines():
        if line.startswith("a=rtpmap:") and f" {codec}/".lower() in line.lower():
            return int(line.split(":", 1)[1].split()[0])
    raise ValueError(f"no {codec} in the answer")


def payload_type_or_none(sdp: str, codec: str) -> int | None:
    try:
        return payload_type(sdp, codec)
    except ValueError:
        return None


class ViewerCounter:
    """The callback on one viewer's DTLS transport: every clear RTP packet, counted."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.video_pt = -1
        self.h264_pt = -1  # a viewer's answer carries VP8 and H.264: it is sent the host's codec
        self.audio_pt = -1
        self.video = KindCounter()
        self.audio = KindCounter()
        self.other = 0
        self.started = time.monotonic()
        self.connected_after: float | None = None
        self.first_keyframe_after: float | None = None

    def set_payload_types(self, sdp: str) -> None:
        self.video_pt = payload_type(sdp, "VP8")
        self.h264_pt = payload_type_or_none(sdp, "H264") or -1
        self.audio_pt = payload_type(sdp, "opus")

    def connected(self) -> None:
        self.connected_after = time.monotonic() - self.started

    def on_rtp(self, data: bytes) -> None:
        if len(data) < 12:
            return
        pt = data[1] & 0x7F
        seq = data[2] << 8 | data[3]
        if pt == self.video_pt or pt == self.h264_pt:
            self.video.add(seq)
            if self.first_keyframe_after is None and rtp_keyframe_start(data, h264=pt == self.h264_pt):
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


async def serve_viewers(
    count: int, first_index: int, stagger: float, join: Callable[[ViewerCounter, trio.Event], Awaitable[None]]
) -> None:
    """A viewer process's side of the protocol: ``count`` viewers started ``stagger`` s apart,
    each ``join(counter, quit_now)`` (which joins, counts its RTP in ``counter``, holds until
    ``quit_now`` and leaves); ``progress`` events every 0.5 s and ``ready`` once every viewer has
    had a keyframe; the commands ``snap`` (answered with every viewer's counts and this process's
    CPU) and ``quit``; ``closed`` once every viewer has left."""
    counters: list[ViewerCounter] = []
    quit_now = trio.Event()

    async def one_viewer(index: int) -> None:
        counter = ViewerCounter(index)
        counters.append(counter)
        await join(counter, quit_now)

    async def commands() -> None:
        lines = stdin_lines()
        while True:
            line = await lines.next()
            if line is None or line.strip() == "quit":
                quit_now.set()
                return
            if line.strip() == "snap":
                emit("snap", viewers=[c.snapshot() for c in counters], cpu=own_cpu())

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

    async with trio.open_nursery() as nursery:
        nursery.start_soon(commands)
        nursery.start_soon(progress)
        async with trio.open_nursery() as viewers:
            for i in range(count):
                viewers.start_soon(one_viewer, first_index + i)
                await trio.sleep(stagger)
        nursery.cancel_scope.cancel()
    emit("closed")


def start_viewer_procs(
    labels: Sequence[str],
    ws_url: str,
    room_id: str,
    viewers: int,
    first_index: int = 0,
    stagger: float = 0.05,
    options: Sequence[str] = (),
) -> list[Child]:
    """``viewers`` viewers of one room of our server, spread over one process per label
    (``viewers.py``, its stderr in ``bench/out/LABEL.log``), joining ``stagger`` s apart;
    ``options``: more of ``viewers.py``'s (``--quality``, ``--receiver-reports``)."""
    labels = labels[: max(1, min(len(labels), viewers))]
    procs = len(labels)
    children = []
    first = first_index
    for p, label in enumerate(labels):
        count = viewers // procs + (1 if p < viewers % procs else 0)
        argv = [sys.executable, str(BENCH_DIR / "viewers.py"), "--url", ws_url, "--room", room_id]
        argv += ["--viewers", str(count), "--first-index", str(first), "--stagger", str(stagger * procs)]
        argv += options
        children.append(spawn(label, argv, OUT_DIR / f"{label}.log", stdin=True))
        first += count
    return children


async def wait_ready(children: Sequence[Child], within: float) -> None:
    """Every viewer process has said ``ready`` (each of its viewers had a keyframe)."""
    with trio.fail_after(within):
        async with trio.open_nursery() as nursery:
            for child in children:
                nursery.start_soon(child.event, "ready", within)


async def quit_viewers(children: Sequence[Child], within: float = 20) -> None:
    """Ask every viewer process to leave and wait (bounded) until they have."""
    with trio.move_on_after(within), contextlib.suppress(RuntimeError, OSError):
        for child in children:
            await child.send("quit")
        for child in children:
            await child.event("closed", within)


async def snap_viewers(children: Sequence[Child]) -> tuple[list[dict[str, Any]], float]:
    """(every viewer's counts, the viewer processes' CPU seconds)."""
    for child in children:
        await child.send("snap")
    snaps = [await child.event("snap", 15) for child in children]
    return [v for snap in snaps for v in snap["viewers"]], sum(float(snap["cpu"]) for snap in snaps)


# ---------------------------------------------------------------------------
# Windows: both ends read with the hosts paused, then summed up
# ---------------------------------------------------------------------------


@dataclass
class Point:
    """One end of a measured window."""

    wall: float
    ticks: int  # the server's utime + stime (every process of it), clock ticks
    ns: int  # the same from schedstat
    packets_in: int  # host packets the server received
    packets_out: int | None  # packets it forwarded (None: not known, counted as what the viewers got)
    viewers: list[dict[str, Any]]  # every viewer's counts
    viewer_cpu: float  # the viewer processes' CPU seconds
    main_cpu: float  # this process's (the bench and its hosts)
    forwarding: list[dict[str, Any]] = field(default_factory=list)  # per room, when read
    extra: dict[str, Any] = field(default_factory=dict)  # what read_point's ``during`` read

    @property
    def received(self) -> int:
        return sum(v["video"] + v["audio"] for v in self.viewers)

    @property
    def gaps(self) -> int:
        return sum(v["video_expected"] + v["audio_expected"] - v["video"] - v["audio"] for v in self.viewers)

    @property
    def out(self) -> int:
        return self.received if self.packets_out is None else self.packets_out


async def read_point(
    gate: Gate,
    pids: Sequence[int],
    viewers: Sequence[Child],
    read_packets: Callable[[], Awaitable[tuple[int, int | None, list[dict[str, Any]]]]],
    *,
    during: Callable[[], Awaitable[dict[str, Any]]] | None = None,
) -> Point:
    """Pause every host, let in-flight packets land, read every counter (and ``during()``, kept as
    the point's ``extra``), resume."""
    gate.close()
    try:
        await trio.sleep(DRAIN_SECONDS)
        ticks = sum(proc_cpu_ticks(pid) for pid in pids)
        ns = sum(proc_runtime_ns(pid) for pid in pids)
        wall = time.monotonic()
        counts, viewer_cpu = await snap_viewers(viewers)
        packets_in, packets_out, forwarding = await read_packets()
        extra = await during() if during is not None else {}
    finally:
        gate.open()
    return Point(wall, ticks, ns, packets_in, packets_out, counts, viewer_cpu, own_cpu(), forwarding, extra)


def server_packets(
    server: Server, http: httpx.AsyncClient, room_ids: Sequence[str]
) -> Callable[[], Awaitable[tuple[int, int | None, list[dict[str, Any]]]]]:
    """:func:`read_point`'s ``read_packets`` for our server: the rooms' forwarding counters."""

    async def read() -> tuple[int, int | None, list[dict[str, Any]]]:
        rooms = await server.forwarding(http, room_ids)
        return sum(f["packets_in"] for f in rooms), sum(f["packets_out"] for f in rooms), rooms

    return read


def summarize_window(start: Point, end: Point, rooms: int, viewers: int) -> dict[str, Any]:
    """CPU per packet, cores, rooms per core, delivery and the clients' CPU over a window."""
    seconds = end.wall - start.wall
    cpu_seconds = (end.ns - start.ns) / 1e9
    packets_in = end.packets_in - start.packets_in
    packets_out = end.out - start.out
    received = end.received - start.received
    server_cores = cpu_seconds / seconds
    return {
        "rooms": rooms,
        "viewers": viewers,
        "seconds": seconds,
        "packets_in": packets_in,
        "packets_out": packets_out,
        "received": received,
        "gaps": end.gaps - start.gaps,
        "us_per_host_packet": 1e6 * cpu_seconds / max(1, packets_in),
        "us_per_forwarded_packet": 1e6 * cpu_seconds / max(1, packets_out),
        "server_cores": server_cores,
        "server_cpu_ticks_s": (end.ticks - start.ticks) / CLK_TCK,
        "rooms_per_core": rooms / server_cores if server_cores else float("nan"),
        "delivery_pct": 100.0 * received / max(1, packets_out),
        "delivery_in_pct": 100.0 * received / max(1, packets_in * viewers),
        "viewer_procs_cores": (end.viewer_cpu - start.viewer_cpu) / seconds,
        "bench_cores": (end.main_cpu - start.main_cpu) / seconds,
    }


# ---------------------------------------------------------------------------
# Tables
# ---------------------------------------------------------------------------


def table(rows: Sequence[Sequence[str]], header: Sequence[str] | None = None, rule: bool = False) -> str:
    """Rows in left-aligned columns two spaces apart (the last column not padded); ``rule``:
    a line of dashes under the header (the last column's 30 wide)."""
    every = [list(header), *map(list, rows)] if header is not None else [list(r) for r in rows]
    columns = max(len(r) for r in every)
    widths = [max(len(r[c]) if c < len(r) else 0 for r in every) for c in range(columns)]
    lines = []
    for index, r in enumerate(every):
        cells = [f"{cell:<{widths[c]}}" if c < columns - 1 else cell for c, cell in enumerate(r)]
        lines.append("  ".join(cells).rstrip())
        if index == 0 and header is not None and rule:
            lines.append("  ".join(["-" * w for w in widths[:-1]] + ["-" * 30]))
    return "\n".join(lines)
