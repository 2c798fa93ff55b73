"""media/webm.py: EBML encoding and the file structure, read back with a small EBML
reader written here (no ffprobe: tests/test_media_recorder.py checks real media
with ffprobe/ffmpeg)."""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass, field

import pytest

from media import webm
from media.webm import (
    UNKNOWN_SIZE,
    WebmWriter,
    apply_patches,
    ebml_element,
    encode_element_id,
    encode_vint,
    float_element,
    opus_head,
    string_element,
    uint_element,
    void_element,
)

# --- a minimal EBML reader ---------------------------------------------------------


def read_id(buf: bytes, at: int) -> tuple[int, int]:
    first = buf[at]
    length = 8 - first.bit_length() + 1
    assert 1 <= length <= 4, f"bad id at {at}"
    return int.from_bytes(buf[at : at + length], "big"), at + length


def read_size(buf: bytes, at: int) -> tuple[int | None, int]:
    """(size, next offset); None for the unknown size."""
    first = buf[at]
    assert first, f"bad vint at {at}"
    length = 8 - first.bit_length() + 1
    value = int.from_bytes(buf[at : at + length], "big") & ((1 << (7 * length)) - 1)
    if value == (1 << (7 * length)) - 1:
        return None, at + length
    return value, at + length


@dataclass
class Element:
    id: int
    offset: int  # of the id
    data_offset: int
    size: int | None  # as written (None: unknown)
    end: int  # actual end
    children: list[Element] = field(default_factory=list)

    def child(self, element_id: int) -> Element:
        [c] = [c for c in self.children if c.id == element_id]
        return c

    def all(self, element_id: int) -> list[Element]:
        return [c for c in self.children if c.id == element_id]


MASTERS = {
    webm.EBML,
    webm.SEGMENT,
    webm.SEEK_HEAD,
    webm.SEEK,
    webm.INFO,
    webm.TRACKS,
    webm.TRACK_ENTRY,
    webm.VIDEO,
    webm.AUDIO,
    webm.CLUSTER,
    webm.CUES,
    webm.CUE_POINT,
    webm.CUE_TRACK_POSITIONS,
}
# what may follow an unknown-size element at its own level, ending it
TOP_LEVEL = {webm.CLUSTER, webm.CUES, webm.SEEK_HEAD, webm.INFO, webm.TRACKS}


def parse_one(buf: bytes, at: int, end: int) -> Element:
    element_id, data_at = read_id(buf, at)
    size, data_at = read_size(buf, data_at)
    if size is None:
        # unknown size: it ends with its parent or where an element of its own level starts
        element = Element(element_id, at, data_at, None, end)
        child_at = data_at
        while child_at < end:
            child_id, _ = read_id(buf, child_at)
            if element_id != webm.SEGMENT and child_id in TOP_LEVEL:
                break
            child = parse_one(buf, child_at, end)
            element.children.append(child)
            child_at = child.end
        element.end = child_at
        return element
    element = Element(element_id, at, data_at, size, data_at + size)
    assert element.end <= end, f"element {element_id:#x} at {at} overruns its parent"
    if element_id in MASTERS:
        element.children = parse(buf, data_at, element.end)
    return element


def parse(buf: bytes, start: int = 0, end: int | None = None) -> list[Element]:
    end = len(buf) if end is None else end
    out = []
    at = start
    while at < end:
        element = parse_one(buf, at, end)
        out.append(element)
        at = element.end
    return out


def uint_of(buf: bytes, e: Element) -> int:
    return int.from_bytes(buf[e.data_offset : e.end], "big")


def blocks(buf: bytes, cluster: Element) -> list[tuple[int, int, bool, bytes]]:
    """(track, absolute ms, keyframe, data) of a cluster's SimpleBlocks."""
    base = uint_of(buf, cluster.child(webm.CLUSTER_TIMESTAMP))
    out = []
    for b in cluster.all(webm.SIMPLE_BLOCK):
        track, at = read_size(buf, b.data_offset)
        assert track is not None
        relative, flags = struct.unpack_from(">hB", buf, at)
        out.append((track, base + relative, bool(flags & 0x80), buf[at + 3 : b.end]))
    return out


