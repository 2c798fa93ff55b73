"""The floor and the server's send path, measured in this process (``fanout.py``, ``rooms.py``,
``send_path_micro.py``).

- :func:`measure_floor`: a bare loop that SRTP-protects (pylibsrtp) a 1,200-byte RTP packet and
  ``sendto``s it on loopback, CPU seconds per packet per round (DESIGN.md's floor);
- :func:`shaped_floor`: the same work shaped like the server's traffic (one packet to each of N
  sockets per burst, sleeping between bursts);
- :func:`measure_send_paths`: the server's own send path (``PeerConnection.send_rtp`` on a
  served ``MediaPort``) to an aiortc client, in a synchronous loop. It imports the server's
  ``transport`` package: the one of ``--server-root`` (``harness.use_server_root``).
"""

from __future__ import annotations

import os
import socket
import struct
import sys
import time
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import msgspec
import pylibsrtp
import trio
import trio_asyncio
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from harness import LOOPBACK

from media_server_client import aiortc_hooks as adapter

MICRO_PACKETS = 20_000
MICRO_ROUNDS = 5
RTP_SIZE = 1200


class PacketSource:
    """1,200-byte RTP packets with advancing sequence numbers (SRTP refuses replays)."""

    def __init__(self, ssrc: int, pt: int) -> None:
        self.ssrc, self.pt, self.seq = ssrc, pt, 0
        self.payload = bytes(RTP_SIZE - 12)

    def take(self, count: int) -> list[bytes]:
        out = []
        for _ in range(count):
            header = struct.pack("!BBHII", 0x80, self.pt, self.seq & 0xFFFF, self.seq * 3000 & 0xFFFFFFFF, self.ssrc)
            out.append(header + self.payload)
            self.seq += 1
        return out


def floor_round(packets: Sequence[bytes]) -> float:
    """CPU seconds per packet of pylibsrtp protect + sendto on loopback (DESIGN.md's floor)."""
    policy = pylibsrtp.Policy(key=os.urandom(30), ssrc_type=pylibsrtp.Policy.SSRC_ANY_OUTBOUND)
    session = pylibsrtp.Session(policy)
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        receiver.bind(("127.0.0.1", 0))
        sender.setblocking(False)
        addr = receiver.getsockname()
        protect, sendto = session.protect, sender.sendto
        start = time.process_time()
        for packet in packets:
            try:  # noqa: SIM105 (contextlib.suppress costs more in a hot loop)
                sendto(protect(packet), addr)
            except BlockingIOError:
                pass
        return (time.process_time() - start) / len(packets)
    finally:
        sender.close()
        receiver.close()


def measure_floor(rounds: int = MICRO_ROUNDS) -> list[float]:
    return [floor_round(PacketSource(1, 96).take(MICRO_PACKETS)) for _ in range(rounds)]


def shaped_floor(viewers: int, bursts_per_second: float, seconds: float = 1.0) -> float:
    """The floor with the server's traffic shape: ``viewers`` SRTP sessions and sockets, one
    packet to each per burst, a burst per host packet (sleeping in between, as the server
    does in epoll). CPU seconds per packet, counted around the bursts only.

    A tight loop keeps caches and branch predictors hot and never sleeps; sending the same
    work in bursts with sleeps in between costs more per packet on the same machine.
    """
    viewers = max(1, viewers)
    sessions = []
    sockets = []
    opened: list[socket.socket] = []
    try:
        for i in range(viewers):
            policy = pylibsrtp.Policy(key=os.urandom(30), ssrc_type=pylibsrtp.Policy.SSRC_ANY_OUTBOUND)
            sessions.append(pylibsrtp.Session(policy))
            receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            receiver.bind(("127.0.0.1", 0))
            opened.append(receiver)
            sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sender.setblocking(False)
            sockets.append((sender.sendto, receiver.getsockname(), sessions[-1].protect, PacketSource(1000 + i, 96)))
            opened.append(sender)
        bursts = max(10, int(seconds * bursts_per_second))
        packets = [source.take(bursts) for _, _, _, source in sockets]
        gap = 1.0 / bursts_per_second
        cpu = 0.0
        for b in range(bursts):
            start = time.process_time()
            for (sendto, addr, protect, _), queue in zip(sockets, packets, strict=True):
                try:  # noqa: SIM105
                    sendto(protect(queue[b]), addr)
                except BlockingIOError:
                    pass
            cpu += time.process_time() - start
            time.sleep(gap)
        return cpu / (bursts * viewers)
    finally:
        for sock in opened:
            sock.close()


async def measure_send_paths() -> dict[str, list[float]]:
    """The server's send path: a ``PeerConnection`` on a served ``MediaPort`` (127.0.0.1),
    connected to an aiortc client, then per packet ``send_rtp`` (SRTP protect + ``sendto``
    on the port's socket, counters) in a synchronous loop. Runs under trio.
    """
    from media_server_client.containment import open_contained_loop
    from transport import IceSettings, MediaPort, MediaSettings, PeerConnection, TransportCounters
    from transport.dtls import process_certificate

    # the fields an IceSettings has differ from one checkout to another: give those it has
    wanted = {"host_addresses": LOOPBACK, "announced_address": "", "stun_servers": []}
    fields = {field.name for field in msgspec.structs.fields(IceSettings)}
    ice = IceSettings(**{name: value for name, value in wanted.items() if name in fields})
    media = MediaSettings(video_bitrate_kbps=1500, max_framerate=30, audio_bitrate_kbps=128)
    port = MediaPort(LOOPBACK, 0)
    viewer = PeerConnection(port, process_certificate(), "viewer", ice, media, TransportCounters())
    connected = trio.Event()
    viewer.on_state = lambda state: connected.set() if state == "connected" else None
    async with open_contained_loop(), trio.open_nursery() as nursery:
        await nursery.start(port.serve)
        client = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        try:
            client.addTransceiver("video", direction="recvonly")
            adapter.restrict_host_addresses(client, LOOPBACK)
            await trio_asyncio.aio_as_trio(client.setLocalDescription)(
                await trio_asyncio.aio_as_trio(client.createOffer)()
            )
            answer = viewer.accept_offer(client.localDescription.sdp)
            remote = RTCSessionDescription(sdp=answer, type="answer")
            await trio_asyncio.aio_as_trio(client.setRemoteDescription)(remote)
            with trio.fail_after(15):
                await connected.wait()
            for dtls in adapter.dtls_transports(client):  # the client only reads its socket
                adapter.tap_srtp_receive(dtls, lambda data: None, lambda data: None)
            sink = viewer.sinks[0]
            source = PacketSource(sink.ssrc, sink.payload_type)

            def fast_round(packets: list[bytes]) -> float:
                send = viewer.send_rtp
                start = time.process_time()
                for packet in packets:
                    send(packet)
                return (time.process_time() - start) / len(packets)

            results: dict[str, list[float]] = {"server send_rtp": []}
            for _ in range(MICRO_ROUNDS):
                results["server send_rtp"].append(fast_round(source.take(MICRO_PACKETS)))
                await trio.sleep(0.05)  # let the client drain
            return results
        finally:
            viewer.close()
            await trio_asyncio.aio_as_trio(client.close)()
            nursery.cancel_scope.cancel()
