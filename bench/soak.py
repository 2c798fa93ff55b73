"""Soak benchmark: many rooms, viewers coming and going, rooms restarted, for a long time (not a test).

Run it inside a private network namespace (only loopback exists):

    unshare -rn sh -c 'ip link set lo up && .venv/bin/python bench/soak.py'
    unshare -rn sh -c 'ip link set lo up && .venv/bin/python bench/soak.py --minutes 2 --sample-seconds 10'

What it does (see bench/README.md, "Soak", for the columns):

1. makes once (PyAV, ``make_media.make_soak_media``) a small pre-encoded VP8 320x180@30
   ~250 kbit/s + Opus file, ``bench/out/soak-media.webm``; nothing is encoded or decoded
   during the run;
2. starts ``app.py --config bench/out/soak-server.toml --host 127.0.0.1 --port 0`` as a child
   process (``harness.start_server``; ``--server-root DIR``: the ``app.py`` of another checkout;
   ``[debug] fault_injection = true`` for ``GET /debug/runtime``; log in
   ``bench/out/soak-server.log``) and creates ``--rooms`` rooms over REST;
3. starts ``--workers`` client processes (this file, ``--role worker``), so that the
   server process is measured alone. Each worker runs, for its share of the rooms, a
   host bot publishing the file's frames as they are (``harness.PacketTrack``: aiortc only
   packetizes) and ``--viewers`` viewer positions: a viewer (``open_viewer(decode=False)``,
   its clear RTP counted at the DTLS transport, never decoded) lives a random
   ``--life`` seconds, leaves, and a new one joins in its place;
4. every ``--restart-every`` seconds (the first at half of it, between two samples) stops one room with
   ``POST /room/{id}/stop`` while its peers are connected and creates a new one, with a
   new host and viewers;
5. every ``--sample-seconds`` samples the server (``GET /debug/runtime``: RSS, fds, Trio
   tasks; ``/proc/PID/stat``: CPU seconds; ``GET /stats``: active rooms,
   viewers, hosts) and the clients' cumulative joins, leaves and restarts, and prints a
   row; at the end, the table again, the drift (first sample after ``--warmup`` vs the
   last), what is left on the server once every client is gone, and the clients' CPU.

Exit code 1 if the server died, answered an error it should not have (REST, a refused
join, a session closed under a peer, a viewer not connected or never sent media), still
counted peers once every client had left, or did not shut down cleanly. Writes
``bench/out/soak.json``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import random
import re
import signal
import sys
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from inspect import signature
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import httpx
import trio
import trio_asyncio
from harness import (
    CLK_TCK,
    LOOPBACK,
    Child,
    Gate,
    KindCounter,
    PacketTrack,
    Server,
    add_server_arguments,
    answer_pli,
    describe_root,
    emit,
    machine_ticks,
    own_cpu,
    payload_type,
    proc_cpu_ticks,
    run_bounded,
    server_toml,
    spawn,
    start_server,
    stdin_lines,
    use_server_root,
)
from make_media import FPS, OUT_DIR, SOAK_SIZE, EncodedStream, load_soak_media

from media_server_client import aiortc_hooks as adapter
from media_server_client.bots import Bot, BotState, open_host, open_viewer

SERVER_LOG = OUT_DIR / "soak-server.log"
JSON_PATH = OUT_DIR / "soak.json"
WIDTH, HEIGHT = SOAK_SIZE

STARVED_AFTER = 10.0  # a viewer connected this long (host connected too) with no video RTP: starved
STOP_TOLD_WITHIN = 10.0  # a viewer of a stopped room must be told (`stopped`) within this long
REJOIN_PAUSE = (0.5, 2.0)  # seconds between a viewer leaving and its replacement joining
LAG_TICK = 0.1  # the workers' loop-lag probe: sleep this long, measure the overshoot
CLIENT_BUSY_PCT = 85.0  # a worker above this (% of one core) in an interval may be a bottleneck
CLIENT_LAG_LIMIT = 0.25  # ... or a worker whose Trio loop ran this late (s)
MAX_COMMANDS = 1_000_000  # bound of a worker's command loop (a run sends a few per sample)
# Bots that can reconnect by themselves after an abnormal close must not: here every session the
# server ends under a live room is a problem to see (and the soak replaces the peer itself).
BOT_OPTIONS: dict[str, Any] = {"reconnect_for": 0.0} if "reconnect_for" in signature(open_viewer).parameters else {}


# ---------------------------------------------------------------------------
# Worker process (--role worker): hosts and churning viewers for some rooms
# ---------------------------------------------------------------------------


def _ended(state: BotState) -> bool:
    return state.closed is not None or state.stopped is not None


def _describe(state: BotState) -> str:
    closed = state.closed
    text = f"closed {closed.code} {closed.reason or ''}" if closed is not None else "not closed"
    if closed is not None and closed.error is not None:
        text += f" ({closed.error.code}: {closed.error.message})"
    if state.stopped is not None:
        text += f", stopped ({state.stopped.reason})"
    return text


@dataclass
class Tally:
    """A worker's cumulative counters (sent to the bench with each `snap`)."""

    viewer_joins: int = 0  # viewer sessions joined and negotiated
    viewer_leaves: int = 0  # viewers that left by themselves at the end of their life
    viewers_stopped: int = 0  # viewers whose room was stopped under them (REST)
    host_joins: int = 0
    rtp_packets: int = 0  # clear RTP packets counted by all viewers
    rtp_in_seq: int = 0  # of which video and audio packets, of the viewers that have left
    rtp_expected: int = 0  # what those viewers' sequence numbers say they should have received
    reconnects: int = 0  # sessions the bots re-established after an abnormal close
    problems: dict[str, int] = field(default_factory=dict)
    examples: list[str] = field(default_factory=list)  # the first few problems, in words


