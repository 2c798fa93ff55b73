"""Many rooms benchmark: R rooms x V viewers, the server in its own process (not a test).

Run it inside a private network namespace (only loopback exists):

    unshare -rn sh -c 'ip link set lo up && .venv/bin/python bench/rooms.py --rooms 10 --viewers 2'

In one run:

1. the floor, in this process (SRTP protect + ``sendto`` of a 1,200-byte packet, CPU us);
2. ``app.py`` started alone (loopback, ``[ice] udp_port = 0``; ``--server-root DIR``: the
   ``app.py`` of another checkout), R rooms created over REST;
3. R host bots in this process publishing the pre-encoded VP8 640x360 ~1.4 Mbit/s + Opus file
   of ``bench/make_media.py`` as it is (aiortc only packetizes: nothing encoded live), about
   200 packets per second per host (``--codecs``: then the same video in H.264, and the two
   side by side: what forwarding an H.264 room costs against a VP8 one, in one run);
4. the viewers in processes of their own (``viewers.py``, one per room:
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
histogram: an RTP packet's kernel receive time to its send to every viewer, ``GET /metrics``'
``bitbasel_forwarding_delay_seconds``) while ``--stats-per-second`` REST ``GET /room/{id}/stats``
requests (default 50, round robin over the rooms) are in flight, beside the same histogram over
the quiet window: the control plane must not hold media up. Janus has no such counter (not measured there).

The machinery (processes, server, hosts, viewers, windows, tables) is ``harness.py``'s.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import httpx
import janus
import mediasoup
import trio
from floor import measure_floor
from harness import (
    BENCH_DIR,
    OUT_DIR,
    Child,
    Gate,
    Histogram,
    Server,
    add_server_arguments,
    bucket_ms,
    create_rooms,
    describe_root,
    latency_summary,
    open_hosts,
    quit_viewers,
    read_metrics,
    read_point,
    rest_load,
    server_packets,
    server_toml,
    spawn,
    start_server,
    start_viewer_procs,
    summarize_window,
    table,
    udp_drops,
    udp_sockets,
    upto_ms,
    use_server_root,
    wait_ready,
)
from make_media import load_h264_media, load_media

from media_server_client.containment import open_contained_loop

DELAY_METRIC = "bitbasel_forwarding_delay_seconds"


async def forwarding_delay(http: httpx.AsyncClient) -> Histogram:
    """The server's forwarding-delay histogram so far (``GET /metrics``)."""
    return Histogram.from_metrics(await read_metrics(http), DELAY_METRIC)


async def measure_delay_under_load(server: Server, http: httpx.AsyncClient, room_ids: list[str]) -> dict[str, Any]:
    """The forwarding delay over a quiet window and over one with REST stats load."""
    quiet_start = await forwarding_delay(http)
    await trio.sleep(ARGS.seconds)
    quiet = (await forwarding_delay(http)).since(quiet_start)
    latencies: list[float] = []
    loaded_start = await forwarding_delay(http)
    paths = [f"/room/{room_id}/stats" for room_id in room_ids]
    with trio.move_on_after(ARGS.seconds):
        await rest_load(server.base_url, server.headers, paths, ARGS.stats_per_second, latencies)
    loaded = (await forwarding_delay(http)).since(loaded_start)
    return {"quiet": quiet, "loaded": loaded} | latency_summary(latencies)


CGROUP_CPU = Path("/sys/fs/cgroup/cpu")
CGROUP_PERIOD_US = 10_000  # short periods: a throttled process waits at most ~10 ms


async def cap_media_processes(server: Server, http: httpx.AsyncClient, share: float | None = None) -> list[Path]:
    """`--core-share Q` (or ``share``): each media process gets its own cgroup (v1 `cpu`) capped
    at Q of a core, as if each had a core of its own on a machine Q times as fast; with workers
    the front shares worker 0's. So one worker and N workers are compared at N times the CPU, as
    N cores would give."""
    pids = await server.pids(http)
    return cap_groups([pids] if len(pids) == 1 else [pids[:2], *[[pid] for pid in pids[2:]]], share)


def cap_groups(groups: list[list[int]], share: float | None = None) -> list[Path]:
    """Each group of pids in a cgroup of its own capped at ``share`` (default ``--core-share``)
    of a core."""
    share = ARGS.core_share if share is None else share
    made = []
    for index, members in enumerate(groups):
        group = CGROUP_CPU / f"bitbasel-bench-{index}"
        group.mkdir(exist_ok=True)
        (group / "cpu.cfs_period_us").write_text(str(CGROUP_PERIOD_US))
        (group / "cpu.cfs_quota_us").write_text(str(int(share * CGROUP_PERIOD_US)))
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


