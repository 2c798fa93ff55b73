"""Loop-lag benchmark: Trio's wake-up lag and the forwarding delay, quiet and under REST load
(not a test; issue 19).

Run it inside a private network namespace (only loopback exists):

    unshare -rn sh -c 'ip link set lo up && .venv/bin/python bench/loop_lag.py'
    unshare -rn sh -c 'ip link set lo up && .venv/bin/python bench/loop_lag.py --server-root ../before19'

In one run (the machinery is ``harness.py``'s):

1. ``app.py`` (of ``--server-root``, default this checkout) alone in its process, with an API
   key (``[auth] api_key``: every REST request below carries it), one room created over REST;
2. one aiortc host in this process publishing the pre-encoded VP8 640x360 + Opus file of
   ``make_media.py`` as it is (~200 RTP packets/s), ``--viewers`` (60) aiortc viewers in
   ``--viewer-procs`` (2) processes of their own (``viewers.py``: RTP counted at the DTLS
   transport, never decoded);
3. a **quiet** window of ``--seconds``: media only;
4. a **loaded** window of the same length: a REST load process (this file, ``--role
   rest-load``, started before the first window so that its start-up costs nothing inside
   one) sends ``--requests-per-second`` (50) requests, alternating ``GET /stats`` and
   ``GET /metrics``, each on its own task, never waiting for the previous one.

``--host-pacing libwebrtc`` makes the host send as browsers do (RTP no faster than 2.5x the
file's bitrate, libwebrtc's pacer) instead of aiortc's way (a frame's packets back to back).

Both ends of each window are read with the host paused (nothing in flight): the server's own
histograms from ``GET /metrics``, ``bitbasel_event_loop_lag_seconds`` (how late Trio wakes a
task that slept 0.5 s: two samples a second) and ``bitbasel_forwarding_delay_seconds`` (per RTP
packet, the kernel's receive timestamp to its send to every viewer), the server's CPU
(schedstat, every thread), the room's forwarding counters and what the viewers counted. It
prints p50 / p99 / max of both histograms per window (bucket upper bounds: an over-estimate),
and, to show the load generator kept up, the server's CPU, the packets forwarded, the delivery,
the REST requests answered and their latency, and the CPU of every client process and of the
machine. Target (issue 19): both p99 <= 5 ms in the loaded window. Writes
``bench/out/loop-lag.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import secrets
import signal
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import trio
from harness import (
    CLK_TCK,
    OUT_DIR,
    Child,
    Gate,
    Histogram,
    Point,
    add_server_arguments,
    add_viewer_arguments,
    bucket_ms,
    create_room,
    describe_root,
    emit,
    latency_summary,
    machine_ticks,
    open_hosts,
    own_cpu,
    proc_runtime_ns,
    quit_viewers,
    read_metrics,
    read_point,
    rest_load,
    run_bench,
    server_packets,
    server_toml,
    spawn,
    start_server,
    start_viewer_procs,
    stdin_lines,
    table,
    upto_ms,
    use_server_root,
    wait_ready,
)
from make_media import load_media

from media_server_client.containment import open_contained_loop

PACING_FACTOR = 2.5  # libwebrtc's pacer: 2.5x the target bitrate
LOOP_LAG = "bitbasel_event_loop_lag_seconds"
FORWARDING_DELAY = "bitbasel_forwarding_delay_seconds"
TARGET_P99_SECONDS = 0.005
JSON_PATH = OUT_DIR / "loop-lag.json"


# ---------------------------------------------------------------------------
# The REST load process (--role rest-load)
# ---------------------------------------------------------------------------


async def rest_load_main(args: argparse.Namespace) -> None:
    """Wait for ``go`` on stdin, send the load for ``--seconds``, answer ``done`` with the
    latencies' summary."""
    headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}
    lines = stdin_lines()
    emit("ready")
    while (line := await lines.next()) is not None and line.strip() != "go":
        pass
    if line is None:
        return
    latencies: list[float] = []
    started = trio.current_time()
    with trio.move_on_after(args.seconds):
        await rest_load(args.url, headers, ["/stats", "/metrics"], args.requests_per_second, latencies)
    emit("done", seconds=trio.current_time() - started, cpu=own_cpu(), **latency_summary(latencies))


# ---------------------------------------------------------------------------
# The bench
# ---------------------------------------------------------------------------