@dataclass
class Slot:
    """One room of this worker: replaced by a new Slot (new room) when the room is restarted."""

    index: int
    room_id: str
    stopping_at: float | None = None  # trio clock, when the bench said it will stop the room
    host_connected_at: float | None = None

    @property
    def stopping(self) -> bool:
        return self.stopping_at is not None


class RxCounter:
    """One viewer's clear RTP, counted with its sequence numbers (the tap runs inside aiortc's
    receive task): `expected - received` is what was lost between the server and the viewer."""

    __slots__ = ("audio", "audio_pt", "tally", "video", "video_pt")

    def __init__(self, tally: Tally, video_pt: int, audio_pt: int) -> None:
        self.tally, self.video_pt, self.audio_pt = tally, video_pt, audio_pt
        self.video, self.audio = KindCounter(), KindCounter()

    def on_rtp(self, data: bytes) -> None:
        self.tally.rtp_packets += 1
        if len(data) < 12:
            return
        pt = data[1] & 0x7F
        if pt == self.video_pt:
            self.video.add(data[2] << 8 | data[3])
        elif pt == self.audio_pt:
            self.audio.add(data[2] << 8 | data[3])

    def received(self) -> int:
        return self.video.count + self.audio.count

    def expected(self) -> int:
        return self.video.expected() + self.audio.expected()


def _ignore(data: bytes) -> None:
    pass