def remove_cgroups(groups: list[Path], within: float = 10.0) -> None:
    """Each group removed once its processes have exited (a front's workers may outlive it by a
    moment: waited for, at most ``within`` s, so that no later run reuses a group with a dying
    worker in it)."""
    deadline = time.monotonic() + within
    for group in groups:
        while True:
            try:
                group.rmdir()
                break
            except FileNotFoundError:
                break
            except OSError:  # busy: a process still in it
                if time.monotonic() > deadline:
                    break
                time.sleep(0.1)


async def bench(video_codec: str = "VP8") -> dict[str, Any]:
    """Our server on the workload; ``video_codec`` "H264": the same video in H.264 (make_media.py)."""
    video, audio = load_h264_media() if video_codec == "H264" else load_media()
    gate = Gate()
    viewers: list[Child] = []
    groups: list[Path] = []
    throttled, drops = 0.0, 0
    toml = server_toml(
        max_rooms=ARGS.rooms + 10,
        max_viewers_per_room=ARGS.viewers + 10,
        max_connections=max(1000, ARGS.rooms * (ARGS.viewers + 1) * 2),
        max_messages_per_second=1000,
        workers=ARGS.workers,
    )
    server = await start_server("rooms", toml, root=ARGS.server_root, workers=ARGS.workers)
    try:
        async with server.http() as http:
            room_ids = await create_rooms(http, ARGS.rooms)
            offered = video_codec if video_codec == "H264" else None  # VP8: aiortc's list, as before
            hosts = open_hosts(server.ws_url, room_ids, video, audio, gate, pli=False, video_codec=offered)
            async with open_contained_loop(), hosts:
                for index, room_id in enumerate(room_ids):
                    labels = [f"rooms-viewers{index}-{p}" for p in range(procs_per_room())]
                    viewers += start_viewer_procs(labels, server.ws_url, room_id, ARGS.viewers, index * 1000)
                await wait_ready(viewers, within=60 + 2 * ARGS.rooms * ARGS.viewers)
                if ARGS.core_share:  # capped once every viewer had its keyframe: joining is not measured
                    groups = await cap_media_processes(server, http)
                await trio.sleep(1.0)
                pids = await server.pids(http)
                read_packets = server_packets(server, http, room_ids)
                start = await read_point(gate, pids, viewers, read_packets)
                throttled = throttled_seconds(groups)
                drops = udp_drops(pids)
                await trio.sleep(ARGS.seconds)
                end = await read_point(gate, pids, viewers, read_packets)
                throttled = throttled_seconds(groups) - throttled
                drops = udp_drops(pids) - drops
                sockets = udp_sockets(server.pid)
                # with workers, /metrics is one worker's: the delay window is for one process only
                measured = ARGS.workers == 1 and ARGS.delay_window
                delay = await measure_delay_under_load(server, http, room_ids) if measured else None
                for child in viewers:
                    await child.send("quit")
    finally:
        for child in viewers:
            await child.stop()
        await server.child.stop()
        remove_cgroups(groups)
    summary = summarize_window(start, end, ARGS.rooms, ARGS.viewers)
    return summary | {"sockets": sockets, "delay": delay, "throttled_seconds": throttled, "udp_drops": drops}


