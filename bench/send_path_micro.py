"""Cost per packet of PeerConnection.send_rtp (a viewer's), against the floor.

Run inside a private network namespace (only loopback exists):

    unshare -rn sh -c 'ip link set lo up && \
        .venv/bin/python bench/send_path_micro.py'

The same measurements ``bench/fanout.py`` takes before its load (``bench/floor.py``, without the
load): a server PeerConnection on a MediaPort connected to an aiortc viewer over
127.0.0.1, the same 1,200-byte RTP packets (sequence numbers advancing) sent in
a synchronous loop by

- ``floor``: pylibsrtp ``protect`` + ``socket.sendto`` on a plain UDP socket
  (DESIGN.md's "measured floor"),
- ``server send_rtp``: the server's send path (protect + ``sendto`` on the
  media port's socket, counters).

CPU time per packet, best of several rounds. Not a timed test: compare the
ratios of one run.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import trio
from floor import MICRO_PACKETS, MICRO_ROUNDS, RTP_SIZE, measure_floor, measure_send_paths


def main() -> None:
    floor = min(measure_floor()) * 1e6
    paths = {name: min(values) * 1e6 for name, values in trio.run(measure_send_paths).items()}
    print(f"{MICRO_PACKETS} packets x {MICRO_ROUNDS} rounds, {RTP_SIZE}-byte RTP, best round (CPU us/packet)")
    print(f"{'path':<20} {'us/packet':>10} {'packets/s':>12} {'vs floor':>9}")
    for name, micros in {"floor": floor, **paths}.items():
        print(f"{name:<20} {micros:>10.2f} {1e6 / micros:>12,.0f} {micros / floor:>8.2f}x")


if __name__ == "__main__":
    main()
