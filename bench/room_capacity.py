"""One room's viewers on one media worker against two, each worker capped at the same share of a
core (issue 21; not a test).

``capacity.py``'s method (a cgroup per media process capped at ``--core-share`` Q of a core,
``rooms.py``'s ``cap_media_processes``; with workers the front shares worker 0's group), for
ONE room and one host, on a ladder of viewer counts V:

- (a) ``[cluster] workers = 1``: the one worker holds the host and every viewer, capped at Q;
- (b) ``[cluster] workers = 2``, ``room_viewers_per_worker = ceil(V/2)``: the first half of the
  viewers join the room's own worker (the *origin*, where the host publishes), the rest another
  worker (the *edge*), fed by a loopback relay of the host's media; each worker capped at Q.

The viewers are lean (``viewers.py --kind raw``: a UDP socket, the project's DTLS, pylibsrtp;
RTP counted, never decoded) in processes of their own, the host an aiortc bot in this process
publishing ``make_media.py``'s pre-encoded VP8 + Opus (~200 packets/s). The cap is set once
every viewer has had a keyframe (joining is not what is measured), then a ``--seconds`` window
is read at both ends with the host paused (``harness.read_point``). A rung is **whole** when

- delivery >= 99.9 %: what the viewers received / what the workers forwarded to viewers
  (``bitbasel_rtp_forwarded_packets`` of ``GET /metrics``: with 2 workers the front's, the sum
  of both), and end to end >= 99.9 %: received / (host packets in x V) (a loss on the relay
  shows only there);
- sequence gaps <= 0.1 % of what the viewers received;
- kernel drops on the server's UDP sockets (media and relay, every process) <= 0.1 % of the
  packets in (``/proc/net/udp``);
- with 2 workers, the viewers did split: ``GET /stats``' per-worker ``total_viewers`` are
  ceil(V/2) and floor(V/2).

The capacity of each is the most viewers still whole (the ladder stops at the first rung that is
not). Also per rung: the server's CPU against its cap (schedstat, every process of it) and the
throttled time, the clients' CPU (viewer processes; this process with the host) and the
machine's busy cores, and the server's **forwarding delay** (``bitbasel_forwarding_delay_seconds``:
a host RTP packet's kernel receive time to its send to every viewer) over the window: with 2
workers the front's sum of both, and each worker's own (read from the worker's ``/metrics``).
An edge's clock starts at its relay socket's kernel receive: the edge's viewers' full path is
at most the origin's delay plus the edge's (printed as ``origin + edge``, bucket bounds added:
an over-estimate). The two-worker ladder also runs the one-worker ladder's first rung and its
capacity, so that the delays compare at the same viewer count where both are whole; then one
worker and two, not capped, at ``--uncapped-at`` viewers: the relay's delay without the cap's
CFS throttling (which dominates a capped p99) in it. The defaults are the run of bench/README.md
(Q = 0.15: one worker saturates near 45 viewers, two near 105, under 0.9 of a core of clients).

    unshare -n sh -c 'ip link set lo up && .venv/bin/python bench/room_capacity.py'

(as root: the cgroups are the host's; not ``unshare -rn``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import httpx
import trio
from capacity import whole
from harness import (
    Child,
    Gate,
    Histogram,
    create_rooms,
    describe_root,
    get_json,
    machine_ticks,
    open_hosts,
    quit_viewers,
    read_metrics,
    read_point,
    server_toml,
    start_server,
    start_viewer_procs,
    summarize_window,
    table,
    udp_drops,
    use_server_root,
    wait_ready,
)
from make_media import OUT_DIR, load_media
from rooms import DELAY_METRIC, cap_media_processes, remove_cgroups, throttled_seconds

from media_server_client.containment import open_contained_loop

FORWARDED = "bitbasel_rtp_forwarded_packets_total"
DELAY_BUDGET_MS = 5.0  # issue 21: the relay adds at most this to the p99 forwarding delay
RATIO_WANTED = 1.8


def listening_urls(pid: int) -> list[str]:
    """The TCP ports process ``pid`` listens on (``ss -tlnp``), as http URLs."""
    out = subprocess.run(["ss", "-tlnpH"], capture_output=True, text=True, timeout=10).stdout
    urls = []
    for line in out.splitlines():
        fields = line.split()
        if f"pid={pid}," in line and len(fields) >= 4:
            urls.append("http://" + fields[3])
    return urls


async def worker_metrics_url(http: httpx.AsyncClient, pid: int) -> str | None:
    """A worker's own ``/metrics`` URL (it listens on loopback, for its front)."""
    for url in listening_urls(pid):
        with contextlib.suppress(httpx.HTTPError):
            if (await http.get(url + "/metrics")).status_code == 200:
                return url + "/metrics"
    return None