async def bench_janus() -> dict[str, Any]:
    """The same workload on Janus's VideoRoom (see the module's docstring)."""
    video, audio = load_media()
    gate = Gate()
    viewers: list[Child] = []
    groups: list[Path] = []
    rooms = [1000 + index for index in range(ARGS.rooms)]
    try:
        async with (
            janus.start_janus() as (server, url),
            httpx.AsyncClient(timeout=15) as http,
            open_contained_loop(),
            janus.open_publishers(http, url, rooms, video, audio, gate) as publishers,
        ):
            for index, publisher in enumerate(publishers):
                for p, (first, count) in enumerate(viewer_slices(index * 1000)):
                    argv = [sys.executable, str(BENCH_DIR / "janus.py"), "--role", "janus-viewers", "--url", url]
                    argv += ["--room", str(publisher.room), "--feed", str(publisher.feed)]
                    argv += ["--viewers", str(count), "--first-index", str(first), "--stagger", "0.05"]
                    log = OUT_DIR / f"rooms-janus-viewers{index}-{p}.log"
                    viewers.append(spawn(f"janus-viewers{index}-{p}", argv, log, True))
            await wait_ready(viewers, within=60 + 2 * ARGS.rooms * ARGS.viewers)
            if ARGS.core_share:  # capped once every viewer had its keyframe: joining is not measured
                groups = cap_groups([[server.pid]])
            await trio.sleep(1.0)

            async def read_packets() -> tuple[int, int | None, list[dict[str, Any]]]:
                # packets in = what the hosts sent; out = what the viewers got (not known otherwise)
                return sum(p.sent for p in publishers), None, []

            start = await read_point(gate, [server.pid], viewers, read_packets)
            throttled, drops = throttled_seconds(groups), udp_drops([server.pid])
            await trio.sleep(ARGS.seconds)
            end = await read_point(gate, [server.pid], viewers, read_packets)
            throttled, drops = throttled_seconds(groups) - throttled, udp_drops([server.pid]) - drops
            sockets = udp_sockets(server.pid)
            await quit_viewers(viewers, 15)  # measured: leave quietly
    finally:
        for child in viewers:
            await child.stop()
        remove_cgroups(groups)
    summary = summarize_window(start, end, ARGS.rooms, ARGS.viewers)
    return summary | {"sockets": sockets, "throttled_seconds": throttled, "udp_drops": drops}


async def bench_mediasoup() -> dict[str, Any]:
    """The same workload on mediasoup 3.22 (bench/mediasoup.py): its worker and node process
    counted as the server (the worker capped alone: node only signals)."""
    video, audio = load_media()
    gate = Gate()
    viewers: list[Child] = []
    groups: list[Path] = []
    rooms = [f"r{index}" for index in range(ARGS.rooms)]
    try:
        async with (
            mediasoup.start_mediasoup(ARGS.mediasoup_dir) as server,
            httpx.AsyncClient(timeout=15) as http,
            open_contained_loop(),
            mediasoup.open_publishers(http, server.url, rooms, video, audio, gate) as publishers,
        ):
            await trio.sleep(0.5)  # its producers are there before the first subscribe
            for index, publisher in enumerate(publishers):
                for p, (first, count) in enumerate(viewer_slices(index * 1000)):
                    argv = [sys.executable, str(BENCH_DIR / "mediasoup.py"), "--role", "mediasoup-viewers"]
                    argv += ["--url", server.url, "--room", publisher.room]
                    argv += ["--viewers", str(count), "--first-index", str(first), "--stagger", "0.05"]
                    log = OUT_DIR / f"rooms-mediasoup-viewers{index}-{p}.log"
                    viewers.append(spawn(f"mediasoup-viewers{index}-{p}", argv, log, True))
            await wait_ready(viewers, within=60 + 2 * ARGS.rooms * ARGS.viewers)
            if ARGS.core_share:
                groups = cap_groups([[server.worker_pid]])
            await trio.sleep(1.0)

            async def read_packets() -> tuple[int, int | None, list[dict[str, Any]]]:
                return sum(p.sent for p in publishers), None, []

            pids = server.pids
            start = await read_point(gate, pids, viewers, read_packets)
            throttled, drops = throttled_seconds(groups), udp_drops(pids)
            await trio.sleep(ARGS.seconds)
            end = await read_point(gate, pids, viewers, read_packets)
            throttled, drops = throttled_seconds(groups) - throttled, udp_drops(pids) - drops
            sockets = udp_sockets(server.worker_pid)
            await quit_viewers(viewers, 15)
    finally:
        for child in viewers:
            await child.stop()
        remove_cgroups(groups)
    summary = summarize_window(start, end, ARGS.rooms, ARGS.viewers)
    return summary | {"sockets": sockets, "throttled_seconds": throttled, "udp_drops": drops}