def make_file(*, video: bool = True, audio: bool = True) -> tuple[bytes, bytes, WebmWriter]:
    """(unpatched bytes, patched bytes, writer) for 12 s of made-up frames: video at
    30 fps with a keyframe every 2 s, audio every 20 ms."""
    out = io.BytesIO()
    writer = WebmWriter(out.write, video=(640, 480) if video else None, audio=audio)
    frames: list[tuple[int, str, int]] = []
    if video:
        frames += [(round(i * 1000 / 30), "v", i) for i in range(360)]
    if audio:
        frames += [(j * 20, "a", j) for j in range(600)]
    for ms, kind, i in sorted(frames, key=lambda f: (f[0], f[1] != "v")):
        if kind == "v":
            writer.add_video_frame(ms, bytes([i & 0xFF]) * 100, keyframe=i % 60 == 0, duration_ms=33)
        else:
            writer.add_audio_frame(ms, bytes([0xFC, i & 0xFF]) * 20, duration_ms=20)
    unpatched = out.getvalue()
    apply_patches(out, writer.finish())
    return unpatched, out.getvalue(), writer


# --- EBML encoding -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "encoded"),
    [
        (0, b"\x80"),
        (1, b"\x81"),
        (126, b"\xfe"),
        (127, b"\x40\x7f"),  # 0xFF alone would be "unknown"
        (128, b"\x40\x80"),
        (16382, b"\x7f\xfe"),
        (16383, b"\x20\x3f\xff"),
        (2**56 - 2, b"\x01\xff\xff\xff\xff\xff\xff\xfe"),
    ],
)
def test_vint_shortest_form(value: int, encoded: bytes) -> None:
    assert encode_vint(value) == encoded
    assert read_size(encoded, 0) == (value, len(encoded))


def test_vint_fixed_length_and_limits() -> None:
    assert encode_vint(5, 8) == b"\x01\x00\x00\x00\x00\x00\x00\x05"
    assert encode_vint(5, 2) == b"\x40\x05"
    assert read_size(UNKNOWN_SIZE, 0) == (None, 8)
    for bad in [(-1, None), (2**56 - 1, None), (127, 1), (0, 9), (0, 0)]:
        with pytest.raises(ValueError):
            encode_vint(*bad)


def test_element_ids() -> None:
    assert encode_element_id(0xEC) == b"\xec"
    assert encode_element_id(0x4286) == b"\x42\x86"
    assert encode_element_id(0x2AD7B1) == b"\x2a\xd7\xb1"
    assert encode_element_id(0x1A45DFA3) == b"\x1a\x45\xdf\xa3"
    for bad in (0, 0x7F, 0x0100, 0x1F43B6, 0x0A45DFA3):  # marker bit not where the length says
        with pytest.raises(ValueError):
            encode_element_id(bad)


def test_element_encodings() -> None:
    assert uint_element(0xD7, 0) == b"\xd7\x81\x00"
    assert uint_element(0xD7, 1) == b"\xd7\x81\x01"
    assert uint_element(0xD7, 256) == b"\xd7\x82\x01\x00"
    assert uint_element(0x53AC, 1, length=8) == b"\x53\xac\x88" + (1).to_bytes(8, "big")
    assert float_element(0x4489, 1.5) == b"\x44\x89\x88" + struct.pack(">d", 1.5)
    assert string_element(0x4282, "webm") == b"\x42\x82\x84webm"
    big = ebml_element(0xA3, bytes(200))
    assert big[:3] == b"\xa3\x40\xc8" and len(big) == 203
    assert ebml_element(0xA3, b"x", size_length=8) == b"\xa3\x01" + bytes(6) + b"\x01x"
    for n in (2, 3, 11, 21, 128):
        v = void_element(n)
        assert len(v) == n and v[0] == 0xEC and read_size(v, 1) == (n - 2, 2)
    with pytest.raises(ValueError):
        void_element(129)


