"""Rooms one media worker holds against N workers, at the same load per room (not a test).

`[cluster] workers = N` is meant to give N times the rooms on N cores. This 2-core machine
cannot show that with full cores: the bench's own clients (aiortc hosts and viewers) would
need several cores to load even one worker's core. So each media process is capped at the same
share of a core (`bench/rooms.py --core-share`, a cgroup per process: with workers the front
shares worker 0's), which scales the machine down: one worker gets Q of a core, N workers get
Q each, as N cores would give them. For each, `rooms.py` runs a ladder of room counts
(2 viewers each) and the capacity is the most rooms still delivered whole:

- every packet the server forwarded reached its viewer (delivery >= 99.9 %),
- the viewers saw almost no sequence gaps (<= 0.1 % of what they received),
- the kernel dropped almost nothing on the server's UDP sockets (<= 0.1 % of the packets in,
  /proc/net/udp's `drops`): a capped server that falls behind loses packets in its socket's
  receive buffer, before any counter of its own sees them.

(`in/room/s` is printed, not judged: the window includes the hosts' pauses while the counters
are read, which take longer from a throttled server; with 6 s windows that pause was up to 15 %
of the window and made a busy rung look like lost input, hence 20 s windows.)

    unshare -n sh -c 'ip link set lo up && .venv/bin/python bench/capacity.py'

(as root: the cgroups are the host's; `unshare -rn` cannot write them). Prints each rung and
the ratio of the capacities, and the clients' CPU so it shows they were not the bottleneck.
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


def run(rooms: int, workers: int, args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as scratch:
        out = Path(scratch) / "result.json"
        argv = [sys.executable, str(BENCH / "rooms.py"), "--rooms", str(rooms), "--viewers", "2"]
        argv += ["--workers", str(workers), "--seconds", str(args.seconds), "--core-share", str(args.core_share)]
        argv += ["--no-janus", "--no-delay-window", "--json", str(out), "--server-root", str(args.server_root)]
        subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
        return dict(json.loads(out.read_text()))


def whole(result: dict[str, Any]) -> bool:
    return bool(
        result["delivery_pct"] >= 99.9
        and result["gaps"] <= 0.001 * max(1, result["received"])
        and result["udp_drops"] <= 0.001 * max(1, result["packets_in"])
    )


def ladder(workers: int, rungs: list[int], args: argparse.Namespace) -> int:
    capacity = 0
    for rooms in rungs:
        result = run(rooms, workers, args)
        ok = whole(result)
        rate = result["packets_in"] / result["rooms"] / result["seconds"]
        print(
            f"  workers {workers}  rooms {rooms:>3}  in/room/s {rate:6.1f}  delivery {result['delivery_pct']:7.3f} %"
            f"  gaps {result['gaps']:>5}  kernel drops {result['udp_drops']:>5}"
            f"  server cores {result['server_cores']:.3f}"
            f"  throttled {result['throttled_seconds']:5.2f} s  clients {result['viewer_procs_cores']:.2f}"
            f" + {result['bench_cores']:.2f} cores  {'whole' if ok else 'LOSING'}",
            flush=True,
        )
        if not ok:
            break
        capacity = rooms
    return capacity


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--core-share", type=float, default=0.1, help="each media process's share of a core")
    parser.add_argument("--seconds", type=float, default=20.0, help="measured window per rung")
    parser.add_argument("--one", default="5,6,7,8,9,10,11", help="room counts for one worker")
    parser.add_argument("--two", default="10,12,13,14,15,16,17,18,19,20,22", help="room counts for two workers")
    parser.add_argument("--server-root", type=Path, default=BENCH.parent, help="the checkout whose app.py is measured")
    args = parser.parse_args()
    print(f"each media process capped at {args.core_share:g} of a core; 2 viewers per room")
    one = ladder(1, [int(r) for r in args.one.split(",")], args)
    two = ladder(2, [int(r) for r in args.two.split(",")], args)
    print(f"\ncapacity: one worker {one} rooms, two workers {two} rooms: {two / max(1, one):.2f}x")


if __name__ == "__main__":
    main()