class Worker:
    def __init__(self, args: argparse.Namespace, video: EncodedStream, audio: EncodedStream) -> None:
        self.url: str = args.url
        self.viewers: int = args.viewers
        self.life: tuple[float, float] = (args.life[0], args.life[1])
        self.connect_timeout: float = args.connect_timeout
        self.join_spread: float = args.join_spread
        self.index: int = args.worker_index
        self.video, self.audio = video, audio
        self.deadline: float = trio.current_time() + args.deadline
        self.max_cycles = int(args.deadline / max(1.0, self.life[0])) + 2
        self.rng = random.Random(f"{args.seed}-{self.index}")
        self.gate = Gate()  # never closed: the hosts publish all the time
        self.tally = Tally()
        self.live = 0  # viewers inside their session right now
        self.connected = 0  # of which ICE+DTLS connected
        self.lag_max = 0.0  # since the last snap
        self.waiters: set[trio.CancelScope] = set()
        self.receivers: set[RxCounter] = set()  # of the viewers in a session now
        self.quit = trio.Event()
        self.nursery: trio.Nursery | None = None

    def problem(self, kind: str, message: str) -> None:
        self.tally.problems[kind] = self.tally.problems.get(kind, 0) + 1
        if len(self.tally.examples) < 20:
            self.tally.examples.append(f"worker{self.index} {kind}: {message}")

    def left(self) -> float:
        return max(0.0, self.deadline - trio.current_time())

    async def nap(self, seconds: float) -> None:
        """Sleep, but wake up when the bench says quit."""
        with trio.move_on_after(seconds):
            await self.quit.wait()

    async def wait_bot(self, bot: Bot, seconds: float) -> bool:
        """Wait until the server ends the bot's session (True), or `seconds` / quit (False)."""
        with trio.CancelScope() as scope:
            self.waiters.add(scope)
            if self.quit.is_set():
                scope.cancel()
            try:
                with trio.move_on_after(max(0.0, seconds)):
                    await bot.wait_for(_ended)
                    return True
            finally:
                self.waiters.discard(scope)
        return False

    async def run_host(self, slot: Slot) -> None:
        """The room's host; a host session the server ended is a problem, and a new host joins."""
        for _ in range(self.max_cycles):
            if not await self.host_session(slot) or slot.stopping or self.quit.is_set():
                return
            await self.nap(1.0)

    async def host_session(self, slot: Slot) -> bool:
        """One host session; True when the server ended it (or refused it) while the room was live."""
        video_track, audio_track = PacketTrack(self.video, self.gate), PacketTrack(self.audio, self.gate)
        try:
            async with open_host(
                self.url,
                slot.room_id,
                user_id=f"host-{slot.index}",
                tracks=[video_track, audio_track],
                host_addresses=LOOPBACK,
                **BOT_OPTIONS,
            ) as host:
                self.tally.host_joins += 1
                answer_pli(host, video_track)  # a PLI makes the file jump to its next keyframe
                with trio.move_on_after(self.connect_timeout):
                    await host.wait_for(lambda s: s.connection_state == "connected" or _ended(s))
                if host.state.connection_state == "connected":
                    slot.host_connected_at = trio.current_time()
                elif not (slot.stopping or self.quit.is_set() or _ended(host.state)):
                    self.problem("host_connect_timeout", f"{slot.room_id}: {host.state.connection_state}")
                ended = await self.wait_bot(host, self.left())
                slot.host_connected_at = None
                self.count_reconnects(host, f"host of {slot.room_id}")
                if ended and not slot.stopping and not self.quit.is_set():
                    self.problem("host_dropped", f"{slot.room_id}: {_describe(host.state)}")
                    return True
        except Exception as exc:
            if not (slot.stopping or self.quit.is_set()):
                self.problem("host_join", f"{slot.room_id}: {exc!r:.300}")
                return True
        return False

    def count_reconnects(self, bot: Bot, who: str) -> None:
        """Bots that reconnect by themselves (when they can, BOT_OPTIONS asks them not to)."""
        reconnects = int(getattr(bot.state, "reconnects", 0))
        if reconnects:
            self.tally.reconnects += reconnects
            self.problem("reconnected", f"{who}: {reconnects} reconnection(s) after {_describe(bot.state)}")

    async def run_viewer(self, slot: Slot, name: str, life: float) -> bool:
        """One viewer's life; True when it ended because its room was stopped."""
        started = trio.current_time()
        try:
            async with open_viewer(
                self.url, slot.room_id, user_id=name, host_addresses=LOOPBACK, decode=False, **BOT_OPTIONS
            ) as bot:
                self.tally.viewer_joins += 1
                self.live += 1
                connected_at: float | None = None
                counter: RxCounter | None = None
                try:
                    sdp = bot.pc.remoteDescription.sdp
                    counter = RxCounter(self.tally, payload_type(sdp, "VP8"), payload_type(sdp, "opus"))
                    self.receivers.add(counter)
                    for dtls in adapter.dtls_transports(bot.pc):
                        adapter.tap_srtp_receive(dtls, counter.on_rtp, _ignore)
                    with trio.move_on_after(self.connect_timeout):
                        await bot.wait_for(lambda s: s.connection_state == "connected" or _ended(s))
                    if bot.state.connection_state == "connected":
                        connected_at = trio.current_time()
                        self.connected += 1
                    elif not (slot.stopping or self.quit.is_set() or _ended(bot.state)):
                        self.problem("viewer_connect_timeout", f"{name} in {slot.room_id}")
                    ended = await self.wait_bot(bot, life - (trio.current_time() - started))
                finally:
                    self.live -= 1
                    if connected_at is not None:
                        self.connected -= 1
                    if counter is not None:
                        self.receivers.discard(counter)
                        self.tally.rtp_in_seq += counter.received()
                        self.tally.rtp_expected += counter.expected()
                now = trio.current_time()
                self.count_reconnects(bot, f"{name} in {slot.room_id}")
                if ended:
                    if bot.state.stopped is not None and slot.stopping:
                        self.tally.viewers_stopped += 1
                        return True
                    if not slot.stopping:
                        self.problem("viewer_dropped", f"{name} in {slot.room_id}: {_describe(bot.state)}")
                        return False
                    self.tally.viewers_stopped += 1
                    return True
                if slot.stopping_at is not None and now - slot.stopping_at > STOP_TOLD_WITHIN + 5:
                    self.problem("stop_not_told", f"{name} in {slot.room_id}: no `stopped` after the REST stop")
                if connected_at is not None and counter.video.count == 0 and not self.quit.is_set():
                    since = max(connected_at, slot.host_connected_at or math.inf)
                    if now - since >= STARVED_AFTER and not slot.stopping:
                        self.problem("viewer_starved", f"{name} in {slot.room_id}: no video RTP in {now - since:.0f} s")
        except Exception as exc:
            if slot.stopping or self.quit.is_set():
                return True
            self.problem("viewer_join", f"{name} in {slot.room_id}: {exc!r:.300}")
            return False
        if not self.quit.is_set():
            self.tally.viewer_leaves += 1
        return False

    async def run_position(self, slot: Slot, position: int) -> None:
        """A viewer's place in a room: viewers come and go, one after another."""
        rng = random.Random(self.rng.random())
        await self.nap(rng.uniform(0.0, self.join_spread))
        for cycle in range(self.max_cycles):
            if slot.stopping or self.quit.is_set() or self.left() <= 0:
                return
            life = rng.uniform(*self.life)
            if await self.run_viewer(slot, f"v{slot.index}-{position}-{cycle}", life):
                return
            if slot.stopping or self.quit.is_set():
                return
            await self.nap(rng.uniform(*REJOIN_PAUSE))

    async def run_slot(self, slot: Slot) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self.run_host, slot)
            for position in range(self.viewers):
                nursery.start_soon(self.run_position, slot, position)

    async def lag_probe(self) -> None:
        for _ in range(int(self.left() / LAG_TICK) + 100):
            before = trio.current_time()
            await trio.sleep(LAG_TICK)
            self.lag_max = max(self.lag_max, trio.current_time() - before - LAG_TICK)

    async def commands(self) -> None:
        """Commands from the bench on stdin, one a line, each answered with one JSON line."""
        assert self.nursery is not None
        lines = stdin_lines()
        slots: dict[int, Slot] = {}
        for _ in range(MAX_COMMANDS):
            line = await lines.next()
            words = (line or "quit").split()
            if not words:
                continue
            if words[0] == "room":  # room SLOT ROOM_ID: (re)start the slot with this room
                slot = Slot(int(words[1]), words[2])
                slots[slot.index] = slot
                self.nursery.start_soon(self.run_slot, slot)
                emit("ack")
            elif words[0] == "stopping":  # stopping SLOT: the bench is about to stop its room
                slots[int(words[1])].stopping_at = trio.current_time()
                emit("ack")
            elif words[0] == "snap":
                lag, self.lag_max = self.lag_max, 0.0
                tally = asdict(self.tally)
                tally["rtp_in_seq"] += sum(c.received() for c in self.receivers)
                tally["rtp_expected"] += sum(c.expected() for c in self.receivers)
                emit("snap", **tally, live=self.live, connected=self.connected, lag_max=lag, cpu=own_cpu())
            elif words[0] == "quit":
                return

    async def run(self) -> None:
        async with trio_asyncio.open_loop(), trio.open_nursery() as outer:
            outer.start_soon(self.lag_probe)
            async with trio.open_nursery() as nursery:
                self.nursery = nursery
                emit("ready")
                await self.commands()
                # quit: every bot leaves its room (sessions closed in order), bounded
                self.quit.set()
                for scope in list(self.waiters):
                    scope.cancel()
                nursery.cancel_scope.deadline = trio.current_time() + 20
            outer.cancel_scope.cancel()
        emit("closed", **asdict(self.tally))


