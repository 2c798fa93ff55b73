"""media/recorder.py with real media: VP8 and Opus encoded by libvpx/libopus (PyAV),
packetized as a host would (tests/rtp_recordings.py), recorded to WebM, and the
files checked with ffprobe and decoded with ffmpeg."""

from __future__ import annotations

import dataclasses
import itertools
import random
import shutil
import subprocess
from pathlib import Path

import pytest

from media.recorder import Recorder, opus_packet_duration_ms, vp8_keyframe_size
from media.webm import apply_patches
from tests.rtp_packets import build_rtp_packet
from tests.rtp_recordings import (
    FPS,
    HEIGHT,
    OPUS_PT,
    VP8_PT,
    WIDTH,
    Host,
    check_file,
    encoded_media,
    ffmpeg_decode_errors,
    ffprobe,
    host_packets,
    record,
)

pytestmark = pytest.mark.skipif(
    shutil.which("ffprobe") is None or shutil.which("ffmpeg") is None, reason="needs ffmpeg (apt-get install ffmpeg)"
)


def live_seconds(packets: list[tuple[float, bytes]], start: float) -> float:
    """Wall time from ``start`` to the end of the last packet (20 ms of audio)."""
    return packets[-1][0] - start + 0.02


def test_clean_stream(tmp_path: Path) -> None:
    media = encoded_media()
    packets = host_packets(media, Host.random(random.Random(1)), start=1000.0)
    recorder = record(tmp_path / "clean.webm", packets)
    s = recorder.stats
    assert (s.video_frames_written, s.audio_frames_written) == (len(media.video), len(media.audio))
    assert s.video_frames_dropped_incomplete == s.video_frames_dropped_before_keyframe == 0
    assert s.packets_lost == s.packets_late == s.packets_ignored == 0
    assert recorder.stopped_reason is None and recorder.finished
    probe = check_file(tmp_path / "clean.webm", 6.0)
    assert len(probe.packets_of("vp8")) == len(media.video) and len(probe.packets_of("opus")) == len(media.audio)
    assert [float(p["pts_time"]) for p in probe.packets_of("vp8") if p["flags"].startswith("K")] == [0, 1, 2, 3, 4, 5]
    assert s.bytes_written == (tmp_path / "clean.webm").stat().st_size
    assert s.duration_ms == pytest.approx(6000, abs=20)


def test_packet_loss(tmp_path: Path) -> None:
    """5 % of packets lost at random: incomplete frames and frames after a loss until
    the next keyframe are dropped; what is written decodes cleanly; audio keeps the duration."""
    media = encoded_media()
    packets = host_packets(media, Host.random(random.Random(2)), start=50.0, loss=0.05, seed=11)
    recorder = record(tmp_path / "loss.webm", packets)
    s = recorder.stats
    assert s.packets_lost > 0 and s.packets_late == 0
    assert s.video_frames_dropped_incomplete > 0 and s.video_frames_dropped_before_keyframe > 0
    assert 0 < s.video_frames_written < len(media.video)
    assert len(media.audio) * 0.9 < s.audio_frames_written < len(media.audio)
    probe = check_file(tmp_path / "loss.webm", live_seconds(packets, 50.0))
    assert len(probe.packets_of("vp8")) == s.video_frames_written


def test_duplicates_and_late_packets_change_nothing(tmp_path: Path) -> None:
    """Every packet again 30 ms later (a retransmission): ignored as late/duplicate."""
    media = encoded_media()
    packets = host_packets(media, Host.random(random.Random(3)), start=0.0)
    doubled = sorted(packets + [(t + 0.03, p) for t, p in packets], key=lambda item: item[0])
    recorder = record(tmp_path / "dup.webm", doubled)
    s = recorder.stats
    assert (s.video_frames_written, s.audio_frames_written) == (len(media.video), len(media.audio))
    assert s.packets_late == len(packets) and s.packets_lost == 0
    check_file(tmp_path / "dup.webm", 6.0)


def test_starts_mid_stream_at_the_first_keyframe(tmp_path: Path) -> None:
    media = encoded_media()
    packets = host_packets(media, Host.random(random.Random(4)), start=10.0, from_s=0.5)
    path = tmp_path / "mid.webm"
    with path.open("wb") as f:
        recorder = Recorder(f.write, vp8_payload_type=VP8_PT, opus_payload_type=OPUS_PT)
        for arrival, packet in packets[:20]:
            recorder.feed(packet, arrival)
        assert recorder.wants_keyframe and not recorder.started and f.tell() == 0
        for arrival, packet in packets[20:]:
            recorder.feed(packet, arrival)
        assert not recorder.wants_keyframe
        apply_patches(f, recorder.finish())
    s = recorder.stats
    # the first keyframe is media second 1.0: 0.5 s of video and audio before it are dropped
    assert s.video_frames_dropped_before_keyframe == FPS // 2
    assert s.video_frames_written == len(media.video) - FPS
    assert 20 <= s.audio_frames_dropped_before_start <= 26
    check_file(path, 5.0)


