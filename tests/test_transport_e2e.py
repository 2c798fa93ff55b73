"""The aiortc adapter against real aiortc peers over loopback.

Testing policy: every peer gathers on 127.0.0.1 only, no STUN server is
configured, and the suite is meant to run inside ``unshare -rn`` (only ``lo``).
Each test runs its asyncio body on a trio-asyncio loop, as the server does
(``trio_asyncio.open_loop`` + ``aio_as_trio``), under an absolute
``trio.fail_after``. Waits are event-driven: the callbacks a condition depends
on call ``changed()``, and ``wait_until`` re-checks it on each call, with a
generous deadline.
"""

from __future__ import annotations

import asyncio
import fractions
import struct
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import av
import pytest
import trio
import trio_asyncio
from aiortc import (
    RTCConfiguration,
    RTCPeerConnection,
    RTCRtpSender,
    RTCSessionDescription,
    VideoStreamTrack,
)
from aiortc.mediastreams import AudioStreamTrack

from media import sdp
from media.streams import SdpError, SinkStream, UnsupportedCodecError
from transport import (
    IceSettings,
    MediaSettings,
    PublisherConnection,
    TransportCounters,
    ViewerConnection,
)
from transport import aiortc_adapter as adapter
from transport.containment import open_contained_loop

ICE = IceSettings(host_addresses=["127.0.0.1"], announced_address="", stun_servers=[])
MEDIA = MediaSettings(video_bitrate_kbps=1500, max_framerate=30, audio_bitrate_kbps=128)
TEST_TIMEOUT = 30.0


T = TypeVar("T")
_changed: asyncio.Event | None = None  # one per test, made by run()


async def run(main: Callable[[], Coroutine[Any, Any, None]], limit: float = TEST_TIMEOUT) -> None:
    async def main_with_changes() -> None:
        global _changed
        _changed = asyncio.Event()
        await main()

    with trio.fail_after(limit):
        async with open_contained_loop():  # as the server does: connections own their aiortc tasks
            await trio_asyncio.aio_as_trio(main_with_changes)()


def changed() -> None:
    """Something a `wait_until` condition may depend on changed (called from callbacks)."""
    assert _changed is not None, "only inside run()"
    _changed.set()


def recorded(sink: Callable[[T], object]) -> Callable[[T], None]:
    """A callback that hands its argument to `sink` (e.g. `list.append`), then calls `changed()`."""

    def record(item: T) -> None:
        sink(item)
        changed()

    return record


async def wait_until(condition: Callable[[], bool], what: str, limit: float = 10.0) -> None:
    """Return once `condition()` holds, re-checking it on each `changed()`; fail after `limit` s."""
    event = _changed
    assert event is not None, "only inside run()"

    async def each_change() -> None:
        while not condition():
            event.clear()  # the loop runs the callbacks: none can slip in between check and clear
            await event.wait()

    try:
        await asyncio.wait_for(each_change(), limit)
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what}") from None


class PatternTrack(VideoStreamTrack):
    """A moving diagonal gradient, 320x240."""

    WIDTH, HEIGHT = 320, 240

    def __init__(self) -> None:
        super().__init__()
        self._row = bytes((i * 3) & 0xFF for i in range(self.WIDTH * 2))
        self._n = 0

    async def recv(self) -> av.VideoFrame:
        pts, time_base = await self.next_timestamp()
        frame = av.VideoFrame(self.WIDTH, self.HEIGHT, "yuv420p")
        luma = frame.planes[0]
        shift = self._n * 4
        rows = []
        for y in range(self.HEIGHT):
            start = (shift + y) % self.WIDTH
            rows.append(self._row[start : start + luma.line_size])
        luma.update(b"".join(rows))
        for plane in frame.planes[1:]:
            plane.update(bytes([128]) * (plane.line_size * plane.height))
        self._n += 1
        frame.pts = pts
        frame.time_base = time_base if time_base else fractions.Fraction(1, 90000)
        return frame


def client_pc() -> RTCPeerConnection:
    return RTCPeerConnection(RTCConfiguration(iceServers=[]))