async def delay_at(http: httpx.AsyncClient, url: str) -> Histogram:
    return Histogram.from_metrics(await read_metrics(http, url), DELAY_METRIC)


def ms(seconds: float) -> float:
    return seconds * 1000.0


def quantiles(h: Histogram) -> dict[str, float]:
    """p50 / p99 / p99.9 (bucket upper bounds, ms), the mean (ms) and the count."""
    return {
        "p50_ms": ms(h.quantile(0.5)),
        "p99_ms": ms(h.quantile(0.99)),
        "p999_ms": ms(h.quantile(0.999)),
        "mean_ms": ms(h.mean),
        "packets": h.total,
    }


async def rung(viewers: int, workers: int, share: float) -> dict[str, Any]:
    """One rung: a fresh server, one room, one host, ``viewers`` lean viewers, one window; each
    media process capped at ``share`` of a core (0: not capped)."""
    video, audio = load_media()
    gate = Gate()
    procs: list[Child] = []
    groups: list[Path] = []
    limit = math.ceil(viewers / workers) if workers > 1 else None
    toml = server_toml(
        max_rooms=10,
        max_viewers_per_room=viewers + 10,
        max_connections=max(1000, 4 * viewers),
        max_messages_per_second=1000,
        workers=workers,
        room_viewers_per_worker=limit,
    )
    server = await start_server("room-capacity", toml, root=ARGS.server_root, workers=workers)
    try:
        async with server.http() as http:
            (room_id,) = await create_rooms(http, 1)
            async with open_contained_loop(), open_hosts(server.ws_url, [room_id], video, audio, gate, pli=False):
                nprocs = max(1, min(ARGS.max_viewer_procs, math.ceil(viewers / ARGS.viewers_per_proc)))
                labels = [f"room-capacity-viewers{index}" for index in range(nprocs)]
                procs = start_viewer_procs(labels, server.ws_url, room_id, viewers, options=["--kind", "raw"])
                await wait_ready(procs, within=60 + viewers)
                pids = await server.pids(http)
                worker_urls: list[str | None] = []
                if workers > 1:
                    worker_urls = [await worker_metrics_url(http, pid) for pid in pids[1:]]
                if share:
                    groups = await cap_media_processes(server, http, share)
                await trio.sleep(ARGS.settle)

                async def read_packets() -> tuple[int, int | None, list[dict[str, Any]]]:
                    forwarding = (await server.forwarding(http, [room_id]))[0]
                    metrics = await read_metrics(http)
                    return int(forwarding["packets_in"]), int(metrics[FORWARDED]), [forwarding]

                async def during() -> dict[str, Any]:
                    extra: dict[str, Any] = {"machine": machine_ticks()}
                    extra["delay"] = Histogram.from_metrics(await read_metrics(http), DELAY_METRIC)
                    extra["worker_delay"] = [
                        await delay_at(http, url) if url is not None else None for url in worker_urls
                    ]
                    return extra

                start = await read_point(gate, pids, procs, read_packets, during=during)
                throttled = throttled_seconds(groups)
                drops = udp_drops(pids)
                await trio.sleep(ARGS.seconds)
                end = await read_point(gate, pids, procs, read_packets, during=during)
                throttled = throttled_seconds(groups) - throttled
                drops = udp_drops(pids) - drops
                stats = await get_json(http, "/stats")
                await quit_viewers(procs, 15)
    finally:
        for child in procs:
            await child.stop()
        await server.child.stop()
        remove_cgroups(groups)

    summary = summarize_window(start, end, 1, viewers)
    busy = end.extra["machine"][0] - start.extra["machine"][0]
    total = end.extra["machine"][1] - start.extra["machine"][1]
    result: dict[str, Any] = summary | {
        "workers": workers,
        "limit": limit,
        "viewer_procs": len(procs),
        "udp_drops": drops,
        "throttled_seconds": throttled,
        "cap_cores": share * workers if share else None,
        "machine_cores": (os.cpu_count() or 1) * busy / max(1, total),
        "delay": quantiles(end.extra["delay"].since(start.extra["delay"])),
    }
    if workers == 1:
        result["split"] = [int(stats["total_viewers"])]
        result["origin"] = 0
    else:
        per_worker = sorted(stats["workers"], key=lambda w: w["index"])
        result["split"] = [int((w["stats"] or {}).get("total_viewers", -1)) for w in per_worker]
        origins = [w["index"] for w in per_worker if room_id in w["rooms"]]
        result["origin"] = origins[0] if origins else None
        result["worker_delay"] = [
            quantiles(b.since(a)) if a is not None and b is not None else None
            for a, b in zip(start.extra["worker_delay"], end.extra["worker_delay"], strict=True)
        ]
    return result


