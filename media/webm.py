"""A minimal streaming WebM / Matroska (RFC 9559 / EBML, RFC 8794) muxer: VP8 or H.264, and Opus.

WebM is Matroska restricted to WebM's codecs: a file whose video is VP8 (or that has
no video) is WebM (DocType "webm"); one whose video is H.264 is Matroska (DocType
"matroska", CodecID ``V_MPEG4/ISO/AVC`` with the AVCDecoderConfigurationRecord as
CodecPrivate, samples of 4-byte-length-prefixed NAL units). The rest is the same.

Sans-IO: :class:`WebmWriter` hands every byte to a ``write`` callable as soon as
it has it (the file can be tailed while recording), and :meth:`WebmWriter.finish`
returns the few byte ranges that can only be known at the end (sizes, duration,
the Cues' position) as *patches*: ``(offset, bytes)`` pairs that overwrite bytes
already written, without changing the file's length. Apply them with
:func:`apply_patches` on a seekable file, or not at all: every patched range
holds, until patched, something a player accepts (unknown sizes, EBML Void
elements), so an interrupted recording is still a playable file.

Layout::

    EBML header (DocType "webm", or "matroska" for H.264)
    Segment (8-byte size: unknown until patched)
      SeekHead: Seek(Info), Seek(Tracks), Void -> patched into Seek(Cues)
      Info: TimestampScale 1 ms, MuxingApp, WritingApp, Void -> patched into Duration
      Tracks: V_VP8 or V_MPEG4/ISO/AVC (avcC; PixelWidth/PixelHeight) and/or A_OPUS (OpusHead, 48 kHz, 2 channels)
      Cluster (8-byte size: unknown until patched), Timestamp, SimpleBlock...
      ...
      Cues (written by finish)

A cluster starts at every video keyframe, and otherwise when the next block
would be ``max_cluster_ms`` or more after the cluster's timestamp, so that
block timestamps (signed 16-bit, relative to the cluster) never overflow.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from typing import Protocol

__all__ = [
    "CODEC_AVC",
    "CODEC_VP8",
    "UNKNOWN_SIZE",
    "Patch",
    "SeekableWritable",
    "WebmWriter",
    "apply_patches",
    "ebml_element",
    "encode_element_id",
    "encode_vint",
    "float_element",
    "opus_head",
    "string_element",
    "uint_element",
]

Patch = tuple[int, bytes]
"""``(offset, data)``: overwrite ``len(data)`` bytes at ``offset`` of the written stream."""

# --- element ids (the full encoded id, marker bits included) ---------------------------
EBML = 0x1A45DFA3
EBML_VERSION = 0x4286
EBML_READ_VERSION = 0x42F7
EBML_MAX_ID_LENGTH = 0x42F2
EBML_MAX_SIZE_LENGTH = 0x42F3
DOC_TYPE = 0x4282
DOC_TYPE_VERSION = 0x4287
DOC_TYPE_READ_VERSION = 0x4285
VOID = 0xEC

SEGMENT = 0x18538067
SEEK_HEAD = 0x114D9B74
SEEK = 0x4DBB
SEEK_ID = 0x53AB
SEEK_POSITION = 0x53AC

INFO = 0x1549A966
TIMESTAMP_SCALE = 0x2AD7B1
DURATION = 0x4489
MUXING_APP = 0x4D80
WRITING_APP = 0x5741

TRACKS = 0x1654AE6B
TRACK_ENTRY = 0xAE
TRACK_NUMBER = 0xD7
TRACK_UID = 0x73C5
TRACK_TYPE = 0x83
FLAG_LACING = 0x9C
CODEC_ID = 0x86
CODEC_PRIVATE = 0x63A2
CODEC_DELAY = 0x56AA
SEEK_PRE_ROLL = 0x56BB
VIDEO = 0xE0
PIXEL_WIDTH = 0xB0
PIXEL_HEIGHT = 0xBA
AUDIO = 0xE1
SAMPLING_FREQUENCY = 0xB5
CHANNELS = 0x9F

CLUSTER = 0x1F43B675
CLUSTER_TIMESTAMP = 0xE7
SIMPLE_BLOCK = 0xA3

CUES = 0x1C53BB6B
CUE_POINT = 0xBB
CUE_TIME = 0xB3
CUE_TRACK_POSITIONS = 0xB7
CUE_TRACK = 0xF7
CUE_CLUSTER_POSITION = 0xF1

TRACK_TYPE_VIDEO = 1
TRACK_TYPE_AUDIO = 2

UNKNOWN_SIZE = b"\x01\xff\xff\xff\xff\xff\xff\xff"
"""An 8-byte element data size with all value bits set: "unknown" (RFC 8794 section 6.2)."""

CODEC_VP8 = "V_VP8"
CODEC_AVC = "V_MPEG4/ISO/AVC"  # H.264 in its MP4 form: CodecPrivate is the avcC, samples length-prefixed
_WEBM_VIDEO_CODECS = frozenset({CODEC_VP8, "V_VP9", "V_AV1"})  # any other makes the file Matroska

OPUS_SAMPLE_RATE = 48000
OPUS_SEEK_PRE_ROLL_NS = 80_000_000  # 80 ms, the Opus decoder's convergence time after a seek

_VINT_MAX_LENGTH = 8


# --- EBML encoding -------------------------------------------------------------------------


def encode_vint(value: int, length: int | None = None) -> bytes:
    """An EBML variable-size integer (an element data size), shortest form unless
    ``length`` (1..8) is given. The all-ones value of each length is reserved for
    "unknown", so a length-``n`` vint holds ``0 .. 2**(7n) - 2``."""
    if value < 0:
        raise ValueError("vint value must be >= 0")
    if length is None:
        length = 1
        while value > (1 << (7 * length)) - 2:
            length += 1
            if length > _VINT_MAX_LENGTH:
                raise ValueError("vint value too large")
    elif not 1 <= length <= _VINT_MAX_LENGTH or value > (1 << (7 * length)) - 2:
        raise ValueError(f"vint value {value} does not fit in {length} bytes")
    return ((1 << (7 * length)) | value).to_bytes(length, "big")


def encode_element_id(element_id: int) -> bytes:
    """An element id as written: ids are given in their encoded form (marker bit included)."""
    if element_id <= 0:
        raise ValueError("bad element id")
    n = (element_id.bit_length() + 7) // 8
    if n > 4 or element_id >> (7 * n) != 1:
        raise ValueError(f"bad element id {element_id:#x}")
    return element_id.to_bytes(n, "big")


def ebml_element(element_id: int, payload: bytes, *, size_length: int | None = None) -> bytes:
    """A whole element: id, data size, data."""
    return encode_element_id(element_id) + encode_vint(len(payload), size_length) + payload


def uint_element(element_id: int, value: int, *, length: int | None = None) -> bytes:
    """An unsigned-integer element, shortest big-endian form (at least one byte) unless ``length``."""
    if value < 0:
        raise ValueError("uint must be >= 0")
    n = length if length is not None else max(1, (value.bit_length() + 7) // 8)
    return ebml_element(element_id, value.to_bytes(n, "big"))


def float_element(element_id: int, value: float) -> bytes:
    """A float element, 8-byte IEEE 754 big-endian."""
    return ebml_element(element_id, struct.pack(">d", value))


def string_element(element_id: int, value: str) -> bytes:
    return ebml_element(element_id, value.encode())


def void_element(total_length: int) -> bytes:
    """An EBML Void element of exactly ``total_length`` bytes (2..128), filled with zeros."""
    if not 2 <= total_length <= 128:
        raise ValueError("void length out of range")
    return bytes((VOID,)) + encode_vint(total_length - 2, 1) + bytes(total_length - 2)


def opus_head(*, channels: int = 2, pre_skip: int = 0, input_sample_rate: int = OPUS_SAMPLE_RATE) -> bytes:
    """The Ogg Opus identification header (RFC 7845 section 5.1), channel mapping family 0."""
    if channels not in (1, 2):
        raise ValueError("channel mapping family 0 has 1 or 2 channels")
    return b"OpusHead" + struct.pack("<BBHIhB", 1, channels, pre_skip, input_sample_rate, 0, 0)


# --- the writer ----------------------------------------------------------------------------

_SEEK_ENTRY_LENGTH = 21  # Seek{SeekID(4-byte id), SeekPosition(8-byte uint)}: 2+1 + (2+1+4) + (2+1+8)
_DURATION_LENGTH = 11  # Duration: 2-byte id, 1-byte size, 8-byte float


def _seek_entry(target_id: int, position: int) -> bytes:
    entry = ebml_element(
        SEEK,
        ebml_element(SEEK_ID, encode_element_id(target_id)) + uint_element(SEEK_POSITION, position, length=8),
    )
    assert len(entry) == _SEEK_ENTRY_LENGTH
    return entry


def _cue_point(time_ms: int, track: int, cluster_position: int) -> bytes:
    return ebml_element(
        CUE_POINT,
        uint_element(CUE_TIME, time_ms)
        + ebml_element(
            CUE_TRACK_POSITIONS,
            uint_element(CUE_TRACK, track) + uint_element(CUE_CLUSTER_POSITION, cluster_position),
        ),
    )


def _master_length(payload_length: int) -> int:
    """Length of a 4-byte-id master element whose data is ``payload_length`` bytes."""
    return 4 + len(encode_vint(payload_length)) + payload_length


class WebmWriter:
    """Writes a WebM file with at most one VP8 track and one Opus track, or a Matroska file
    when the video track is H.264 (``video_codec=CODEC_AVC``, its avcC as ``video_codec_private``).

    ``write`` receives the bytes in file order, starting with the header (written
    by the constructor). Timestamps are in milliseconds from the file's start
    (``>= 0``) and must not decrease within a track; blocks of different tracks
    may be slightly out of order (their relative timestamps may be negative).
    """

    def __init__(
        self,
        write: Callable[[bytes], object],
        *,
        video: tuple[int, int] | None,
        audio: bool,
        video_codec: str = CODEC_VP8,
        video_codec_private: bytes | None = None,
        audio_channels: int = 2,
        opus_pre_skip: int = 0,
        max_cluster_ms: int = 5000,
        app_name: str = "bitbasel-media-server",
    ) -> None:
        if video is None and not audio:
            raise ValueError("a WebM file needs at least one track")
        if video is not None and video_codec == CODEC_AVC and not video_codec_private:
            raise ValueError("an H.264 track needs its AVCDecoderConfigurationRecord (CodecPrivate)")
        if not 1 <= max_cluster_ms <= 30000:
            raise ValueError("max_cluster_ms must be 1..30000 (block timestamps are 16-bit)")
        self._write = write
        self._max_cluster_ms = max_cluster_ms
        self.video_track: int | None = 1 if video is not None else None
        self.video_codec: str | None = video_codec if video is not None else None
        self.doc_type = "webm" if self.video_codec is None or self.video_codec in _WEBM_VIDEO_CODECS else "matroska"
        self.audio_track: int | None = (2 if video is not None else 1) if audio else None
        self.bytes_written = 0
        self.finished = False
        self._patches: list[Patch] = []
        self._cluster_size_offset = -1  # where the open cluster's 8-byte size is
        self._cluster_start = -1  # offset of the open cluster's first byte
        self._cluster_ms = 0
        self._cluster_blocks = 0
        self._last_ms: dict[int, int] = {}
        self._end_ms = 0.0
        self._cues: list[bytes] = []
        self._cues_payload = 0
        self.blocks_written = 0
        self.clusters_written = 0

        self._emit(
            ebml_element(
                EBML,
                uint_element(EBML_VERSION, 1)
                + uint_element(EBML_READ_VERSION, 1)
                + uint_element(EBML_MAX_ID_LENGTH, 4)
                + uint_element(EBML_MAX_SIZE_LENGTH, 8)
                + string_element(DOC_TYPE, self.doc_type)
                + uint_element(DOC_TYPE_VERSION, 4)
                + uint_element(DOC_TYPE_READ_VERSION, 2),
            )
        )
        self._emit(encode_element_id(SEGMENT))
        self._segment_size_offset = self.bytes_written
        self._emit(UNKNOWN_SIZE)
        self._segment_start = self.bytes_written  # positions in SeekHead and Cues are relative to this

        info_body = (
            uint_element(TIMESTAMP_SCALE, 1_000_000)
            + string_element(MUXING_APP, app_name)
            + string_element(WRITING_APP, app_name)
        )
        info = ebml_element(INFO, info_body + void_element(_DURATION_LENGTH))
        tracks = ebml_element(TRACKS, self._track_entries(video, video_codec_private, audio_channels, opus_pre_skip))
        seek_head_length = 4 + 1 + 3 * _SEEK_ENTRY_LENGTH
        seek_head = ebml_element(
            SEEK_HEAD,
            _seek_entry(INFO, seek_head_length)
            + _seek_entry(TRACKS, seek_head_length + len(info))
            + void_element(_SEEK_ENTRY_LENGTH),
        )
        assert len(seek_head) == seek_head_length
        self._cues_seek_offset = self.bytes_written + seek_head_length - _SEEK_ENTRY_LENGTH
        self._emit(seek_head)
        self._duration_offset = self.bytes_written + len(info) - _DURATION_LENGTH
        self._emit(info)
        self._emit(tracks)

    def _track_entries(
        self, video: tuple[int, int] | None, codec_private: bytes | None, channels: int, pre_skip: int
    ) -> bytes:
        out = b""
        if video is not None and self.video_track is not None and self.video_codec is not None:
            width, height = video
            if not (0 < width < 1 << 16 and 0 < height < 1 << 16):
                raise ValueError("bad video size")
            out += ebml_element(
                TRACK_ENTRY,
                uint_element(TRACK_NUMBER, self.video_track)
                + uint_element(TRACK_UID, self.video_track)
                + uint_element(TRACK_TYPE, TRACK_TYPE_VIDEO)
                + uint_element(FLAG_LACING, 0)
                + string_element(CODEC_ID, self.video_codec)
                + (ebml_element(CODEC_PRIVATE, codec_private) if codec_private else b"")
                + ebml_element(VIDEO, uint_element(PIXEL_WIDTH, width) + uint_element(PIXEL_HEIGHT, height)),
            )
        if self.audio_track is not None:
            delay = b""
            if pre_skip:
                delay = uint_element(CODEC_DELAY, pre_skip * 1_000_000_000 // OPUS_SAMPLE_RATE)
            out += ebml_element(
                TRACK_ENTRY,
                uint_element(TRACK_NUMBER, self.audio_track)
                + uint_element(TRACK_UID, self.audio_track)
                + uint_element(TRACK_TYPE, TRACK_TYPE_AUDIO)
                + uint_element(FLAG_LACING, 0)
                + string_element(CODEC_ID, "A_OPUS")
                + ebml_element(CODEC_PRIVATE, opus_head(channels=channels, pre_skip=pre_skip))
                + delay
                + uint_element(SEEK_PRE_ROLL, OPUS_SEEK_PRE_ROLL_NS)
                + ebml_element(
                    AUDIO, float_element(SAMPLING_FREQUENCY, float(OPUS_SAMPLE_RATE)) + uint_element(CHANNELS, channels)
                ),
            )
        return out

    def _emit(self, data: bytes) -> None:
        if data:
            self._write(data)
            self.bytes_written += len(data)

    # --- frames ---

    def add_video_frame(self, timestamp_ms: int, data: bytes, keyframe: bool, duration_ms: float = 0.0) -> None:
        """One video frame (VP8; H.264: an access unit's length-prefixed NAL units).
        ``duration_ms`` only feeds the Duration written by :meth:`finish`."""
        if self.video_track is None:
            raise ValueError("this file has no video track")
        self._add_block(self.video_track, timestamp_ms, data, keyframe, duration_ms, keyframe_cluster=keyframe)

    def add_audio_frame(self, timestamp_ms: int, data: bytes, duration_ms: float = 0.0) -> None:
        """One Opus packet (every Opus packet is a keyframe)."""
        if self.audio_track is None:
            raise ValueError("this file has no audio track")
        self._add_block(self.audio_track, timestamp_ms, data, True, duration_ms, keyframe_cluster=False)

    def block_overhead(self) -> int:
        """An upper bound on the bytes a block adds beyond its data (cluster start and cue included)."""
        return 96

    def finish_overhead(self) -> int:
        """Bytes :meth:`finish` will still append (the Cues), were it called now."""
        return _master_length(self._cues_payload) if self._cues else 0

    @property
    def end_ms(self) -> float:
        """The end of the last frame written (timestamp + duration), the Duration finish writes."""
        return self._end_ms

    def _add_block(
        self, track: int, timestamp_ms: int, data: bytes, keyframe: bool, duration_ms: float, *, keyframe_cluster: bool
    ) -> None:
        if self.finished:
            raise ValueError("finished")
        if timestamp_ms < 0:
            raise ValueError("negative timestamp")
        if timestamp_ms < self._last_ms.get(track, 0):
            raise ValueError(f"track {track}: timestamp {timestamp_ms} ms goes backwards")
        self._last_ms[track] = timestamp_ms
        relative = timestamp_ms - self._cluster_ms
        audio_only = self.video_track is None
        new_cluster = (
            self._cluster_start < 0
            or (keyframe_cluster and self._cluster_blocks > 0)
            or relative >= self._max_cluster_ms
            or relative < -0x8000
        )
        if new_cluster:
            self._open_cluster(timestamp_ms, track if (keyframe_cluster or audio_only) else None)
            relative = 0
        header = (
            encode_element_id(SIMPLE_BLOCK)
            + encode_vint(4 + len(data))
            + encode_vint(track)
            + struct.pack(">hB", relative, 0x80 if keyframe else 0)
        )
        self._emit(header)
        self._emit(data)
        self._cluster_blocks += 1
        self.blocks_written += 1
        self._end_ms = max(self._end_ms, timestamp_ms + duration_ms)

    def _open_cluster(self, timestamp_ms: int, cue_track: int | None) -> None:
        self._close_cluster()
        self._cluster_start = self.bytes_written
        self._emit(encode_element_id(CLUSTER))
        self._cluster_size_offset = self.bytes_written
        self._emit(UNKNOWN_SIZE)
        self._emit(uint_element(CLUSTER_TIMESTAMP, timestamp_ms))
        self._cluster_ms = timestamp_ms
        self._cluster_blocks = 0
        self.clusters_written += 1
        if cue_track is not None:
            cue = _cue_point(timestamp_ms, cue_track, self._cluster_start - self._segment_start)
            self._cues.append(cue)
            self._cues_payload += len(cue)

    def _close_cluster(self) -> None:
        if self._cluster_start >= 0:
            size = self.bytes_written - self._cluster_size_offset - len(UNKNOWN_SIZE)
            self._patches.append((self._cluster_size_offset, encode_vint(size, 8)))
            self._cluster_start = -1

    # --- the end ---

    def finish(self, duration_ms: float | None = None) -> list[Patch]:
        """Close the last cluster, write the Cues, and return the patches (apply
        them in order). ``duration_ms`` defaults to :attr:`end_ms`. Idempotent."""
        if self.finished:
            return list(self._patches)
        self._close_cluster()
        if self._cues:
            cues_position = self.bytes_written - self._segment_start
            self._emit(ebml_element(CUES, b"".join(self._cues)))
            self._patches.append((self._cues_seek_offset, _seek_entry(CUES, cues_position)))
        duration = self._end_ms if duration_ms is None else duration_ms
        self._patches.append((self._duration_offset, float_element(DURATION, float(duration))))
        segment_size = self.bytes_written - self._segment_start
        self._patches.append((self._segment_size_offset, encode_vint(segment_size, 8)))
        self.finished = True
        return list(self._patches)


class SeekableWritable(Protocol):
    def seek(self, offset: int, whence: int = ..., /) -> int: ...
    def write(self, data: bytes, /) -> int: ...
    def tell(self) -> int: ...


def apply_patches(f: SeekableWritable, patches: Sequence[Patch], *, base: int = 0) -> None:
    """Overwrite the patched ranges of ``f`` (the writer's byte 0 at ``base``) and
    leave the file position where it was."""
    end = f.tell()
    for offset, data in patches:
        f.seek(base + offset)
        f.write(data)
    f.seek(end)