async def close_client(pc: RTCPeerConnection) -> None:
    """Close an aiortc test client, ending its encoders first.

    aiortc encodes in ``run_in_executor``; on trio-asyncio, cancelling that
    future (what ``RTCRtpSender.stop`` does) was seen to hang forever under CPU
    load. Stopping the tracks first lets ``_run_rtp`` return by itself.
    """
    for sender in pc.getSenders():
        if sender.track is not None:
            sender.track.stop()
    tasks = [mangled(sender, "RTCRtpSender", "rtp_task") for sender in pc.getSenders()]
    running = [t for t in tasks if t is not None and not t.done()]
    if running:
        _, pending = await asyncio.wait(running, timeout=10.0)
        assert not pending, "timed out waiting for the client encoders to end"
    await pc.close()


async def client_offer(pc: RTCPeerConnection) -> str:
    # The client is aiortc too: it also needs 127.0.0.1 (aioice skips loopback).
    adapter.restrict_host_addresses(pc, ["127.0.0.1"])
    await pc.setLocalDescription(await pc.createOffer())
    return pc.localDescription.sdp


async def connect_publisher(
    counters: TransportCounters,
) -> tuple[PublisherConnection, RTCPeerConnection, list[bytes], list[str]]:
    server = PublisherConnection(ICE, MEDIA, counters)
    packets: list[bytes] = []
    states: list[str] = []
    server.on_rtp = recorded(packets.append)
    server.on_state = recorded(states.append)
    client = client_pc()
    client.addTransceiver(PatternTrack(), direction="sendonly")
    client.addTransceiver(AudioStreamTrack(), direction="sendonly")
    answer = await server.accept_offer(await client_offer(client))
    await client.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
    client_sent: list[bytes] = []
    adapter.observe_rtp_sent(client, client_sent.append)
    client.sent_rtp = client_sent  # type: ignore[attr-defined]
    await wait_until(lambda: states == ["connected"], "publisher connected")
    return server, client, packets, states


def mangled(obj: object, cls: str, name: str) -> Any:
    """An aiortc private double-underscore attribute (tests only look at them)."""
    return vars(obj)[f"_{cls}__{name}"]


def payload_types(packets: list[bytes]) -> set[int]:
    return {p[1] & 0x7F for p in packets}


def decoder_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.endswith("-decoder")]


def rtcp_kinds(data: bytes) -> list[tuple[int, int]]:
    """(packet type, fmt/count) of each packet of a compound RTCP packet."""
    out = []
    pos = 0
    while pos + 4 <= len(data):
        first, packet_type, length = struct.unpack_from("!BBH", data, pos)
        out.append((packet_type, first & 0x1F))
        pos += 4 * (length + 1)
    return out


def nacked_sequences(data: bytes) -> set[int]:
    """Sequence numbers named by the generic NACKs (RFC 4585 6.2.1) of a compound packet."""
    out = set()
    pos = 0
    while pos + 4 <= len(data):
        first, packet_type, length = struct.unpack_from("!BBH", data, pos)
        end = pos + 4 * (length + 1)
        if packet_type == 205 and first & 0x1F == 1:
            for fci in range(pos + 12, end - 3, 4):
                pid, blp = struct.unpack_from("!HH", data, fci)
                out.add(pid)
                out.update((pid + bit + 1) & 0xFFFF for bit in range(16) if blp >> bit & 1)
        pos = end
    return out


# -- (1) publishing to the server --------------------------------------------------