def test_opus_head() -> None:
    head = opus_head()
    assert len(head) == 19
    magic, version, channels, pre_skip, rate, gain, family = struct.unpack("<8sBBHIhB", head)
    assert (magic, version, channels, pre_skip, rate, gain, family) == (b"OpusHead", 1, 2, 0, 48000, 0, 0)
    assert struct.unpack_from("<H", opus_head(pre_skip=312), 10) == (312,)


# --- the file ----------------------------------------------------------------------


def test_patched_file_structure() -> None:
    unpatched, buf, writer = make_file()
    assert len(buf) == writer.bytes_written  # patches overwrite, never append
    patches = writer.finish()
    assert all(offset + len(data) <= len(unpatched) for offset, data in patches)  # ... and only what was there
    assert len(patches) == 6 + 3  # cluster sizes, then the Cues' seek entry, Duration, Segment size
    ebml, segment = parse(buf)
    assert ebml.id == webm.EBML and segment.id == webm.SEGMENT
    assert buf[ebml.child(webm.DOC_TYPE).data_offset : ebml.child(webm.DOC_TYPE).end] == b"webm"
    assert segment.size is not None and segment.end == len(buf)  # size patched
    seg0 = segment.data_offset

    info = segment.child(webm.INFO)
    assert uint_of(buf, info.child(webm.TIMESTAMP_SCALE)) == 1_000_000
    duration = info.child(webm.DURATION)
    assert struct.unpack(">d", buf[duration.data_offset : duration.end])[0] == pytest.approx(12000.0, abs=1)

    # SeekHead: every entry points at its element
    for seek in segment.child(webm.SEEK_HEAD).all(webm.SEEK):
        target = seek.child(webm.SEEK_ID)
        position = uint_of(buf, seek.child(webm.SEEK_POSITION))
        assert read_id(buf, seg0 + position)[0] == int.from_bytes(buf[target.data_offset : target.end], "big")
    assert len(segment.child(webm.SEEK_HEAD).all(webm.SEEK)) == 3

    video, audio = segment.child(webm.TRACKS).all(webm.TRACK_ENTRY)
    assert buf[video.child(webm.CODEC_ID).data_offset : video.child(webm.CODEC_ID).end] == b"V_VP8"
    assert uint_of(buf, video.child(webm.VIDEO).child(webm.PIXEL_WIDTH)) == 640
    assert uint_of(buf, video.child(webm.VIDEO).child(webm.PIXEL_HEIGHT)) == 480
    assert buf[audio.child(webm.CODEC_ID).data_offset : audio.child(webm.CODEC_ID).end] == b"A_OPUS"
    private = audio.child(webm.CODEC_PRIVATE)
    assert buf[private.data_offset : private.end] == opus_head()
    assert uint_of(buf, audio.child(webm.SEEK_PRE_ROLL)) == 80_000_000
    assert uint_of(buf, audio.child(webm.AUDIO).child(webm.CHANNELS)) == 2

    clusters = segment.all(webm.CLUSTER)
    assert all(c.size is not None for c in clusters)  # sizes patched
    # a cluster per video keyframe (every 2 s), each starting with it
    assert [uint_of(buf, c.child(webm.CLUSTER_TIMESTAMP)) for c in clusters] == [0, 2000, 4000, 6000, 8000, 10000]
    all_blocks = []
    for c in clusters:
        bs = blocks(buf, c)
        assert bs[0][0] == 1 and bs[0][2]
        all_blocks += bs
    assert sum(1 for b in all_blocks if b[0] == 1) == 360
    assert sum(1 for b in all_blocks if b[0] == 2) == 600
    assert all(b[2] for b in all_blocks if b[0] == 2)  # every Opus block is a keyframe
    assert sum(1 for b in all_blocks if b[0] == 1 and b[2]) == 6

    cues = segment.child(webm.CUES)
    points = cues.all(webm.CUE_POINT)
    assert len(points) == 6
    for point, cluster in zip(points, clusters, strict=True):
        positions = point.child(webm.CUE_TRACK_POSITIONS)
        assert uint_of(buf, positions.child(webm.CUE_TRACK)) == 1
        assert seg0 + uint_of(buf, positions.child(webm.CUE_CLUSTER_POSITION)) == cluster.offset
        assert uint_of(buf, point.child(webm.CUE_TIME)) == uint_of(buf, cluster.child(webm.CLUSTER_TIMESTAMP))


