"""Simulcast benchmark (issue 20): what a simulcast room costs per forwarded packet against a
room of one layer, in one run (not a test).

Run it inside a private network namespace (only loopback exists):

    unshare -rn sh -c 'ip link set lo up && .venv/bin/python bench/simulcast.py'

The target: a room of 1 simulcast host and 100 viewers split across the three layers costs at
most 1.1x per forwarded packet what a one-layer room of 100 costs, with the estimator running
for every viewer. In one run, one server (``app.py`` in its own process), rooms one after the
other, alternating (``--rounds``, the order reversed every other round):

- **simulcast**: a host of raw parts (``raw_host.py``: ``tests/raw_peer.py``'s peer, a VP8
  packetizer, libwebrtc-like pacing, sender reports, PLIs answered per layer) sending three
  pre-encoded layers (``make_media.py --simulcast``: 320x180 ~150 kbit/s, 640x360 ~500 kbit/s,
  1280x720 ~1.5 Mbit/s, 30 fps, keyframes every 2 s at the same frames) + Opus, with a
  simulcast offer (rids q, h, f);
- **high** / **medium**: the same host sending one of those files alone (the 1280x720 one: what
  the same camera sends with simulcast off; the 640x360 one: about the average bitrate a viewer
  of the simulcast room gets), with no simulcast in its offer.

Every room has ``--viewers`` (100) aiortc viewers in ``--viewer-procs`` (2) processes
(``viewers.py``: RTP counted at the DTLS transport, nothing decoded) that ask for
``low``, ``medium``, ``high`` in turn (``set_quality``, dealt out by index: 34/33/33) and send,
once a second each, a compound RR + REMB as a browser does (REMB 0.4, 1.2, 4 Mbit/s by the
quality asked for: enough for that layer), so that the server's estimator works on real input
for every viewer (in the one-layer rooms too, where the qualities change nothing). Before the
window the room settles: every viewer on the layer it asked for, no padding (the estimator's
probes) for 2 s. The window (``--seconds``) is read at both ends with the host paused
(``harness.read_point``): the server's CPU (schedstat) over the packets it forwarded (its
counters), delivery and gaps seen by the viewers, the clients' CPU and the whole machine's, the
layers' viewers (``GET /room/{id}/stats``) and ``bitbasel_layer_viewers`` (``GET /metrics``),
the viewers' estimates (``GET /room/{id}/peers``), layer switches, padding and keyframe
requests in the window. The floor (``floor.py``) is measured before and after, for scale.

Prints a table per room, the ratios simulcast / one layer per round and their median, a
MET/MISSED line against 1.1x, and writes ``bench/out/simulcast.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import httpx
import trio
from floor import measure_floor
from harness import (
    Child,
    Gate,
    Point,
    Server,
    add_server_arguments,
    add_viewer_arguments,
    create_room,
    describe_root,
    get_json,
    machine_ticks,
    proc_runtime_ns,
    quit_viewers,
    read_metrics,
    read_point,
    run_bench,
    server_packets,
    server_toml,
    start_server,
    start_viewer_procs,
    summarize_window,
    table,
    udp_drops,
    use_server_root,
    wait_ready,
)
from make_media import OUT_DIR, SIMULCAST_LAYERS, EncodedStream, load_simulcast_media
from raw_host import RawHost, open_raw_host

TARGET_RATIO = 1.1
TARGET_DELIVERY = 99.9  # % of the packets forwarded that the viewers got: below, the clients are the bottleneck
MODES = ("simulcast", "high", "medium")
QUALITIES = ("low", "medium", "high")  # dealt out to the viewers by index
REMB_KBPS = {"low": 400, "medium": 1200, "high": 4000}  # each viewer's REMB, by the quality it asks for
SETTLED_SECONDS = 2.0  # no padding and every viewer on its layer for this long: settled
IDLE_SECONDS = 1.5  # the server's cost with the host paused (under the router's FLOWING_SECONDS, 2)
OTHER_WORK = r"chromium|firefox|\.ci/run|pytest"  # what shares this machine and disturbs a window
QUIET_WAIT_SECONDS = 900.0
JSON_PATH = OUT_DIR / "simulcast.json"


@dataclass
class RoomResult:
    """One room's window."""

    mode: str
    round: int
    window: dict[str, Any]  # harness.summarize_window
    #: the server's CPU with every viewer connected and the host paused (the viewers' RTCP,
    #: sender reports, the router's tick and allocation, consent checks), % of one core
    idle_server_pct: float
    #: (the window's CPU - that idle cost) / packets forwarded: the cost of the packets alone
    marginal_us_per_forwarded_packet: float
    disturbed: bool  # other work (browsers, a CI run, tests) ran at an end of the window
    machine_busy_pct: float
    settled: bool
    settle_seconds: float
    layer_viewers: dict[str, int]  # room stats at the window's end, by layer name
    metric_layer_viewers: dict[str, float]  # bitbasel_layer_viewers at the window's end
    video_layers: dict[str, int]  # GET /room/{id}/peers: the viewers' video_layer
    estimates_kbps: dict[str, list[int]]  # by the quality asked for: min, median, max
    in_window: dict[str, Any] = field(default_factory=dict)  # switches, padding, keyframes, drops
    host: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------------------