async def test_publisher_receives_raw_vp8_and_opus_without_decoding() -> None:
    async def main() -> None:
        counters = TransportCounters()
        server, client, packets, states = await connect_publisher(counters)
        sources = {s.kind: s for s in server.sources}
        assert set(sources) == {"video", "audio"}
        assert sources["video"].clock_rate == 90000 and sources["audio"].clock_rate == 48000
        video_pt, audio_pt = sources["video"].payload_type, sources["audio"].payload_type

        await wait_until(
            lambda: {video_pt, audio_pt} <= payload_types(packets) and len(packets) > 50,
            "VP8 and Opus packets at on_rtp",
        )
        # raw RTP: version 2, only the negotiated payload types, byte for byte what
        # the client sent (header extensions included)
        assert all(p[0] >> 6 == 2 for p in packets)
        assert payload_types(packets) == {video_pt, audio_pt}
        sent = set(client.sent_rtp)  # type: ignore[attr-defined]
        assert all(p in sent for p in packets)
        # nothing decodes: no decoder thread, no receiver RTCP task, on the server side
        assert decoder_threads() == []
        for receiver in server._pc.getReceivers():  # type: ignore[union-attr]
            assert mangled(receiver, "RTCRtpReceiver", "decoder_thread") is None
            assert mangled(receiver, "RTCRtpReceiver", "rtcp_task") is None
        # SRTP overhead is counted: more bytes on the wire than RTP delivered
        assert counters.bytes_received > sum(len(p) for p in packets)
        assert counters.bytes_sent == 0

        # the server's RTCP reaches the client's sender (a PLI for the video SSRC)
        video_ssrc = next(struct.unpack_from("!I", p, 8)[0] for p in packets if p[1] & 0x7F == video_pt)
        server.send_rtcp(struct.pack("!BBHII", 0x81, 206, 2, 1, video_ssrc))
        assert counters.rtcp_dropped == 0

        await server.close()
        assert states == ["connected", "closed"]
        await close_client(client)

    await run(main)


# -- (2) a viewer decodes what send_rtp forwards ------------------------------------


async def test_viewer_decodes_forwarded_packets_and_its_rtcp_reaches_on_rtcp() -> None:
    async def main() -> None:
        counters = TransportCounters()
        publisher, pub_client, _, _ = await connect_publisher(counters)
        kind_of_pt = {s.payload_type: s.kind for s in publisher.sources}

        viewer = ViewerConnection(ICE, MEDIA, counters)
        viewer_states: list[str] = []
        viewer.on_state = recorded(viewer_states.append)
        rtcp_seen: list[tuple[int, int]] = []
        host_video_ssrc: list[int] = []

        nacked: set[int] = set()

        def on_viewer_rtcp(data: bytes) -> None:
            kinds = rtcp_kinds(data)
            rtcp_seen.extend(kinds)
            for seq in nacked_sequences(data) - nacked:
                nacked.add(seq)
                if seq in forwarded:  # retransmit: the same packet, the same SRTP index
                    viewer.send_rtp(forwarded[seq])
            if ((206, 1) in kinds or (206, 4) in kinds) and host_video_ssrc:
                # picture loss at the viewer: ask the host for a keyframe
                pli = struct.pack("!BBHII", 0x81, 206, 2, 1, host_video_ssrc[0])
                publisher.send_rtcp(pli)
            changed()

        viewer.on_rtcp = on_viewer_rtcp

        video_forwarded = 0
        seq_offset = 0
        forwarded: dict[int, bytes] = {}  # viewer-side sequence number -> packet sent

        def forward(data: bytes) -> None:
            nonlocal video_forwarded, seq_offset
            kind = kind_of_pt[data[1] & 0x7F]
            if kind == "video" and not host_video_ssrc:
                host_video_ssrc.append(struct.unpack_from("!I", data, 8)[0])
            if not viewer.connected:
                return
            sink = sinks[kind]
            packet = bytearray(data)
            packet[1] = (packet[1] & 0x80) | sink.payload_type
            struct.pack_into("!I", packet, 8, sink.ssrc)
            if kind == "video":
                video_forwarded += 1
                if video_forwarded == 60:
                    seq_offset = 1000  # a jump past the jitter buffer: the viewer sends a PLI
                (seq,) = struct.unpack_from("!H", packet, 2)
                seq = (seq + seq_offset) & 0xFFFF
                struct.pack_into("!H", packet, 2, seq)
                forwarded[seq] = bytes(packet)
            viewer.send_rtp(bytes(packet))

        publisher.on_rtp = forward

        client = client_pc()
        client.addTransceiver("video", direction="recvonly")
        client.addTransceiver("audio", direction="recvonly")
        answer = await viewer.accept_offer(await client_offer(client))
        sinks: dict[str, SinkStream] = {s.kind: s for s in viewer.sinks}
        assert set(sinks) == {"video", "audio"}
        for transceiver in client.getTransceivers():
            assert sinks[transceiver.kind].mid == transceiver.mid
        await client.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
        at_client: list[bytes] = []
        lost: list[int] = []

        video_in = 0

        def lose_one(data: bytes) -> bool:
            nonlocal video_in
            at_client.append(data)
            changed()
            if data[1] & 0x7F == sinks["video"].payload_type:
                video_in += 1
                if video_in == 20:  # lost on its way in: the viewer NACKs it
                    lost.append(struct.unpack_from("!H", data, 2)[0])
                    return False
            return True

        adapter.observe_rtp_received(client, lose_one)

        frames: dict[str, list[Any]] = {"video": [], "audio": []}

        async def consume(kind: str) -> None:
            receiver = next(t.receiver for t in client.getTransceivers() if t.kind == kind)
            while True:
                frames[kind].append(await receiver.track.recv())
                changed()

        consumers = [asyncio.create_task(consume(kind)) for kind in ("video", "audio")]
        try:
            await wait_until(lambda: viewer_states == ["connected"], "viewer connected")
            await wait_until(
                lambda: len(frames["video"]) >= 5 and len(frames["audio"]) >= 10,
                "decoded video and audio frames at the viewer",
                limit=15,
            )
            await wait_until(lambda: bool(lost) and lost[0] in nacked, "a NACK for the lost packet")

            # the retransmission got through SRTP (same index) to the client
            def copies_of_lost() -> int:
                wanted = (lost[0], sinks["video"].ssrc)
                return sum(1 for p in at_client if struct.unpack_from("!H4xI", p, 2) == wanted)

            await wait_until(lambda: copies_of_lost() == 2, "the lost packet retransmitted")
            await wait_until(lambda: (206, 1) in rtcp_seen, "a PLI from the viewer")
        finally:
            for task in consumers:
                task.cancel()
            await asyncio.gather(*consumers, return_exceptions=True)

        assert isinstance(frames["video"][-1], av.VideoFrame)
        assert frames["video"][-1].width == PatternTrack.WIDTH
        assert isinstance(frames["audio"][-1], av.AudioFrame)
        assert counters.bytes_sent > 0
        assert {struct.unpack_from("!I", p, 8)[0] for p in at_client} == {s.ssrc for s in sinks.values()}
        # aiortc's own sender loops never ran: no zero-count SRs, no encoder
        for sender in viewer._pc.getSenders():  # type: ignore[union-attr]
            assert isinstance(sender, RTCRtpSender)
            assert mangled(sender, "RTCRtpSender", "rtp_task") is None
            assert mangled(sender, "RTCRtpSender", "rtcp_task") is None
        for receiver in viewer._pc.getReceivers():  # type: ignore[union-attr]
            assert mangled(receiver, "RTCRtpReceiver", "decoder_thread") is None
        # the only decoder threads are the viewer client's
        assert sorted(decoder_threads()) == ["audio-decoder", "video-decoder"]

        await viewer.close()
        await publisher.close()
        assert viewer_states == ["connected", "closed"]
        await close_client(client)
        await close_client(pub_client)

    await run(main)


