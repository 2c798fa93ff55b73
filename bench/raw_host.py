"""A host made of raw parts that publishes pre-encoded VP8 layers and Opus as a browser does
(``simulcast.py``'s; not a benchmark itself). aiortc cannot send simulcast, so this one is built
on ``tests/raw_peer.py``'s :class:`RawPeer` (UDP socket, STUN answers, the project's sans-IO
DTLS, pylibsrtp) and packetizes the files itself:

- **VP8** (RFC 7741): a 4-byte descriptor on every packet (X=1, I=1 with a 15-bit picture id,
  S=1 on a frame's first packet), the frame split in packets of equal size so that none is over
  ``MAX_RTP_SIZE`` bytes, the marker bit on its last; one SSRC, sequence, RTP clock and picture
  id per layer, each starting at random as Chromium's do.
- **Header extensions** on every packet: the MID, and on a simulcast layer's the RID
  (``sdes:rtp-stream-id``) the offer names it by.
- **Pacing** as libwebrtc paces: one pacer for the whole host sends video RTP no faster than
  ``PACING_FACTOR`` (2.5) x the bitrate of all it sends (layers and audio), so that a keyframe
  leaves over tens of ms, not in one burst; audio is not held (libwebrtc sends it first).
- **Sender reports** of every stream once a second (NTP from the wall clock, the RTP time of
  that moment on the stream's clock), so that the server can bridge a viewer's timestamps from
  one layer to another.
- **Keyframe requests**: a PLI or FIR for a layer's SSRC makes *that layer* jump to its file's
  next keyframe, as libwebrtc does for a simulcast stream (a keyframe of one layer only); the
  other layers go on. Requests, NACKs and REMBs are counted (:class:`HostCounters`).

Every stream's frames follow one clock: frame N of each file is captured at the same moment,
and its RTP timestamp is that moment on the stream's clock. A :class:`Gate` pauses the
host (``harness.read_point``): after a pause the frames go on from the moment it reopens (no
catch-up burst), their timestamps jumping as a camera's would.
"""

from __future__ import annotations

import math
import secrets
import sys
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parent.parent))  # tests.raw_peer, media, transport

import trio
from harness import LOOPBACK, Gate, next_keyframe
from make_media import EncodedStream

from media.errors import MalformedPacket
from media.rtcp import Fir, Nack, Pli, Remb, build_sr, parse_rtcp_untrusted
from media.rtp import FIXED_HEADER, encode_extensions
from media_server_client.messages import Ping
from media_server_client.signaling import SignalingSession
from tests.raw_peer import MID_EXTENSION_ID, RID_EXTENSION_ID, RawPeer, raw_peer

VP8_PT = 96  # the payload types of RawPeer's offer
OPUS_PT = 111
MAX_RTP_SIZE = 1200  # libwebrtc's largest RTP packet, header and extensions included
DESCRIPTOR_SIZE = 4  # X=1, I=1 with a 15-bit picture id
PACING_FACTOR = 2.5  # libwebrtc's pacer: its budget is 2.5x the target bitrate
SENDER_REPORT_INTERVAL = 1.0
KEEPALIVE_SECONDS = 20.0  # as the bots' (the server ends a session silent for 60 s)
NTP_EPOCH_OFFSET = 2_208_988_800  # seconds from 1900 (NTP) to 1970 (Unix)
VIDEO_MID, AUDIO_MID = b"1", b"0"  # RawPeer's offer: audio is mid 0, video mid 1


class FrameClock:
    """When each frame of a stream is due, a frame every ``period`` s; a pause of the gate
    moves the later frames by its length (no catch-up burst)."""

    def __init__(self, gate: Gate, period: float) -> None:
        self._gate = gate
        self._period = period
        self._start: float | None = None
        self._count = 0

    async def next_frame(self) -> float:
        """Sleep until the next frame is due; returns when it was due (trio clock)."""
        if not self._gate.is_open:
            paused = trio.current_time()
            await self._gate.wait_in_trio()
            if self._start is not None:
                self._start += trio.current_time() - paused
        if self._start is None:
            self._start = trio.current_time()
        due = self._start + self._count * self._period
        await trio.sleep_until(due)
        self._count += 1
        return due


