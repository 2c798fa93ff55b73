"""transport/relay_port.py over real loopback sockets: two workers' relay ports (each on a
media port of its own, served by Trio), a link between them, media both ways, and what is
refused: an unknown link, a stranger's address, a closed link."""

from __future__ import annotations

import socket
import struct
from collections.abc import Callable

import trio

from transport.media_port import MediaPort
from transport.relay_crypto import relay_key, session_key
from transport.relay_port import KIND_RTP, MAGIC, RELEARN_AFTER_SECONDS, RelayPort


class Inbox:
    def __init__(self) -> None:
        self.rtp: list[bytes] = []
        self.rtcp: list[bytes] = []
        self.control: list[bytes] = []
        self.arrived = trio.Event()

    def receivers(self, token: trio.lowlevel.TrioToken) -> tuple:  # type: ignore[type-arg]
        def keep(into: list[bytes]):  # type: ignore[no-untyped-def]
            def receive(data: bytes) -> None:  # the media thread, under the lock
                into.append(data)
                token.run_sync_soon(self.arrived.set)

            return receive

        return keep(self.rtp), keep(self.rtcp), keep(self.control)

    async def wait(self, condition) -> None:  # type: ignore[no-untyped-def]
        with trio.fail_after(5):
            while not condition():
                self.arrived = trio.Event()
                if condition():
                    return
                await self.arrived.wait()


async def until(condition: Callable[[], object]) -> None:
    """Wait for what the media thread counts (no Trio event to wait on), at most 5 s."""
    with trio.fail_after(5):
        while not condition():  # noqa: ASYNC110 (counted in the media thread)
            await trio.sleep(0.01)


async def test_a_link_carries_rtp_rtcp_and_control_both_ways_and_refuses_strangers() -> None:
    token = trio.lowlevel.current_trio_token()
    origin_port, edge_port = MediaPort(["127.0.0.1"], 0), MediaPort(["127.0.0.1"], 0)
    origin, edge = RelayPort(origin_port), RelayPort(edge_port)
    at_origin, at_edge = Inbox(), Inbox()
    async with trio.open_nursery() as nursery:
        await nursery.start(origin_port.serve)
        await nursery.start(edge_port.serve)
        edge_link = edge.open(*at_edge.receivers(token))
        origin_link = origin.open(*at_origin.receivers(token))
        origin.connect(origin_link, edge.address, edge_link.number)
        origin_link.send_rtp(b"\x80\x60rtp-before")  # the edge does not know its peer yet: refused
        await until(lambda: edge.statistics.wrong_peer >= 1)
        edge.connect(edge_link, origin.address, origin_link.number)
        origin_link.send_rtp(b"\x80\x60rtp")
        origin_link.send_rtcp(b"\x80\xc8sr")
        origin_link.send_control(b'{"streams": []}')
        edge_link.send_rtcp(b"\x81\xcepli")
        await at_edge.wait(lambda: at_edge.rtp and at_edge.rtcp and at_edge.control)
        await at_origin.wait(lambda: at_origin.rtcp)
        assert at_edge.rtp == [b"\x80\x60rtp"] and at_edge.rtcp == [b"\x80\xc8sr"]
        assert at_edge.control == [b'{"streams": []}'] and at_origin.rtcp == [b"\x81\xcepli"]
        assert edge.statistics.wrong_peer == 1 and edge_link.last_heard > 0

        # a stranger on loopback naming the edge's link, then a link number nobody has, then junk
        stranger = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        with stranger:
            stranger.sendto(
                struct.pack("!BBHII", MAGIC, KIND_RTP, 0, edge_link.number, origin_link.number) + b"x", edge.address
            )
            stranger.sendto(
                struct.pack("!BBHII", MAGIC, KIND_RTP, 0, edge_link.number ^ 1, origin_link.number) + b"x", edge.address
            )
            stranger.sendto(b"\x00" * 20, edge.address)
            # (each count is the media thread's, bumped after it counted the datagram received)
            await until(
                lambda: (
                    (edge.statistics.wrong_peer, edge.statistics.unknown_link, edge.statistics.malformed) == (2, 1, 1)
                )
            )
        assert at_edge.rtp == [b"\x80\x60rtp"]

        # a closed link hears nothing more, and sends nothing
        edge.close(edge_link)
        origin_link.send_rtp(b"\x80\x60late")
        edge_link.send_rtcp(b"\x81\xcelate")
        await until(lambda: edge.statistics.unknown_link >= 2)
        assert at_edge.rtp == [b"\x80\x60rtp"] and at_origin.rtcp == [b"\x81\xcepli"]

        # an edge's link learns its origin from the first datagram naming it, then hears no other
        learner = edge.open(*Inbox().receivers(token), learn_peer=True)
        second = origin.open(*at_origin.receivers(token))
        origin.connect(second, edge.address, learner.number)
        second.send_control(b"hello")
        await until(lambda: learner.peer is not None)
        assert learner.peer == origin.address and learner.peer_number == second.number
        learner.send_rtcp(b"\x81\xceback")
        await at_origin.wait(lambda: b"\x81\xceback" in at_origin.rtcp)
        # another end naming it is refused while its peer speaks, taken once the peer is silent
        third = origin.open(*Inbox().receivers(token))
        origin.connect(third, edge.address, learner.number)
        refused = edge.statistics.wrong_peer
        third.send_control(b"me too")
        await until(lambda: edge.statistics.wrong_peer > refused)
        assert learner.peer_number == second.number
        learner.last_heard -= RELEARN_AFTER_SECONDS  # as if its peer had been silent that long
        third.send_control(b"me now")
        await until(lambda: learner.peer_number == third.number)
        nursery.cancel_scope.cancel()