async def test_send_before_connected_is_dropped_and_counted() -> None:
    async def main() -> None:
        counters = TransportCounters()
        viewer = ViewerConnection(ICE, MEDIA, counters)
        viewer.send_rtp(b"\x80\x60" + bytes(30))
        viewer.send_rtcp(struct.pack("!BBHII", 0x81, 206, 2, 1, 2))
        client = client_pc()
        client.addTransceiver("video", direction="recvonly")
        await viewer.accept_offer(await client_offer(client))
        viewer.send_rtp(b"\x80\x60" + bytes(30))  # answered, not connected
        assert (counters.rtp_dropped, counters.rtcp_dropped, counters.bytes_sent) == (2, 1, 0)
        await viewer.close()
        viewer.send_rtp(b"\x80\x60" + bytes(30))
        assert counters.rtp_dropped == 3
        await close_client(client)

    await run(main)


async def test_viewer_sendrecv_offer_is_answered_sendonly() -> None:
    async def main() -> None:
        client = client_pc()
        client.addTransceiver(PatternTrack(), direction="sendrecv")
        client.addTransceiver(AudioStreamTrack(), direction="sendrecv")
        viewer = ViewerConnection(ICE, MEDIA, TransportCounters())
        answer = await viewer.accept_offer(await client_offer(client))
        directions = [section.direction for section in sdp.parse_sdp_untrusted(answer).media]
        assert directions == ["sendonly", "sendonly"]
        assert [sink.kind for sink in viewer.sinks] == ["video", "audio"]
        assert len({sink.ssrc for sink in viewer.sinks}) == 2
        await viewer.close()
        await close_client(client)

    await run(main)


