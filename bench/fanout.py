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
3. starts ``app.py --port 0`` as a subprocess (loopback, generous limits;
   ``--server-root DIR``: the ``app.py`` of another checkout), creates a room
   over REST;
4. publishes the file from this process with an aiortc host bot whose tracks
   return ``av.Packet``s (aiortc only packetizes them), looped with pts
   rewritten; a PLI makes the video jump to the next keyframe of the file,
   as a live encoder would send one;
5. starts the viewers in their own process(es) (``viewers.py``): real aiortc
   peers (``open_viewer(decode=False)``) whose SRTP-unprotected RTP is counted
   at the DTLS transport, never handed to aiortc's jitter buffer or decoder;
6. once every viewer has had a keyframe, measures a steady window: the
   server's CPU time from ``/proc/PID/stat`` against the room's forwarding
   counters (``GET /room/{id}/stats``) and against what the viewers counted.
   Both ends of the window are taken while the host is paused for a moment,
   so no packet is in flight when the counters are read.

The machinery (processes, server, hosts, viewers, windows) is ``harness.py``'s,
the floor ``floor.py``'s. Prints a table and writes ``bench/out/fanout.json``. ``--profile`` also
samples the server with py-spy during the window (which perturbs the CPU
numbers a little) and prints its top functions.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import statistics
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import trio
from floor import measure_floor, measure_send_paths, shaped_floor
from harness import (
    CLK_TCK,
    OUT_DIR,
    Child,
    Gate,
    Point,
    add_server_arguments,
    add_viewer_arguments,
    create_room,
    describe_root,
    open_hosts,
    proc_runtime_ns,
    quit_viewers,
    read_point,
    run_bench,
    server_packets,
    server_toml,
    start_server,
    start_viewer_procs,
    table,
    use_server_root,
    wait_ready,
)
from make_media import EncodedStream, load_media

from media_server_client.containment import open_contained_loop

TARGET_RATIO = 3.0
TARGET_DELIVERY = 99.9
PROFILE_RATE = 250  # py-spy samples per second
IDLE_SECONDS = 2.0  # after the window: the server's CPU with everyone connected, host paused
JSON_PATH = OUT_DIR / "fanout.json"


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


async def bench(args: argparse.Namespace, floor_rounds: list[float], paths: dict[str, list[float]]) -> Result:
    video, audio = load_media()
    gate = Gate()
    toml = server_toml(
        max_rooms=10,
        max_viewers_per_room=max(100, args.viewers + 10),
        max_connections=max(1000, args.viewers * 2),
        max_messages_per_second=1000,
    )
    server = await start_server("fanout", toml, root=args.server_root, script=args.server_script)
    viewers: list[Child] = []
    try:
        print(f"server pid {server.pid} at {server.base_url}", flush=True)
        async with server.http(timeout=10) as http:
            room_id = await create_room(http, "bench")
            async with (
                open_contained_loop(),
                open_hosts(server.ws_url, [room_id], video, audio, gate, pli=not args.ignore_pli) as (video_track,),
            ):
                print("host connected; starting viewers", flush=True)
                procs = max(1, min(args.viewer_procs, args.viewers))
                labels = [f"fanout-viewers{p}" for p in range(procs)]
                viewers = start_viewer_procs(labels, server.ws_url, room_id, args.viewers, stagger=args.stagger)
                await wait_ready(viewers, within=args.join_timeout)
                print(f"all {args.viewers} viewers connected and got a keyframe", flush=True)
                await trio.sleep(1.0)  # let the joins' keyframes and RTCP settle
                keyframes_before = video_track.keyframes_requested
                read_packets = server_packets(server, http, [room_id])
                start = await read_point(gate, [server.pid], viewers, read_packets)
                print(f"window: {args.seconds:.0f} s", flush=True)
                profile_rows: dict[str, Any] = {}
                if args.profile:
                    async with trio.open_nursery() as nursery:

                        async def profile() -> None:
                            profile_rows.update(await run_profile(server.pid, args.seconds))

                        nursery.start_soon(profile)
                        await trio.sleep(args.seconds)
                else:
                    await trio.sleep(args.seconds)
                end = await read_point(gate, [server.pid], viewers, read_packets)
                keyframes_requested = video_track.keyframes_requested - keyframes_before
                gate.close()  # the host stops sending: the server's idle cost, then everyone leaves
                await trio.sleep(0.2)
                idle_ns0, idle_t0 = proc_runtime_ns(server.pid), trio.current_time()
                await trio.sleep(IDLE_SECONDS)
                idle_pct = 100 * (proc_runtime_ns(server.pid) - idle_ns0) / 1e9 / (trio.current_time() - idle_t0)
                await quit_viewers(viewers)
                gate.open()  # so that the tracks' recv() sees they were stopped
    finally:
        for child in reversed(viewers):
            await child.stop()
        await server.child.stop()
    result = compute(args, video, audio, floor_rounds, paths, start, end, keyframes_requested, profile_rows)
    result.server_idle_cpu_pct = idle_pct
    return result


def compute(
    args: argparse.Namespace,
    video: EncodedStream,
    audio: EncodedStream,
    floor_rounds: list[float],
    paths: dict[str, list[float]],
    start: Point,
    end: Point,
    keyframes_requested: int,
    profile_rows: dict[str, Any],
) -> Result:
    f0, f1 = start.forwarding[0], end.forwarding[0]
    packets_in = end.packets_in - start.packets_in
    packets_out = end.out - start.out
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
    cpu_s = (end.ticks - start.ticks) / CLK_TCK
    cpu_ns_s = (end.ns - start.ns) / 1e9
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


def result_table(r: Result) -> str:
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
    media = r.media
    head = (
        f"fan-out: {r.viewers} viewers, {r.seconds:.1f} s window, VP8 {media['size']} "
        f"{media['video_kbps']} kbit/s + Opus {media['audio_kbps']} kbit/s, pre-encoded"
    )
    return head + "\n" + table(rows, header=("metric", "value"), rule=True)


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


# ---------------------------------------------------------------------------


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_viewer_arguments(parser, viewers=40, procs=1, join_timeout=60.0)
    parser.add_argument("--seconds", type=float, default=20.0, help="length of the measured window")
    parser.add_argument("--profile", action="store_true", help="py-spy the server during the window")
    parser.add_argument(
        "--server-script",
        default="app.py",
        help="what the server process runs, in --server-root (experiments: a script that patches "
        "something, then runs app.py)",
    )
    parser.add_argument(
        "--ignore-pli",
        action="store_true",
        help="the host ignores PLIs (a late viewer waits for the file's next keyframe, every 2 s)",
    )
    add_server_arguments(parser)
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    args.server_root = use_server_root(args.server_root)
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    load_media()
    print(f"server: {describe_root(args.server_root)}", flush=True)
    print("measuring the floor and the server's send path ...", flush=True)
    floor_rounds = measure_floor()
    paths = trio.run(measure_send_paths)
    budget = args.seconds + args.join_timeout + 90
    result, code = run_bench(bench, budget, args, floor_rounds, paths)
    if result is None:
        return code
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
    print(result_table(result))
    if result.profile:
        print()
        cpu_seconds = result.server_cpu_pct * result.seconds / 100
        print(profile_table(result.profile, result.server_us_per_packet, cpu_seconds))
    JSON_PATH.write_text(json.dumps(asdict(result), indent=2))
    print(f"\nwrote {JSON_PATH}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