@pytest.mark.parametrize("announce", [True, False], ids=["host_changed", "new_ssrc_only"])
def test_host_leaves_and_comes_back(tmp_path: Path, announce: bool) -> None:
    """Host A sends 3 s, nothing for 2 s, host B (new SSRCs, new random timestamp
    and sequence bases) sends 3 s: one file, 8 s long, with the 2 s gap in it."""
    media = encoded_media()
    a = host_packets(media, Host.random(random.Random(5)), start=20.0, to_s=3.0)
    b = host_packets(media, Host.random(random.Random(6)), start=25.0, to_s=3.0, seed=8)
    path = tmp_path / "rejoin.webm"
    with path.open("wb") as f:
        recorder = Recorder(f.write, vp8_payload_type=VP8_PT, opus_payload_type=OPUS_PT)
        for arrival, packet in a:
            recorder.feed(packet, arrival)
        recorder.advance(24.0)  # time passes while the host is away
        if announce:
            recorder.host_changed()
        for arrival, packet in b:
            recorder.feed(packet, arrival)
        apply_patches(f, recorder.finish())
    s = recorder.stats
    assert (s.video_frames_written, s.audio_frames_written) == (2 * 3 * FPS, 2 * 150)
    assert s.packets_lost == 0 and s.segments == 4
    probe = check_file(path, live_seconds(b, 20.0))
    assert probe.duration == pytest.approx(8.0, rel=0.02)
    for codec in ("vp8", "opus"):
        pts = [float(p["pts_time"]) for p in probe.packets_of(codec)]
        gaps = [later - earlier for earlier, later in itertools.pairwise(pts)]
        assert max(gaps) == pytest.approx(2.0 + 1 / (FPS if codec == "vp8" else 50), abs=0.03)
        assert sorted(gaps)[-2] < 0.05  # and no other gap
    video = probe.packets_of("vp8")
    assert video[3 * FPS]["flags"].startswith("K")  # host B's first frame is its keyframe