# -- (3) candidates ------------------------------------------------------------------


async def _answer_candidates(ice: IceSettings) -> tuple[str, list[tuple[str, int, str]]]:
    server = ViewerConnection(ice, MEDIA, TransportCounters())
    client = client_pc()
    client.addTransceiver("video", direction="recvonly")
    client.addTransceiver("audio", direction="recvonly")
    answer = await server.accept_offer(await client_offer(client))
    await server.close()
    await close_client(client)
    return answer, sdp.candidate_addresses(answer)


async def test_answer_candidates_only_on_configured_host_address() -> None:
    async def main() -> None:
        answer, candidates = await _answer_candidates(ICE)
        assert candidates, answer
        assert {(address, kind) for address, _, kind in candidates} == {("127.0.0.1", "host")}
        assert all(port > 0 for _, port, _ in candidates)
        assert "a=end-of-candidates" in answer

    await run(main)


async def test_announced_address_rewrites_host_candidates() -> None:
    async def main() -> None:
        ice = IceSettings(host_addresses=["127.0.0.1"], announced_address="203.0.113.7", stun_servers=[])
        answer, candidates = await _answer_candidates(ice)
        assert candidates
        assert {address for address, _, _ in candidates} == {"203.0.113.7"}
        assert "127.0.0.1" not in answer
        assert "c=IN IP4 203.0.113.7" in answer

    await run(main)


# -- (4) refusals --------------------------------------------------------------------


async def _offer_with(video_codec: str | None, audio: bool = True) -> str:
    client = client_pc()
    if video_codec is not None:
        transceiver = client.addTransceiver("video", direction="sendonly")
        caps = RTCRtpSender.getCapabilities("video").codecs
        transceiver.setCodecPreferences([c for c in caps if c.mimeType == video_codec])
    if audio:
        client.addTransceiver("audio", direction="sendonly")
    offer = await client_offer(client)
    await close_client(client)
    return offer


@pytest.mark.parametrize("bad", ["", "hello", "v=0\r\n", "v=0\r\nm=video\r\n", "v=1\r\nx"])
async def test_unparseable_offer_is_sdp_error(bad: str) -> None:
    async def main() -> None:
        for connection in (
            PublisherConnection(ICE, MEDIA, TransportCounters()),
            ViewerConnection(ICE, MEDIA, TransportCounters()),
        ):
            with pytest.raises(SdpError):
                await connection.accept_offer(bad)
            await connection.close()

    await run(main)


async def test_offer_aiortc_cannot_take_is_sdp_error_and_a_good_offer_may_follow() -> None:
    async def main() -> None:
        good = await _offer_with("video/VP8")
        # no ICE credentials / fingerprint: our parser lets it through, aiortc refuses
        broken = "\r\n".join(
            line for line in good.splitlines() if not line.startswith(("a=ice-ufrag", "a=fingerprint"))
        )
        server = PublisherConnection(ICE, MEDIA, TransportCounters())
        with pytest.raises(SdpError):
            await server.accept_offer(broken)
        answer = await server.accept_offer(good)
        assert "a=recvonly" in answer
        await server.close()

    await run(main)


async def test_host_offer_without_vp8_or_opus_is_unsupported_codec() -> None:
    async def main() -> None:
        h264_only = await _offer_with("video/H264")
        server = PublisherConnection(ICE, MEDIA, TransportCounters())
        with pytest.raises(UnsupportedCodecError):
            await server.accept_offer(h264_only)
        no_opus = (await _offer_with(None)).replace("opus/48000/2", "foo/48000/2")
        with pytest.raises(UnsupportedCodecError):
            await server.accept_offer(no_opus)
        await server.close()

    await run(main)


async def test_nothing_to_send_or_receive_is_sdp_error() -> None:
    async def main() -> None:
        client = client_pc()
        client.addTransceiver("video", direction="recvonly")
        recvonly = await client_offer(client)
        await close_client(client)
        publisher = PublisherConnection(ICE, MEDIA, TransportCounters())
        with pytest.raises(SdpError, match="no audio or video to send"):
            await publisher.accept_offer(recvonly)
        await publisher.close()

        sendonly = await _offer_with("video/VP8")
        viewer = ViewerConnection(ICE, MEDIA, TransportCounters())
        with pytest.raises(SdpError, match="to receive"):
            await viewer.accept_offer(sendonly)
        await viewer.close()

    await run(main)


