"""Real VP8 or H.264 + Opus RTP for the recorder tests: media encoded with PyAV (libvpx,
libx264, libopus), packetized here per RFC 7741 (VP8), RFC 6184 (H.264, packetization
mode 1: single NAL units, STAP-A, FU-A) and RFC 7587 (Opus), with arrival times; and
ffprobe/ffmpeg checks of the files written."""

from __future__ import annotations

import functools
import json
import math
import random
import re
import struct
import subprocess
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import pytest

from media.h264 import FU_A, STAP_A
from media.recorder import Recorder
from media.webm import apply_patches
from tests.rtp_packets import build_rtp_packet

VP8_PT = 96
H264_PT = 102
OPUS_PT = 111
FPS = 30
WIDTH = 320
HEIGHT = 240
GOP = 30  # a keyframe every second
AUDIO_FRAME = 960  # 20 ms at 48 kHz
MAX_VP8_PAYLOAD = 600  # keyframes span ~8 packets, most other frames 1-2
MAX_H264_PAYLOAD = 600  # keyframes' slices go in FU-A fragments, the SPS and PPS in a STAP-A


@dataclass(frozen=True)
class EncodedMedia:
    video: list[tuple[bytes, bool]]  # one per 1/FPS s: (VP8 frame or H.264 access unit in Annex B, keyframe)
    audio: list[bytes]  # one Opus packet per 20 ms
    codec: str = "VP8"  # or "H264"

    @property
    def seconds(self) -> float:
        return len(self.video) / FPS


