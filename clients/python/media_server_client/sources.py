"""Media sources for bots: a moving test pattern and a tone (aiortc tracks; no numpy)."""

from __future__ import annotations

import asyncio
import fractions
import math
import struct
import time

import av
from aiortc.mediastreams import AUDIO_PTIME, VIDEO_CLOCK_RATE, MediaStreamError, MediaStreamTrack

VIDEO_TIME_BASE = fractions.Fraction(1, VIDEO_CLOCK_RATE)
AUDIO_RATE = 48000
AUDIO_TIME_BASE = fractions.Fraction(1, AUDIO_RATE)


class TestPatternTrack(MediaStreamTrack):
    """VP8-encodable video: a bright bar moving across a gradient, `fps` frames per second.
    Every frame differs, so each encoded frame has its own bytes."""

    kind = "video"
    __test__ = False  # not a pytest test class despite its name

    def __init__(self, width: int = 320, height: int = 240, fps: int = 30) -> None:
        super().__init__()
        self.width, self.height, self.fps = width, height, fps
        self._count = 0
        self._start: float | None = None
        self._chroma = bytes([128]) * ((width // 2) * (height // 2))

    async def recv(self) -> av.VideoFrame:
        if self.readyState != "live":
            raise MediaStreamError  # ends the sender's encoder loop by itself
        if self._start is None:
            self._start = time.monotonic()
        due = self._start + self._count / self.fps
        await asyncio.sleep(max(0.0, due - time.monotonic()))
        frame = av.VideoFrame(self.width, self.height, "yuv420p")
        bar = (self._count * 4) % self.width
        row = bytes((x + self._count) % 200 if abs(x - bar) > 8 else 255 for x in range(self.width))
        frame.planes[0].update(row * self.height)
        frame.planes[1].update(self._chroma)
        frame.planes[2].update(self._chroma)
        frame.pts = int(self._count * VIDEO_CLOCK_RATE / self.fps)
        frame.time_base = VIDEO_TIME_BASE
        self._count += 1
        return frame


class ToneTrack(MediaStreamTrack):
    """Opus-encodable audio: a sine tone, 20 ms frames of 48 kHz mono."""

    kind = "audio"

    def __init__(self, frequency: float = 440.0) -> None:
        super().__init__()
        self.frequency = frequency
        self._samples_sent = 0
        self._start: float | None = None
        self._per_frame = int(AUDIO_PTIME * AUDIO_RATE)

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        if self._start is None:
            self._start = time.monotonic()
        due = self._start + self._samples_sent / AUDIO_RATE
        await asyncio.sleep(max(0.0, due - time.monotonic()))
        frame = av.AudioFrame(format="s16", layout="mono", samples=self._per_frame)
        step = 2 * math.pi * self.frequency / AUDIO_RATE
        samples = [int(8000 * math.sin(step * (self._samples_sent + i))) for i in range(self._per_frame)]
        frame.planes[0].update(struct.pack(f"<{self._per_frame}h", *samples))
        frame.sample_rate = AUDIO_RATE
        frame.pts = self._samples_sent
        frame.time_base = AUDIO_TIME_BASE
        self._samples_sent += self._per_frame
        return frame


def file_tracks(path: str, *, loop: bool = True, decode: bool = True) -> list[MediaStreamTrack]:
    """The video and audio tracks of a media file, for `open_host(..., tracks=...)`.

    With `decode=False` aiortc sends the file's encoded packets as they are (no
    re-encoding: the file must hold VP8 and Opus, e.g. a .webm); with the default
    it decodes and re-encodes. Must be called with the asyncio (trio-asyncio) loop running.
    """
    from aiortc.contrib.media import MediaPlayer

    player = MediaPlayer(path, loop=loop, decode=decode)
    return [track for track in (player.video, player.audio) if track is not None]
