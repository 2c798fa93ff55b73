"""Pre-encoded media for the benchmarks: VP8 + Opus in a WebM file, made once with PyAV.

    .venv/bin/python bench/make_media.py [--force]

writes ``bench/out/fanout-media.webm`` (git-ignored): 640x360 VP8 at 30 fps,
about 1.5 Mbit/s (libvpx CBR), a keyframe every 2 s, and 48 kHz Opus in 20 ms
frames, 4 s long so that it loops on a keyframe. :func:`load_media` reads it
back as lists of encoded frames (bytes) that a publisher sends without
decoding or encoding anything (see ``harness.PacketTrack``). ``make_soak_media``
makes ``soak.py``'s smaller file (320x180, ~250 kbit/s) the same way, and
``make_simulcast_media`` ``simulcast.py``'s three layers (320x180, 640x360, 1280x720 of the
same scene, ~150 kbit/s, ~500 kbit/s, ~1.5 Mbit/s, keyframes at the same frames).

The picture is a random texture scrolling over a gradient, with a band of
fresh noise every frame: hard enough to compress that the encoder spends its
whole bit budget, like a camera does.
"""

from __future__ import annotations

import argparse
import fractions
import math
import os
import random
import struct
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av

OUT_DIR = Path(__file__).resolve().parent / "out"
MEDIA_PATH = OUT_DIR / "fanout-media.webm"

WIDTH, HEIGHT, FPS = 640, 360, 30
SECONDS = 4
GOP_FRAMES = 2 * FPS  # a keyframe every 2 s
VIDEO_BITRATE = 1_500_000
AUDIO_RATE = 48_000
AUDIO_FRAME = 960  # 20 ms
AUDIO_BITRATE = 64_000
H264_MEDIA_PATH = OUT_DIR / "fanout-media.h264"  # the same video in H.264 (Annex B), for rooms.py --codecs
SOAK_MEDIA_PATH = OUT_DIR / "soak-media.webm"  # soak.py's: smaller, many rooms of it
SOAK_SIZE = (320, 180)
SOAK_VIDEO_BITRATE = 250_000
SOAK_AUDIO_BITRATE = 32_000


@dataclass(frozen=True)
class SimulcastLayer:
    """One layer of ``simulcast.py``'s host: its rid, its file's size and bitrate."""

    name: str  # low, medium, high (as PROTOCOL.md names them)
    rid: str  # the host's name for it (a=rid)
    width: int
    height: int
    bitrate: int  # bits a second, the encoder's CBR target


SIMULCAST_LAYERS = (
    SimulcastLayer("low", "q", 320, 180, 150_000),
    SimulcastLayer("medium", "h", 640, 360, 500_000),
    SimulcastLayer("high", "f", 1280, 720, 1_500_000),
)
#: Fresh noise in the simulcast scene: rows (at 360 lines) of a band the encoder cannot
#: predict. fanout's 24 make 640x360 cost 2x its 500 kbit/s target; 2 keep every layer within
#: a few % of its bitrate, still spending the whole budget.
SIMULCAST_NOISE_ROWS = 2


@dataclass(frozen=True)
class EncodedStream:
    """One stream of encoded frames, in decoding order, at a constant frame rate."""

    kind: str  # "video" or "audio"
    frames: list[bytes]
    keyframes: list[bool]
    frame_ticks: int  # duration of one frame in clock_rate units
    clock_rate: int

    @property
    def frame_seconds(self) -> float:
        return self.frame_ticks / self.clock_rate

    @property
    def bitrate(self) -> float:
        return 8 * sum(map(len, self.frames)) / (len(self.frames) * self.frame_seconds)