def procs_per_room() -> int:
    """Viewer processes per room: ``--viewers-per-proc`` viewers each (0: one process)."""
    per = ARGS.viewers_per_proc
    return 1 if per <= 0 else max(1, -(-ARGS.viewers // per))


def viewer_slices(first: int) -> list[tuple[int, int]]:
    """(first index, count) of each viewer process of a room."""
    procs = procs_per_room()
    slices = []
    for p in range(procs):
        count = ARGS.viewers // procs + (1 if p < ARGS.viewers % procs else 0)
        slices.append((first, count))
        first += count
    return slices


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


def compare_codecs() -> None:
    """``--codecs``: the same rooms forwarding VP8, then H.264 (the same video, bitrate and
    keyframes: make_media.py), in one run; what an H.264 packet costs against a VP8 one."""
    print(f"server: {describe_root(ARGS.server_root)}", flush=True)
    floor_before = 1e6 * min(measure_floor())
    vp8 = trio.run(bench, "VP8")
    h264 = trio.run(bench, "H264")
    floor = statistics.fmean([floor_before, 1e6 * min(measure_floor())])
    print(f"\nrooms: {ARGS.rooms} x {ARGS.viewers} viewers, {ARGS.seconds:.1f} s windows (pre-encoded video + Opus)")
    lines = [("floor: SRTP protect + sendto, CPU us/pkt", f"{floor:.2f}", "")]
    lines += [(a[0], a[1], b[1]) for a, b in zip(rows(vp8, floor), rows(h264, floor), strict=True)]
    print(table(lines, header=("", "VP8 rooms", "H.264 rooms")))
    for key, what in (("us_per_host_packet", "per host packet"), ("us_per_forwarded_packet", "per forwarded packet")):
        print(f"H.264 / VP8, server CPU {what}: {h264[key] / vp8[key]:.2f}x")
    if ARGS.json is not None:
        results = {
            name: {k: v for k, v in r.items() if k not in ("delay", "sockets")}
            for name, r in (("vp8", vp8), ("h264", h264))
        }
        ARGS.json.write_text(json.dumps(results))


def main() -> None:
    ARGS.server_root = use_server_root(ARGS.server_root)
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    if ARGS.codecs:
        compare_codecs()
        return
    if ARGS.only is not None:
        alone = {"ours": bench, "janus": bench_janus, "mediasoup": bench_mediasoup}[ARGS.only]
        result = trio.run(alone)
        if ARGS.json is not None:
            ARGS.json.write_text(json.dumps({k: v for k, v in result.items() if k != "delay"}))
        print(table(rows(result, 1e6 * min(measure_floor()))))
        return
    with_janus = use_janus()
    print(f"server: {describe_root(ARGS.server_root)}", flush=True)
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
    lines = [("floor: SRTP protect + sendto, CPU us/pkt", f"{floor:.2f}")]
    if theirs is None:
        print(table(lines + rows(ours, floor)))
    else:
        lines += [(a[0], a[1], b[1]) for a, b in zip(rows(ours, floor), rows(theirs, floor), strict=True)]
        print(table(lines, header=("", "this server", "Janus 1.1 VideoRoom")))
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
    quiet: Histogram = delay["quiet"]
    loaded: Histogram = delay["loaded"]
    print(f"\nforwarding delay (kernel receive -> sent to every viewer), {ARGS.seconds:g} s windows:")
    lines = [(f"p{100 * q:g}", upto_ms(quiet.quantile(q)), upto_ms(loaded.quantile(q))) for q in (0.5, 0.99, 0.999)]
    added = loaded.quantile(0.99) - quiet.quantile(0.99)
    lines += [
        ("added by the REST load at p99", "", f"{added * 1000:+g} ms (bucket bounds: an over-estimate)"),
        ("max (the highest bucket counted)", bucket_ms(quiet.max_bucket()), bucket_ms(loaded.max_bucket())),
        ("mean", f"{1e6 * quiet.mean:.1f}", f"{1e6 * loaded.mean:.1f} us"),
        ("RTP packets counted", f"{quiet.total:,}", f"{loaded.total:,}"),
    ]
    header = ("", "quiet", f"{ARGS.stats_per_second:g} GET /room/{{id}}/stats per second")
    print("\n".join("  " + line for line in table(lines, header=header).splitlines()))
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
        "--only",
        choices=["ours", "janus", "mediasoup"],
        help="measure this server alone (bench/capacity.py's rungs); its result in --json",
    )
    parser.add_argument("--viewers-per-proc", type=int, default=0, help="split a room's viewers (0: one process)")
    parser.add_argument(
        "--codecs", action="store_true", help="this server alone: VP8 rooms, then the same rooms in H.264, one run"
    )
    parser.add_argument("--mediasoup-dir", type=Path, default=mediasoup.DEFAULT_DIR, help="mediasoup's build folder")
    parser.add_argument(
        "--janus",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="also measure Janus's VideoRoom (default: when /usr/bin/janus exists)",
    )
    add_server_arguments(parser)
    return parser.parse_args(argv)


ARGS = parse_args(sys.argv[1:]) if __name__ == "__main__" else parse_args([])

if __name__ == "__main__":
    main()
