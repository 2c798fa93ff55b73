"""Many rooms benchmark: R rooms x V viewers, the server in its own process (not a test).

Run it inside a private network namespace (only loopback exists):

    unshare -rn sh -c 'ip link set lo up && .venv/bin/python bench/rooms.py --rooms 10 --viewers 2'

In one run:

1. the floor, in this process (SRTP protect + ``sendto`` of a 1,200-byte packet, CPU us);
2. ``app.py`` started alone (loopback, ``[ice] udp_port = 0``), R rooms created over REST;
3. R host bots in this process publishing the pre-encoded VP8 640x360 ~1.4 Mbit/s + Opus file
   of ``bench/make_media.py`` as it is (aiortc only packetizes: nothing encoded live), about
   200 packets per second per host;
4. the viewers in processes of their own (``fanout.py --role viewers``, one per room:
   real aiortc peers whose RTP is counted at the DTLS transport, never decoded);
5. a steady window (every host paused around both ends so no packet is in flight): the
   server's CPU (schedstat), the rooms' forwarding counters, the viewers' counts.

It prints: server CPU per host packet and per forwarded packet, the ratio to the floor,
delivery and sequence gaps, the server's share of a core and **rooms per core**
(R / server cores used), and the client side's CPU (bench + viewer processes), so it shows
the clients were not the bottleneck. ``ss -uanp`` of the server is printed too: it holds its
one media port whatever R is.

When Debian's ``janus`` is installed (``/usr/bin/janus``; ``--no-janus`` to skip it, ``--janus``
to insist), the same run then measures **Janus 1.1's VideoRoom** on the same workload (what a
user would pick instead; ``bench/janus.py``): ``janus`` started alone (HTTP API on loopback,
no STUN, only the VideoRoom plugin and the HTTP transport), R rooms created over its API, the
same R host tracks published by aiortc peers in this process, the viewers in processes of their
own (``janus.py --role janus-viewers``, one per room, counted the same way), the same window.
Janus's CPU is every thread of its process (schedstat). Janus's own forwarding counters are
not read: its "packets out" are what its viewers received (so its delivery is received /
(packets in x viewers)), and its packets in are what the hosts sent (aiortc, counted as sent).
Both servers are printed side by side.

Then a second window of the same length measures the **forwarding delay** (the server's own
histogram: an RTP packet's kernel receive time to its send to every viewer, ``GET
/debug/runtime``) while ``--stats-per-second`` REST ``GET /room/{id}/stats`` requests (default 50,
round robin over the rooms) are in flight, beside the same histogram over the quiet window:
the control plane must not hold media up. Janus has no such counter (not measured there).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import httpx
import janus
import msgspec
import trio
from fanout import (
    LOOPBACK,
    OUT_DIR,
    Child,
    Gate,
    PacketTrack,
    load_media,
    measure_floor,
    proc_runtime_ns,
    spawn,
)

from media.delay_histogram import DelaySnapshot
from media_server_client.bots import open_host
from media_server_client.containment import open_contained_loop

DRAIN_SECONDS = 0.4
BENCH_DIR = Path(__file__).resolve().parent


def server_toml(rooms: int, viewers: int) -> str:
    return f"""
[server]
host = "127.0.0.1"
port = 0
max_connections = {max(1000, rooms * (viewers + 1) * 2)}
max_messages_per_second = 1000
[rooms]
max_rooms = {rooms + 10}
max_viewers_per_room = {viewers + 10}
[ice]
host_addresses = ["127.0.0.1"]
udp_port = 0
stun_servers = []
[debug]
fault_injection = true  # GET /debug/runtime: the forwarding-delay histogram
[cluster]
workers = {ARGS.workers}
"""


async def start_server() -> tuple[Child, str]:
    config = OUT_DIR / "rooms-server.toml"
    config.write_text(server_toml(ARGS.rooms, ARGS.viewers))
    argv = [sys.executable, str(BENCH_DIR.parent / "app.py"), "--config", str(config)]
    argv += ["--port", "0", "--log-level", "WARNING"]
    child = await spawn("server", argv, OUT_DIR / "rooms-server.log")
    with trio.fail_after(30):
        while True:
            line = await child.lines.next()
            if line is None:
                raise RuntimeError(f"server exited (see {OUT_DIR / 'rooms-server.log'})")
            if line.startswith("listening on "):
                return child, line.split()[-1]


async def server_runtime_ns(http: httpx.AsyncClient, pid: int) -> int:
    """The server's CPU time: with `--workers` > 1 the front's and every worker's."""
    total = proc_runtime_ns(pid)
    if ARGS.workers != 1:
        for worker in (await http.get("/stats")).json()["workers"]:
            total += proc_runtime_ns(worker["pid"])
    return total


