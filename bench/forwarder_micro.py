"""Micro benchmark of the forwarder's per-packet path (not a test).

Feeds pre-built 1,200-byte VP8 RTP packets (with mid + transport-cc + abs-send-time
extensions, as a browser host sends them) to ``media.router.Router`` with N
viewers whose ``send_rtp`` is a no-op, and prints the cost per packet per viewer.

    .venv/bin/python bench/forwarder_micro.py [--packets 20000]

Columns: ``per packet`` = total time / packets; ``per viewer`` =
(per packet - per packet with 0 viewers) / N, i.e. the marginal cost of one
more viewer. The SRTP protect + sendto that follows in the transport costs
about 7 us per packet per viewer (DESIGN.md), for comparison.
"""

from __future__ import annotations

import argparse
import struct
import time
from collections.abc import Callable

from media.router import Router
from media.streams import SinkStream, SourceStream

VP8_PT = 96
MID_URI = "urn:ietf:params:rtp-hdrext:sdes:mid"
TWCC_URI = "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01"
ABS_SEND_URI = "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time"
HOST_EXT = {1: MID_URI, 2: ABS_SEND_URI, 3: TWCC_URI}


def host_packets(n: int, size: int = 1200) -> list[bytes]:
    out = []
    # one-byte extensions: mid "0", abs-send-time (3 bytes), twcc (2 bytes)
    ext = bytes([0x10, ord("0"), 0x22, 1, 2, 3, 0x31, 0, 0, 0, 0, 0])
    ext_hdr = struct.pack("!HH", 0xBEDE, len(ext) // 4)
    for i in range(n):
        seq = (60000 + i) & 0xFFFF
        ts = (i // 5) * 3000
        first = i % 5 == 0
        # VP8 descriptor X=1,S=first, I with 15-bit picture id
        desc = bytes([0x90 if first else 0x80, 0x80, 0x80 | ((i // 5) >> 8 & 0x7F), (i // 5) & 0xFF])
        vp8 = bytes([0x00 if i == 0 else 0x01]) + b"\xab" * (size - 12 - len(ext_hdr) - len(ext) - 5)
        hdr = struct.pack("!BBHII", 0x90, (0x80 if i % 5 == 4 else 0) | VP8_PT, seq, ts, 0x1234)
        out.append(hdr + ext_hdr + ext + desc + vp8)
    return out


def run(n_viewers: int, packets: list[bytes], sink_ext: Callable[[int], tuple[dict[str, int], str | None]]) -> float:
    router = Router(rtcp_ssrc=1, target_bitrate_bps=1_500_000)
    router.attach_publisher(
        [SourceStream(kind="video", payload_type=VP8_PT, clock_rate=90000, extensions=HOST_EXT)],
        lambda b: None,
        0.0,
    )
    sent = [0]

    def send(b: bytes) -> None:
        sent[0] += 1

    for v in range(n_viewers):
        exts, mid = sink_ext(v)
        sink = SinkStream(kind="video", ssrc=1000 + v, payload_type=100, clock_rate=90000, extensions=exts, mid=mid)
        router.add_viewer(f"v{v}", [sink], send, lambda b: None, 0.0)
    # warm up: the first packet is the keyframe that starts every viewer
    for p in packets[:1000]:
        router.on_publisher_rtp(p, 0.0)
    body = packets[1000:]
    t0 = time.perf_counter_ns()
    now = 0.0
    for p in body:
        router.on_publisher_rtp(p, now)
    dt = time.perf_counter_ns() - t0
    stats = router.statistics()
    assert sent[0] == stats.packets_out, (sent[0], stats)
    assert n_viewers == 0 or stats.drops["waiting_keyframe"] == 0, stats.drops
    return dt / len(body)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--packets", type=int, default=20000)
    args = ap.parse_args()
    packets = host_packets(args.packets + 1000)
    scenarios: dict[str, Callable[[int], tuple[dict[str, int], str | None]]] = {
        "no extensions kept (fast path)": lambda v: ({}, None),
        "mid kept, same ids for all": lambda v: ({MID_URI: 4}, "1"),
        "mid kept, distinct mid per viewer (worst case)": lambda v: ({MID_URI: 4}, str(v)),
    }
    print(f"{'scenario':48} {'viewers':>7} {'ns/packet':>10} {'ns/pkt/viewer':>14}")
    for name, fn in scenarios.items():
        base = min(run(0, packets, fn) for _ in range(3))
        print(f"{name:48} {0:>7} {base:>10.0f} {'-':>14}")
        for n in (1, 10, 50):
            per_packet = min(run(n, packets, fn) for _ in range(3))
            print(f"{name:48} {n:>7} {per_packet:>10.0f} {(per_packet - base) / n:>14.0f}")


if __name__ == "__main__":
    main()