def _texture(seed: int, width: int, height: int) -> bytes:
    """8x8 blocks of random grey, twice as wide as the picture (it scrolls): cheap for intra
    coding, still detailed when it moves."""
    rng = random.Random(seed)
    blocks = [[rng.randrange(40, 216) for _ in range(width * 2 // 8)] for _ in range(height // 8 + 1)]
    return b"".join(bytes(v for v in blocks[y // 8] for _ in range(8)) for y in range(height))


def _video_frame(i: int, luma: bytes, u: bytes, v: bytes, width: int, height: int) -> av.VideoFrame:
    frame = av.VideoFrame(width, height, "yuv420p")
    frame.planes[0].update(luma)
    frame.planes[1].update(u)
    frame.planes[2].update(v)
    frame.pts = i
    frame.time_base = fractions.Fraction(1, FPS)
    return frame


def _video_frames(width: int = WIDTH, height: int = HEIGHT, noise_rows: int = 24) -> list[av.VideoFrame]:
    """The scene at ``width`` x ``height`` (its motion scaled with the size, so that the
    simulcast layers show the same picture at three sizes), with a band of ``noise_rows`` rows
    of fresh noise (at 640x360; scaled with the height)."""
    texture = _texture(1234, width, height)
    gradient = bytes((x * 255) // width for x in range(width))
    chroma_w, chroma_h = width // 2, height // 2
    step, band = max(1, 6 * width // WIDTH), max(2, noise_rows * height // HEIGHT)
    frames = []
    for i in range(SECONDS * FPS):
        rows = []
        shift = (i * step) % width
        noisy = (i * band // 2) % height  # a band of fresh noise moves down the picture
        for y in range(height):
            if noisy <= y < noisy + band:
                rows.append(os.urandom(width))
            elif y < height // 2:
                rows.append(texture[y * width * 2 + shift : y * width * 2 + shift + width])
            else:
                rows.append(gradient[shift:] + gradient[:shift])
        u = bytes(((x + i) * 3) & 0xFF for x in range(chroma_w)) * chroma_h
        frames.append(_video_frame(i, b"".join(rows), u, bytes([128]) * (chroma_w * chroma_h), width, height))
    return frames


def _audio_frames(noise_seed: int | None) -> list[av.AudioFrame]:
    """A 440 Hz tone in 20 ms mono frames (with some noise when ``noise_seed`` is given)."""
    rng = random.Random(noise_seed)
    frames = []
    for n in range(SECONDS * AUDIO_RATE // AUDIO_FRAME):
        start = n * AUDIO_FRAME
        samples = [
            int(
                6000 * math.sin(2 * math.pi * 440 * (start + k) / AUDIO_RATE)
                + (rng.randint(-2000, 2000) if noise_seed is not None else 0)
            )
            for k in range(AUDIO_FRAME)
        ]
        frame = av.AudioFrame(format="s16", layout="mono", samples=AUDIO_FRAME)
        frame.planes[0].update(struct.pack(f"<{AUDIO_FRAME}h", *samples))
        frame.sample_rate = AUDIO_RATE
        frame.pts = start
        frame.time_base = fractions.Fraction(1, AUDIO_RATE)
        frames.append(frame)
    return frames


def add_cbr_streams(
    out: Any, *, width: int, height: int, video_bitrate: int, audio_bitrate: int = AUDIO_BITRATE
) -> tuple[Any, Any]:
    """A constant-bitrate VP8 stream (FPS, a keyframe every GOP_FRAMES, no look-ahead) and a mono
    Opus one on the container `out`: the encoder settings every bench media file shares."""
    video = out.add_stream("libvpx", rate=FPS)
    video.width, video.height, video.pix_fmt = width, height, "yuv420p"
    video.bit_rate = video_bitrate
    video.gop_size = GOP_FRAMES
    video.options = {
        "minrate": str(video_bitrate),
        "maxrate": str(video_bitrate),
        "b": str(video_bitrate),
        "g": str(GOP_FRAMES),
        "keyint_min": str(GOP_FRAMES),
        "lag-in-frames": "0",
        "deadline": "good",
        "cpu-used": "4",
    }
    audio = out.add_stream("libopus", rate=AUDIO_RATE)
    audio.layout = "mono"
    audio.bit_rate = audio_bitrate
    return video, audio


def _write_webm(
    path: Path,
    video_frames: list[av.VideoFrame],
    audio_frames: list[av.AudioFrame],
    *,
    width: int,
    height: int,
    video_bitrate: int,
    audio_bitrate: int = AUDIO_BITRATE,
) -> None:
    """The frames encoded (``add_cbr_streams``) into a WebM file, written whole or not at all."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.webm")
    with av.open(str(tmp), "w", format="webm") as out:
        video, audio = add_cbr_streams(
            out, width=width, height=height, video_bitrate=video_bitrate, audio_bitrate=audio_bitrate
        )
        for frame in video_frames:
            out.mux(video.encode(frame))
        out.mux(video.encode(None))
        for aframe in audio_frames:
            out.mux(audio.encode(aframe))
        out.mux(audio.encode(None))
    os.replace(tmp, path)


def make_media(path: Path = MEDIA_PATH) -> None:
    _write_webm(path, _video_frames(), _audio_frames(99), width=WIDTH, height=HEIGHT, video_bitrate=VIDEO_BITRATE)


def make_h264_media(path: Path = H264_MEDIA_PATH) -> None:
    """The fanout file's video in H.264: the same frames, libx264 constrained baseline (what
    browsers and OBS send to a WebRTC server), the same bitrate held by x264's CBR (VBV), a
    keyframe every GOP_FRAMES and nowhere else, the parameter sets before each, no B-frames;
    raw Annex B (aiortc's H.264 sender splits it at its start codes)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.h264")
    kbps = VIDEO_BITRATE // 1000
    with av.open(str(tmp), "w", format="h264") as out:
        video = out.add_stream("libx264", rate=FPS)
        video.width, video.height, video.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        video.bit_rate = VIDEO_BITRATE
        video.gop_size = GOP_FRAMES
        video.options = {
            "profile": "baseline",
            "preset": "veryfast",
            "tune": "zerolatency",
            "x264-params": (
                f"keyint={GOP_FRAMES}:min-keyint={GOP_FRAMES}:scenecut=0:bframes=0:repeat-headers=1"
                f":vbv-maxrate={kbps}:vbv-bufsize={kbps}:nal-hrd=cbr"
            ),
        }
        for frame in _video_frames():
            out.mux(video.encode(frame))
        out.mux(video.encode(None))
    os.replace(tmp, path)


def load_h264_media(path: Path = H264_MEDIA_PATH) -> tuple[EncodedStream, EncodedStream]:
    """(the H.264 video, the fanout file's audio), making the file first if it does not exist."""
    if not path.exists():
        make_h264_media(path)
    frames: list[bytes] = []
    keys: list[bool] = []
    with av.open(str(path), format="h264") as container:
        for packet in container.demux():
            if packet.size:
                frames.append(bytes(packet))
                keys.append(bool(packet.is_keyframe))
    if not frames or not keys[0]:
        raise RuntimeError(f"{path}: no keyframe-first video; delete it to remake")
    _, audio = load_media()
    return EncodedStream("video", frames, keys, 90_000 // FPS, 90_000), audio


def make_soak_media(path: Path = SOAK_MEDIA_PATH) -> None:
    """``soak.py``'s: VP8 320x180@30, ~250 kbit/s CBR, a keyframe every 2 s; Opus mono 32 kbit/s;
    4 s (loops on a keyframe)."""
    width, height = SOAK_SIZE
    texture = _texture(4321, width, height)
    chroma = bytes([128]) * ((width // 2) * (height // 2))
    frames = []
    for i in range(SECONDS * FPS):
        shift, noisy = (i * 4) % width, (i * 6) % height
        rows = [
            os.urandom(width)
            if noisy <= y < noisy + 8
            else texture[y * width * 2 + shift : y * width * 2 + shift + width]
            for y in range(height)
        ]
        frames.append(_video_frame(i, b"".join(rows), chroma, chroma, width, height))
    _write_webm(
        path,
        frames,
        _audio_frames(None),
        width=width,
        height=height,
        video_bitrate=SOAK_VIDEO_BITRATE,
        audio_bitrate=SOAK_AUDIO_BITRATE,
    )


def simulcast_media_path(layer: SimulcastLayer) -> Path:
    return OUT_DIR / f"simulcast-{layer.name}.webm"


def make_simulcast_media() -> None:
    """``simulcast.py``'s three layers, each a file: the same scene at 320x180 (~150 kbit/s),
    640x360 (~500 kbit/s) and 1280x720 (~1.5 Mbit/s), VP8 CBR at 30 fps with a keyframe every
    2 s at the same frame indices (0 and 60: one GOP setting, no scene-cut keyframes), and the
    same Opus mono 64 kbit/s track in each (the bench sends the first one's)."""
    audio = _audio_frames(99)
    for layer in SIMULCAST_LAYERS:
        _write_webm(
            simulcast_media_path(layer),
            _video_frames(layer.width, layer.height, SIMULCAST_NOISE_ROWS),
            audio,
            width=layer.width,
            height=layer.height,
            video_bitrate=layer.bitrate,
        )


def load_simulcast_media() -> tuple[list[EncodedStream], EncodedStream]:
    """(the layers' video, lowest first; the audio), making the files first if one is missing."""
    if not all(simulcast_media_path(layer).exists() for layer in SIMULCAST_LAYERS):
        make_simulcast_media()
    loaded = [load_media(simulcast_media_path(layer)) for layer in SIMULCAST_LAYERS]
    keys = {tuple(i for i, key in enumerate(video.keyframes) if key) for video, _ in loaded}
    if len(keys) != 1:
        raise RuntimeError(f"the simulcast layers' keyframes differ ({keys}); delete bench/out/simulcast-*.webm")
    return [video for video, _ in loaded], loaded[0][1]


def load_soak_media() -> tuple[EncodedStream, EncodedStream]:
    if not SOAK_MEDIA_PATH.exists():
        make_soak_media()
    return load_media(SOAK_MEDIA_PATH)


def load_media(path: Path = MEDIA_PATH) -> tuple[EncodedStream, EncodedStream]:
    """(video, audio) encoded frames of the file, making it first if it does not exist."""
    if not path.exists():
        make_media(path)
    video_frames: list[bytes] = []
    video_keys: list[bool] = []
    audio_frames: list[bytes] = []
    with av.open(str(path)) as container:
        for packet in container.demux():
            if packet.size == 0:
                continue
            if packet.stream.type == "video":
                video_frames.append(bytes(packet))
                video_keys.append(bool(packet.is_keyframe))
            elif packet.stream.type == "audio":
                audio_frames.append(bytes(packet))
    if not video_frames or not video_keys[0] or not audio_frames:
        raise RuntimeError(f"{path}: no keyframe-first video or no audio; delete it to remake")
    video = EncodedStream("video", video_frames, video_keys, 90_000 // FPS, 90_000)
    audio = EncodedStream("audio", audio_frames, [True] * len(audio_frames), AUDIO_FRAME, AUDIO_RATE)
    return video, audio


def describe(name: str, video: EncodedStream, audio: EncodedStream) -> str:
    keys = [i for i, k in enumerate(video.keyframes) if k]
    return (
        f"{name} video: {len(video.frames)} frames, {video.bitrate / 1e3:.0f} kbit/s, keyframes at frames {keys}, "
        f"largest frame {max(map(len, video.frames)):,} B; audio: {len(audio.frames)} frames, "
        f"{audio.bitrate / 1e3:.0f} kbit/s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--force", action="store_true", help="remake the file even if it exists")
    parser.add_argument("--simulcast", action="store_true", help="simulcast.py's three layers instead")
    args = parser.parse_args()
    started = time.monotonic()
    if args.simulcast:
        if args.force or not all(simulcast_media_path(layer).exists() for layer in SIMULCAST_LAYERS):
            make_simulcast_media()
            print(f"made bench/out/simulcast-*.webm in {time.monotonic() - started:.1f} s")
        videos, audio = load_simulcast_media()
        for layer, video in zip(SIMULCAST_LAYERS, videos, strict=True):
            print(describe(f"{layer.name} {layer.width}x{layer.height}", video, audio))
        return
    if args.force or not MEDIA_PATH.exists():
        make_media()
        print(f"made {MEDIA_PATH} in {time.monotonic() - started:.1f} s")
    print(describe(MEDIA_PATH.name, *load_media()))


if __name__ == "__main__":
    main()