async def test_a_keyed_link_between_nodes_is_srtp_and_refuses_forgeries_replays_and_other_keys() -> None:
    """A relay between nodes: the datagrams on the wire (read by a tap between the two ports)
    carry the relay header in the clear and the rest as SRTP/SRTCP; the edge learns its origin
    only from a datagram that opens with the key, and drops a changed byte, a replay, a link of
    another key, and a keyless datagram from a non-loopback-looking peer alike."""
    token = trio.lowlevel.current_trio_token()
    origin_port, edge_port = MediaPort(["127.0.0.1"], 0), MediaPort(["127.0.0.1"], 0)
    origin, edge = RelayPort(origin_port), RelayPort(edge_port)
    key = bytes(range(32))
    at_origin, at_edge = Inbox(), Inbox()
    payload = b"the host's vp8 frame, never in the clear between nodes " * 4
    rtp = b"\x80\x60\x00\x07" + (9000).to_bytes(4, "big") + (0x1234).to_bytes(4, "big") + payload
    pli = b"\x81\xce\x00\x02" + (1).to_bytes(4, "big") + (0x1234).to_bytes(4, "big")
    tap = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tap.bind(("127.0.0.1", 0))
    tap.settimeout(5)
    async with trio.open_nursery() as nursery:
        await nursery.start(origin_port.serve)
        await nursery.start(edge_port.serve)
        edge_link = edge.open(*at_edge.receivers(token), learn_peer=True, key=key)
        origin_link = origin.open(*at_origin.receivers(token), key=key)
        origin.connect(origin_link, tap.getsockname(), edge_link.number)

        origin_link.send_rtp(rtp)
        wire = await trio.to_thread.run_sync(tap.recv, 2048)
        assert wire[:2] == bytes([MAGIC, KIND_RTP]) and wire[4:8] == edge_link.number.to_bytes(4, "big")
        assert payload[:16] not in wire and len(wire) == 12 + len(rtp) + 10  # the header, SRTP, its tag
        forged = bytearray(wire)
        forged[-20] ^= 1
        tap.sendto(bytes(forged), edge.address)  # a changed byte: not learned from
        await until(lambda: edge.statistics.unauthentic >= 1)
        assert edge_link.peer is None
        tap.sendto(wire, edge.address)  # the real one: learned, opened
        await at_edge.wait(lambda: at_edge.rtp)
        assert at_edge.rtp == [rtp] and edge_link.peer == tap.getsockname()
        tap.sendto(wire, edge.address)  # the same again: a replay
        await until(lambda: edge.statistics.unauthentic >= 2)
        assert at_edge.rtp == [rtp]

        origin_link.send_control(b'{"streams": []}')
        control = await trio.to_thread.run_sync(tap.recv, 2048)
        assert b"streams" not in control
        tap.sendto(control, edge.address)
        await at_edge.wait(lambda: at_edge.control)
        assert at_edge.control == [b'{"streams": []}']

        edge_link.send_rtcp(pli)  # back through the tap (the edge's learned peer) to the origin
        back = await trio.to_thread.run_sync(tap.recv, 2048)
        assert len(back) == 12 + len(pli) + 4 + 10  # SRTCP: the E flag and index, and the tag
        tap.sendto(back, origin.address)  # from the address the origin sends to: its peer
        await at_origin.wait(lambda: at_origin.rtcp)
        assert at_origin.rtcp == [pli]

        # another relay's key naming the edge's link, once its peer has gone quiet: refused
        stranger_port = MediaPort(["127.0.0.1"], 0)
        stranger = RelayPort(stranger_port)
        await nursery.start(stranger_port.serve)
        impostor = stranger.open(*Inbox().receivers(token), key=bytes(32))
        stranger.connect(impostor, edge.address, edge_link.number)
        edge_link.last_heard -= RELEARN_AFTER_SECONDS
        refused = edge.statistics.unauthentic
        impostor.send_rtp(rtp)
        await until(lambda: edge.statistics.unauthentic > refused)
        assert edge_link.peer == tap.getsockname() and at_edge.rtp == [rtp]

        # a captured datagram replayed from elsewhere once the origin is quiet: the link keeps
        # its origin's replay window, so it neither opens nor moves the link
        edge_link.last_heard -= RELEARN_AFTER_SECONDS
        refused = edge.statistics.unauthentic
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as replayer:
            replayer.sendto(wire, edge.address)
            await until(lambda: edge.statistics.unauthentic > refused)
        assert edge_link.peer == tap.getsockname() and at_edge.rtp == [rtp]
        nursery.cancel_scope.cancel()
    tap.close()


def test_relay_keys_differ_per_relay_and_per_direction() -> None:
    first, second = relay_key(b"cluster secret", "relay-a"), relay_key(b"cluster secret", "relay-b")
    assert len(first) == 32 and first != second != relay_key(b"another secret", "relay-a")
    assert session_key(first, 1, 2) != session_key(first, 2, 1) != session_key(first, 1, 3)