def worker_main(args: argparse.Namespace) -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the bench stops us (quit, then SIGTERM)
    video, audio = load_soak_media()

    async def run() -> None:
        with trio.fail_after(args.deadline + 60):
            await Worker(args, video, audio).run()

    try:
        trio.run(run)
    except BaseException as exc:
        traceback.print_exc()
        emit("error", message=repr(exc)[:500])
        return 1
    return 0


# ---------------------------------------------------------------------------
# The bench (main process): server, rooms, restarts, samples, report
# ---------------------------------------------------------------------------


@dataclass
class Sample:
    t: float  # seconds since the clients started
    rss_kb: int
    fds: int
    trio_tasks: int
    server_cpu_s: float
    rooms: int
    viewers: int
    hosts: int
    client_viewers: int  # viewers the workers hold a session for
    joins: int
    leaves: int
    restarts: int
    rtp_packets: int
    rtp_in_seq: int  # video+audio packets the viewers counted by sequence number ...
    rtp_expected: int  # ... and how many their sequence numbers say were sent to them
    fwd_in: int  # host packets the rooms received (GET /room/{id}/stats, summed over rooms, cumulative)
    fwd_out: int  # packets the rooms handed to viewers
    worker_cpu_s: list[float]
    main_cpu_s: float
    lag_max_s: float
    machine_busy: int
    machine_total: int
    problems: int


@dataclass
class RunState:
    """Everything the report needs, filled as the run goes (so an interrupted run still reports)."""

    args: dict[str, Any]
    samples: list[Sample] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    worker_problems: dict[str, int] = field(default_factory=dict)
    worker_examples: list[str] = field(default_factory=list)
    baseline: dict[str, int] = field(default_factory=dict)  # /debug/runtime, rooms created, no client yet
    residual: dict[str, int] = field(default_factory=dict)  # /debug/runtime once every client left
    final_stats: dict[str, Any] = field(default_factory=dict)
    restarts: int = 0
    room_ids: list[str] = field(default_factory=list)  # the open rooms, slot by slot
    forwarding_seen: dict[str, list[int]] = field(default_factory=dict)  # room -> [packets_in, packets_out]
    fwd_in: int = 0
    fwd_out: int = 0
    server_exit: int | None = None
    server_log_errors: int = 0
    server_log_tracebacks: int = 0
    server_log_warnings: dict[str, int] = field(default_factory=dict)  # message (first words) -> count

    def problem(self, text: str) -> None:
        print(f"PROBLEM: {text}", flush=True)
        self.problems.append(text)

    def take_worker_problems(self, tallies: list[dict[str, Any]]) -> None:
        """The workers' problems so far, from each one's latest cumulative tally."""
        self.worker_problems = {}
        self.worker_examples = []
        for tally in tallies:
            for kind, count in tally["problems"].items():
                self.worker_problems[kind] = self.worker_problems.get(kind, 0) + count
            self.worker_examples += tally["examples"]

    def problem_count(self) -> int:
        return len(self.problems) + sum(self.worker_problems.values())


class Rest:
    """REST calls to the server; any transport error or non-200 answer is a problem."""

    def __init__(self, http: httpx.AsyncClient, run: RunState) -> None:
        self.http, self.run = http, run

    async def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any] | None:
        try:
            response = await self.http.request(method, path, json=body)
        except httpx.HTTPError as exc:
            self.run.problem(f"{method} {path}: {exc!r}")
            return None
        if response.status_code != 200:
            self.run.problem(f"{method} {path}: {response.status_code} {response.text[:200]}")
            return None
        answer: dict[str, Any] = response.json()
        return answer


class WorkerProc:
    """A worker process and the lock that keeps its command/answer pairs in order."""

    def __init__(self, child: Child) -> None:
        self.child = child
        self.lock = trio.Lock()

    async def request(self, command: str, wanted: str, within: float = 15.0) -> dict[str, Any]:
        async with self.lock:
            await self.child.send(command)
            return await self.child.event(wanted, within)


async def create_room(rest: Rest, slot: int, generation: int) -> str | None:
    body = {"post_id": f"soak-{slot}-{generation}", "host_user_id": f"host-{slot}"}
    created = await rest.call("POST", "/room/create", body)
    return None if created is None else str(created["room_id"])


