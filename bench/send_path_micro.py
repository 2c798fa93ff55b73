"""Cost per packet of ViewerConnection.send_rtp, against the floor and aiortc's own path.

Run inside a private network namespace (only loopback exists):

    unshare -rn sh -c 'ip link set lo up && \
        .venv/bin/python bench/send_path_micro.py'

A ViewerConnection is connected to an aiortc viewer over 127.0.0.1, then the
same 1,200-byte RTP packets (sequence numbers advancing) are sent in a
synchronous loop by:

- ``floor``: pylibsrtp ``protect`` + ``socket.sendto`` on a plain UDP socket
  (DESIGN.md's "measured floor"),
- ``send_rtp``: the adapter's fast path (protect + ``sendto`` on the
  nominated ICE pair, counters),
- ``aiortc _send_rtp``: ``await RTCDtlsTransport._send_rtp`` (what aiortc's
  sender uses: four coroutine layers), for comparison.

Not a timed test: it prints a table; compare the ratios of one run.
"""

from __future__ import annotations

import asyncio
import os
import socket
import struct
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import pylibsrtp
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

from transport import IceSettings, MediaSettings, TransportCounters, ViewerConnection
from transport import aiortc_adapter as adapter

PACKETS = 20_000
ROUNDS = 5
PAYLOAD = 1200 - 12


class PacketSource:
    """Packets with advancing sequence numbers (SRTP refuses replays beyond its window)."""

    def __init__(self, ssrc: int, pt: int) -> None:
        self.ssrc, self.pt, self.seq = ssrc, pt, 0
        self.payload = bytes(PAYLOAD)

    def take(self, count: int) -> list[bytes]:
        out = []
        for _ in range(count):
            seq = self.seq & 0xFFFF
            out.append(
                struct.pack("!BBHII", 0x80, self.pt, seq, self.seq * 3000 & 0xFFFFFFFF, self.ssrc) + self.payload
            )
            self.seq += 1
        return out


def floor_loop(packets: list[bytes]) -> float:
    key = os.urandom(30)
    policy = pylibsrtp.Policy(key=key, ssrc_type=pylibsrtp.Policy.SSRC_ANY_OUTBOUND)
    policy.allow_repeat_tx = True
    session = pylibsrtp.Session(policy)
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver.bind(("127.0.0.1", 0))
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sender.setblocking(False)
    addr = receiver.getsockname()
    start = time.perf_counter()
    for packet in packets:
        try:  # noqa: SIM105 (contextlib.suppress costs more in a hot loop)
            sender.sendto(session.protect(packet), addr)
        except BlockingIOError:
            pass
    elapsed = time.perf_counter() - start
    sender.close()
    receiver.close()
    return elapsed / len(packets)


def send_rtp_loop(viewer: ViewerConnection, packets: list[bytes]) -> float:
    send = viewer.send_rtp
    start = time.perf_counter()
    for packet in packets:
        send(packet)
    return (time.perf_counter() - start) / len(packets)


async def aiortc_loop(viewer: ViewerConnection, packets: list[bytes]) -> float:
    pc = viewer._pc
    assert pc is not None
    dtls = adapter.dtls_transports(pc)[0]
    start = time.perf_counter()
    for packet in packets:
        await dtls._send_rtp(packet)
    return (time.perf_counter() - start) / len(packets)


async def main() -> None:
    ice = IceSettings(host_addresses=["127.0.0.1"], announced_address="", stun_servers=[])
    media = MediaSettings(video_bitrate_kbps=1500, max_framerate=30, audio_bitrate_kbps=128)
    counters = TransportCounters()
    viewer = ViewerConnection(ice, media, counters)
    connected = asyncio.Event()
    viewer.on_state = lambda state: connected.set() if state == "connected" else None

    client = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    client.addTransceiver("video", direction="recvonly")
    adapter.restrict_host_addresses(client, ["127.0.0.1"])
    await client.setLocalDescription(await client.createOffer())
    answer = await viewer.accept_offer(client.localDescription.sdp)
    await client.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
    await asyncio.wait_for(connected.wait(), 10)
    # The client only has to read its socket: drop what it unprotects.
    for dtls in adapter.dtls_transports(client):
        adapter.tap_srtp_receive(dtls, lambda data: None, lambda data: None)

    sink = viewer.sinks[0]
    source = PacketSource(sink.ssrc, sink.payload_type)

    results: dict[str, list[float]] = {"floor": [], "send_rtp": [], "aiortc _send_rtp": []}
    for _ in range(ROUNDS):
        results["floor"].append(floor_loop(PacketSource(1, 96).take(PACKETS)))
        await asyncio.sleep(0.05)  # let the client drain
        results["send_rtp"].append(send_rtp_loop(viewer, source.take(PACKETS)))
        await asyncio.sleep(0.05)
        results["aiortc _send_rtp"].append(await aiortc_loop(viewer, source.take(PACKETS // 4)))
        await asyncio.sleep(0.05)

    assert counters.rtp_dropped == 0, counters
    best = {name: min(values) * 1e6 for name, values in results.items()}
    print(f"{PACKETS} packets x {ROUNDS} rounds, {PAYLOAD + 12}-byte RTP, best round (us/packet)")
    print(f"{'path':<20} {'us/packet':>10} {'packets/s':>12} {'vs floor':>9}")
    for name, micros in best.items():
        print(f"{name:<20} {micros:>10.2f} {1e6 / micros:>12,.0f} {micros / best['floor']:>8.2f}x")
    print(f"bytes_sent counted: {counters.bytes_sent:,}")

    await viewer.close()
    await client.close()


if __name__ == "__main__":
    asyncio.run(main())