def viewer_totals(snaps: list[dict[str, Any]]) -> tuple[int, int]:
    """(packets received, packets missing from sequence numbers) over the viewer processes' snapshots."""
    received = gaps = 0
    for snap in snaps:
        for viewer in snap["viewers"]:
            received += viewer["video"] + viewer["audio"]
            gaps += viewer["video_expected"] - viewer["video"] + viewer["audio_expected"] - viewer["audio"]
    return received, gaps


async def read_counters(
    http: httpx.AsyncClient, room_ids: list[str], server: Child, viewers: list[Child], gate: Gate
) -> dict[str, Any]:
    """Pause every host, let in-flight packets land, read every counter, resume."""
    gate.close()
    try:
        await trio.sleep(DRAIN_SECONDS)
        ns = await server_runtime_ns(http, server.pid)
        wall = time.monotonic()
        for child in viewers:
            await child.send("snap")
        snaps = [await child.event("snap", 15) for child in viewers]
        packets_in = packets_out = 0
        for room_id in room_ids:
            forwarding = (await http.get(f"/room/{room_id}/stats")).json()["forwarding"]
            packets_in += forwarding["packets_in"]
            packets_out += forwarding["packets_out"]
    finally:
        gate.open()
    return window_point(ns, wall, packets_in, packets_out, snaps)


def window_point(
    ns: int, wall: float, packets_in: int, packets_out: int, snaps: list[dict[str, Any]]
) -> dict[str, Any]:
    """One end of a measured window: server CPU, packets in/out, what the viewers got, client CPU."""
    received, gaps = viewer_totals(snaps)
    return {
        "ns": ns,
        "wall": wall,
        "in": packets_in,
        "out": packets_out,
        "received": received,
        "gaps": gaps,
        "viewer_cpu": sum(float(s["cpu"]) for s in snaps),
        "main_cpu": time.process_time(),
    }


async def forwarding_delay(http: httpx.AsyncClient) -> DelaySnapshot:
    """The server's forwarding-delay histogram so far."""
    response = await http.get("/debug/runtime")
    response.raise_for_status()
    return msgspec.convert(response.json()["media_port"]["forwarding_delay"], DelaySnapshot)


async def stats_load(base_url: str, room_ids: list[str], per_second: float, latencies: list[float]) -> None:
    """``GET /room/{id}/stats`` at ``per_second``, round robin, each request on its own task
    (never waiting for the previous one), until cancelled; each latency appended (inf: failed)."""

    async def one(http: httpx.AsyncClient, room_id: str) -> None:
        start = time.monotonic()
        try:
            (await http.get(f"/room/{room_id}/stats")).raise_for_status()
            latencies.append(time.monotonic() - start)
        except httpx.HTTPError:
            latencies.append(math.inf)

    limits = httpx.Limits(max_connections=int(per_second) + 10)
    async with httpx.AsyncClient(base_url=base_url, timeout=15, limits=limits) as http, trio.open_nursery() as nursery:
        next_at = trio.current_time()
        for index in range(10**9):
            nursery.start_soon(one, http, room_ids[index % len(room_ids)])
            next_at += 1.0 / per_second
            await trio.sleep_until(next_at)