async def soak(args: argparse.Namespace, run: RunState) -> None:
    duration = 60.0 * args.minutes
    workers: list[WorkerProc] = []
    toml = server_toml(
        max_rooms=max(100, 2 * args.rooms),
        max_viewers_per_room=max(100, args.viewers + 10),
        fault_injection=True,  # GET /debug/runtime
    )
    server = await start_server("soak", toml, root=args.server_root, host="127.0.0.1", log_level=args.server_log_level)
    print(f"server pid {server.pid} at {server.base_url} (log: {SERVER_LOG})", flush=True)
    try:
        async with server.http(timeout=10) as http:
            rest = Rest(http, run)
            await rest.call("GET", "/stats")  # one pooled connection from now on
            room_ids = run.room_ids
            for slot in range(args.rooms):
                room_id = await create_room(rest, slot, 0)
                if room_id is None:
                    return
                room_ids.append(room_id)
            run.baseline = await rest.call("GET", "/debug/runtime") or {}
            if not run.baseline:
                return
            for index in range(max(1, min(args.workers, args.rooms))):
                argv = [sys.executable, __file__, "--role", "worker", "--url", server.ws_url]
                argv += ["--worker-index", str(index), "--viewers", str(args.viewers), "--seed", str(args.seed)]
                argv += ["--life", str(args.life[0]), str(args.life[1]), "--join-spread", str(args.join_spread)]
                argv += ["--connect-timeout", str(args.connect_timeout), "--deadline", str(duration + 60)]
                log = OUT_DIR / f"soak-worker{index}.log"
                workers.append(WorkerProc(spawn(f"worker{index}", argv, log, stdin=True)))
            for worker in workers:
                await worker.child.event("ready", 60)
            t0 = trio.current_time()
            run.samples.append(await take_sample(rest, server, workers, run, 0.0))
            print(header(), flush=True)
            print(row(run.samples[-1], None), flush=True)
            for slot, room_id in enumerate(room_ids):
                await workers[slot % len(workers)].request(f"room {slot} {room_id}", "ack")
            async with trio.open_nursery() as nursery:
                nursery.start_soon(restarter, args, rest, workers, run, t0)
                await sampler(args, rest, server, workers, run, t0)
                nursery.cancel_scope.cancel()
            await finish(rest, workers, run)
    finally:
        for worker in workers:
            await worker.child.stop()
        alive = server.child.popen.poll() is None
        await server.child.stop(grace=15)
        run.server_exit = server.child.popen.returncode
        if not alive:
            run.problem(f"the server process died (exit code {run.server_exit})")
        elif run.server_exit != 0:
            run.problem(f"the server exited with {run.server_exit} on SIGTERM (not a clean shutdown)")