def test_unpatched_file_is_a_valid_live_stream() -> None:
    """Before finish's patches (a recording cut short), sizes are unknown and the
    Duration and the Cues' seek entry are Void elements: still a readable file."""
    unpatched, _, _ = make_file()
    _, segment = parse(unpatched)
    assert segment.size is None
    assert read_size(UNKNOWN_SIZE, 0)[0] is None
    info = segment.child(webm.INFO)
    assert info.all(webm.DURATION) == [] and len(info.all(webm.VOID)) == 1
    assert len(segment.child(webm.SEEK_HEAD).all(webm.SEEK)) == 2
    clusters = segment.all(webm.CLUSTER)
    assert len(clusters) == 6 and all(c.size is None for c in clusters)
    assert sum(len(blocks(unpatched, c)) for c in clusters) == 960


def test_audio_only_clusters_every_five_seconds() -> None:
    _, buf, writer = make_file(video=False)
    assert writer.video_track is None and writer.audio_track == 1
    _, segment = parse(buf)
    [track] = segment.child(webm.TRACKS).all(webm.TRACK_ENTRY)
    assert uint_of(buf, track.child(webm.TRACK_NUMBER)) == 1
    clusters = segment.all(webm.CLUSTER)
    assert [uint_of(buf, c.child(webm.CLUSTER_TIMESTAMP)) for c in clusters] == [0, 5000, 10000]
    assert len(segment.child(webm.CUES).all(webm.CUE_POINT)) == 3
    for c in clusters:
        assert all(0 <= ms - uint_of(buf, c.child(webm.CLUSTER_TIMESTAMP)) < 5000 for _, ms, _, _ in blocks(buf, c))


def test_long_gap_without_keyframe_starts_a_cluster_and_keeps_relative_times_16_bit() -> None:
    out = io.BytesIO()
    writer = WebmWriter(out.write, video=(320, 240), audio=True)
    writer.add_video_frame(0, b"k", keyframe=True)
    writer.add_audio_frame(10, b"a")
    writer.add_video_frame(40_000, b"p", keyframe=False)  # 40 s later, not a keyframe
    writer.add_audio_frame(39_990, b"a")  # slightly before the cluster's start: negative relative time
    apply_patches(out, writer.finish())
    buf = out.getvalue()
    _, segment = parse(buf)
    clusters = segment.all(webm.CLUSTER)
    assert [uint_of(buf, c.child(webm.CLUSTER_TIMESTAMP)) for c in clusters] == [0, 40_000]
    assert [(t, ms, k) for t, ms, k, _ in blocks(buf, clusters[1])] == [(1, 40_000, False), (2, 39_990, True)]
    assert len(segment.child(webm.CUES).all(webm.CUE_POINT)) == 1  # only the keyframe cluster is a cue