async def measure_delay_under_load(http: httpx.AsyncClient, base_url: str, room_ids: list[str]) -> dict[str, Any]:
    """The forwarding delay over a quiet window and over one with REST stats load."""
    quiet_start = await forwarding_delay(http)
    await trio.sleep(ARGS.seconds)
    quiet = (await forwarding_delay(http)).since(quiet_start)
    latencies: list[float] = []
    loaded_start = await forwarding_delay(http)
    with trio.move_on_after(ARGS.seconds):
        await stats_load(base_url, room_ids, ARGS.stats_per_second, latencies)
    loaded = (await forwarding_delay(http)).since(loaded_start)
    answered = sorted(latency for latency in latencies if latency != math.inf)
    return {
        "quiet": quiet,
        "loaded": loaded,
        "requests": len(latencies),
        "failed": len(latencies) - len(answered),
        "request_p50_ms": 1e3 * answered[len(answered) // 2] if answered else math.nan,
        "request_p99_ms": 1e3 * answered[min(len(answered) - 1, int(0.99 * len(answered)))] if answered else math.nan,
    }


def server_udp_sockets(pid: int) -> str:
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
    for table in ("/proc/net/udp", "/proc/net/udp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                if len(fields) >= 13 and fields[9] in inodes:
                    drops += int(fields[12])
    return drops


async def server_pids(http: httpx.AsyncClient, pid: int) -> list[int]:
    if ARGS.workers == 1:
        return [pid]
    return [pid, *[worker["pid"] for worker in (await http.get("/stats")).json()["workers"]]]


CGROUP_CPU = Path("/sys/fs/cgroup/cpu")
CGROUP_PERIOD_US = 10_000  # short periods: a throttled process waits at most ~10 ms


async def cap_media_processes(http: httpx.AsyncClient, server_pid: int) -> list[Path]:
    """`--core-share Q`: each media process gets its own cgroup (v1 `cpu`) capped at Q of a core,
    as if each had a core of its own on a machine Q times as fast; with workers the front shares
    worker 0's. So one worker and N workers are compared at N times the CPU, as N cores would give."""
    if ARGS.workers == 1:
        groups = [[server_pid]]
    else:
        pids = [worker["pid"] for worker in (await http.get("/stats")).json()["workers"]]
        groups = [[server_pid, pids[0]], *[[pid] for pid in pids[1:]]]
    made = []
    for index, members in enumerate(groups):
        group = CGROUP_CPU / f"bitbasel-bench-{index}"
        group.mkdir(exist_ok=True)
        (group / "cpu.cfs_period_us").write_text(str(CGROUP_PERIOD_US))
        (group / "cpu.cfs_quota_us").write_text(str(int(ARGS.core_share * CGROUP_PERIOD_US)))
        for pid in members:
            (group / "cgroup.procs").write_text(str(pid))
        made.append(group)
    return made


def throttled_seconds(groups: list[Path]) -> float:
    total = 0
    for group in groups:
        for line in (group / "cpu.stat").read_text().splitlines():
            if line.startswith("throttled_time "):
                total += int(line.split()[1])
    return total / 1e9


def remove_cgroups(groups: list[Path]) -> None:
    for group in groups:
        with contextlib.suppress(OSError):
            group.rmdir()  # empty once its processes have exited


async def bench() -> dict[str, Any]:
    video, audio = load_media()
    gate = Gate()
    children: list[Child] = []
    groups: list[Path] = []
    throttled, drops = 0.0, 0
    try:
        server, base_url = await start_server()
        children.append(server)
        ws_url = base_url.replace("http", "ws", 1) + "/ws"
        async with httpx.AsyncClient(base_url=base_url, timeout=15) as http:
            if ARGS.core_share:
                groups = await cap_media_processes(http, server.pid)
            room_ids = []
            for index in range(ARGS.rooms):
                response = await http.post("/room/create", json={"post_id": f"p{index}", "host_user_id": "host"})
                response.raise_for_status()
                room_ids.append(response.json()["room_id"])
            async with open_contained_loop(), trio.open_nursery() as hosts:
                connected = trio.Semaphore(0)
                stop_hosts = trio.Event()

                async def host(room_id: str) -> None:
                    tracks = [PacketTrack(video, gate), PacketTrack(audio, gate)]
                    async with open_host(ws_url, room_id, user_id="host", tracks=tracks, host_addresses=LOOPBACK) as h:
                        await h.wait_connected()
                        connected.release()
                        await stop_hosts.wait()

                for room_id in room_ids:
                    hosts.start_soon(host, room_id)
                with trio.fail_after(60):
                    for _ in room_ids:
                        await connected.acquire()
                viewers = []
                for index, room_id in enumerate(room_ids):
                    argv = [sys.executable, str(BENCH_DIR / "fanout.py"), "--role", "viewers"]
                    argv += ["--url", ws_url, "--room", room_id, "--viewers", str(ARGS.viewers)]
                    argv += ["--first-index", str(index * 1000), "--stagger", "0.05"]
                    viewers.append(await spawn(f"viewers{index}", argv, OUT_DIR / f"rooms-viewers{index}.log", True))
                children += viewers
                with trio.fail_after(60 + 2 * ARGS.rooms * ARGS.viewers):
                    for child in viewers:
                        await child.event("ready", 120)
                await trio.sleep(1.0)
                start = await read_counters(http, room_ids, server, viewers, gate)
                throttled = throttled_seconds(groups)
                pids = await server_pids(http, server.pid)
                drops = udp_drops(pids)
                await trio.sleep(ARGS.seconds)
                end = await read_counters(http, room_ids, server, viewers, gate)
                throttled = throttled_seconds(groups) - throttled
                drops = udp_drops(pids) - drops
                sockets = server_udp_sockets(server.pid)
                # with workers, /debug/runtime is one worker's: the delay window is for one process only
                measured = ARGS.workers == 1 and ARGS.delay_window
                delay = await measure_delay_under_load(http, base_url, room_ids) if measured else None
                stop_hosts.set()
                for child in viewers:
                    await child.send("quit")
    finally:
        for child in children:
            await child.stop()
        remove_cgroups(groups)
    return summarize(start, end, sockets) | {"delay": delay, "throttled_seconds": throttled, "udp_drops": drops}


def summarize(start: dict[str, Any], end: dict[str, Any], sockets: str) -> dict[str, Any]:
    seconds = end["wall"] - start["wall"]
    cpu_seconds = (end["ns"] - start["ns"]) / 1e9
    packets_in = end["in"] - start["in"]
    packets_out = end["out"] - start["out"]
    received = end["received"] - start["received"]
    server_cores = cpu_seconds / seconds
    return {
        "rooms": ARGS.rooms,
        "viewers": ARGS.viewers,
        "seconds": seconds,
        "packets_in": packets_in,
        "packets_out": packets_out,
        "received": received,
        "gaps": end["gaps"] - start["gaps"],
        "us_per_host_packet": 1e6 * cpu_seconds / max(1, packets_in),
        "us_per_forwarded_packet": 1e6 * cpu_seconds / max(1, packets_out),
        "server_cores": server_cores,
        "rooms_per_core": ARGS.rooms / server_cores if server_cores else float("nan"),
        "delivery_pct": 100.0 * received / max(1, packets_out),
        "delivery_in_pct": 100.0 * received / max(1, packets_in * ARGS.viewers),
        "viewer_procs_cores": (end["viewer_cpu"] - start["viewer_cpu"]) / seconds,
        "bench_cores": (end["main_cpu"] - start["main_cpu"]) / seconds,
        "sockets": sockets,
    }


async def read_janus_counters(
    publishers: list[janus.Publisher], server: Child, viewers: list[Child], gate: Gate
) -> dict[str, Any]:
    """:func:`read_counters` for Janus: packets in = what the hosts sent, out = what the viewers got."""
    gate.close()
    try:
        await trio.sleep(DRAIN_SECONDS)
        ns = proc_runtime_ns(server.pid)
        wall = time.monotonic()
        packets_in = sum(p.sent for p in publishers)
        for child in viewers:
            await child.send("snap")
        snaps = [await child.event("snap", 15) for child in viewers]
    finally:
        gate.open()
    received, _ = viewer_totals(snaps)
    return window_point(ns, wall, packets_in, received, snaps)


async def bench_janus() -> dict[str, Any]:
    """The same workload on Janus's VideoRoom (see the module's docstring)."""
    video, audio = load_media()
    gate = Gate()
    viewers: list[Child] = []
    rooms = [1000 + index for index in range(ARGS.rooms)]
    try:
        async with (
            janus.start_janus() as (server, url),
            httpx.AsyncClient(timeout=15) as http,
            open_contained_loop(),
            trio.open_nursery() as hosts,
        ):
            publishers: list[janus.Publisher] = []
            connected = trio.Semaphore(0)
            stop_hosts = trio.Event()

            async def host(room: int) -> None:
                tracks = [PacketTrack(video, gate), PacketTrack(audio, gate)]
                async with janus.open_session(http, url) as session:
                    await janus.create_room(session, room)
                    async with janus.open_publisher(session, room, tracks) as publisher:
                        publishers.append(publisher)
                        connected.release()
                        await stop_hosts.wait()
                for track in tracks:
                    track.stop()

            for room in rooms:
                hosts.start_soon(host, room)
            with trio.fail_after(60):
                for _ in rooms:
                    await connected.acquire()
            for index, publisher in enumerate(publishers):
                argv = [sys.executable, str(BENCH_DIR / "janus.py"), "--role", "janus-viewers", "--url", url]
                argv += ["--room", str(publisher.room), "--feed", str(publisher.feed)]
                argv += ["--viewers", str(ARGS.viewers), "--first-index", str(index * 1000), "--stagger", "0.05"]
                log = OUT_DIR / f"rooms-janus-viewers{index}.log"
                viewers.append(await spawn(f"janus-viewers{index}", argv, log, True))
            with trio.fail_after(60 + 2 * ARGS.rooms * ARGS.viewers):
                for child in viewers:
                    await child.event("ready", 120)
            await trio.sleep(1.0)
            start = await read_janus_counters(publishers, server, viewers, gate)
            await trio.sleep(ARGS.seconds)
            end = await read_janus_counters(publishers, server, viewers, gate)
            sockets = server_udp_sockets(server.pid)
            with trio.move_on_after(15), contextlib.suppress(RuntimeError, OSError):  # measured: leave quietly
                for child in viewers:
                    await child.send("quit")
                for child in viewers:
                    await child.event("closed", 15)
            stop_hosts.set()
    finally:
        for child in viewers:
            await child.stop()
    return summarize(start, end, sockets)


def rows(r: dict[str, Any], floor: float) -> list[tuple[str, str]]:
    return [
        ("server CPU us per host packet", f"{r['us_per_host_packet']:.1f}"),
        ("server CPU us per forwarded packet", f"{r['us_per_forwarded_packet']:.2f}"),
        ("  ratio to the floor", f"{r['us_per_forwarded_packet'] / floor:.2f}x"),
        ("server CPU, cores", f"{r['server_cores']:.3f}"),
        ("rooms per core", f"{r['rooms_per_core']:.1f}"),
        ("packets in (from hosts)", f"{r['packets_in']:,}"),
        ("packets out (forwarded)", f"{r['packets_out']:,}"),
        ("packets received by viewers", f"{r['received']:,}"),
        ("delivery: received / out", f"{r['delivery_pct']:.3f} %"),
        ("delivery: received / (in x viewers)", f"{r['delivery_in_pct']:.3f} %"),
        ("sequence gaps seen by viewers", f"{r['gaps']}"),
        ("kernel drops on the server's UDP sockets", f"{r.get('udp_drops', 'not read')}"),
        ("server UDP sockets", f"{len([line for line in r['sockets'].splitlines() if 'pid=' in line])}"),
        ("client side: viewer procs / bench+hosts, cores", f"{r['viewer_procs_cores']:.2f} / {r['bench_cores']:.2f}"),
    ]


def use_janus() -> bool:
    if ARGS.janus is None:
        return janus.available()
    if ARGS.janus and not janus.available():
        raise SystemExit(f"--janus: {janus.JANUS} not found (apt-get install janus)")
    return bool(ARGS.janus)


def main() -> None:
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    with_janus = use_janus()
    floor_us = 1e6 * min(measure_floor())
    ours = trio.run(bench)
    if ARGS.json is not None:
        ARGS.json.write_text(json.dumps({k: v for k, v in ours.items() if k != "delay"}))
    theirs = None
    if with_janus:
        try:
            theirs = trio.run(bench_janus)
        except Exception as error:  # ours is still printed
            print(f"Janus: not measured: {error!r} (see {janus.LOG_PATH})", file=sys.stderr)
    floor_after = 1e6 * min(measure_floor())
    floor = statistics.fmean([floor_us, floor_after])
    r = ours
    print(f"\nrooms: {r['rooms']} x {r['viewers']} viewers, {r['seconds']:.1f} s window (pre-encoded VP8 + Opus)")
    table = [("floor: SRTP protect + sendto, CPU us/pkt", f"{floor:.2f}", "")]
    if theirs is None:
        table += [(name, value, "") for name, value in rows(ours, floor)]
    else:
        table += [(a[0], a[1], b[1]) for a, b in zip(rows(ours, floor), rows(theirs, floor), strict=True)]
    width = max(len(name) for name, _, _ in table)
    column = max(len(value) for _, value, _ in table) + 2
    if theirs is not None:
        print(f"{'':<{width}}  {'this server':<{column}}Janus 1.1 VideoRoom")
    for name, value, janus_value in table:
        print(f"{name:<{width}}  {value:<{column}}{janus_value}".rstrip())
    if theirs is not None:
        print("(Janus: packets out = what its viewers received; packets in = what the hosts sent)")
    if r["delay"] is not None:
        print_delay(r["delay"])
    else:
        print("\nforwarding delay: not measured (--no-delay-window, or --workers > 1: per worker only)")
    print("\nthe server's UDP sockets (ss -uanp):")
    print(r["sockets"])
    if theirs is not None:
        print("\nJanus's UDP sockets (ss -uanp):")
        print(theirs["sockets"])


def print_delay(delay: dict[str, Any]) -> None:
    """The forwarding-delay table: quiet window beside the one under REST load."""
    quiet: DelaySnapshot = delay["quiet"]
    loaded: DelaySnapshot = delay["loaded"]

    def upto(value: float) -> str:
        return f"<= {value / 1000:g} ms" if math.isfinite(value) else "above the last bucket"

    print(f"\nforwarding delay (kernel receive -> sent to every viewer), {ARGS.seconds:g} s windows:")
    print(f"{'':<34}{'quiet':<24}{ARGS.stats_per_second:g} GET /room/{{id}}/stats per second")
    for name, q in (("p50", 0.5), ("p99", 0.99), ("p99.9", 0.999)):
        print(f"  {name:<32}{upto(quiet.quantile_us(q)):<24}{upto(loaded.quantile_us(q))}")
    added = loaded.quantile_us(0.99) - quiet.quantile_us(0.99)
    print(f"  {'added by the REST load at p99':<32}{'':<24}{added / 1000:+g} ms (bucket bounds: an over-estimate)")
    print(f"  {'max':<32}{'':<24}{loaded.max_us / 1000:.2f} ms (the whole run so far)")
    print(f"  {'mean':<32}{quiet.sum_us / max(1, quiet.total):<24.1f}{loaded.sum_us / max(1, loaded.total):.1f} us")
    print(f"  {'RTP packets counted':<32}{quiet.total:<24,}{loaded.total:,}")
    print(
        f"  REST: {delay['requests']} requests ({delay['requests'] / ARGS.seconds:.1f}/s), {delay['failed']} failed,"
        f" latency p50 {delay['request_p50_ms']:.1f} ms, p99 {delay['request_p99_ms']:.1f} ms"
    )


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rooms", type=int, default=10)
    parser.add_argument("--viewers", type=int, default=2, help="viewers per room")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--workers", type=int, default=1, help="[cluster] workers of the server (CPU summed)")
    parser.add_argument("--stats-per-second", type=float, default=50.0, help="REST load of the delay window")
    parser.add_argument(
        "--delay-window", action=argparse.BooleanOptionalAction, default=True, help="the forwarding-delay window"
    )
    parser.add_argument(
        "--core-share", type=float, default=0.0, help="cap each media process at this share of a core (cgroup)"
    )
    parser.add_argument("--json", type=Path, help="also write the result here")
    parser.add_argument(
        "--janus",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="also measure Janus's VideoRoom (default: when /usr/bin/janus exists)",
    )
    return parser.parse_args(argv)


ARGS = parse_args(sys.argv[1:]) if __name__ == "__main__" else parse_args([])

if __name__ == "__main__":
    main()