@functools.cache
def encoded_media(seconds: float = 6.0, width: int = WIDTH, height: int = HEIGHT, codec: str = "VP8") -> EncodedMedia:
    """A moving blocky test pattern as VP8 or H.264 (30 fps, keyframe every 1 s) and
    a 440 Hz tone as stereo Opus (20 ms packets). H.264 is libx264's constrained baseline
    as WebRTC senders make it: no B-frames, the SPS and PPS before every IDR, two slices a
    frame (two slice threads)."""
    rnd = random.Random(1)
    block = 8
    wide = 2 * width
    blocks = [[rnd.randrange(40, 220) for _ in range(wide // block)] for _ in range(height // block)]
    texture = b"".join(bytes(blocks[r // block][x // block] for x in range(wide)) for r in range(height))
    venc = av.CodecContext.create("libvpx" if codec == "VP8" else "libx264", "w")
    venc.width = width
    venc.height = height
    venc.pix_fmt = "yuv420p"
    venc.time_base = Fraction(1, FPS)
    venc.framerate = Fraction(FPS)
    venc.gop_size = GOP
    venc.bit_rate = 500_000
    if codec == "VP8":
        venc.thread_count = 1
        venc.options = {"deadline": "realtime", "cpu-used": "8", "lag-in-frames": "0", "auto-alt-ref": "0"}
    else:
        venc.thread_count = 2
        venc.options = {"profile": "baseline", "tune": "zerolatency", "preset": "ultrafast"}
    n_video = round(seconds * FPS)
    video: list[tuple[bytes, bool]] = []
    chroma = (width // 2) * (height // 2)
    for i in range(n_video):
        shift = (2 * i) % width
        luma = b"".join(texture[r * wide + shift : r * wide + shift + width] for r in range(height))
        frame = av.VideoFrame(width, height, "yuv420p")
        frame.planes[0].update(luma)
        frame.planes[1].update(bytes([(96 + i) & 0xFF]) * chroma)
        frame.planes[2].update(bytes([128]) * chroma)
        frame.pts = i
        frame.time_base = Fraction(1, FPS)
        video += [(bytes(p), bool(p.is_keyframe)) for p in venc.encode(frame)]
    video += [(bytes(p), bool(p.is_keyframe)) for p in venc.encode(None)]
    assert len(video) == n_video and video[0][1]

    aenc = av.CodecContext.create("libopus", "w")
    aenc.sample_rate = 48000
    aenc.layout = "stereo"
    aenc.format = "s16"
    aenc.bit_rate = 64_000
    aenc.time_base = Fraction(1, 48000)
    n_audio = round(seconds * 48000 / AUDIO_FRAME)
    audio: list[bytes] = []
    for j in range(n_audio):
        samples = (
            round(8000 * math.sin(2 * math.pi * 440 * (j * AUDIO_FRAME + k) / 48000)) for k in range(AUDIO_FRAME)
        )
        pcm = b"".join(struct.pack("<hh", v, v) for v in samples)
        sound = av.AudioFrame(format="s16", layout="stereo", samples=AUDIO_FRAME)
        sound.sample_rate = 48000
        sound.planes[0].update(pcm)
        sound.pts = j * AUDIO_FRAME
        sound.time_base = Fraction(1, 48000)
        audio += [bytes(p) for p in aenc.encode(sound)]
    audio += [bytes(p) for p in aenc.encode(None)]
    return EncodedMedia(video, audio[:n_audio], codec)


def annex_b_units(access_unit: bytes) -> list[bytes]:
    """The NAL units of an Annex B byte stream (after 00 00 01 or 00 00 00 01 start codes)."""
    starts = [m.end() for m in re.finditer(b"\x00\x00\x01", access_unit)]
    ends = [*[m - 3 for m in starts[1:]], len(access_unit)]
    return [access_unit[a:b].rstrip(b"\x00") for a, b in zip(starts, ends, strict=True)]


def h264_payloads(access_unit: bytes, max_payload: int = MAX_H264_PAYLOAD) -> list[bytes]:
    """RFC 6184 packetization mode 1 of one access unit: consecutive small NAL units in a
    STAP-A (one alone as itself), one larger than ``max_payload`` in FU-A fragments."""
    out: list[bytes] = []
    pending: list[bytes] = []

    def flush() -> None:
        if len(pending) == 1:
            out.append(pending[0])
        elif pending:
            nri = max(unit[0] & 0x60 for unit in pending)
            out.append(bytes([nri | STAP_A]) + b"".join(len(u).to_bytes(2, "big") + u for u in pending))
        pending.clear()

    for unit in annex_b_units(access_unit):
        if len(unit) > max_payload:
            flush()
            body = unit[1:]
            chunks = [body[i : i + max_payload - 2] for i in range(0, len(body), max_payload - 2)]
            for k, chunk in enumerate(chunks):
                header = (0x80 if k == 0 else 0) | (0x40 if k == len(chunks) - 1 else 0) | (unit[0] & 0x1F)
                out.append(bytes([(unit[0] & 0xE0) | FU_A, header]) + chunk)
            continue
        if pending and 1 + sum(2 + len(u) for u in pending) + 2 + len(unit) > max_payload:
            flush()
        pending.append(unit)
    flush()
    return out


def vp8_payloads(frame: bytes, picture_id: int, max_payload: int = MAX_VP8_PAYLOAD) -> list[bytes]:
    """RFC 7741 payloads of one frame: X=1, I=1 (15-bit picture id), S=1 and PID=0 on the first."""
    out = []
    for i, at in enumerate(range(0, len(frame), max_payload)):
        b0 = 0x80 | (0x10 if i == 0 else 0)
        descriptor = bytes([b0, 0x80, 0x80 | ((picture_id >> 8) & 0x7F), picture_id & 0xFF])
        out.append(descriptor + frame[at : at + max_payload])
    return out


@dataclass
class Host:
    """One host's send parameters: SSRCs, random initial sequence numbers and timestamps."""

    video_ssrc: int
    audio_ssrc: int
    video_seq: int
    audio_seq: int
    video_ts: int
    audio_ts: int

    @classmethod
    def random(cls, rnd: random.Random) -> Host:
        return cls(
            rnd.getrandbits(32),
            rnd.getrandbits(32),
            rnd.getrandbits(16),
            rnd.getrandbits(16),
            rnd.getrandbits(32),
            rnd.getrandbits(32),
        )


def host_packets(
    media: EncodedMedia,
    host: Host,
    *,
    start: float = 0.0,
    from_s: float = 0.0,
    to_s: float | None = None,
    video: bool = True,
    audio: bool = True,
    loss: float = 0.0,
    seed: int = 7,
) -> list[tuple[float, bytes]]:
    """``(arrival, packet)`` for the media from ``from_s`` to ``to_s`` (media seconds),
    sent from ``start`` (arrival seconds) in real time with 10..13 ms of network
    delay (so packets close together are reordered now and then), ``loss`` of
    them dropped at random; sorted by arrival. RTP timestamps and sequence numbers
    continue from the host's bases as if it had sent everything before ``from_s``."""
    rnd = random.Random(seed)
    to_s = media.seconds if to_s is None else to_s
    out: list[tuple[float, bytes]] = []

    def send(at: float, packet: bytes) -> None:
        if rnd.random() >= loss:
            out.append((start + (at - from_s) + 0.010 + rnd.uniform(0, 0.003), packet))

    if video:
        seq = host.video_seq
        h264 = media.codec == "H264"
        for i, (frame, _key) in enumerate(media.video):
            payloads = h264_payloads(frame) if h264 else vp8_payloads(frame, i & 0x7FFF)
            at = i / FPS
            if from_s <= at < to_s:
                ts = (host.video_ts + i * (90000 // FPS)) & 0xFFFFFFFF
                for k, payload in enumerate(payloads):
                    packet = build_rtp_packet(
                        payload_type=H264_PT if h264 else VP8_PT,
                        sequence_number=seq + k,
                        timestamp=ts,
                        ssrc=host.video_ssrc,
                        payload=payload,
                        marker=k == len(payloads) - 1,
                    )
                    send(at + k * 0.0002, packet)
            seq += len(payloads)
    if audio:
        for j, opus in enumerate(media.audio):
            at = j * AUDIO_FRAME / 48000
            if from_s <= at < to_s:
                packet = build_rtp_packet(
                    payload_type=OPUS_PT,
                    sequence_number=host.audio_seq + j,
                    timestamp=host.audio_ts + j * AUDIO_FRAME,
                    ssrc=host.audio_ssrc,
                    payload=opus,
                    marker=j == 0,
                )
                send(at, packet)
    out.sort(key=lambda item: item[0])
    return out


def record(path: Path, packets: list[tuple[float, bytes]], recorder_args: dict[str, Any] | None = None) -> Recorder:
    """Feed ``packets`` to a Recorder writing ``path`` (VP8 and Opus payload types unless
    ``recorder_args`` says otherwise); finish and patch the file."""
    with path.open("wb") as f:
        recorder = Recorder(
            f.write, **{"vp8_payload_type": VP8_PT, "opus_payload_type": OPUS_PT, **(recorder_args or {})}
        )
        for arrival, packet in packets:
            recorder.feed(packet, arrival)
        apply_patches(f, recorder.finish())
    return recorder


@dataclass
class Probe:
    format: dict[str, Any]
    streams: list[dict[str, Any]]
    packets: list[dict[str, Any]]

    @property
    def duration(self) -> float:
        return float(self.format["duration"])

    def stream(self, codec: str) -> dict[str, Any]:
        [s] = [s for s in self.streams if s["codec_name"] == codec]
        return s

    def packets_of(self, codec: str) -> list[dict[str, Any]]:
        index = self.stream(codec)["index"]
        return [p for p in self.packets if p["stream_index"] == index]

    def end_of(self, codec: str) -> float:
        """The end of the stream's last packet (pts + duration), independent of the Duration element."""
        return max(float(p["pts_time"]) + float(p.get("duration_time", 0) or 0) for p in self.packets_of(codec))


def ffprobe(path: Path) -> Probe:
    result = subprocess.run(
        ["ffprobe", "-v", "error", "-show_streams", "-show_format", "-show_packets", "-of", "json", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0 and not result.stderr, result.stderr
    data = json.loads(result.stdout)
    return Probe(data["format"], data["streams"], data.get("packets", []))


def ffmpeg_decode_errors(path: Path) -> str:
    """Decode every stream to nowhere; returns what ffmpeg said (empty: no error, exit 0)."""
    result = subprocess.run(
        ["ffmpeg", "-nostdin", "-v", "error", "-i", str(path), "-f", "null", "-"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return result.stderr + (f"\nexit status {result.returncode}" if result.returncode else "")


def check_file(
    path: Path,
    expected_seconds: float,
    *,
    video: bool = True,
    audio: bool = True,
    video_codec: str = "vp8",
    size: tuple[int, int] = (WIDTH, HEIGHT),
) -> Probe:
    """The file decodes with no error, has the expected streams (``video_codec``: "vp8" or
    "h264", of ``size``), starts with a keyframe at 0, and lasts ``expected_seconds`` within
    2 % (both the Duration and the packets' own end)."""
    assert ffmpeg_decode_errors(path) == ""
    probe = ffprobe(path)
    codecs = (video_codec,) * video + ("opus",) * audio
    assert sorted(s["codec_name"] for s in probe.streams) == sorted(codecs)
    assert probe.format["format_name"] == "matroska,webm"
    if video:
        s = probe.stream(video_codec)
        assert (s["width"], s["height"]) == size
        first = probe.packets_of(video_codec)[0]
        assert first["flags"].startswith("K") and float(first["pts_time"]) == 0.0
    if audio:
        s = probe.stream("opus")
        assert (s["sample_rate"], s["channels"]) == ("48000", 2)
    assert probe.duration == pytest.approx(expected_seconds, rel=0.02)
    ends = [probe.end_of(codec) for codec in codecs]
    assert max(ends) == pytest.approx(expected_seconds, rel=0.02)
    for codec in codecs:
        pts = [float(p["pts_time"]) for p in probe.packets_of(codec)]
        assert pts == sorted(pts) and len(set(pts)) == len(pts) and pts[0] >= 0
    return probe


def doc_type(path: Path) -> str:
    """The DocType of a file's EBML header (it is the header's one string element, 0x4282)."""
    header = path.read_bytes()[:64]
    at = header.index(b"\x42\x82") + 2
    length = header[at] & 0x7F  # a 1-byte size: DocTypes are short
    return header[at + 1 : at + 1 + length].decode()
