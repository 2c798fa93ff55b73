"""Capacity to saturation, each media process capped at the same share of a core (not a test).

Two comparisons, each a ladder of load per server until a rung loses media:

- ``--compare servers`` (the default, issue 21): **this server against Janus 1.1's VideoRoom**
  (Debian's ``janus``) **and mediasoup 3.22** (where built: ``bench/mediasoup.py``), each capped
  at ``--core-share`` Q of a core (mediasoup's worker capped, its node process counted), on
  two workloads: small rooms (R rooms x 2 viewers) and one big room (1 room x N viewers).
- ``--compare workers``: one media worker against two (``[cluster] workers``), small rooms.

Each rung is one ``rooms.py --only SERVER`` run: the same pre-encoded VP8 640x360 ~1.4 Mbit/s
+ Opus hosts (aiortc in the bench process, ~200 packets/s each), aiortc viewers in processes of
their own (RTP counted, never decoded; ``--viewers-per-proc`` each), the cap set (a cgroup per
media process: ``rooms.py``'s ``cap_groups``) once every viewer had its first keyframe, then a
``--seconds`` window read at both ends with the hosts paused. A rung is **whole** when

- end-to-end delivery >= 99.9 %: what the viewers received / (host packets in x viewers), the
  one measure that reads the same for every server (Janus and mediasoup do not report what they
  forwarded), and for this server also of what it says it forwarded;
- the viewers saw almost no sequence gaps (<= 0.1 % of what they received);
- the kernel dropped almost nothing on the server's UDP sockets (<= 0.1 % of the packets in,
  ``/proc/net/udp``'s ``drops``): a capped server that falls behind loses packets in its
  socket's receive buffer before any counter of its own sees them.

The capacity is the most load still whole (the ladder stops at the first rung that is not).
Each rung prints the server's cores against its cap, the throttled time, and the clients' CPU
(viewer processes + the bench process with its hosts) and the machine's 2 cores, so that it
shows the clients were not the bottleneck.

    unshare -n sh -c 'ip link set lo up && .venv/bin/python bench/capacity.py'

(as root: the cgroups are the host's; ``unshare -rn`` cannot write them).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

import janus  # noqa: E402
import mediasoup  # noqa: E402

SERVERS = {"ours": "this server", "janus": "Janus 1.1 VideoRoom", "mediasoup": "mediasoup 3.22"}


def run(server: str, rooms: int, viewers: int, workers: int, args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as scratch:
        out = Path(scratch) / "result.json"
        argv = [sys.executable, str(BENCH / "rooms.py"), "--only", server, "--rooms", str(rooms)]
        argv += ["--viewers", str(viewers), "--workers", str(workers), "--seconds", str(args.seconds)]
        argv += ["--core-share", str(args.core_share), "--viewers-per-proc", str(args.viewers_per_proc)]
        argv += ["--no-delay-window", "--json", str(out), "--server-root", str(args.server_root)]
        subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
        return dict(json.loads(out.read_text()))


def whole(result: dict[str, Any]) -> bool:
    return bool(
        result["delivery_in_pct"] >= 99.9
        and result["delivery_pct"] >= 99.9  # ours: of what it forwarded (Janus, mediasoup: 100 by definition)
        and result["gaps"] <= 0.001 * max(1, result["received"])
        and result["udp_drops"] <= 0.001 * max(1, result["packets_in"])
    )


def ladder(server: str, shape: str, rungs: list[int], args: argparse.Namespace, workers: int = 1) -> int:
    """The most rooms (``shape`` "rooms": R x 2) or viewers (``"viewers"``: 1 x N) still whole."""
    capacity = 0
    for rung in rungs:
        rooms, viewers = (rung, 2) if shape == "rooms" else (1, rung)
        try:
            result = run(server, rooms, viewers, workers, args)
        except subprocess.CalledProcessError as error:
            print(f"  {server:>9}  {rooms} x {viewers}: the run failed ({error}); the ladder stops", flush=True)
            break
        ok = whole(result)
        print(
            f"  {server:>9}  {rooms:>3} x {viewers:<3}  delivery {result['delivery_in_pct']:7.3f} %"
            f"  gaps {result['gaps']:>5}  kernel drops {result['udp_drops']:>5}"
            f"  server cores {result['server_cores']:.3f} (cap {args.core_share * workers:g})"
            f"  throttled {result['throttled_seconds']:5.2f} s  clients {result['viewer_procs_cores']:.2f}"
            f" + {result['bench_cores']:.2f} cores  {'whole' if ok else 'LOSING'}",
            flush=True,
        )
        if not ok:
            break
        capacity = rung
    return capacity


def rungs(text: str) -> list[int]:
    return [int(r) for r in text.split(",")]


def compare_servers(args: argparse.Namespace) -> None:
    servers = ["ours"]
    if janus.available():
        servers.append("janus")
    else:
        print(f"Janus: not measured ({janus.JANUS} not found)")
    if mediasoup.available(args.mediasoup_dir):
        servers.append("mediasoup")
    else:
        print(f"mediasoup: not measured (not built in {args.mediasoup_dir})")
    found: dict[tuple[str, str], int] = {}
    for shape, ladder_text in (("rooms", args.small), ("viewers", args.big)):
        print(f"\n{'small rooms (R x 2 viewers)' if shape == 'rooms' else 'one big room (1 x N viewers)'}:")
        for server in servers:
            found[(shape, server)] = ladder(server, shape, rungs(ladder_text), args)
    print(f"\ncapacity at {args.core_share:g} of a core per media process:")
    for shape, unit in (("rooms", "rooms x 2"), ("viewers", "viewers in 1 room")):
        ours = found[(shape, "ours")]
        line = [f"  {unit:>17}: this server {ours}"]
        for server in servers[1:]:
            theirs = found[(shape, server)]
            line.append(f"{SERVERS[server]} {theirs} ({ours / max(1, theirs):.2f}x)")
        print(", ".join(line))


def compare_workers(args: argparse.Namespace) -> None:
    one = ladder("ours", "rooms", rungs(args.one), args, workers=1)
    two = ladder("ours", "rooms", rungs(args.two), args, workers=2)
    print(f"\ncapacity: one worker {one} rooms, two workers {two} rooms: {two / max(1, one):.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--compare", choices=["servers", "workers"], default="servers")
    parser.add_argument("--core-share", type=float, default=0.1, help="each media process's share of a core")
    parser.add_argument("--seconds", type=float, default=15.0, help="measured window per rung")
    parser.add_argument("--small", default="3,4,5,6,7,8,9,10,11,12", help="servers: room counts (x 2 viewers)")
    parser.add_argument("--big", default="10,15,20,25,30,35,40,45", help="servers: viewers of the one room")
    parser.add_argument("--viewers-per-proc", type=int, default=8, help="aiortc viewers per process")
    parser.add_argument("--one", default="5,6,7,8,9,10,11", help="workers: room counts for one worker")
    parser.add_argument("--two", default="10,12,13,14,15,16,17,18,19,20,22", help="workers: room counts for two")
    parser.add_argument("--server-root", type=Path, default=BENCH.parent, help="the checkout whose app.py is measured")
    parser.add_argument("--mediasoup-dir", type=Path, default=mediasoup.DEFAULT_DIR, help="mediasoup's build folder")
    args = parser.parse_args()
    print(f"each media process capped at {args.core_share:g} of a core; {args.seconds:g} s windows")
    if args.compare == "servers":
        compare_servers(args)
    else:
        compare_workers(args)


if __name__ == "__main__":
    main()