def window(start: Point, end: Point) -> dict[str, Any]:
    """One window between two points (each with its GET /metrics and machine ticks in ``extra``)."""
    seconds = end.wall - start.wall
    metrics0, metrics1 = start.extra["metrics"], end.extra["metrics"]
    busy0, total0 = start.extra["machine"]
    busy1, total1 = end.extra["machine"]
    packets_in = end.packets_in - start.packets_in
    packets_out = end.out - start.out
    received = end.received - start.received
    cpu_seconds = (end.ns - start.ns) / 1e9
    return {
        "seconds": seconds,
        "loop_lag": Histogram.from_metrics(metrics1, LOOP_LAG).since(Histogram.from_metrics(metrics0, LOOP_LAG)),
        "forwarding_delay": Histogram.from_metrics(metrics1, FORWARDING_DELAY).since(
            Histogram.from_metrics(metrics0, FORWARDING_DELAY)
        ),
        "server_cores": cpu_seconds / seconds,
        "server_cores_ticks": (end.ticks - start.ticks) / CLK_TCK / seconds,
        "us_per_forwarded_packet": 1e6 * cpu_seconds / max(1, packets_out),
        "packets_in": packets_in,
        "packets_out": packets_out,
        "forwarded_metric": metrics1.get("bitbasel_rtp_forwarded_packets_total", math.nan)
        - metrics0.get("bitbasel_rtp_forwarded_packets_total", math.nan),
        "received": received,
        "gaps": end.gaps - start.gaps,
        "delivery_pct": 100.0 * received / max(1, packets_out),
        "viewer_procs_cores": (end.viewer_cpu - start.viewer_cpu) / seconds,
        "bench_cores": (end.main_cpu - start.main_cpu) / seconds,
        "load_proc_cores": (end.extra["load_ns"] - start.extra["load_ns"]) / 1e9 / seconds,
        "machine_busy_pct": 100.0 * (busy1 - busy0) / max(1, total1 - total0),
    }


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    video, audio = load_media()
    gate = Gate()
    api_key = f"bench-{secrets.token_hex(16)}"
    toml = server_toml(
        max_rooms=10,
        max_viewers_per_room=max(100, args.viewers + 10),
        max_connections=max(1000, args.viewers * 2),
        max_messages_per_second=1000,
        api_key=api_key,
    )
    server = await start_server("loop-lag", toml, root=args.server_root, api_key=api_key)
    children: list[Child] = []
    try:
        print(f"server pid {server.pid} at {server.base_url}", flush=True)
        argv = [sys.executable, __file__, "--role", "rest-load", "--url", server.base_url, "--api-key", api_key]
        argv += ["--requests-per-second", str(args.requests_per_second), "--seconds", str(args.seconds)]
        load = spawn("rest-load", argv, OUT_DIR / "loop-lag-rest-load.log", stdin=True)
        children.append(load)
        await load.event("ready", 30)
        async with server.http() as http:
            room_id = await create_room(http, "loop-lag")
            pacing = PACING_FACTOR * (video.bitrate + audio.bitrate) if args.host_pacing == "libwebrtc" else None
            hosts = open_hosts(server.ws_url, [room_id], video, audio, gate, pacing_bps=pacing)
            async with open_contained_loop(), hosts:
                procs = max(1, min(args.viewer_procs, args.viewers))
                labels = [f"loop-lag-viewers{p}" for p in range(procs)]
                viewers = start_viewer_procs(labels, server.ws_url, room_id, args.viewers, stagger=args.stagger)
                children += viewers
                await wait_ready(viewers, within=args.join_timeout)
                print(f"host and {args.viewers} viewers connected, every viewer had a keyframe", flush=True)
                await trio.sleep(args.settle)
                read_packets = server_packets(server, http, [room_id])

                async def during() -> dict[str, Any]:
                    metrics = await read_metrics(http)
                    return {"metrics": metrics, "machine": machine_ticks(), "load_ns": proc_runtime_ns(load.pid)}

                async def point() -> Point:
                    return await read_point(gate, [server.pid], viewers, read_packets, during=during)

                quiet_start = await point()
                print(f"quiet window: {args.seconds:g} s", flush=True)
                await trio.sleep(args.seconds)
                quiet_end = await point()
                print(f"loaded window: {args.seconds:g} s, {args.requests_per_second:g} requests/s", flush=True)
                await load.send("go")
                rest = await load.event("done", args.seconds + 60)
                loaded_end = await point()
                await quit_viewers(viewers)
    finally:
        for child in reversed(children):
            await child.stop()
        await server.child.stop()
    quiet = window(quiet_start, quiet_end)
    loaded = window(quiet_end, loaded_end)
    return {"quiet": quiet, "loaded": loaded, "rest": rest}


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f} ms" if math.isfinite(seconds) else "-"