def split_ok(result: dict[str, Any]) -> bool:
    if result["workers"] == 1:
        return bool(result["split"] == [result["viewers"]])
    wanted = sorted([result["limit"], result["viewers"] - result["limit"]])
    return bool(sorted(result["split"]) == wanted)


def judge(result: dict[str, Any]) -> tuple[bool, str]:
    if not split_ok(result):
        return False, "NOT SPLIT"
    if not whole(result) or result["delivery_in_pct"] < 99.9:
        return False, "LOSING"
    return True, "whole"


def delay_text(d: dict[str, Any] | None) -> str:
    if d is None:
        return "-"
    return f"{d['p50_ms']:g}/{d['p99_ms']:g}/{d['p999_ms']:g}"


def edge_path_p99(result: dict[str, Any]) -> float | None:
    """The origin's p99 plus the edge's (bucket bounds): an over-estimate of the edge viewers'."""
    delays = result.get("worker_delay")
    origin = result.get("origin")
    if not delays or origin is None or any(d is None for d in delays):
        return None
    edges = [d["p99_ms"] for i, d in enumerate(delays) if i != origin]
    return float(delays[origin]["p99_ms"] + max(edges)) if edges else None


def print_rung(r: dict[str, Any], verdict: str, elapsed: float) -> None:
    cap = f"{r['cap_cores']:.2f}" if r["cap_cores"] else "-"
    line = (
        f"  workers {r['workers']}  viewers {r['viewers']:>3}  split {'+'.join(map(str, r['split'])):>7}"
        f"  delivery {r['delivery_pct']:7.3f} %  end-to-end {r['delivery_in_pct']:7.3f} %"
        f"  gaps {r['gaps']:>5}  kernel drops {r['udp_drops']:>5}"
        f"  server {r['server_cores']:.3f} of {cap} cores, throttled {r['throttled_seconds']:5.2f} s"
        f"  clients {r['viewer_procs_cores']:.2f} + {r['bench_cores']:.2f}  machine {r['machine_cores']:.2f}"
        f"  delay p50/p99/p99.9 {delay_text(r['delay'])} ms"
    )
    if r["workers"] > 1:
        per = ", ".join(f"w{i} {delay_text(d)}" for i, d in enumerate(r.get("worker_delay") or []))
        line += f" ({per}; origin w{r['origin']})"
    print(f"{line}  {verdict}  [{elapsed:.0f} s]", flush=True)