# One room
# ---------------------------------------------------------------------------


def host_videos(mode: str, videos: Sequence[EncodedStream]) -> list[tuple[str, str | None, EncodedStream]]:
    """The host's video: the three layers (simulcast), or the file of one layer alone."""
    layers: list[tuple[str, str | None, EncodedStream]] = [
        (layer.name, layer.rid, video) for layer, video in zip(SIMULCAST_LAYERS, videos, strict=True)
    ]
    return layers if mode == "simulcast" else [entry for entry in layers if entry[0] == mode]


def viewer_options(kind: str) -> list[str]:
    remb = ",".join(str(REMB_KBPS[quality]) for quality in QUALITIES)
    return ["--kind", kind, "--quality", ",".join(QUALITIES), "--receiver-reports", "--remb-kbps", remb]


def expected_split(viewers: int) -> dict[str, int]:
    return dict(Counter(QUALITIES[index % len(QUALITIES)] for index in range(viewers)))


async def forwarding(http: httpx.AsyncClient, room_id: str) -> dict[str, Any]:
    stats = await get_json(http, f"/room/{room_id}/stats")
    return dict(stats["forwarding"])


def layer_viewers(forwarding_stats: dict[str, Any]) -> dict[str, int]:
    return {layer["name"]: int(layer["viewers"]) for layer in forwarding_stats["layers"]}


def on_their_layers(mode: str, viewers: int, stats: dict[str, Any]) -> bool:
    """Every viewer is on the layer it asked for (simulcast), or on the one layer."""
    if mode == "simulcast":
        return layer_viewers(stats) == expected_split(viewers)
    return sum(layer_viewers(stats).values()) == viewers


async def settle(http: httpx.AsyncClient, room_id: str, mode: str, viewers: int, within: float) -> tuple[bool, float]:
    """Wait until every viewer is on its layer and no padding was sent for SETTLED_SECONDS
    (the estimator's probes end when the high viewers reach the top layer). (settled, seconds)."""
    started = trio.current_time()
    calm_since: float | None = None
    padding = -1
    while trio.current_time() - started < within:
        stats = await forwarding(http, room_id)
        now = trio.current_time()
        calm = on_their_layers(mode, viewers, stats) and stats["padding_bytes"] == padding
        padding = stats["padding_bytes"]
        calm_since = (calm_since or now) if calm else None
        if calm_since is not None and now - calm_since >= SETTLED_SECONDS:
            return True, now - started
        await trio.sleep(0.5)
    return False, trio.current_time() - started


async def observe(http: httpx.AsyncClient, room_id: str) -> dict[str, Any]:
    """What read_point keeps at each end: the viewers' layers and estimates, the metrics."""
    peers = (await get_json(http, f"/room/{room_id}/peers"))["peers"]
    metrics = await read_metrics(http)
    prefix = "bitbasel_layer_viewers{layer="
    return {
        "peers": [peer for peer in peers if peer["role"] == "viewer"],
        "metric_layer_viewers": {key[len(prefix) + 1 : -2]: v for key, v in metrics.items() if key.startswith(prefix)},
    }