def test_new_host_with_another_resolution(tmp_path: Path) -> None:
    """The track header keeps the first host's size; VP8 keyframes carry their own and decoders follow."""
    a = host_packets(encoded_media(), Host.random(random.Random(13)), start=0.0, to_s=3.0)
    b = host_packets(encoded_media(3.0, 160, 120), Host.random(random.Random(14)), start=4.0)
    path = tmp_path / "resize.webm"
    recorder = record(path, a + b)
    assert recorder.stats.video_frames_written == 2 * 3 * FPS
    check_file(path, 7.0)
    command = ["ffprobe", "-v", "error", "-select_streams", "v", "-show_entries", "frame=width,height"]
    result = subprocess.run(
        [*command, "-of", "csv=p=0", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    sizes = result.stdout.split()
    assert sizes[: 3 * FPS] == ["320,240"] * (3 * FPS) and sizes[3 * FPS :] == ["160,120"] * (3 * FPS)


def test_rtp_timestamps_jump_without_a_new_ssrc(tmp_path: Path) -> None:
    """A sender that restarts its RTP clock but keeps its SSRC and sequence numbers:
    the jump is not taken at face value, the stream is re-anchored at the wall clock."""
    media = encoded_media()
    host = Host.random(random.Random(15))
    restarted = dataclasses.replace(
        host, video_ts=host.video_ts + (1 << 31) - 12345, audio_ts=host.audio_ts - 4_000_000
    )
    packets = host_packets(media, host, start=0.0, to_s=3.0) + host_packets(media, restarted, start=3.0, from_s=3.0)
    recorder = record(tmp_path / "jump.webm", sorted(packets, key=lambda item: item[0]))
    s = recorder.stats
    assert s.segments == 4 and s.packets_lost == 0
    assert (s.video_frames_written, s.audio_frames_written) == (len(media.video), len(media.audio))
    check_file(tmp_path / "jump.webm", 6.0)


def test_rtp_timestamp_and_sequence_wrap(tmp_path: Path) -> None:
    media = encoded_media()
    host = Host(
        video_ssrc=1,
        audio_ssrc=2,
        video_seq=65536 - 100,
        audio_seq=65536 - 60,
        video_ts=(1 << 32) - 2 * 90000,  # wraps 2 s in
        audio_ts=(1 << 32) - 3 * 48000,  # wraps 3 s in
    )
    recorder = record(tmp_path / "wrap.webm", host_packets(media, host, start=5.0))
    s = recorder.stats
    assert (s.video_frames_written, s.audio_frames_written) == (len(media.video), len(media.audio))
    assert s.segments == 2 and s.packets_lost == 0
    check_file(tmp_path / "wrap.webm", 6.0)


def test_size_limit(tmp_path: Path) -> None:
    media = encoded_media()
    path = tmp_path / "size.webm"
    recorder = record(path, host_packets(media, Host.random(random.Random(7)), start=0.0), {"max_bytes": 100_000})
    assert recorder.stopped_reason == "max_bytes"
    size = path.stat().st_size
    assert 95_000 < size <= 100_000 and recorder.stats.bytes_written == size
    probe = ffprobe(path)
    # about 100 kB of the ~216 kB the 6 s take
    check_file(path, probe.duration)
    assert 2.0 < probe.duration < 3.5


def test_time_limit(tmp_path: Path) -> None:
    media = encoded_media()
    path = tmp_path / "time.webm"
    recorder = record(path, host_packets(media, Host.random(random.Random(8)), start=0.0), {"max_seconds": 2.5})
    assert recorder.stopped_reason == "max_seconds"
    check_file(path, 2.5)


def test_time_limit_while_the_host_is_away(tmp_path: Path) -> None:
    media = encoded_media()
    packets = host_packets(media, Host.random(random.Random(9)), start=0.0, to_s=2.0)
    path = tmp_path / "away.webm"
    with path.open("wb") as f:
        recorder = Recorder(f.write, vp8_payload_type=VP8_PT, opus_payload_type=OPUS_PT, max_seconds=4)
        for arrival, packet in packets:
            recorder.feed(packet, arrival)
        recorder.advance(3.0)
        assert recorder.stopped_reason is None
        recorder.advance(5.0)
        assert recorder.stopped_reason == "max_seconds" and recorder.finished
        apply_patches(f, recorder.finish())
    check_file(path, 2.0)


def test_audio_only(tmp_path: Path) -> None:
    media = encoded_media()
    packets = host_packets(media, Host.random(random.Random(10)), start=0.0, video=False)
    recorder = record(tmp_path / "audio.webm", packets, {"vp8_payload_type": None})
    assert recorder.audio_only and recorder.stats.audio_frames_written == len(media.audio)
    check_file(tmp_path / "audio.webm", 6.0, video=False)


def test_audio_only_when_no_video_comes(tmp_path: Path) -> None:
    """VP8 negotiated but never sent: after keyframe_timeout the file starts audio
    only, with the audio held while waiting (nothing lost); video coming later is dropped."""
    media = encoded_media()
    host = Host.random(random.Random(11))
    packets = host_packets(media, host, start=0.0, video=False)
    late_video = host_packets(media, host, start=4.0, audio=False, from_s=4.0)
    packets = sorted(packets + late_video, key=lambda item: item[0])
    recorder = record(tmp_path / "novideo.webm", packets, {"keyframe_timeout": 1.0})
    s = recorder.stats
    assert recorder.audio_only and s.audio_frames_written == len(media.audio)
    assert s.video_frames_dropped_no_track == 2 * FPS
    check_file(tmp_path / "novideo.webm", 6.0, video=False)


def test_unpatched_file_still_decodes(tmp_path: Path) -> None:
    """A recording cut short before the patches (sizes unknown, no Duration, no Cues)."""
    media = encoded_media()
    path = tmp_path / "cut.webm"
    with path.open("wb") as f:
        recorder = Recorder(f.write, vp8_payload_type=VP8_PT, opus_payload_type=OPUS_PT)
        for arrival, packet in host_packets(media, Host.random(random.Random(12)), start=0.0, to_s=3.0):
            recorder.feed(packet, arrival)
    assert ffmpeg_decode_errors(path) == ""
    probe = ffprobe(path)
    assert sorted(s["codec_name"] for s in probe.streams) == ["opus", "vp8"]
    assert 2.0 < probe.end_of("opus") <= 3.0


def test_junk_is_ignored() -> None:
    written: list[bytes] = []
    recorder = Recorder(written.append, vp8_payload_type=VP8_PT, opus_payload_type=OPUS_PT)
    recorder.feed(b"\x00" * 5, 0.0)
    recorder.feed(build_rtp_packet(payload_type=0, sequence_number=1, timestamp=0, ssrc=1, payload=b"x"), 0.0)
    for seq, payload in enumerate([b"", b"\x80", b"\x10\x00\x00\x00", b"\x10\x00\x9d\x01\x2a\x00\x00\x00\x00\x00"]):
        packet = build_rtp_packet(payload_type=VP8_PT, sequence_number=seq, timestamp=0, ssrc=5, payload=payload)
        recorder.feed(packet, 0.01 * seq)
    assert recorder.finish() == [] and written == [] and not recorder.started
    assert recorder.stats.packets_ignored == 3  # short, unknown payload type, VP8 descriptor without data


def test_codec_helpers() -> None:
    assert opus_packet_duration_ms(bytes([0xFC])) == 20.0  # CELT 20 ms, one frame
    assert opus_packet_duration_ms(bytes([0x78 | 1])) == 40.0  # config 15 (hybrid 20 ms), two frames
    assert opus_packet_duration_ms(bytes([(1 << 3) | 3, 3])) == 60.0  # SILK 20 ms, three frames (code 3)
    assert opus_packet_duration_ms(b"") == 0.0
    frame, key = encoded_media().video[0]
    assert key and vp8_keyframe_size(frame) == (WIDTH, HEIGHT)
    assert vp8_keyframe_size(encoded_media().video[1][0]) is None