class RtpStream:
    """One SSRC's RTP: its header fields (random starts, as a browser's) and the header
    extension block every packet carries; counts what it sent (for its sender reports)."""

    def __init__(self, payload_type: int, clock_rate: int, extensions: list[tuple[int, bytes]], origin: float) -> None:
        self.payload_type = payload_type
        self.clock_rate = clock_rate
        self.ssrc = secrets.randbits(32) or 1
        self.seq = secrets.randbits(16)
        self.ts_base = secrets.randbits(32)
        self.origin = origin  # trio time of RTP time ts_base
        self._extensions = encode_extensions(extensions)
        self._b0 = 0x90 if self._extensions else 0x80
        self.packets = 0
        self.octets = 0

    def rtp_time(self, at: float) -> int:
        """The stream's RTP timestamp of the moment ``at`` (trio clock)."""
        return (self.ts_base + round((at - self.origin) * self.clock_rate)) & 0xFFFFFFFF

    def packet(self, payload: bytes, timestamp: int, marker: bool) -> bytes:
        header = FIXED_HEADER.pack(
            self._b0, (0x80 if marker else 0) | self.payload_type, self.seq, timestamp, self.ssrc
        )
        self.seq = (self.seq + 1) & 0xFFFF
        self.packets += 1
        self.octets += len(payload)
        return header + self._extensions + payload

    @property
    def payload_room(self) -> int:
        """The most payload one packet of this stream may carry (MAX_RTP_SIZE in all)."""
        return MAX_RTP_SIZE - FIXED_HEADER.size - len(self._extensions)

    def sender_report(self, at: float, wall: float) -> bytes:
        """An SR of the moment ``at`` (trio clock), ``wall`` (Unix time) on the NTP clock."""
        ntp = round((wall + NTP_EPOCH_OFFSET) * 2**32)
        return build_sr(self.ssrc, ntp, self.rtp_time(at), self.packets, self.octets)


def vp8_payloads(frame: bytes, picture_id: int, room: int) -> list[bytes]:
    """A VP8 frame in RTP payloads of equal size (each at most ``room`` bytes, its descriptor
    included): the descriptor X=1, I=1 with the 15-bit picture id, S=1 on the first."""
    chunk_room = room - DESCRIPTOR_SIZE
    count = max(1, math.ceil(len(frame) / chunk_room))
    size, extra = divmod(len(frame), count)
    pid = bytes((0x80 | (picture_id >> 8) & 0x7F, picture_id & 0xFF))
    payloads = []
    at = 0
    for index in range(count):
        end = at + size + (1 if index < extra else 0)
        descriptor = bytes((0x90 if index == 0 else 0x80, 0x80)) + pid
        payloads.append(descriptor + frame[at:end])
        at = end
    return payloads


class VideoLayer:
    """One layer: its file looped at its frame rate, packetized on its own SSRC."""

    def __init__(self, name: str, rid: str | None, stream: EncodedStream, origin: float) -> None:
        self.name = name
        self.rid = rid
        self.file = stream
        extensions = [(MID_EXTENSION_ID, VIDEO_MID)]
        if rid is not None:
            extensions.append((RID_EXTENSION_ID, rid.encode()))
        self.rtp = RtpStream(VP8_PT, stream.clock_rate, extensions, origin)
        self.picture_id = secrets.randbits(15)
        self._index = 0
        self._keyframe_wanted = False
        self.keyframes_requested = 0

    def request_keyframe(self) -> None:
        self.keyframes_requested += 1
        self._keyframe_wanted = True

    def frame_packets(self, captured_at: float) -> list[bytes]:
        """The next frame's packets, captured at ``captured_at`` (its next keyframe if asked)."""
        if self._keyframe_wanted:
            self._keyframe_wanted = False
            self._index = next_keyframe(self.file.keyframes, self._index)
        frame = self.file.frames[self._index]
        self._index = (self._index + 1) % len(self.file.frames)
        timestamp = self.rtp.rtp_time(captured_at)
        payloads = vp8_payloads(frame, self.picture_id, self.rtp.payload_room)
        self.picture_id = (self.picture_id + 1) & 0x7FFF
        last = len(payloads) - 1
        return [self.rtp.packet(payload, timestamp, index == last) for index, payload in enumerate(payloads)]


class AudioTrack:
    """The Opus file looped, a packet a frame."""

    def __init__(self, stream: EncodedStream, origin: float) -> None:
        self.file = stream
        self.rtp = RtpStream(OPUS_PT, stream.clock_rate, [(MID_EXTENSION_ID, AUDIO_MID)], origin)
        self._index = 0

    def next_packet(self, captured_at: float) -> bytes:
        frame = self.file.frames[self._index]
        self._index = (self._index + 1) % len(self.file.frames)
        return self.rtp.packet(frame, self.rtp.rtp_time(captured_at), False)


@dataclass
class HostCounters:
    """The server's RTCP to the host, counted."""

    keyframe_requests: dict[str, int] = field(default_factory=dict)  # PLI/FIR by layer name
    nacked: int = 0  # sequence numbers in NACKs
    rembs: int = 0
    remb_bps: int = 0  # the latest
    malformed: int = 0


