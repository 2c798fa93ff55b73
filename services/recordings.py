"""A room's recording: the host's VP8 + Opus into a WebM file, or its H.264 + Opus into a
Matroska file, without transcoding.

Ownership and threads:

- `Recording.feed` runs on the media thread, under the media lock, for every host RTP
  packet (the room's actor routes the host connection's `on_rtp` here too): it hands the packet to
  the sans-IO `media.recorder.Recorder`, whose `write` only appends to an in-memory
  buffer. Payload types are mapped to the recorder's fixed ones, so a new host with
  other payload types continues the same file.
- `Recording.run`, a Trio task in the supervisor's nursery (a recording outlives a crash of
  the room's actor, which starts and stops it), every `FLUSH_SECONDS`:
  takes the buffer (under the lock) and writes it to the file in a worker thread
  (disk never blocks media or Trio), calls `Recorder.advance` (time limit while the
  host is away, keyframe timeout), and asks the host for a keyframe while the
  recorder waits for one. When the recording stops (`stop()`, the room stopping, or
  the recorder's size/time limit), it finishes the file: the last bytes, the
  patched sizes and duration, then `<id>.json` beside `<id>.webm` (or `.mkv`), and the
  `recording_ready` webhook.

Files: `[recordings] directory/<room_id>/<recording_id>.webm` (VP8, or audio only) or `.mkv`
(H.264: the recorder's first keyframe decides, so the file is opened with its first bytes;
one that never had media is an empty `.webm`) and `.json`, whose `file` names it; the listing
(`recordings_of`) reads the directory, so recordings outlive the room and restarts.
"""

from __future__ import annotations

import functools
import json
import logging
import secrets
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, BinaryIO

import msgspec
import trio

from media.recorder import Recorder
from media.streams import SourceStream
from media.webm import apply_patches

log = logging.getLogger("bitbasel.recordings")

FLUSH_SECONDS = 0.5
VP8_PT = 96  # the recorder's own payload types (the host's are mapped onto them)
H264_PT = 102
OPUS_PT = 111
# a file's name extension by its EBML DocType (media/webm.py)
EXTENSIONS = {"webm": "webm", "matroska": "mkv"}


class RecordingInfo(msgspec.Struct, frozen=True):
    recording_id: str
    room_id: str
    post_id: str
    state: str  # "recording", "ready", or "interrupted" (the server stopped first: valid, sizes unpatched)
    started_at: float  # unix seconds
    ended_at: float | None
    duration_seconds: float
    bytes: int
    stop_reason: str | None  # "api", "room_stopped", "max_bytes", "max_seconds", "shutdown"
    frames: dict[str, int | float] = msgspec.field(default_factory=dict)  # the recorder's counters
    # the media file beside the metadata, to download as GET /room/{room_id}/recordings/{file}:
    # `<recording_id>.webm` (format "webm": VP8, or audio only) or `.mkv` ("matroska": H.264);
    # None until the recording has media (its first keyframe decides), so None for one that
    # never had any (older metadata lacks both: a `.webm`)
    file: str | None = None
    format: str | None = None


def new_recording_id() -> str:
    return f"rec_{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}_{secrets.token_hex(4)}"