def run_rung(viewers: int, workers: int, share: float) -> tuple[dict[str, Any] | None, bool]:
    began = time.monotonic()
    try:
        result = trio.run(rung, viewers, workers, share)
    except Exception as error:  # a rung that cannot even be set up (e.g. viewers not ready) is not whole
        print(f"  workers {workers}  viewers {viewers:>3}  FAILED: {error!r}", flush=True)
        return None, False
    ok, verdict = judge(result)
    result["whole"], result["verdict"] = ok, verdict
    print_rung(result, verdict, time.monotonic() - began)
    return result, ok


def ladder(workers: int, rungs: list[int], results: list[dict[str, Any]], deadline: float) -> int | None:
    """The most viewers still whole (None: not even the first rung), climbing until one is not."""
    capacity = None
    for viewers in rungs:
        if time.monotonic() > deadline:
            print(f"  (time budget spent: workers {workers} stopped before {viewers} viewers)", flush=True)
            break
        result, ok = run_rung(viewers, workers, ARGS.core_share)
        if result is not None:
            results.append(result)
        if not ok:
            break
        capacity = viewers
    return capacity


def markdown(results: list[dict[str, Any]]) -> str:
    header = (
        "| workers | viewers | split | delivery | end to end | gaps | kernel drops | server cores (cap) | throttled s"
        " | clients (viewers + host) | machine | delay p50 / p99 / p99.9 ms | per worker p99 ms | |"
    )
    lines = [header, "|" + "---|" * 14]
    for r in results:
        per = "-"
        if r["workers"] > 1 and r.get("worker_delay"):
            per = ", ".join(
                f"w{i}{' (origin)' if i == r['origin'] else ''} {d['p99_ms']:g}" if d else f"w{i} -"
                for i, d in enumerate(r["worker_delay"])
            )
        cap = f"{r['cap_cores']:.2f}" if r["cap_cores"] else "-"
        verdict = "whole" if r["whole"] else f"**{r['verdict'].lower()}**"
        lines.append(
            f"| {r['workers']} | {r['viewers']} | {'+'.join(map(str, r['split']))} | {r['delivery_pct']:.3f} %"
            f" | {r['delivery_in_pct']:.3f} % | {r['gaps']} | {r['udp_drops']} | {r['server_cores']:.3f} ({cap})"
            f" | {r['throttled_seconds']:.2f} | {r['viewer_procs_cores']:.2f} + {r['bench_cores']:.2f}"
            f" | {r['machine_cores']:.2f} | {delay_text(r['delay']).replace('/', ' / ')} | {per} | {verdict} |"
        )
    return "\n".join(lines)


def compare_delays(results: list[dict[str, Any]]) -> list[tuple[str, ...]]:
    """At each viewer count both ladders ran whole: the p99s side by side."""
    one = {r["viewers"]: r for r in results if r["workers"] == 1 and r["whole"]}
    two = {r["viewers"]: r for r in results if r["workers"] == 2 and r["whole"]}
    rows: list[tuple[str, ...]] = []
    for viewers in sorted(set(one) & set(two)):
        a, b = one[viewers]["delay"]["p99_ms"], two[viewers]["delay"]["p99_ms"]
        bound = edge_path_p99(two[viewers])
        rows.append(
            (
                str(viewers),
                f"{a:g}",
                f"{b:g}",
                f"{b - a:+g}",
                f"{bound:g}" if bound is not None else "-",
                f"{bound - a:+g}" if bound is not None else "-",
                "MET" if b - a <= DELAY_BUDGET_MS else "MISSED",
            )
        )
    return rows