def report(args: argparse.Namespace, result: dict[str, Any]) -> str:
    quiet, loaded, rest = result["quiet"], result["loaded"], result["rest"]
    rows: list[tuple[str, str, str]] = []
    for title, key in (("Trio wake-up lag", "loop_lag"), ("forwarding delay", "forwarding_delay")):
        q: Histogram = quiet[key]
        lo: Histogram = loaded[key]
        rows += [
            (f"{title}: p50", upto_ms(q.quantile(0.5)), upto_ms(lo.quantile(0.5))),
            (f"{title}: p99", upto_ms(q.quantile(0.99)), upto_ms(lo.quantile(0.99))),
            (f"{title}: max (its bucket)", bucket_ms(q.max_bucket()), bucket_ms(lo.max_bucket())),
            (f"{title}: mean", ms(q.mean), ms(lo.mean)),
            (f"{title}: samples", f"{q.total:,}", f"{lo.total:,}"),
        ]
    rows += [
        ("server CPU, % of one core", f"{100 * quiet['server_cores']:.1f}", f"{100 * loaded['server_cores']:.1f}"),
        (
            "server CPU us per forwarded packet",
            f"{quiet['us_per_forwarded_packet']:.2f}",
            f"{loaded['us_per_forwarded_packet']:.2f}",
        ),
        ("packets in (from the host)", f"{quiet['packets_in']:,}", f"{loaded['packets_in']:,}"),
        ("packets forwarded (room stats)", f"{quiet['packets_out']:,}", f"{loaded['packets_out']:,}"),
        (
            "  per second",
            f"{quiet['packets_out'] / quiet['seconds']:,.0f}",
            f"{loaded['packets_out'] / loaded['seconds']:,.0f}",
        ),
        ("packets received by viewers", f"{quiet['received']:,}", f"{loaded['received']:,}"),
        ("delivery: received / forwarded", f"{quiet['delivery_pct']:.3f} %", f"{loaded['delivery_pct']:.3f} %"),
        ("sequence gaps seen by viewers", f"{quiet['gaps']:,}", f"{loaded['gaps']:,}"),
        (
            "REST requests answered / failed",
            "-",
            f"{rest['requests'] - rest['failed']:,} / {rest['failed']} "
            f"({rest['requests'] / rest['seconds']:.1f}/s over {rest['seconds']:.1f} s)",
        ),
        (
            "REST latency p50 / p99 / max",
            "-",
            f"{rest['request_p50_ms']:.1f} / {rest['request_p99_ms']:.1f} / {rest['request_max_ms']:.1f} ms",
        ),
        (
            "clients, cores: viewer procs / bench+host / REST load",
            f"{quiet['viewer_procs_cores']:.2f} / {quiet['bench_cores']:.2f} / {quiet['load_proc_cores']:.2f}",
            f"{loaded['viewer_procs_cores']:.2f} / {loaded['bench_cores']:.2f} / {loaded['load_proc_cores']:.2f}",
        ),
        (
            "whole machine busy (2 cores = 100 %)",
            f"{quiet['machine_busy_pct']:.0f} %",
            f"{loaded['machine_busy_pct']:.0f} %",
        ),
    ]
    lag99 = loaded["loop_lag"].quantile(0.99)
    delay99 = loaded["forwarding_delay"].quantile(0.99)
    met = lag99 <= TARGET_P99_SECONDS and delay99 <= TARGET_P99_SECONDS
    head = (
        f"loop lag: 1 host x {args.viewers} viewers ({args.viewer_procs} viewer processes), "
        f"host pacing {args.host_pacing}, "
        f"{quiet['seconds']:.1f} s quiet and {loaded['seconds']:.1f} s loaded windows "
        f"({args.requests_per_second:g} req/s: GET /stats and GET /metrics in turn)"
    )
    header = ("", "quiet", "loaded")
    target = (
        f"target (loaded: both p99 <= {TARGET_P99_SECONDS * 1000:g} ms): {'MET' if met else 'MISSED'} "
        f"(lag {upto_ms(lag99)}, forwarding delay {upto_ms(delay99)}; quantiles are bucket upper bounds)"
    )
    return "\n".join([head, table(rows, header=header), target])


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_viewer_arguments(parser, viewers=60, procs=2, join_timeout=90.0)
    parser.add_argument("--seconds", type=float, default=25.0, help="length of each window")
    parser.add_argument("--requests-per-second", type=float, default=50.0, help="REST load of the loaded window")
    parser.add_argument("--settle", type=float, default=2.0, help="seconds between the last keyframe and the windows")
    parser.add_argument("--json", type=Path, default=JSON_PATH, help="where the result goes")
    parser.add_argument(
        "--host-pacing",
        choices=["none", "libwebrtc"],
        default="none",
        help="none: aiortc's way, a frame's packets back to back (a keyframe is a burst of ~20); "
        "libwebrtc: spread at 2.5x the stream's bitrate, as Chromium's and Firefox's pacer sends",
    )
    add_server_arguments(parser)
    parser.add_argument("--role", choices=["bench", "rest-load"], default="bench", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--api-key", default="", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def jsonable(value: Any) -> Any:
    if isinstance(value, Histogram):
        return {
            "bounds_s": value.bounds,
            "counts": value.counts,
            "sum_s": value.sum,
            "p50_s": value.quantile(0.5),
            "p99_s": value.quantile(0.99),
            "max_bucket_s": value.max_bucket(),
        }
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    return value


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    if args.role == "rest-load":
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # the bench stops us
        trio.run(rest_load_main, args)
        return 0
    args.server_root = use_server_root(args.server_root)
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    load_media()
    print(f"server: {describe_root(args.server_root)}", flush=True)
    budget = 2 * args.seconds + args.join_timeout + 120
    result, code = run_bench(bench, budget, args)
    if result is None:
        return code
    print()
    print(report(args, result))
    args.json.write_text(json.dumps(jsonable(result | {"server_root": str(args.server_root)}), indent=2))
    print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
