"""The media transport (one UDP port, ICE-lite, DTLS-SRTP) against real aiortc clients.

Each test serves a `MediaPort` on 127.0.0.1 in its nursery and connects aiortc
peers (full ICE agents, controlling) on a contained trio-asyncio loop, with an
absolute `trio.fail_after`. The suite runs inside `unshare -rn` (only `lo`).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
import trio_asyncio
from aiortc import AudioStreamTrack, RTCConfiguration, RTCPeerConnection, RTCSessionDescription, VideoStreamTrack

from media.ice_lite import DirectoryFull, IceLiteDirectory
from media_server_client import aiortc_hooks as adapter
from media_server_client.containment import open_contained_loop
from transport.dtls import process_certificate
from transport.media_port import MediaPort
from transport.peer_connection import PeerConnection
from transport.settings import IceSettings, MediaSettings, TransportCounters

LOOPBACK = ["127.0.0.1"]
MEDIA = MediaSettings(video_bitrate_kbps=1500, max_framerate=30, audio_bitrate_kbps=128)


def ice(consent: float = 30.0) -> IceSettings:
    return IceSettings(consent_timeout_seconds=consent)


class Changes:
    """Wake waiters when a callback recorded something (trio side)."""

    def __init__(self) -> None:
        self._event = trio.Event()

    def changed(self) -> None:
        self._event.set()
        self._event = trio.Event()

    async def wait_until(self, condition: Any) -> None:
        while not condition():
            await self._event.wait()


@asynccontextmanager
async def served_port() -> AsyncIterator[MediaPort]:
    port = MediaPort(LOOPBACK, 0)
    async with open_contained_loop(), trio.open_nursery() as nursery:
        await nursery.start(port.serve)
        yield port
        nursery.cancel_scope.cancel()


async def aio(function: Any, *args: Any) -> Any:
    return await trio_asyncio.aio_as_trio(function)(*args)


async def offer_of(client: RTCPeerConnection) -> str:
    adapter.restrict_host_addresses(client, LOOPBACK)  # aioice skips 127.0.0.1 by default
    await aio(client.setLocalDescription, await aio(client.createOffer))
    sdp_text: str = client.localDescription.sdp
    return sdp_text


def new_connection(port: MediaPort, role: str, consent: float = 30.0) -> PeerConnection:
    return PeerConnection(port, process_certificate(), role, ice(consent), MEDIA, TransportCounters())  # type: ignore[arg-type]


async def connect(
    port: MediaPort,
    role: str,
    client: RTCPeerConnection,
    *,
    consent: float = 30.0,
    connection: PeerConnection | None = None,
) -> tuple[PeerConnection, Changes, list[str]]:
    """Answer the client's offer and wait for the connection's first state."""
    connection = connection or new_connection(port, role, consent)
    changes = Changes()
    states: list[str] = []

    def on_state(state: str) -> None:
        states.append(state)
        changes.changed()

    connection.on_state = on_state
    answer = connection.accept_offer(await offer_of(client))
    await aio(client.setRemoteDescription, RTCSessionDescription(sdp=answer, type="answer"))
    await changes.wait_until(lambda: states)
    return connection, changes, states


async def test_a_host_connects_and_its_rtp_arrives_raw_and_byte_identical() -> None:
    with trio.fail_after(30):
        async with served_port() as port:
            client = RTCPeerConnection(RTCConfiguration(iceServers=[]))
            client.addTransceiver(VideoStreamTrack(), direction="sendonly")
            client.addTransceiver(AudioStreamTrack(), direction="sendonly")
            sent: list[bytes] = []
            received: list[bytes] = []
            connection, changes, states = await connect(port, "host", client)
            assert states == ["connected"]
            adapter.observe_rtp_sent(client, sent.append)

            token = trio.lowlevel.current_trio_token()

            def on_rtp(data: bytes) -> None:  # on the media thread: tell Trio through its token
                received.append(data)
                token.run_sync_soon(changes.changed)

            connection.on_rtp = on_rtp
            await changes.wait_until(lambda: len(received) >= 30)
            assert {kind.kind for kind in connection.sources} == {"video", "audio"}
            assert set(received[5:25]) <= set(sent), "the server saw RTP the client never sent"
            assert connection._counters.bytes_received > 0
            with port.lock:  # every RTP packet's delay, from the kernel's receive timestamp
                delay = port.statistics.forwarding_delay.snapshot()
            assert delay.total >= len(received)
            assert 0 < delay.max_us < 1_000_000
            connection.close()
            await aio(client.close)


async def test_every_connection_shares_the_one_port() -> None:
    with trio.fail_after(30):
        async with served_port() as port:
            before = _own_udp_ports()
            assert before.count(port.port) == 1
            clients = []
            for _ in range(4):
                client = RTCPeerConnection(RTCConfiguration(iceServers=[]))
                client.addTransceiver("video", direction="recvonly")
                connection, _, states = await connect(port, "viewer", client)
                assert states == ["connected"]
                clients.append((client, connection))
            after = _own_udp_ports()
            # the four aiortc clients have one socket each; the server has none but its port
            assert len(after) - len(before) == 4 and after.count(port.port) == 1
            for client, connection in clients:
                connection.close()
                await aio(client.close)


def _own_udp_ports() -> list[int]:
    inodes = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    ports = []
    with open("/proc/self/net/udp") as table:
        next(table)
        for line in table:
            fields = line.split()
            if fields[9] in inodes:
                ports.append(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


async def test_a_viewer_gets_what_send_rtp_sends_and_nothing_before_it_connects() -> None:
    with trio.fail_after(30):
        async with served_port() as port:
            client = RTCPeerConnection(RTCConfiguration(iceServers=[]))
            client.addTransceiver("video", direction="recvonly")
            connection = new_connection(port, "viewer")
            connection.send_rtp(b"\x80\x60" + bytes(30))
            assert connection._counters.rtp_dropped == 1  # not connected yet: dropped and counted
            seen: list[bytes] = []
            connection, changes, _ = await connect(port, "viewer", client, connection=connection)

            def observed(data: bytes) -> bool:
                seen.append(data)
                trio.lowlevel.current_trio_token().run_sync_soon(changes.changed)
                return True

            adapter.observe_rtp_received(client, observed)
            sink = connection.sinks[0]
            for seq in range(20):
                packet = bytearray(b"\x80" + bytes([sink.payload_type]) + seq.to_bytes(2, "big") + bytes(8) + bytes(20))
                packet[8:12] = sink.ssrc.to_bytes(4, "big")
                connection.send_rtp(bytes(packet))
            await changes.wait_until(lambda: len(seen) >= 20)
            assert [int.from_bytes(p[2:4], "big") for p in seen[:20]] == list(range(20))
            connection.close()
            await aio(client.close)


async def test_a_silent_peer_loses_consent_and_a_closing_one_closes() -> None:
    with trio.fail_after(30):
        async with served_port() as port:
            client = RTCPeerConnection(RTCConfiguration(iceServers=[]))
            client.addTransceiver("video", direction="recvonly")
            connection, changes, states = await connect(port, "viewer", client, consent=2.0)
            # the client vanishes without a word: its transport stops reading and sending
            for dtls in adapter.dtls_transports(client):
                for gatherer in [dtls.transport.iceGatherer]:
                    for pair_protocol in adapter.ice_connection(gatherer)._protocols:
                        pair_protocol.transport.close()
            await changes.wait_until(lambda: states[-1] == "failed")
            assert connection.failure is not None and "consent lost" in connection.failure
            await aio(client.close)

            other = RTCPeerConnection(RTCConfiguration(iceServers=[]))
            other.addTransceiver("video", direction="recvonly")
            connection, changes, states = await connect(port, "viewer", other)
            await aio(other.close)  # sends DTLS close_notify
            await changes.wait_until(lambda: states[-1] == "closed")
            assert connection.failure is None


async def test_a_wrong_fingerprint_fails_the_dtls_handshake_with_a_reason() -> None:
    with trio.fail_after(40):
        async with served_port() as port:
            client = RTCPeerConnection(RTCConfiguration(iceServers=[]))
            client.addTransceiver("video", direction="recvonly")
            connection = PeerConnection(port, process_certificate(), "viewer", ice(), MEDIA, TransportCounters())
            changes = Changes()
            states: list[str] = []
            connection.on_state = lambda state: (states.append(state), changes.changed())  # type: ignore[func-returns-value]
            offer = await offer_of(client)
            lines = offer.split("\r\n")
            forged = "\r\n".join(  # every hash the offer lists (the strongest one is checked)
                "a=fingerprint:sha-256 " + ":".join(["AB"] * 32) if line.startswith("a=fingerprint:") else line
                for line in lines
            )
            answer = connection.accept_offer(forged)
            await aio(client.setRemoteDescription, RTCSessionDescription(sdp=answer, type="answer"))
            await changes.wait_until(lambda: states)
            assert states == ["failed"]
            assert connection.failure is not None and "fingerprint" in connection.failure
            assert connection.failure_kind == "dtls"
            await aio(client.close)


async def test_garbage_on_the_port_is_dropped_and_counted_while_a_peer_keeps_its_media() -> None:
    import random
    import socket

    with trio.fail_after(30):
        async with served_port() as port:
            client = RTCPeerConnection(RTCConfiguration(iceServers=[]))
            client.addTransceiver(VideoStreamTrack(), direction="sendonly")
            connection, changes, states = await connect(port, "host", client)
            received: list[bytes] = []
            token = trio.lowlevel.current_trio_token()

            def on_rtp(data: bytes) -> None:
                received.append(data)
                token.run_sync_soon(changes.changed)

            connection.on_rtp = on_rtp
            rng = random.Random(7)
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as stranger:
                for first in [0, 1, 3, 20, 22, 63, 128, 150, 191, 200, 255]:  # STUN, DTLS, RTP/RTCP, unknown
                    for _ in range(20):
                        size = rng.randrange(1, 1400)
                        stranger.sendto(bytes([first]) + rng.randbytes(size), ("127.0.0.1", port.port))
            before = len(received)
            await changes.wait_until(lambda: len(received) >= before + 20)
            assert port.statistics.unknown_address > 0 and port.statistics.unknown_stun > 0
            assert port.statistics.handler_errors == 0
            assert states == ["connected"]
            connection.close()
            await aio(client.close)


async def test_a_full_media_port_refuses_an_offer_and_leaves_the_connection_as_new() -> None:
    with trio.fail_after(30):
        async with served_port() as port:
            port.directory = IceLiteDirectory(max_sessions=1)
            clients = [RTCPeerConnection(RTCConfiguration(iceServers=[])) for _ in range(2)]
            for client in clients:
                client.addTransceiver("video", direction="recvonly")
            first, second = new_connection(port, "viewer"), new_connection(port, "viewer")
            first.accept_offer(await offer_of(clients[0]))
            with pytest.raises(DirectoryFull):
                second.accept_offer(await offer_of(clients[1]))
            assert second.state == "new" and second.sinks == [] and len(port.directory) == 1
            first.close()  # a session leaves: there is room again
            assert second.accept_offer(clients[1].localDescription.sdp).startswith("v=0")
            second.close()
            for client in clients:
                await aio(client.close)