def test_writer_rejects_misuse() -> None:
    with pytest.raises(ValueError):
        WebmWriter(io.BytesIO().write, video=None, audio=False)
    writer = WebmWriter(io.BytesIO().write, video=None, audio=True)
    with pytest.raises(ValueError):
        writer.add_video_frame(0, b"x", keyframe=True)
    writer.add_audio_frame(100, b"x")
    with pytest.raises(ValueError):
        writer.add_audio_frame(99, b"x")  # backwards within a track
    with pytest.raises(ValueError):
        writer.add_audio_frame(-1, b"x")
    first = writer.finish()
    assert writer.finish() == first  # idempotent
    with pytest.raises(ValueError):
        writer.add_audio_frame(200, b"x")


def test_apply_patches_keeps_the_position() -> None:
    f = io.BytesIO(b"0123456789")
    f.seek(7)
    apply_patches(f, [(1, b"ab"), (5, b"c")], base=2)
    assert f.getvalue() == b"012ab56c89" and f.tell() == 7


def test_opus_pre_skip_sets_codec_delay() -> None:
    out = io.BytesIO()
    writer = WebmWriter(out.write, video=None, audio=True, opus_pre_skip=312)
    writer.add_audio_frame(0, b"\xfc\x00")
    apply_patches(out, writer.finish())
    buf = out.getvalue()
    _, segment = parse(buf)
    [track] = segment.child(webm.TRACKS).all(webm.TRACK_ENTRY)
    assert uint_of(buf, track.child(webm.CODEC_DELAY)) == 6_500_000  # 312 samples at 48 kHz, in ns
    private = track.child(webm.CODEC_PRIVATE)
    assert buf[private.data_offset : private.end] == opus_head(pre_skip=312)


def test_an_h264_video_track_makes_the_file_matroska_with_the_avcc_as_codec_private() -> None:
    avcc = bytes([1, 0x42, 0xC0, 0x1E, 0xFF, 0xE1]) + b"sps-and-pps"  # stands for the record: opaque here
    out = io.BytesIO()
    writer = WebmWriter(out.write, video=(320, 240), audio=True, video_codec=webm.CODEC_AVC, video_codec_private=avcc)
    assert writer.doc_type == "matroska" and writer.video_codec == "V_MPEG4/ISO/AVC"
    writer.add_video_frame(0, b"\x00\x00\x00\x01\x65", keyframe=True)
    writer.add_audio_frame(0, b"\xfc\x00")
    apply_patches(out, writer.finish())
    buf = out.getvalue()
    ebml, segment = parse(buf)
    assert buf[ebml.child(webm.DOC_TYPE).data_offset : ebml.child(webm.DOC_TYPE).end] == b"matroska"
    video, audio = segment.child(webm.TRACKS).all(webm.TRACK_ENTRY)
    assert buf[video.child(webm.CODEC_ID).data_offset : video.child(webm.CODEC_ID).end] == b"V_MPEG4/ISO/AVC"
    private = video.child(webm.CODEC_PRIVATE)
    assert buf[private.data_offset : private.end] == avcc
    assert uint_of(buf, video.child(webm.VIDEO).child(webm.PIXEL_WIDTH)) == 320
    assert buf[audio.child(webm.CODEC_ID).data_offset : audio.child(webm.CODEC_ID).end] == b"A_OPUS"
    [cluster] = segment.all(webm.CLUSTER)
    assert blocks(buf, cluster)[0] == (1, 0, True, b"\x00\x00\x00\x01\x65")


def test_vp8_and_audio_only_files_stay_webm_without_a_video_codec_private() -> None:
    _, buf, writer = make_file()
    assert writer.doc_type == "webm"
    _, segment = parse(buf)
    video, _ = segment.child(webm.TRACKS).all(webm.TRACK_ENTRY)
    assert video.all(webm.CODEC_PRIVATE) == []
    # audio only: WebM whatever video codec was named
    assert WebmWriter(io.BytesIO().write, video=None, audio=True, video_codec=webm.CODEC_AVC).doc_type == "webm"
    with pytest.raises(ValueError):  # H.264 cannot be decoded without its parameter sets
        WebmWriter(io.BytesIO().write, video=(320, 240), audio=True, video_codec=webm.CODEC_AVC)