# -- (5) close ----------------------------------------------------------------------


def _udp_ports() -> set[int]:
    ports = set()
    for path in ("/proc/self/net/udp", "/proc/self/net/udp6"):
        try:
            with open(path) as f:
                next(f)
                for line in f:
                    ports.add(int(line.split()[1].rsplit(":", 1)[1], 16))
        except FileNotFoundError:
            pass
    return ports


async def test_close_leaves_no_tasks_and_no_sockets() -> None:
    async def main() -> None:
        me = asyncio.current_task()
        tasks_before = asyncio.all_tasks() - {me}
        ports_before = _udp_ports()

        counters = TransportCounters()
        server, client, packets, states = await connect_publisher(counters)
        await wait_until(lambda: len(packets) > 10, "media")
        server_ports = {port for _, port, _ in sdp.candidate_addresses(server_answer(server))}
        assert server_ports and server_ports <= _udp_ports()
        assert server._tasks.pending  # DTLS / ICE tasks while connected

        await server.close()  # the client is still up
        assert server._tasks.pending == 0
        assert not server_ports & _udp_ports()
        assert states == ["connected", "closed"]
        await server.close()  # idempotent
        assert states == ["connected", "closed"]

        await close_client(client)
        # aiortc leaves the client's DTLS task to die by itself
        leftovers = asyncio.all_tasks() - {me} - tasks_before
        if leftovers:
            await asyncio.wait(leftovers, timeout=5.0)
        assert asyncio.all_tasks() - {me} == tasks_before
        assert _udp_ports() == ports_before

    await run(main)


def server_answer(server: PublisherConnection) -> str:
    pc = server._pc
    assert pc is not None
    return pc.localDescription.sdp


async def test_close_before_connecting_and_without_offer() -> None:
    async def main() -> None:
        me = asyncio.current_task()
        ports_before = _udp_ports()
        await PublisherConnection(ICE, MEDIA, TransportCounters()).close()

        viewer = ViewerConnection(ICE, MEDIA, TransportCounters())
        states: list[str] = []
        viewer.on_state = states.append
        client = client_pc()
        client.addTransceiver("video", direction="recvonly")
        await viewer.accept_offer(await client_offer(client))  # client never connects
        await close_client(client)
        await viewer.close()
        assert states == ["closed"]
        assert asyncio.all_tasks() - {me} == set()
        assert _udp_ports() == ports_before

    await run(main)


async def test_remote_close_is_reported() -> None:
    async def main() -> None:
        server, client, _, states = await connect_publisher(TransportCounters())
        await close_client(client)  # DTLS close_notify: aiortc closes the server pc
        await wait_until(lambda: states[-1] == "closed", "closed reported")
        await server.close()
        assert states == ["connected", "closed"]

    await run(main)


async def test_trickled_candidates_connect() -> None:
    """The client's candidates arrive by trickle (some before the answer exists)."""

    async def main() -> None:
        server = ViewerConnection(ICE, MEDIA, TransportCounters())
        states: list[str] = []
        server.on_state = recorded(states.append)
        client = client_pc()
        client.addTransceiver("video", direction="recvonly")
        offer = await client_offer(client)
        lines = offer.splitlines()
        candidates = [line[2:] for line in lines if line.startswith("a=candidate:")]
        stripped = "\r\n".join(line for line in lines if not line.startswith(("a=candidate:", "a=end-of-candidates")))
        await server.add_remote_candidate(candidates[0], "0", 0)  # before the offer
        with pytest.raises(SdpError):
            await server.add_remote_candidate("candidate:garbage", "0", 0)
        answer = await server.accept_offer(stripped + "\r\n")
        for candidate in candidates[1:]:
            await server.add_remote_candidate(candidate, "0", 0)
        await server.add_remote_candidate("", None, None)
        await client.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
        await wait_until(lambda: states == ["connected"], "connected by trickle")
        await server.close()
        await close_client(client)

    await run(main)