def main() -> None:
    ARGS.server_root = use_server_root(ARGS.server_root)
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    began = time.monotonic()
    deadline = began + 60 * ARGS.budget_minutes
    print(f"server: {describe_root(ARGS.server_root)}", flush=True)
    print(
        f"one room, one host; each media worker capped at {ARGS.core_share:g} of a core; lean raw viewers;"
        f" {ARGS.seconds:g} s windows",
        flush=True,
    )
    results: list[dict[str, Any]] = []
    one_rungs = sorted({int(v) for v in ARGS.one.split(",")})
    one = ladder(1, one_rungs, results, deadline)
    two_rungs = {int(v) for v in ARGS.two.split(",")}
    if ARGS.compare:  # the same viewer counts as one worker's first rung and its capacity
        two_rungs |= {v for v in (one_rungs[0], one) if v is not None}
    two = ladder(2, sorted(two_rungs), results, deadline)
    uncapped: list[dict[str, Any]] = []
    if ARGS.uncapped_at:  # the relay's own delay, without the cap's throttling in it
        print(f"not capped, {ARGS.uncapped_at} viewers (the delay without the cap's throttling):", flush=True)
        for workers in (1, 2):
            result, _ok = run_rung(ARGS.uncapped_at, workers, 0.0)
            if result is not None:
                uncapped.append(result)
    if ARGS.json is not None:
        ARGS.json.write_text(json.dumps(results + uncapped, indent=1))
    print("\n" + markdown(results + uncapped))
    print(f"\ncapacity (most viewers of the room still whole): one worker {one}, two workers {two}")
    if one and two:
        ratio = two / one
        verdict = "MET" if ratio >= RATIO_WANTED else "MISSED"
        print(f"ratio {ratio:.2f}x against {RATIO_WANTED}x wanted: {verdict}")
    else:
        print(f"ratio: not measured (a ladder had no whole rung): MISSED against {RATIO_WANTED}x")
    for workers, capacity, rungs in ((1, one, one_rungs), (2, two, sorted(two_rungs))):
        if capacity is not None and capacity == rungs[-1]:
            print(f"  (workers {workers}: the last rung was still whole: its capacity is at least {capacity})")
    print_delays(compare_delays(results), "each worker capped")
    print_delays(compare_delays(uncapped), "not capped")
    print(f"\n{(time.monotonic() - began) / 60:.1f} minutes")


def print_delays(rows: list[tuple[str, ...]], how: str) -> None:
    if rows:
        print(f"\nforwarding delay p99 ({how}; server-measured, bucket upper bounds, ms) at the same viewer count:")
        header = (
            "viewers",
            "1 worker",
            "2 workers (sum)",
            "added",
            "origin + edge",
            "added",
            f"<= {DELAY_BUDGET_MS:g}",
        )
        print("\n".join("  " + line for line in table(rows, header=header).splitlines()))
    else:
        print(f"\nforwarding delay ({how}): no viewer count whole with both 1 and 2 workers: not compared")


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--core-share", type=float, default=0.15, help="each media process's share of a core")
    parser.add_argument("--seconds", type=float, default=15.0, help="measured window per rung")
    parser.add_argument("--settle", type=float, default=2.0, help="seconds between capping and the window")
    parser.add_argument("--one", default="30,36,40,44,48,52,56,60,64,68", help="viewer counts for one worker")
    parser.add_argument(
        "--two", default="72,80,88,96,100,104,108,112,116,120,128", help="viewer counts for two workers"
    )
    parser.add_argument(
        "--compare",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also run two workers at one worker's first rung and its capacity (the delays compared)",
    )
    parser.add_argument(
        "--uncapped-at", type=int, default=30, help="then 1 and 2 workers not capped at this many viewers (0: not)"
    )
    parser.add_argument("--viewers-per-proc", type=int, default=25, help="raw viewers per viewers.py process")
    parser.add_argument("--max-viewer-procs", type=int, default=4)
    parser.add_argument("--budget-minutes", type=float, default=25.0, help="no new rung after this")
    parser.add_argument("--json", type=Path, help="also write every rung's result here")
    parser.add_argument("--server-root", type=Path, default=Path(__file__).resolve().parent.parent)
    return parser.parse_args(argv)


ARGS = parse_args(sys.argv[1:]) if __name__ == "__main__" else parse_args([])

if __name__ == "__main__":
    main()
