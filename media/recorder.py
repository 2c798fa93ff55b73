"""Recording a host's VP8 or H.264 + Opus RTP to WebM / Matroska without transcoding (sans-IO).

:class:`Recorder` is fed the host's RTP packets (SRTP already removed; RTX
already turned back into the original packets, if the caller handles RTX) with
their arrival times, and hands the file's bytes to a ``write`` callable: WebM
when its video is VP8 (or it has none), Matroska when its video is H.264. It never
blocks, sleeps or reads a clock: time is the ``arrival`` the caller passes
(seconds, monotonic), and :meth:`Recorder.advance` lets it act on time passing
without packets (limits, flushing after the host left).

Pipeline, per stream (video, audio)::

    RTP packet -> reorder buffer (by sequence number; a gap is declared lost after
                  ``reorder_window`` seconds) -> depacketizer (VP8 frames, RFC 7741;
                  H.264 access units, RFC 6184; Opus: one packet is one frame) -> timeline (ms) -> interleaver
                  (orders both streams by timestamp, ``interleave_window``) -> WebmWriter

Timeline: each stream's RTP timestamps are unwrapped (32-bit) and mapped to
milliseconds from an anchor: the arrival time of the stream's first packet.
Both streams are thus aligned by the arrival of their first packets. A new
SSRC (or :meth:`Recorder.host_changed`, or an RTP timestamp jump the arrival
times do not explain) starts a new *segment* of the stream, anchored at the
arrival of its first packet, never earlier than what the stream already
produced: the file's timeline keeps the wall-clock gap while the host was away
and never goes backwards.

The file starts at the first complete video keyframe (its timestamp is 0; audio
before it is dropped), whose codec is the file's: frames of the other codec (a
later host's) are dropped. Without video (no video payload type, or no video packet
at all within ``keyframe_timeout`` seconds of the first audio) the file is
audio only. After any video loss (a sequence gap, a frame without its start),
video frames are dropped until the next keyframe; :attr:`Recorder.wants_keyframe`
says when a PLI would help.

H.264: an access unit is the packets of one timestamp, ended by the marker bit (or by
the next timestamp); after a loss, the next is taken from a marker bit, a timestamp
change or a packet that opens one (:func:`media.h264.opens_access_unit`). A keyframe
holds an IDR slice; its sample carries the SPS and PPS in band (the newest seen when it
came without them), and the first keyframe's make the track's avcC (CodecPrivate).
Samples are the NAL units with 4-byte lengths, access unit delimiters dropped.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Literal

from media import h264
from media.errors import MalformedPacket
from media.rtp import RtpHeader, parse_rtp_untrusted
from media.vp8 import descriptor_length
from media.webm import CODEC_AVC, CODEC_VP8, Patch, WebmWriter

__all__ = [
    "AUDIO_CLOCK_RATE",
    "VIDEO_CLOCK_RATE",
    "Recorder",
    "RecorderStats",
    "StopReason",
    "opus_packet_duration_ms",
    "vp8_keyframe_size",
]

VIDEO_CLOCK_RATE = 90000
AUDIO_CLOCK_RATE = 48000

StopReason = Literal["max_bytes", "max_seconds"]

_VIDEO = 0
_AUDIO = 1

# An RTP timestamp step more than this beyond the arrival-time step (or backwards
# by more than this) is a discontinuity: the stream is re-anchored.
_RESYNC_MS = 5000.0
_MAX_HELD_PACKETS = 512  # reorder buffer bound, per stream
_MAX_FRAME_BYTES = 8 << 20  # a video frame larger than this is dropped
_DEFAULT_VIDEO_STEP_MS = 1000.0 / 30


def opus_packet_duration_ms(packet: bytes) -> float:
    """The duration of an Opus packet from its TOC byte (RFC 6716 section 3.1); 0.0 if malformed."""
    if not packet:
        return 0.0
    toc = packet[0]
    config = toc >> 3
    if config < 12:  # SILK-only: 10, 20, 40, 60 ms
        frame_ms = (10.0, 20.0, 40.0, 60.0)[config & 3]
    elif config < 16:  # hybrid: 10, 20 ms
        frame_ms = (10.0, 20.0)[config & 1]
    else:  # CELT-only: 2.5, 5, 10, 20 ms
        frame_ms = (2.5, 5.0, 10.0, 20.0)[config & 3]
    code = toc & 3
    if code == 0:
        frames = 1
    elif code in (1, 2):
        frames = 2
    else:
        if len(packet) < 2:
            return 0.0
        frames = packet[1] & 0x3F
    return frame_ms * frames


def vp8_keyframe_size(frame: bytes) -> tuple[int, int] | None:
    """``(width, height)`` of a VP8 keyframe (RFC 6386 section 9.1: frame tag, start
    code 9d 01 2a, 14-bit width and height), or None if ``frame`` is not a well-formed one."""
    if len(frame) < 10 or frame[0] & 1 or frame[3:6] != b"\x9d\x01\x2a":
        return None
    width = int.from_bytes(frame[6:8], "little") & 0x3FFF
    height = int.from_bytes(frame[8:10], "little") & 0x3FFF
    if not width or not height:
        return None
    return width, height


@dataclass(slots=True)
class RecorderStats:
    video_frames_written: int = 0
    audio_frames_written: int = 0
    video_frames_dropped_incomplete: int = 0  # a packet of it was lost, or it was malformed
    video_frames_dropped_before_keyframe: int = 0  # complete, but after a loss / before the first keyframe
    video_frames_dropped_no_track: int = 0  # the file was started audio only
    video_frames_dropped_other_codec: int = 0  # not the codec the file's video started with (a later host's)
    audio_frames_dropped_before_start: int = 0  # before the first keyframe (or dropped at a limit)
    packets_lost: int = 0  # sequence numbers never received (declared after the reorder window)
    packets_late: int = 0  # duplicates, too late, or from an SSRC already replaced
    packets_ignored: int = 0  # malformed, or a payload type that is none of VP8, H.264, Opus
    segments: int = 0  # RTP segments started (first packets, new SSRCs, host changes, resyncs)
    bytes_written: int = 0
    duration_ms: float = 0.0

    def as_dict(self) -> dict[str, int | float]:
        return asdict(self)


class _Packet:
    __slots__ = ("arrival_ms", "ext_ts", "h264", "marker", "payload")

    def __init__(self, ext_ts: int, marker: bool, payload: bytes, arrival_ms: float, h264: bool) -> None:
        self.ext_ts = ext_ts
        self.marker = marker
        self.payload = payload
        self.arrival_ms = arrival_ms
        self.h264 = h264


class _Frame:
    __slots__ = ("codec", "codec_private", "data", "duration_ms", "keyframe", "kind", "ms", "size")

    def __init__(
        self,
        kind: int,
        ms: float,
        data: bytes,
        keyframe: bool,
        duration_ms: float,
        size: tuple[int, int] | None = None,
        codec: str = CODEC_VP8,
        codec_private: bytes | None = None,
    ) -> None:
        self.kind = kind
        self.ms = ms
        self.data = data
        self.keyframe = keyframe
        self.duration_ms = duration_ms
        self.size = size  # a keyframe's (a file can start at it)
        self.codec = codec  # video: the Matroska CodecID
        self.codec_private = codec_private  # an H.264 keyframe's avcC


class _Stream:
    """One media stream's RTP state: the current segment's anchor, the reorder buffer, the depacketizer."""

    def __init__(self, kind: int, clock_rate: int) -> None:
        self.kind = kind
        self.clock_rate = clock_rate
        self.seen = False
        self.ssrc: int | None = None
        self.retired: set[int] = set()
        # segment: RTP -> timeline
        self.base_ext_ts = 0
        self.base_ms = 0.0
        self.highest_ts = 0  # extended
        self.highest_ts_arrival_ms = 0.0
        self.highest_seq = 0  # extended
        self.next_seq: int | None = None
        self.held: dict[int, _Packet] = {}
        self.priming_until_ms = float("-inf")
        # what this stream produced (across segments): keeps the timeline monotonic
        self.last_ms = float("-inf")
        self.last_step_ms = 0.0
        # depacketizer (VP8 or H.264: the frame in progress)
        self.parts: list[bytes] | None = None
        self.frame_ts = 0
        self.frame_bytes = 0
        self.frame_h264 = False
        self.need_keyframe = True
        # H.264: where access units begin (the last packet in sequence: its marker, its timestamp;
        # None after a gap), and the parameter sets of the current segment
        self.boundary = False
        self.prev_ts: int | None = None
        self.params = h264.ParameterSets()

    def ms(self, ext_ts: int) -> float:
        return self.base_ms + (ext_ts - self.base_ext_ts) * 1000.0 / self.clock_rate


def _signed(diff: int, bits: int) -> int:
    half = 1 << (bits - 1)
    return ((diff + half) & ((1 << bits) - 1)) - half


class Recorder:
    """Records one room's host to one WebM (VP8) or Matroska (H.264) file; see the module docstring.

    ``write`` gets the file's bytes in order; when the recorder has stopped
    (:attr:`stopped_reason`) or :meth:`finish` was called, apply the returned
    patches (:func:`media.webm.apply_patches`) to make sizes, Duration and the
    Cues' position exact. Nothing is written until the file starts.
    """

    def __init__(
        self,
        write: Callable[[bytes], object],
        *,
        vp8_payload_type: int | None,
        opus_payload_type: int | None,
        h264_payload_type: int | None = None,
        max_bytes: int | None = None,
        max_seconds: float | None = None,
        reorder_window: float = 0.15,
        interleave_window: float = 0.5,
        keyframe_timeout: float = 5.0,
        audio_channels: int = 2,
    ) -> None:
        given = [pt for pt in (vp8_payload_type, h264_payload_type, opus_payload_type) if pt is not None]
        if not given:
            raise ValueError("nothing to record: no VP8, H.264 or Opus payload type")
        if len(set(given)) != len(given):
            raise ValueError("VP8, H.264 and Opus need different payload types")
        self._write = write
        self._vp8_pt = vp8_payload_type
        self._h264_pt = h264_payload_type
        self._has_video = vp8_payload_type is not None or h264_payload_type is not None
        self._opus_pt = opus_payload_type
        self._max_bytes = max_bytes
        self._max_ms = max_seconds * 1000.0 if max_seconds is not None else None
        self._reorder_ms = reorder_window * 1000.0
        self._interleave_ms = interleave_window * 1000.0
        self._keyframe_timeout_ms = keyframe_timeout * 1000.0
        self._audio_channels = audio_channels

        self.stats = RecorderStats()
        self.stopped_reason: StopReason | None = None
        self._done = False
        self._patches: list[Patch] = []
        self._origin: float | None = None  # arrival (s) that is timeline 0 ms
        self._now_ms = 0.0
        self._video = _Stream(_VIDEO, VIDEO_CLOCK_RATE)
        self._audio = _Stream(_AUDIO, AUDIO_CLOCK_RATE)
        self._heap: list[tuple[float, int, _Frame]] = []
        self._order = 0
        self._newest_ms = float("-inf")
        self._pre_audio: list[_Frame] = []  # audio waiting for the file to start (audio-only fallback)
        self._pre_audio_since_ms = 0.0
        self._writer: WebmWriter | None = None
        self._file_offset_ms = 0.0  # timeline ms of the file's 0
        self._last_written: dict[int, int] = {}
        self._video_step_ms = _DEFAULT_VIDEO_STEP_MS

    # --- public state ---

    @property
    def started(self) -> bool:
        """Whether the file has started (its header written)."""
        return self._writer is not None

    @property
    def finished(self) -> bool:
        """Whether the file is complete: after :meth:`finish`, or a limit."""
        return self._done

    @property
    def audio_only(self) -> bool:
        return self._writer is not None and self._writer.video_track is None

    @property
    def doc_type(self) -> str | None:
        """The file's EBML DocType once it has started: "webm" (VP8 video, or audio only) or
        "matroska" (H.264 video); None before (the first keyframe decides)."""
        return self._writer.doc_type if self._writer is not None else None

    @property
    def wants_keyframe(self) -> bool:
        """True while video is flowing but frames are dropped for lack of a keyframe
        (start, loss, new host): the caller may send the host a PLI (rate-limited)."""
        return (
            not self._done
            and self._has_video
            and self._video.seen
            and self._video.need_keyframe
            and not self.audio_only
        )

    @property
    def bytes_written(self) -> int:
        return self._writer.bytes_written if self._writer is not None else 0

    @property
    def duration_ms(self) -> float:
        return self._writer.end_ms if self._writer is not None else 0.0

    # --- input ---

    def feed(self, packet: bytes, arrival: float) -> None:
        """One RTP packet of the host, received at ``arrival`` (seconds, monotonic)."""
        if self._done:
            return
        now = self._advance_clock(arrival)
        try:
            hdr = parse_rtp_untrusted(packet, parse_extensions=False)
        except MalformedPacket:
            self.stats.packets_ignored += 1
            return
        h264_packet = hdr.payload_type == self._h264_pt
        if h264_packet or hdr.payload_type == self._vp8_pt:
            stream = self._video
        elif hdr.payload_type == self._opus_pt:
            stream = self._audio
        else:
            self.stats.packets_ignored += 1
            return
        stream.seen = True
        self._push(stream, hdr, packet[hdr.payload_offset : hdr.payload_end], now, h264_packet)
        self._service(now)

    def advance(self, now: float) -> None:
        """Let time pass without a packet: releases held packets and frames, applies
        ``keyframe_timeout`` and ``max_seconds``. Call it now and then (e.g. every second)."""
        if self._done:
            return
        self._service(self._advance_clock(now))

    def host_changed(self) -> None:
        """The host left (or a new host came): the next packets start new segments,
        even with the same SSRCs, and video waits for a keyframe."""
        if self._done:
            return
        for stream in (self._video, self._audio):
            self._flush_stream(stream)
            stream.ssrc = None
            stream.retired.clear()
            stream.need_keyframe = True

    def finish(self) -> list[Patch]:
        """Flush everything and complete the file; returns the patches to apply
        (empty if nothing was ever written). Idempotent."""
        if not self._done:
            for stream in (self._video, self._audio):
                self._flush_stream(stream)
            self._release_frames(force=True)
            if not self._done and self._writer is None and self._pre_audio and not self._video.seen:
                self._start_audio_only()
            self._complete()
        return list(self._patches)

    # --- time ---

    def _advance_clock(self, arrival: float) -> float:
        if self._origin is None:
            self._origin = arrival
        self._now_ms = max(self._now_ms, (arrival - self._origin) * 1000.0)
        return self._now_ms

    def _service(self, now: float) -> None:
        for stream in (self._video, self._audio):
            if stream.held:
                self._release(stream, now, force=False)
        self._release_frames(force=False)
        if self._done:
            return
        if (
            self._writer is None
            and self._pre_audio
            and (not self._has_video or not self._video.seen)
            and now - self._pre_audio_since_ms >= self._keyframe_timeout_ms
        ):
            self._start_audio_only()
        if (
            self._writer is not None
            and self._max_ms is not None
            and now - self._file_offset_ms >= self._max_ms + self._reorder_ms + self._interleave_ms
        ):
            # no packet has reached the limit (the host is away): stop on the clock
            for stream in (self._video, self._audio):
                self._flush_stream(stream)
            self._release_frames(force=True)
            self._stop("max_seconds")

    # --- RTP ---

    def _push(self, stream: _Stream, hdr: RtpHeader, payload: bytes, now: float, h264_packet: bool) -> None:
        ssrc = hdr.ssrc
        ts = hdr.timestamp
        seq = hdr.sequence_number
        if stream.ssrc != ssrc:
            if ssrc in stream.retired:
                self.stats.packets_late += 1
                return
            self._new_segment(stream, ssrc, ts, now)
        else:
            ts_step_ms = _signed(ts - stream.highest_ts, 32) * 1000.0 / stream.clock_rate
            if ts_step_ms > now - stream.highest_ts_arrival_ms + _RESYNC_MS or ts_step_ms < -_RESYNC_MS:
                self._new_segment(stream, ssrc, ts, now)
        ext_ts = stream.highest_ts + _signed(ts - stream.highest_ts, 32)
        if ext_ts > stream.highest_ts:
            stream.highest_ts = ext_ts
            stream.highest_ts_arrival_ms = now
        if stream.next_seq is None:
            ext_seq = stream.highest_seq = stream.next_seq = seq
            # a segment's first packets are held for the reorder window: the first to
            # arrive is not necessarily the first sent
            stream.priming_until_ms = now + self._reorder_ms
        else:
            ext_seq = stream.highest_seq + _signed(seq - stream.highest_seq, 16)
            stream.highest_seq = max(stream.highest_seq, ext_seq)
        priming = now < stream.priming_until_ms
        if ext_seq < stream.next_seq and priming:
            stream.next_seq = ext_seq
        if ext_seq < stream.next_seq or ext_seq in stream.held:
            self.stats.packets_late += 1
            return
        pkt = _Packet(ext_ts, hdr.marker, payload, now, h264_packet)
        if ext_seq == stream.next_seq and not stream.held and not priming:
            stream.next_seq += 1
            self._depacketize(stream, pkt)
            return
        stream.held[ext_seq] = pkt
        self._release(stream, now, force=len(stream.held) > _MAX_HELD_PACKETS)

    def _new_segment(self, stream: _Stream, ssrc: int, ts: int, now: float) -> None:
        self._flush_stream(stream)
        if stream.ssrc is not None and stream.ssrc != ssrc:
            stream.retired.add(stream.ssrc)
        stream.ssrc = ssrc
        stream.next_seq = None
        stream.base_ext_ts = stream.highest_ts = ts
        stream.highest_ts_arrival_ms = now
        # the new segment continues the timeline from the wall clock, never backwards
        stream.base_ms = max(now, stream.last_ms + max(stream.last_step_ms, 1.0))
        stream.need_keyframe = True
        stream.boundary = False
        stream.prev_ts = None
        stream.params = h264.ParameterSets()  # a new host's own
        self.stats.segments += 1

    def _release(self, stream: _Stream, now: float, *, force: bool) -> None:
        """Hand held packets to the depacketizer in sequence order; a gap is declared
        lost once the packet after it has waited the reorder window (or on ``force``)."""
        if not force and now < stream.priming_until_ms:
            return
        stream.priming_until_ms = float("-inf")
        held = stream.held
        while held:
            assert stream.next_seq is not None
            pkt = held.pop(stream.next_seq, None)
            if pkt is not None:
                stream.next_seq += 1
                self._depacketize(stream, pkt)
                continue
            first = min(held)
            if not force and now - held[first].arrival_ms < self._reorder_ms:
                return
            self.stats.packets_lost += first - stream.next_seq
            stream.next_seq = first
            self._loss(stream)

    def _flush_stream(self, stream: _Stream) -> None:
        """End of a segment: everything held is released, an unfinished frame is dropped."""
        if stream.held:
            self._release(stream, self._now_ms, force=True)
        if stream.parts is not None:
            stream.parts = None
            self.stats.video_frames_dropped_incomplete += 1

    # --- depacketizing ---

    def _depacketize(self, stream: _Stream, pkt: _Packet) -> None:
        if stream.kind == _AUDIO:
            if pkt.payload:
                self._produce(stream, pkt.ext_ts, pkt.payload, True, opus_packet_duration_ms(pkt.payload))
            return
        payload = pkt.payload
        if not payload:  # padding only: not media, not a loss
            return
        if stream.parts is not None and pkt.h264 != stream.frame_h264:  # a codec change mid-frame
            self._loss(stream)
        if pkt.h264:
            self._depacketize_h264(stream, pkt)
            return
        n = descriptor_length(payload)
        if n < 0 or n >= len(payload):
            self.stats.packets_ignored += 1
            self._loss(stream)
            return
        b0 = payload[0]
        if b0 & 0x17 == 0x10:  # S=1, PID=0: a frame starts
            if stream.parts is not None:
                if pkt.ext_ts != stream.frame_ts:
                    self._frame_done(stream)  # contiguous up to here: only its marker was missing
                else:
                    self._loss(stream)
            stream.parts = [payload[n:]]
            stream.frame_ts = pkt.ext_ts
            stream.frame_bytes = len(payload) - n
            stream.frame_h264 = False
        elif stream.parts is None:
            # the middle of a frame whose start we never had (a segment starting mid-frame,
            # or right after a loss that already dropped the frame)
            return
        elif pkt.ext_ts != stream.frame_ts:
            self._loss(stream)
            return
        else:
            stream.parts.append(payload[n:])
            stream.frame_bytes += len(payload) - n
            if stream.frame_bytes > _MAX_FRAME_BYTES:
                self._loss(stream)
                return
        if pkt.marker:
            self._frame_done(stream)

    def _depacketize_h264(self, stream: _Stream, pkt: _Packet) -> None:
        # whether this packet begins an access unit, seen from the packet before it in sequence
        begins = stream.boundary or (stream.prev_ts is not None and pkt.ext_ts != stream.prev_ts)
        stream.boundary = pkt.marker
        stream.prev_ts = pkt.ext_ts
        if stream.parts is not None and not begins:  # the same timestamp, in sequence
            stream.parts.append(pkt.payload)
            stream.frame_bytes += len(pkt.payload)
            if stream.frame_bytes > _MAX_FRAME_BYTES:
                self._loss(stream)
                return
        else:
            if stream.parts is not None:
                self._frame_done(stream)  # contiguous up to here: only its marker was missing
            elif not begins and not h264.opens_access_unit(pkt.payload):
                # the middle of an access unit whose start we never had (lost, or before this segment)
                return
            stream.parts = [pkt.payload]
            stream.frame_ts = pkt.ext_ts
            stream.frame_bytes = len(pkt.payload)
            stream.frame_h264 = True
        if pkt.marker:
            self._frame_done(stream)

    def _loss(self, stream: _Stream) -> None:
        if stream.kind != _VIDEO:
            return
        if stream.parts is not None:
            stream.parts = None
            self.stats.video_frames_dropped_incomplete += 1
        stream.need_keyframe = True
        stream.boundary = False
        stream.prev_ts = None

    def _frame_done(self, stream: _Stream) -> None:
        parts = stream.parts
        stream.parts = None
        if not parts:
            return
        if stream.frame_h264:
            self._h264_frame_done(stream, parts)
            return
        data = b"".join(parts)
        size = vp8_keyframe_size(data)
        if not data[0] & 1 and size is None:  # says keyframe, is not a well-formed one
            self.stats.video_frames_dropped_incomplete += 1
            stream.need_keyframe = True
            return
        if size is None and stream.need_keyframe:
            self.stats.video_frames_dropped_before_keyframe += 1
            return
        stream.need_keyframe = False
        self._produce(stream, stream.frame_ts, data, size is not None, 0.0, size)

    def _h264_frame_done(self, stream: _Stream, parts: list[bytes]) -> None:
        units = h264.depacketize(parts)
        try:
            if not units:
                raise ValueError("malformed, or a first or last fragment missing")
            sample = h264.recording_sample(units, stream.params)
        except ValueError:  # or a keyframe without the parameter sets that decode it
            self.stats.video_frames_dropped_incomplete += 1
            stream.need_keyframe = True
            return
        if sample is None:  # parameter sets alone: kept for the keyframe to come
            return
        if not sample.keyframe and stream.need_keyframe:
            self.stats.video_frames_dropped_before_keyframe += 1
            return
        stream.need_keyframe = False
        self._produce(stream, stream.frame_ts, sample.data, sample.keyframe, 0.0, sample.size, CODEC_AVC, sample.avcc)

    def _produce(
        self,
        stream: _Stream,
        ext_ts: int,
        data: bytes,
        keyframe: bool,
        duration_ms: float,
        size: tuple[int, int] | None = None,
        codec: str = CODEC_VP8,
        codec_private: bytes | None = None,
    ) -> None:
        ms = stream.ms(ext_ts)
        if ms > stream.last_ms:
            if stream.kind == _AUDIO:
                stream.last_step_ms = duration_ms
            elif stream.last_ms > float("-inf"):
                stream.last_step_ms = min(ms - stream.last_ms, 1000.0)
            stream.last_ms = ms
        self._newest_ms = max(self._newest_ms, ms)
        self._order += 1
        frame = _Frame(stream.kind, ms, data, keyframe, duration_ms, size, codec, codec_private)
        heapq.heappush(self._heap, (ms, self._order, frame))

    # --- interleaving and writing ---

    def _release_frames(self, *, force: bool) -> None:
        limit = max(self._newest_ms, self._now_ms) - self._interleave_ms
        heap = self._heap
        while heap and not self._done and (force or heap[0][0] <= limit):
            self._write_frame(heapq.heappop(heap)[2])

    def _write_frame(self, frame: _Frame) -> None:
        if self._writer is None:
            if frame.kind == _AUDIO:
                if not self._has_video:
                    self._start(frame.ms, None)
                else:
                    self._hold_pre_audio(frame)
                    return
            elif frame.size is None:  # cannot happen: the depacketizer starts with a keyframe
                self.stats.video_frames_dropped_before_keyframe += 1
                return
            else:
                self._start(frame.ms, frame)
                self.stats.audio_frames_dropped_before_start += len(self._pre_audio)
                self._pre_audio.clear()
        writer = self._writer
        assert writer is not None
        ts = round(frame.ms - self._file_offset_ms)
        if ts < 0:
            if frame.kind == _AUDIO:
                self.stats.audio_frames_dropped_before_start += 1
            else:
                self.stats.video_frames_dropped_before_keyframe += 1
            return
        if frame.kind == _VIDEO and writer.video_track is None:
            self.stats.video_frames_dropped_no_track += 1
            return
        if frame.kind == _VIDEO and frame.codec != writer.video_codec:
            self.stats.video_frames_dropped_other_codec += 1
            return
        last = self._last_written.get(frame.kind)
        if last is not None and ts <= last:
            ts = last + 1
        if self._max_ms is not None and ts >= self._max_ms:
            self._stop("max_seconds")
            return
        if (
            self._max_bytes is not None
            and writer.bytes_written + writer.finish_overhead() + writer.block_overhead() + len(frame.data)
            > self._max_bytes
        ):
            self._stop("max_bytes")
            return
        if frame.kind == _VIDEO:
            if last is not None and 0 < ts - last <= 200:
                self._video_step_ms = float(ts - last)
            writer.add_video_frame(ts, frame.data, frame.keyframe, self._video_step_ms)
            self.stats.video_frames_written += 1
        else:
            writer.add_audio_frame(ts, frame.data, frame.duration_ms)
            self.stats.audio_frames_written += 1
        self._last_written[frame.kind] = ts
        self.stats.bytes_written = writer.bytes_written
        self.stats.duration_ms = writer.end_ms

    def _hold_pre_audio(self, frame: _Frame) -> None:
        if not self._pre_audio:
            self._pre_audio_since_ms = self._now_ms
        self._pre_audio.append(frame)
        # keep at most keyframe_timeout of audio: if video starts, it is dropped anyway
        drop = 0
        while frame.ms - self._pre_audio[drop].ms > self._keyframe_timeout_ms:
            drop += 1
        if drop:
            del self._pre_audio[:drop]
            self.stats.audio_frames_dropped_before_start += drop

    def _start(self, offset_ms: float, keyframe: _Frame | None) -> None:
        """The file starts at ``keyframe`` (its size and codec are the video track's), or audio only."""
        self._file_offset_ms = offset_ms
        self._writer = WebmWriter(
            self._write,
            video=keyframe.size if keyframe is not None else None,
            audio=self._opus_pt is not None,
            video_codec=keyframe.codec if keyframe is not None else CODEC_VP8,
            video_codec_private=keyframe.codec_private if keyframe is not None else None,
            audio_channels=self._audio_channels,
        )
        self.stats.bytes_written = self._writer.bytes_written

    def _start_audio_only(self) -> None:
        frames = self._pre_audio
        self._pre_audio = []
        self._file_offset_ms = frames[0].ms
        self._writer = WebmWriter(self._write, video=None, audio=True, audio_channels=self._audio_channels)
        for frame in frames:
            if self._done:
                self.stats.audio_frames_dropped_before_start += 1
                continue
            self._write_frame(frame)

    def _stop(self, reason: StopReason) -> None:
        self.stopped_reason = reason
        self._complete()

    def _complete(self) -> None:
        if self._done:
            return
        self._done = True
        self._heap.clear()
        if self._writer is not None:
            self._patches = self._writer.finish()
            self.stats.bytes_written = self._writer.bytes_written
            self.stats.duration_ms = self._writer.end_ms