def estimates_by_quality(peers: list[dict[str, Any]]) -> dict[str, list[int]]:
    """min, median, max of the viewers' estimates (kbit/s), by the quality each asked for
    (viewer I is user viewerI, which asked for QUALITIES[I mod 3])."""
    by_quality: dict[str, list[int]] = {quality: [] for quality in QUALITIES}
    for peer in peers:
        index = int(str(peer["user_id"]).removeprefix("viewer"))
        if peer.get("estimate_bps") is not None:
            by_quality[QUALITIES[index % len(QUALITIES)]].append(int(peer["estimate_bps"]) // 1000)
    return {
        quality: [min(values), int(statistics.median(values)), max(values)] if values else []
        for quality, values in by_quality.items()
    }


def counted_in_window(start: Point, end: Point) -> dict[str, Any]:
    """Layer switches, padding, keyframe requests and drops between the two ends."""
    f0, f1 = start.forwarding[0], end.forwarding[0]

    def delta(key: str) -> dict[str, int]:
        return {k: v - f0[key].get(k, 0) for k, v in f1[key].items() if v != f0[key].get(k, 0)}

    return {
        "layer_switches": delta("layer_switches"),
        "keyframe_requests": delta("keyframe_requests"),
        "drops": delta("drops"),
        "padding_bytes": f1["padding_bytes"] - f0["padding_bytes"],
        "retransmissions": f1["retransmissions"] - f0["retransmissions"],
        "sender_reports_sent": f1["sender_reports_sent"] - f0["sender_reports_sent"],
    }


def host_summary(host: RawHost, window_requests: dict[str, int]) -> dict[str, Any]:
    counters = host.counters
    return {
        "layers": {layer.name: round(layer.file.bitrate / 1000) for layer in host.layers},
        "pacing_kbps": round(host.pacing_bps / 1000),
        "keyframe_requests_in_window": window_requests,
        "nacked": counters.nacked,
        "last_remb_kbps": counters.remb_bps // 1000,
    }


def other_work() -> list[str]:
    """Other work on this machine that would disturb a measurement (``OTHER_WORK``)."""
    found = subprocess.run(["pgrep", "-fa", OTHER_WORK], capture_output=True, text=True, check=False).stdout
    return [line for line in found.splitlines() if line.strip()]


async def wait_for_quiet(within: float = QUIET_WAIT_SECONDS) -> bool:
    """Wait (bounded) until no other work runs (before a room starts); True if it still does."""
    deadline = trio.current_time() + within
    while other_work():
        if trio.current_time() >= deadline:
            print("  other work still running: this window is marked disturbed", flush=True)
            return True
        print(f"  waiting for other work to end: {other_work()[0][:100]}", flush=True)
        await trio.sleep(15)
    return False


async def idle_server_cores(gate: Gate, server_pid: int) -> float:
    """The server's CPU (cores) over IDLE_SECONDS with the host paused, everyone connected. Under
    FLOWING_SECONDS of pause in all: the layers still count as flowing, so nobody switches."""
    gate.close()
    try:
        await trio.sleep(0.2)
        ns0, t0 = proc_runtime_ns(server_pid), trio.current_time()
        await trio.sleep(IDLE_SECONDS)
        return (proc_runtime_ns(server_pid) - ns0) / 1e9 / (trio.current_time() - t0)
    finally:
        gate.open()


def marginal_cost(window: dict[str, Any], idle_cores: float) -> float:
    """us per forwarded packet of the window's CPU over the idle cost."""
    seconds = float(window["seconds"])
    cpu_seconds = (float(window["server_cores"]) - idle_cores) * seconds
    return 1e6 * cpu_seconds / max(1, int(window["packets_out"]))


async def measure_room(
    args: argparse.Namespace,
    server: Server,
    http: httpx.AsyncClient,
    mode: str,
    round_index: int,
    media: tuple[list[EncodedStream], EncodedStream],
) -> RoomResult:
    """One room: its host, its viewers, settled, one window; everyone gone at the end."""
    videos, audio = media
    quiet = not await wait_for_quiet()
    room_id = await create_room(http, f"{mode}-{round_index}")
    gate = Gate()
    viewers: list[Child] = []
    async with open_raw_host(server.ws_url, room_id, host_videos(mode, videos), audio, gate) as host:
        try:
            labels = [f"simulcast-viewers{p}" for p in range(max(1, min(args.viewer_procs, args.viewers)))]
            options = viewer_options(args.viewer_kind)
            url, stagger = server.ws_url, args.stagger
            viewers = start_viewer_procs(labels, url, room_id, args.viewers, stagger=stagger, options=options)
            await wait_ready(viewers, within=args.join_timeout)
            settled, settle_seconds = await settle(http, room_id, mode, args.viewers, args.settle_timeout)
            print(
                f"  {mode} round {round_index + 1}: {args.viewers} viewers ready, "
                f"{'settled' if settled else 'NOT settled'} after {settle_seconds:.1f} s",
                flush=True,
            )
            read_packets = server_packets(server, http, [room_id])

            async def during() -> dict[str, Any]:
                return await observe(http, room_id)

            pids = [child.pid for child in viewers]
            requests_before = dict(host.counters.keyframe_requests)
            drops_before = udp_drops(pids)
            disturbed = not quiet or bool(other_work())
            start = await read_point(gate, [server.pid], viewers, read_packets, during=during)
            busy0, total0 = machine_ticks()
            await trio.sleep(args.seconds)
            busy1, total1 = machine_ticks()
            end = await read_point(gate, [server.pid], viewers, read_packets, during=during)
            disturbed = disturbed or bool(other_work())
            client_drops = udp_drops(pids) - drops_before
            requests = {k: v - requests_before.get(k, 0) for k, v in host.counters.keyframe_requests.items()}
            idle_cores = await idle_server_cores(gate, server.pid)
        finally:
            await quit_viewers(viewers)
            for child in reversed(viewers):
                await child.stop()
    with trio.move_on_after(10):
        await http.post(f"/room/{room_id}/stop")
    in_window = counted_in_window(start, end)
    in_window["viewer_socket_drops"] = client_drops
    window = summarize_window(start, end, 1, args.viewers)
    return RoomResult(
        mode=mode,
        round=round_index + 1,
        window=window,
        idle_server_pct=100 * idle_cores,
        marginal_us_per_forwarded_packet=marginal_cost(window, idle_cores),
        disturbed=disturbed,
        machine_busy_pct=100 * (busy1 - busy0) / max(1, total1 - total0),
        settled=settled,
        settle_seconds=settle_seconds,
        layer_viewers=layer_viewers(end.forwarding[0]),
        metric_layer_viewers=end.extra["metric_layer_viewers"],
        video_layers=dict(Counter(str(peer.get("video_layer")) for peer in end.extra["peers"])),
        estimates_kbps=estimates_by_quality(end.extra["peers"]),
        in_window=in_window,
        host=host_summary(host, requests),
    )


# ---------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------


def room_order(modes: Sequence[str], round_index: int) -> list[str]:
    """The rooms of a round: in the given order, reversed every other round."""
    return list(modes) if round_index % 2 == 0 else list(reversed(modes))


async def bench(args: argparse.Namespace) -> list[RoomResult]:
    media = load_simulcast_media()
    toml = server_toml(
        max_rooms=10 + 3 * args.rounds,
        max_viewers_per_room=args.viewers + 10,
        max_connections=max(1000, args.viewers * 4),
        max_messages_per_second=1000,
    )
    server = await start_server("simulcast", toml, root=args.server_root)
    results: list[RoomResult] = []
    try:
        print(f"server pid {server.pid} at {server.base_url}", flush=True)
        async with server.http(timeout=15) as http:
            for round_index in range(args.rounds):
                for mode in room_order(args.modes, round_index):
                    results.append(await measure_room(args, server, http, mode, round_index, media))
                    print(room_line(results[-1]), flush=True)
    finally:
        await server.child.stop()
    return results


# ---------------------------------------------------------------------------
# Tables
# ---------------------------------------------------------------------------


def room_line(r: RoomResult) -> str:
    w = r.window
    return (
        f"  -> {w['us_per_forwarded_packet']:.2f} us per forwarded packet, "
        f"{w['packets_out'] / w['seconds']:,.0f} pkt/s out, server {100 * w['server_cores']:.1f} % of a core, "
        f"delivery {w['delivery_pct']:.3f} %"
    )


def _window_counts(r: RoomResult) -> str:
    w = r.in_window
    requests = sum(r.host["keyframe_requests_in_window"].values())
    switches = sum(w["layer_switches"].values())
    return f"{switches}, {w['padding_bytes']:,}, {requests}, {w['retransmissions']}, {w['viewer_socket_drops']}"


def _per_second(r: RoomResult, key: str) -> str:
    return f"{r.window[key] / r.window['seconds']:,.0f}"


Column = tuple[str, Callable[[RoomResult], str]]

#: The rooms' costs.
COST_COLUMNS: tuple[Column, ...] = (
    ("room", lambda r: r.mode),
    ("round", lambda r: str(r.round)),
    ("us/fwd pkt", lambda r: f"{r.window['us_per_forwarded_packet']:.2f}"),
    ("marginal us/fwd pkt", lambda r: f"{r.marginal_us_per_forwarded_packet:.2f}"),
    ("idle server %", lambda r: f"{r.idle_server_pct:.1f}"),
    ("us/host pkt", lambda r: f"{r.window['us_per_host_packet']:.1f}"),
    ("in pkt/s", lambda r: _per_second(r, "packets_in")),
    ("out pkt/s", lambda r: _per_second(r, "packets_out")),
    ("server %", lambda r: f"{100 * r.window['server_cores']:.1f}"),
    ("delivery %", lambda r: f"{r.window['delivery_pct']:.3f}"),
    ("gaps", lambda r: f"{r.window['gaps']:,}"),
    ("viewer procs %", lambda r: f"{100 * r.window['viewer_procs_cores']:.0f}"),
    ("bench+host %", lambda r: f"{100 * r.window['bench_cores']:.1f}"),
    ("machine %", lambda r: f"{r.machine_busy_pct:.0f}{' DISTURBED' if r.disturbed else ''}"),
    ("layers: viewers", lambda r: " ".join(f"{name}={count}" for name, count in r.layer_viewers.items())),
)

#: What shows that the split happened and that the estimator ran.
CHECK_COLUMNS: tuple[Column, ...] = (
    ("room", lambda r: r.mode),
    ("round", lambda r: str(r.round)),
    ("settled (s)", lambda r: f"{'yes' if r.settled else 'NO'} ({r.settle_seconds:.0f})"),
    ("metrics layer viewers", lambda r: " ".join(f"{k}={v:.0f}" for k, v in r.metric_layer_viewers.items() if v)),
    ("peers video_layer", lambda r: " ".join(f"{k}={v}" for k, v in sorted(r.video_layers.items()))),
    (
        "estimates kbit/s by quality asked (min/med/max)",
        lambda r: " ".join(f"{q}={'/'.join(map(str, e))}" for q, e in r.estimates_kbps.items() if e),
    ),
    ("in window: switches, padding B, PLIs to host, retransmits, socket drops", _window_counts),
)


def rooms_table(results: Sequence[RoomResult], columns: Sequence[Column]) -> str:
    rows = [[cell(r) for _, cell in columns] for r in results]
    return table(rows, header=[name for name, _ in columns], rule=True)


def problems(r: RoomResult) -> list[str]:
    """Why a room's window does not measure the server alone (empty: it does)."""
    found = []
    if r.disturbed:
        found.append("other work ran")
    if not r.settled:
        found.append("not settled")
    if r.window["delivery_pct"] < TARGET_DELIVERY or r.in_window["viewer_socket_drops"]:
        found.append("clients saturated (packets dropped at their sockets)")
    return found


def ratios(results: Sequence[RoomResult], baseline: str, cost: Callable[[RoomResult], float]) -> list[float]:
    """Per round where both rooms measured the server alone: simulcast's cost per forwarded
    packet / the one-layer room's."""
    by_round: dict[int, dict[str, RoomResult]] = {}
    for r in results:
        if not problems(r):
            by_round.setdefault(r.round, {})[r.mode] = r
    pairs = [rooms for rooms in by_round.values() if {"simulcast", baseline} <= set(rooms)]
    return [cost(rooms["simulcast"]) / cost(rooms[baseline]) for rooms in pairs]


def measured(r: RoomResult) -> float:
    return float(r.window["us_per_forwarded_packet"])


def marginal(r: RoomResult) -> float:
    return r.marginal_us_per_forwarded_packet


def verdict_lines(results: Sequence[RoomResult], modes: Sequence[str]) -> list[str]:
    lines = [f"not counted: {r.mode} round {r.round}: {', '.join(problems(r))}" for r in results if problems(r)]
    for baseline in (mode for mode in modes if mode != "simulcast"):
        values = ratios(results, baseline, measured)
        if not values:
            lines.append(f"simulcast / one layer ({baseline}): NOT MEASURED (no round where both rooms are clean)")
            continue
        median = statistics.median(values)
        verdict = "MET" if median <= TARGET_RATIO else "MISSED"
        per_round = ", ".join(f"{v:.3f}" for v in values)
        over_idle = ", ".join(f"{v:.3f}" for v in ratios(results, baseline, marginal))
        lines.append(
            f"simulcast / one layer ({baseline}), us per forwarded packet: {per_round} (median {median:.3f}) -> "
            f"{verdict} (target <= {TARGET_RATIO}x); the packets alone (over the idle cost): {over_idle}"
        )
    return lines


# ---------------------------------------------------------------------------


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_viewer_arguments(parser, viewers=100, procs=2, join_timeout=90.0)
    parser.add_argument("--seconds", type=float, default=20.0, help="length of each room's window")
    parser.add_argument("--rounds", type=int, default=2, help="rooms of each kind, alternating")
    parser.add_argument(
        "--modes",
        type=lambda text: text.split(","),
        default=list(MODES),
        help=f"the rooms of a round (default {','.join(MODES)}; 'high'/'medium': one layer)",
    )
    parser.add_argument(
        "--viewer-kind",
        choices=("aiortc", "raw"),
        default="aiortc",
        help="viewers.py --kind: aiortc peers, or lean peers of raw parts (a fraction of the CPU)",
    )
    parser.add_argument(
        "--settle-timeout", type=float, default=60.0, help="at most this long for the viewers to reach their layers"
    )
    add_server_arguments(parser)
    args = parser.parse_args(argv)
    if unknown := set(args.modes) - set(MODES):
        parser.error(f"unknown --modes {sorted(unknown)}")
    return args


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    args.server_root = use_server_root(args.server_root)
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    load_simulcast_media()
    print(f"server: {describe_root(args.server_root)}", flush=True)
    floor_before = measure_floor()
    rooms = args.rounds * len(args.modes)
    budget = rooms * (args.seconds + args.join_timeout + args.settle_timeout + 60)
    results, code = run_bench(bench, budget, args)
    if results is None:
        return int(code)
    floor_us = 1e6 * min(floor_before + measure_floor())
    print()
    print(f"simulcast (issue 20): {args.viewers} viewers a room, {args.seconds:.0f} s windows, {args.rounds} rounds")
    print(f"floor (SRTP protect + sendto, best of 2x5 rounds of 20k): {floor_us:.2f} us/pkt")
    print(rooms_table(results, COST_COLUMNS))
    print()
    print(rooms_table(results, CHECK_COLUMNS))
    print()
    for line in verdict_lines(results, args.modes):
        print(line)
    payload = {"floor_us": floor_us, "args": {k: str(v) for k, v in vars(args).items()}}
    payload["rooms"] = [asdict(r) for r in results]
    JSON_PATH.write_text(json.dumps(payload, indent=2))
    print(f"\nwrote {JSON_PATH}")
    return 0 if not any(problems(r) for r in results) and not math.isnan(floor_us) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