class RawHost:
    """Publishes ``layers`` (simulcast when they carry rids) and ``audio`` on a connected
    :class:`RawPeer` (see the module's docstring)."""

    def __init__(self, peer: RawPeer, layers: list[VideoLayer], audio: AudioTrack, gate: Gate) -> None:
        self.peer = peer
        self.layers = layers
        self.audio = audio
        self.gate = gate
        bits_per_second = sum(layer.file.bitrate for layer in layers) + audio.file.bitrate
        self.pacing_bps = PACING_FACTOR * bits_per_second
        self.counters = HostCounters(keyframe_requests={layer.name: 0 for layer in layers})
        self._by_ssrc = {layer.rtp.ssrc: layer for layer in layers}
        self._to_pacer, self._paced = trio.open_memory_channel[bytes](math.inf)

    def on_rtcp(self, data: bytes) -> None:
        """The server's RTCP: a PLI/FIR for a layer makes that layer's next frame a keyframe."""
        try:
            packets = parse_rtcp_untrusted(data)
        except MalformedPacket:
            self.counters.malformed += 1
            return
        for packet in packets:
            if isinstance(packet, Pli):
                self._keyframe_for(packet.media_ssrc)
            elif isinstance(packet, Fir):
                for entry in packet.entries:
                    self._keyframe_for(entry.ssrc)
            elif isinstance(packet, Nack):
                self.counters.nacked += len(packet.lost)
            elif isinstance(packet, Remb):
                self.counters.rembs += 1
                self.counters.remb_bps = packet.bitrate_bps

    def _keyframe_for(self, ssrc: int) -> None:
        layer = self._by_ssrc.get(ssrc)
        if layer is not None:
            layer.request_keyframe()
            self.counters.keyframe_requests[layer.name] += 1

    async def run(self) -> None:
        """Send until cancelled."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._video)
            nursery.start_soon(self._audio)
            nursery.start_soon(self._pacer)
            nursery.start_soon(self._sender_reports)

    async def _video(self) -> None:
        clock = FrameClock(self.gate, self.layers[0].file.frame_seconds)
        while True:
            captured_at = await clock.next_frame()
            for layer in self.layers:
                for packet in layer.frame_packets(captured_at):
                    self._to_pacer.send_nowait(packet)

    async def _audio(self) -> None:
        clock = FrameClock(self.gate, self.audio.file.frame_seconds)
        while True:
            captured_at = await clock.next_frame()
            await self.peer.send_rtp(self.audio.next_packet(captured_at))

    async def _pacer(self) -> None:
        """Video RTP in order, no faster than pacing_bps."""
        free_at = 0.0
        async for packet in self._paced:
            now = trio.current_time()
            start = max(now, free_at)
            free_at = start + len(packet) * 8 / self.pacing_bps
            if start > now:
                await trio.sleep_until(start)
            await self.peer.send_rtp(packet)

    async def _sender_reports(self) -> None:
        streams = [layer.rtp for layer in self.layers] + [self.audio.rtp]
        while True:
            await trio.sleep(SENDER_REPORT_INTERVAL)
            at, wall = trio.current_time(), time.time()
            for stream in streams:
                if stream.packets:
                    await self.peer.send_rtcp(stream.sender_report(at, wall))


@asynccontextmanager
async def open_raw_host(
    ws_url: str,
    room_id: str,
    videos: Sequence[tuple[str, str | None, EncodedStream]],
    audio: EncodedStream,
    gate: Gate,
    *,
    user_id: str = "host",
) -> AsyncIterator[RawHost]:
    """A raw host joined to ``room_id``, connected, publishing until the block ends. ``videos``:
    its layers, lowest first, as (name, rid, file); with two or more, a simulcast offer names
    them by rid (their packets carry it); with one, an offer without simulcast (its rid unused)."""
    simulcast = len(videos) > 1
    rids = [rid for _, rid, _ in videos if rid is not None] if simulcast else []
    joined = raw_peer(ws_url, room_id, role="host", user_id=user_id, simulcast_rids=rids, mid_extension=True)
    async with joined as (peer, session):
        assert peer.server[0] in LOOPBACK, peer.server
        origin = trio.current_time()
        layers = [VideoLayer(name, rid if simulcast else None, stream, origin) for name, rid, stream in videos]
        host = RawHost(peer, layers, AudioTrack(audio, origin), gate)
        peer.on_rtcp = host.on_rtcp
        async with trio.open_nursery() as nursery:
            nursery.start_soon(host.run)
            nursery.start_soon(keep_alive, session)
            yield host
            nursery.cancel_scope.cancel()


async def keep_alive(session: SignalingSession) -> None:
    """A ping now and then: the server ends a session silent for a minute."""
    while True:
        await trio.sleep(KEEPALIVE_SECONDS)
        await session.send(Ping())