async def restarter(args: argparse.Namespace, rest: Rest, workers: list[WorkerProc], run: RunState, t0: float) -> None:
    """Every `--restart-every` s (the first at half of it, plus a quarter of a sample interval so that
    restarts fall between samples): stop a room under its peers, make a new one."""
    room_ids = run.room_ids
    first = args.restart_every / 2 + args.sample_seconds / 4
    duration = 60.0 * args.minutes
    count = int((duration - first) // args.restart_every) + 1 if args.restart_every > 0 and first < duration else 0
    for k in range(count):
        await trio.sleep_until(t0 + first + k * args.restart_every)
        slot = k % len(room_ids)
        worker = workers[slot % len(workers)]
        await count_forwarding(rest, run, room_ids[slot])
        await worker.request(f"stopping {slot}", "ack")
        stopped = await rest.call("POST", f"/room/{room_ids[slot]}/stop")
        if stopped is not None and stopped.get("status") != "stopped":
            run.problem(f"stop {room_ids[slot]}: {stopped}")
        room_id = await create_room(rest, slot, k + 1)
        if room_id is None:
            return
        room_ids[slot] = room_id
        await worker.request(f"room {slot} {room_id}", "ack")
        run.restarts += 1


async def sampler(
    args: argparse.Namespace, rest: Rest, server: Server, workers: list[WorkerProc], run: RunState, t0: float
) -> None:
    duration = 60.0 * args.minutes
    for i in range(1, int(duration // args.sample_seconds) + 1):
        await trio.sleep_until(t0 + i * args.sample_seconds)
        if server.child.popen.poll() is not None:
            return  # reported by soak()
        sample = await take_sample(rest, server, workers, run, trio.current_time() - t0)
        print(row(sample, run.samples[-1]), flush=True)
        run.samples.append(sample)


async def count_forwarding(rest: Rest, run: RunState, room_id: str) -> None:
    """Add what a room forwarded since it was last read to the run's totals (the restarter reads a
    room just before it stops it: a stopped room's counters are gone)."""
    room = await rest.call("GET", f"/room/{room_id}/stats")
    forwarding = room.get("forwarding") if room is not None else None
    if forwarding is None:  # stopped in the meantime
        return
    seen = run.forwarding_seen.setdefault(room_id, [0, 0])
    run.fwd_in += forwarding["packets_in"] - seen[0]
    run.fwd_out += forwarding["packets_out"] - seen[1]
    seen[:] = [forwarding["packets_in"], forwarding["packets_out"]]


async def take_sample(rest: Rest, server: Server, workers: list[WorkerProc], run: RunState, t: float) -> Sample:
    runtime = await rest.call("GET", "/debug/runtime") or {}
    stats = await rest.call("GET", "/stats") or {}
    server_ticks = proc_cpu_ticks(server.pid)
    snaps = [await worker.request("snap", "snap") for worker in workers]
    busy, total = machine_ticks()
    for room_id in list(run.room_ids):
        await count_forwarding(rest, run, room_id)
    run.take_worker_problems(snaps)
    return Sample(
        t=t,
        rss_kb=runtime.get("rss_bytes", 0) // 1024,
        fds=runtime.get("open_fds", 0),
        trio_tasks=runtime.get("trio_tasks", 0),
        server_cpu_s=server_ticks / CLK_TCK,
        rooms=stats.get("active_rooms", 0),
        viewers=stats.get("total_viewers", 0),
        hosts=stats.get("total_hosts", 0),
        client_viewers=sum(s["live"] for s in snaps),
        joins=sum(s["viewer_joins"] for s in snaps),
        leaves=sum(s["viewer_leaves"] for s in snaps),
        restarts=run.restarts,
        rtp_packets=sum(s["rtp_packets"] for s in snaps),
        rtp_in_seq=sum(s["rtp_in_seq"] for s in snaps),
        rtp_expected=sum(s["rtp_expected"] for s in snaps),
        fwd_in=run.fwd_in,
        fwd_out=run.fwd_out,
        worker_cpu_s=[proc_cpu_ticks(w.child.pid) / CLK_TCK for w in workers],
        main_cpu_s=own_cpu(),
        lag_max_s=max((s["lag_max"] for s in snaps), default=0.0),
        machine_busy=busy,
        machine_total=total,
        problems=run.problem_count(),
    )


async def finish(rest: Rest, workers: list[WorkerProc], run: RunState) -> None:
    """Every client leaves; then the server must count no peer, and hold what it held before they came."""
    closed: list[dict[str, Any]] = []
    async with trio.open_nursery() as nursery:
        for worker in workers:

            async def quit_worker(worker: WorkerProc = worker) -> None:
                closed.append(await worker.request("quit", "closed", 40))

            nursery.start_soon(quit_worker)
    if len(closed) == len(workers):  # their final counts (problems while leaving included)
        run.take_worker_problems(closed)
    base = run.baseline
    for _ in range(30):  # bounded: 15 s for the last sessions to be gone
        now = await rest.call("GET", "/debug/runtime")
        if now is None:
            return
        run.residual = now
        if all(now.get(key, 0) <= base.get(key, 0) for key in ("trio_tasks", "open_fds")):
            break
        await trio.sleep(0.5)
    run.final_stats = await rest.call("GET", "/stats") or {}
    if run.final_stats.get("total_viewers") or run.final_stats.get("total_hosts"):
        run.problem(f"peers still counted once every client had left: {run.final_stats}")


# ---------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------

COLUMNS = (
    ("t_s", 6),
    ("rss_MB", 7),
    ("fds", 5),
    ("trio", 6),
    ("srv_cpu_s", 9),
    ("srv%", 5),
    ("rooms", 5),
    ("viewers", 7),
    ("cli_v", 5),
    ("hosts", 5),
    ("joins", 6),
    ("leaves", 6),
    ("rst", 4),
    ("in_pps", 6),
    ("out_pps", 7),
    ("rx_pps", 7),
    ("lost%", 6),
    ("cli%", 5),
    ("lag_ms", 6),
    ("mach%", 5),
    ("err", 4),
)


def header() -> str:
    return " ".join(f"{name:>{width}}" for name, width in COLUMNS)


def _pct(seconds: float, wall: float) -> str:
    return f"{100 * seconds / wall:.0f}" if wall > 0 else "-"


def row(s: Sample, prev: Sample | None) -> str:
    wall = s.t - prev.t if prev is not None else 0.0
    if prev is not None and wall > 0:
        srv = _pct(s.server_cpu_s - prev.server_cpu_s, wall)
        cli = _pct(sum(s.worker_cpu_s) - sum(prev.worker_cpu_s), wall)
        rx = f"{(s.rtp_packets - prev.rtp_packets) / wall:.0f}"
        fwd_in = f"{(s.fwd_in - prev.fwd_in) / wall:.0f}"
        fwd_out = f"{(s.fwd_out - prev.fwd_out) / wall:.0f}"
        expected = s.rtp_expected - prev.rtp_expected
        got = s.rtp_in_seq - prev.rtp_in_seq
        lost = f"{100 * (expected - got) / expected:.2f}" if expected > 0 else "-"
        total = s.machine_total - prev.machine_total
        mach = f"{100 * (s.machine_busy - prev.machine_busy) / total:.0f}" if total > 0 else "-"
    else:
        srv = cli = rx = mach = fwd_in = fwd_out = lost = "-"
    values = (
        f"{s.t:.0f}",
        f"{s.rss_kb / 1024:.1f}",
        s.fds,
        s.trio_tasks,
        f"{s.server_cpu_s:.1f}",
        srv,
        s.rooms,
        s.viewers,
        s.client_viewers,
        s.hosts,
        s.joins,
        s.leaves,
        s.restarts,
        fwd_in,
        fwd_out,
        rx,
        lost,
        cli,
        f"{1000 * s.lag_max_s:.0f}",
        mach,
        s.problems,
    )
    return " ".join(f"{v!s:>{width}}" for v, (_, width) in zip(values, COLUMNS, strict=True))


def _slope_per_min(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of (t seconds, value) points, per minute."""
    n = len(points)
    if n < 2:
        return math.nan
    mean_t = sum(t for t, _ in points) / n
    mean_v = sum(v for _, v in points) / n
    var = sum((t - mean_t) ** 2 for t, _ in points)
    return math.nan if var == 0 else 60 * sum((t - mean_t) * (v - mean_v) for t, v in points) / var


def _monotonic(values: list[float]) -> str:
    """YES: no sample below the one before it, and the last above the first."""
    if len(values) < 3:
        return "too few samples"
    if all(b >= a for a, b in itertools.pairwise(values)) and values[-1] > values[0]:
        return "YES"
    return "no"


def drift(run: RunState, warmup: float) -> list[str]:
    samples = [s for s in run.samples if s.t > 0]
    after = [s for s in samples if s.t >= warmup]
    if len(after) < 2:
        return [f"drift: fewer than two samples after the {warmup:.0f} s warm-up"]
    first, last = after[0], after[-1]
    minutes = (last.t - first.t) / 60
    lines = [
        f"drift: first sample after the {warmup:.0f} s warm-up (t={first.t:.0f} s) vs the last (t={last.t:.0f} s), "
        f"{minutes:.1f} min, {len(after)} samples; peers (viewers+hosts) {first.viewers + first.hosts} -> "
        f"{last.viewers + last.hosts}"
    ]
    metrics: list[tuple[str, Callable[[Sample], float], str]] = [
        ("RSS (KB)", lambda s: s.rss_kb, "KB"),
        ("open fds", lambda s: s.fds, ""),
        ("trio tasks", lambda s: s.trio_tasks, ""),
    ]
    for name, get, _unit in metrics:
        values = [get(s) for s in after]
        delta = values[-1] - values[0]
        per_min = delta / minutes if minutes > 0 else math.nan
        fit = _slope_per_min([(s.t, get(s)) for s in after])
        lines.append(
            f"  {name:<17} {values[0]:>10,.0f} -> {values[-1]:>10,.0f}  {delta:>+10,.0f}  "
            f"{per_min:>+10,.1f}/min (least squares {fit:>+10,.1f}/min)  monotonic growth: {_monotonic(values)}"
        )
    return lines


def residual_lines(run: RunState) -> list[str]:
    if not run.baseline or not run.residual:
        return ["after everyone left: not measured"]
    base, now = run.baseline, run.residual
    lines = ["after every client left (same number of rooms open) vs before any client joined:"]
    for key, scale, unit in (
        ("trio_tasks", 1, ""),
        ("open_fds", 1, ""),
        ("rss_bytes", 1024 * 1024, " MB"),
    ):
        b, n = base[key] / scale, now[key] / scale
        lines.append(f"  {key:<15} {b:>9,.1f} -> {n:>9,.1f}  ({n - b:+,.1f}{unit})")
    if run.final_stats:
        f = run.final_stats
        lines.append(
            f"  /stats: active_rooms {f.get('active_rooms')}, total_rooms {f.get('total_rooms')}, "
            f"peers {f.get('total_peers')}, room_restarts {f.get('room_restarts')}, "
            f"rooms_crashed {f.get('rooms_crashed')}"
        )
    return lines


def delivery_lines(run: RunState) -> list[str]:
    if len(run.samples) < 2:
        return []
    last = run.samples[-1]
    lost = last.rtp_expected - last.rtp_in_seq
    pct = 100 * lost / last.rtp_expected if last.rtp_expected else math.nan
    return [
        f"delivery: the rooms received {last.fwd_in:,} host packets and handed {last.fwd_out:,} to viewers; "
        f"the viewers counted {last.rtp_packets:,}, and {lost:,} missing from their sequence numbers "
        f"({pct:.3f} % of {last.rtp_expected:,})"
    ]


def client_cpu_lines(run: RunState) -> list[str]:
    samples = run.samples
    if len(samples) < 2:
        return []
    first, last = samples[0], samples[-1]
    wall = last.t - first.t
    workers = len(first.worker_cpu_s)
    per_worker_avg = [100 * (last.worker_cpu_s[i] - first.worker_cpu_s[i]) / wall for i in range(workers)]
    per_worker_max = [
        max(100 * (b.worker_cpu_s[i] - a.worker_cpu_s[i]) / (b.t - a.t) for a, b in itertools.pairwise(samples))
        for i in range(workers)
    ]
    server_avg = 100 * (last.server_cpu_s - first.server_cpu_s) / wall
    main_avg = 100 * (last.main_cpu_s - first.main_cpu_s) / wall
    lag = max(s.lag_max_s for s in samples)
    busy_total = last.machine_total - first.machine_total
    machine = 100 * (last.machine_busy - first.machine_busy) / busy_total if busy_total else math.nan
    workers_text = ", ".join(f"{a:.0f} % (max {m:.0f} %)" for a, m in zip(per_worker_avg, per_worker_max, strict=True))
    lines = [
        f"CPU over the run, % of one core: server {server_avg:.1f}; client workers {workers_text}; "
        f"this process {main_avg:.1f}; whole machine ({os.cpu_count()} cores) {machine:.0f} % busy",
        f"  worst Trio loop lag in a worker: {1000 * lag:.0f} ms (probe: {1000 * LAG_TICK:.0f} ms sleeps)",
    ]
    if max(per_worker_max) > CLIENT_BUSY_PCT or lag > CLIENT_LAG_LIMIT:
        lines.append("  WARNING: a client worker was busy or late: the clients may have been a bottleneck")
    else:
        lines.append(
            f"  the clients were not the bottleneck (every worker under {CLIENT_BUSY_PCT:.0f} % of a core "
            f"in every interval, loop lag under {1000 * CLIENT_LAG_LIMIT:.0f} ms)"
        )
    return lines


def scan_server_log(run: RunState) -> None:
    try:
        text = SERVER_LOG.read_text(errors="replace")
    except OSError:
        return
    for line in text.splitlines():
        if " ERROR " in line or " CRITICAL " in line:
            run.server_log_errors += 1
        elif " WARNING " in line:
            message = re.sub(r"0x[0-9a-f]+|\d+", "N", line.split(" WARNING ", 1)[1])[:70]
            run.server_log_warnings[message] = run.server_log_warnings.get(message, 0) + 1
    run.server_log_tracebacks = text.count("Traceback (most recent call last)")


def report(run: RunState, warmup: float) -> list[str]:
    lines = ["", header()]
    lines += [row(s, prev) for prev, s in zip([None, *run.samples], run.samples, strict=False)]
    lines.append("")
    lines += drift(run, warmup)
    lines.append("")
    lines += residual_lines(run)
    lines.append("")
    lines += delivery_lines(run)
    lines += client_cpu_lines(run)
    lines.append("")
    lines.append(
        f"server log {SERVER_LOG}: {run.server_log_errors} ERROR lines, {run.server_log_tracebacks} tracebacks; "
        f"exit code on SIGTERM: {run.server_exit}"
    )
    for message, count in sorted(run.server_log_warnings.items(), key=lambda kv: -kv[1]):
        lines.append(f"  WARNING x{count}: {message}")
    if run.worker_problems:
        lines.append(f"client-observed problems: {run.worker_problems}")
        lines += [f"  {text}" for text in run.worker_examples[:10]]
    lines += [f"PROBLEM: {text}" for text in run.problems]
    lines.append("RESULT: " + ("FAILED" if run.problem_count() else "OK (no error, server alive and clean at exit)"))
    return lines


# ---------------------------------------------------------------------------


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=30.0, help="length of the run")
    parser.add_argument("--sample-seconds", type=float, default=60.0, help="time between two samples")
    parser.add_argument("--rooms", type=int, default=10)
    parser.add_argument("--viewers", type=int, default=5, help="viewer positions per room")
    parser.add_argument("--workers", type=int, default=2, help="client processes (hosts and viewers)")
    parser.add_argument(
        "--life", type=float, nargs=2, default=[20.0, 90.0], metavar=("MIN", "MAX"), help="viewer life, s"
    )
    parser.add_argument("--restart-every", type=float, default=120.0, help="s between two room restarts (0: none)")
    parser.add_argument("--warmup", type=float, help="s before the drift's first sample (default: min(120, run/4))")
    parser.add_argument("--join-spread", type=float, default=10.0, help="a new room's viewers join over this many s")
    parser.add_argument("--connect-timeout", type=float, default=20.0, help="s for a bot's ICE+DTLS to connect")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--server-log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    add_server_arguments(parser)
    parser.add_argument("--role", choices=["bench", "worker"], default="bench", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--worker-index", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--deadline", type=float, default=0.0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.seed is None:
        args.seed = random.randrange(1_000_000)
    if args.minutes <= 0 or args.sample_seconds <= 0 or args.rooms < 1 or args.viewers < 0 or args.workers < 1:
        parser.error("--minutes, --sample-seconds, --rooms, --workers must be positive")
    if not 0 < args.life[0] <= args.life[1]:
        parser.error("--life MIN MAX: 0 < MIN <= MAX")
    return args


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    if args.role == "worker":
        return worker_main(args)
    args.server_root = use_server_root(args.server_root)
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    video, audio = load_soak_media()
    print(f"server: {describe_root(args.server_root)}", flush=True)
    warmup = args.warmup if args.warmup is not None else min(120.0, 60 * args.minutes / 4)
    print(
        f"soak: {args.rooms} rooms x {args.viewers} viewers (life {args.life[0]:g}-{args.life[1]:g} s), "
        f"a room restarted every {args.restart_every:g} s, {args.minutes:g} min, a sample every "
        f"{args.sample_seconds:g} s, {args.workers} client workers, seed {args.seed}; media VP8 {WIDTH}x{HEIGHT}@{FPS} "
        f"{video.bitrate / 1e3:.0f} kbit/s + Opus {audio.bitrate / 1e3:.0f} kbit/s, pre-encoded",
        flush=True,
    )
    run = RunState(args=vars(args))
    budget = 60 * args.minutes + 180
    try:
        _, interrupted, late = run_bounded(soak, budget, args, run)
        if interrupted is not None:
            run.problem(f"interrupted by signal {interrupted}")
        if late:
            run.problem(f"the run did not finish within {budget:.0f} s")
    except Exception as exc:
        traceback.print_exc()
        run.problem(f"the bench failed: {exc!r:.300}")
    scan_server_log(run)
    print("\n".join(report(run, warmup)), flush=True)
    JSON_PATH.write_text(json.dumps(asdict(run), indent=2, default=str))
    print(f"wrote {JSON_PATH}")
    return 1 if run.problem_count() else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