class Recording:
    def __init__(
        self,
        directory: Path,
        room_id: str,
        post_id: str,
        *,
        media_lock: AbstractContextManager[Any],
        max_bytes: int,
        max_seconds: float,
        request_keyframe: Callable[[], None],
        on_ready: Callable[[RecordingInfo], None],
    ) -> None:
        self.recording_id = new_recording_id()
        self.room_id = room_id
        self.post_id = post_id
        self.directory = directory / room_id
        self.started_at = time.time()
        self.stop_reason: str | None = None
        self._lock = media_lock
        self._request_keyframe = request_keyframe
        self._on_ready = on_ready
        self._buffer = bytearray()
        self._pt_map: dict[int, int] = {}
        self._stop_requested = trio.Event()
        self._done = trio.Event()  # set once the file and its metadata are written
        self._ended = False
        self._file_finished = False  # the last bytes and the patches are in the file
        self.recorder = Recorder(
            self._buffer.extend,
            vp8_payload_type=VP8_PT,
            opus_payload_type=OPUS_PT,
            h264_payload_type=H264_PT,
            max_bytes=max_bytes,
            max_seconds=max_seconds,
        )

    @property
    def format(self) -> str | None:
        """The file's format ("webm" or "matroska") once its first keyframe (or the audio-only
        fallback) decided it; None before."""
        return self.recorder.doc_type

    @property
    def path(self) -> Path:
        """The media file: `<recording_id>.mkv` for Matroska, else `.webm` (also while undecided)."""
        return self.directory / f"{self.recording_id}.{EXTENSIONS.get(self.format or 'webm', 'webm')}"

    # ---- media thread (under the media lock) ----------------------------------------------

    def use_host(self, sources: list[SourceStream]) -> None:
        """A (new) host is attached: map its payload types; a new segment of the file."""
        self._pt_map = {s.payload_type: _recorder_pt(s) for s in sources}
        if self.recorder.started:
            self.recorder.host_changed()

    def feed(self, packet: bytes, arrival: float) -> None:
        if self.recorder.finished or len(packet) < 12:
            return
        pt = packet[1] & 0x7F
        mapped = self._pt_map.get(pt)
        if mapped is None:
            return
        if mapped != pt:
            packet = packet[:1] + bytes(((packet[1] & 0x80) | mapped,)) + packet[2:]
        self.recorder.feed(packet, arrival)

    # ---- Trio ---------------------------------------------------------------------------

    def stop(self, reason: str) -> None:
        if self.stop_reason is None:
            self.stop_reason = reason
        self._stop_requested.set()

    async def wait_done(self) -> None:
        await self._done.wait()

    async def run(self) -> None:
        await trio.to_thread.run_sync(functools.partial(self.directory.mkdir, parents=True, exist_ok=True))
        # opened with the first bytes: the recorder has then chosen WebM or Matroska (the name's extension)
        file: BinaryIO | None = None
        try:
            while not self._stop_requested.is_set():
                with trio.move_on_after(FLUSH_SECONDS):
                    await self._stop_requested.wait()
                with self._lock:
                    self.recorder.advance(time.monotonic())
                    if self.recorder.stopped_reason is not None and self.stop_reason is None:
                        self.stop_reason = self.recorder.stopped_reason
                        self._stop_requested.set()
                    if self.recorder.wants_keyframe:
                        self._request_keyframe()
                    chunk = self._take()
                if chunk:
                    if file is None:
                        file = await trio.to_thread.run_sync(self.path.open, "wb")
                    await trio.to_thread.run_sync(file.write, chunk)
            with self._lock:
                patches = self.recorder.finish()
                chunk = self._take()
            if file is None:  # the first bytes now, or none at all (an empty `.webm`)
                file = await trio.to_thread.run_sync(self.path.open, "wb")
            await trio.to_thread.run_sync(self._finish_file, file, chunk, patches)
            self._file_finished = True
        finally:
            with trio.CancelScope(shield=True):
                if file is not None:
                    await trio.to_thread.run_sync(file.close)
                self._ended = True
                info = self.info()
                try:
                    await trio.to_thread.run_sync(self._write_metadata, info)
                finally:
                    self._done.set()  # after the metadata: a listing right after `stop` has it
        log.info(
            "room %s: recording %s ready (%s, %.1f s, %d bytes)",
            self.room_id,
            self.recording_id,
            info.stop_reason,
            info.duration_seconds,
            info.bytes,
        )
        self._on_ready(info)

    def _take(self) -> bytes:
        chunk = bytes(self._buffer)
        self._buffer.clear()
        return chunk

    @staticmethod
    def _finish_file(file: BinaryIO, chunk: bytes, patches: list[tuple[int, bytes]]) -> None:
        file.write(chunk)
        apply_patches(file, patches)
        file.flush()

    def info(self) -> RecordingInfo:
        done = self._ended or self.recorder.finished
        state = "ready" if self._file_finished else "interrupted" if done else "recording"
        return RecordingInfo(
            recording_id=self.recording_id,
            room_id=self.room_id,
            post_id=self.post_id,
            state=state,
            started_at=self.started_at,
            ended_at=time.time() if done else None,
            duration_seconds=round(self.recorder.duration_ms / 1000.0, 3),
            bytes=self.recorder.bytes_written,
            stop_reason=self.stop_reason,
            frames=dict(self.recorder.stats.as_dict()),
            file=self.path.name if self.format is not None else None,
            format=self.format,
        )

    def _write_metadata(self, info: RecordingInfo) -> None:
        (self.directory / f"{self.recording_id}.json").write_bytes(msgspec.json.encode(info))


def _recorder_pt(source: SourceStream) -> int:
    if source.kind == "audio":
        return OPUS_PT
    return H264_PT if source.codec == "H264" else VP8_PT


def recordings_of(directory: Path, room_id: str) -> list[RecordingInfo]:
    """The finished recordings of a room, oldest first (read from their metadata files)."""
    folder = directory / room_id
    if not folder.is_dir():
        return []
    found = []
    for meta in sorted(folder.glob("rec_*.json")):
        try:
            found.append(msgspec.json.decode(meta.read_bytes(), type=RecordingInfo))
        except (OSError, msgspec.DecodeError, json.JSONDecodeError):
            log.warning("recording metadata %s is unreadable: skipped", meta)
    return found
