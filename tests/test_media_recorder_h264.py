"""media/recorder.py with real H.264: libx264 access units (PyAV) packetized as a host would
(RFC 6184 mode 1: STAP-A, FU-A, single units; tests/rtp_recordings.py), recorded to Matroska,
and the files checked with ffprobe (an h264 stream in avcC form, 4-byte lengths, the track's
frame size, keyframes where the encoder made them, the duration) and decoded with ffmpeg."""

from __future__ import annotations

import random
import shutil
import subprocess
from pathlib import Path

import pytest

from media.h264 import PPS, SPS, avc_decoder_configuration
from media.recorder import Recorder
from media.webm import CODEC_PRIVATE, apply_patches, ebml_element
from tests.rtp_recordings import (
    FPS,
    H264_PT,
    OPUS_PT,
    VP8_PT,
    Host,
    annex_b_units,
    check_file,
    doc_type,
    encoded_media,
    ffmpeg_decode_errors,
    ffprobe,
    host_packets,
    record,
)

pytestmark = pytest.mark.skipif(
    shutil.which("ffprobe") is None or shutil.which("ffmpeg") is None, reason="needs ffmpeg (apt-get install ffmpeg)"
)

H264 = {"vp8_payload_type": None, "h264_payload_type": H264_PT, "opus_payload_type": OPUS_PT}
BOTH = {"vp8_payload_type": VP8_PT, "h264_payload_type": H264_PT, "opus_payload_type": OPUS_PT}


def frame_sizes(path: Path) -> list[str]:
    command = ["ffprobe", "-v", "error", "-select_streams", "v", "-show_entries", "frame=width,height"]
    result = subprocess.run([*command, "-of", "csv=p=0", str(path)], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0 and not result.stderr, result.stderr
    return [line.rstrip(",") for line in result.stdout.split()]  # (h264 frames add an empty field)


def test_a_clean_h264_stream_is_a_matroska_file_with_the_encoders_own_access_units(tmp_path: Path) -> None:
    media = encoded_media(codec="H264")
    path = tmp_path / "clean.mkv"
    recorder = record(path, host_packets(media, Host.random(random.Random(21)), start=100.0), H264)
    s = recorder.stats
    assert recorder.doc_type == "matroska" and doc_type(path) == "matroska"
    assert (s.video_frames_written, s.audio_frames_written) == (len(media.video), len(media.audio))
    assert s.video_frames_dropped_incomplete == s.video_frames_dropped_before_keyframe == 0
    assert s.packets_lost == s.packets_late == s.packets_ignored == 0
    probe = check_file(path, 6.0, video_codec="h264")
    video = probe.stream("h264")
    assert (video["is_avc"], video["nal_length_size"]) == ("true", "4")  # avcC and length-prefixed samples
    assert video["profile"] == "Constrained Baseline"
    packets = probe.packets_of("h264")
    assert len(packets) == len(media.video)
    assert [float(p["pts_time"]) for p in packets if p["flags"].startswith("K")] == [0, 1, 2, 3, 4, 5]
    assert s.bytes_written == path.stat().st_size
    # the track's CodecPrivate is the avcC of the encoder's SPS and PPS
    units = annex_b_units(media.video[0][0])
    [sps] = [u for u in units if u[0] & 0x1F == SPS]
    [pps] = [u for u in units if u[0] & 0x1F == PPS]
    assert path.read_bytes().count(ebml_element(CODEC_PRIVATE, avc_decoder_configuration(sps, pps))) == 1


def test_h264_packet_loss_drops_until_the_next_keyframe(tmp_path: Path) -> None:
    media = encoded_media(codec="H264")
    packets = host_packets(media, Host.random(random.Random(22)), start=50.0, loss=0.05, seed=11)
    path = tmp_path / "loss.mkv"
    recorder = record(path, packets, H264)
    s = recorder.stats
    assert s.packets_lost > 0 and s.packets_late == 0
    assert s.video_frames_dropped_incomplete > 0 and s.video_frames_dropped_before_keyframe > 0
    assert 0 < s.video_frames_written < len(media.video)
    probe = check_file(path, packets[-1][0] - 50.0 + 0.02, video_codec="h264")
    assert len(probe.packets_of("h264")) == s.video_frames_written


def test_an_h264_recording_starts_mid_stream_at_the_first_keyframe(tmp_path: Path) -> None:
    """Joined half a second into the stream, the middle of an access unit first: nothing is
    written, a keyframe is wanted, until the encoder's next IDR (media second 1.0)."""
    media = encoded_media(codec="H264")
    packets = host_packets(media, Host.random(random.Random(23)), start=10.0, from_s=0.5)
    path = tmp_path / "mid.mkv"
    with path.open("wb") as f:
        recorder = Recorder(f.write, **H264)
        for arrival, packet in packets[:20]:
            recorder.feed(packet, arrival)
        assert recorder.wants_keyframe and not recorder.started and f.tell() == 0
        for arrival, packet in packets[20:]:
            recorder.feed(packet, arrival)
        assert not recorder.wants_keyframe
        apply_patches(f, recorder.finish())
    s = recorder.stats
    # the first access unit is skipped uncounted (no marker or timestamp change before it says it
    # starts there: H.264 has no start bit), the next 14 are dropped for want of a keyframe
    assert s.video_frames_dropped_before_keyframe == FPS // 2 - 1
    assert s.video_frames_written == len(media.video) - FPS
    check_file(path, 5.0, video_codec="h264")


def test_a_new_h264_host_of_another_size_decodes_from_its_in_band_parameter_sets(tmp_path: Path) -> None:
    """Host A (320x240) 3 s, away 1 s, host B (160x120: another SPS) 3 s: one file; the track
    header and avcC keep A's, B's keyframes carry B's SPS and PPS and decoders follow."""
    a = host_packets(encoded_media(codec="H264"), Host.random(random.Random(24)), start=0.0, to_s=3.0)
    b = host_packets(encoded_media(3.0, 160, 120, "H264"), Host.random(random.Random(25)), start=4.0, seed=9)
    path = tmp_path / "resize.mkv"
    recorder = record(path, a + b, H264)
    assert recorder.stats.video_frames_written == 2 * 3 * FPS and recorder.stats.segments == 4
    check_file(path, 7.0, video_codec="h264")
    sizes = frame_sizes(path)
    assert sizes[: 3 * FPS] == ["320,240"] * (3 * FPS) and sizes[3 * FPS :] == ["160,120"] * (3 * FPS)


def test_a_webm_file_drops_the_video_of_a_later_h264_host(tmp_path: Path) -> None:
    """The first keyframe decides the file: a VP8 host's WebM keeps a later H.264 host's audio
    and drops its video (counted), without asking that host for keyframes."""
    a = host_packets(encoded_media(), Host.random(random.Random(26)), start=0.0, to_s=3.0)
    b = host_packets(encoded_media(codec="H264"), Host.random(random.Random(27)), start=3.0, from_s=3.0)
    path = tmp_path / "vp8_then_h264.webm"
    with path.open("wb") as f:
        recorder = Recorder(f.write, **BOTH)
        for arrival, packet in a + b:
            recorder.feed(packet, arrival)
            if arrival > 3.5:
                assert not recorder.wants_keyframe
        apply_patches(f, recorder.finish())
    s = recorder.stats
    assert recorder.doc_type == "webm" and doc_type(path) == "webm"
    assert s.video_frames_written == 3 * FPS and s.video_frames_dropped_other_codec == 3 * FPS
    assert s.audio_frames_written == 2 * 3 * 50
    probe = check_file(path, 6.0)
    assert probe.end_of("vp8") == pytest.approx(3.0, abs=0.05)


def test_an_unpatched_h264_file_still_decodes(tmp_path: Path) -> None:
    """A recording cut short before the patches (sizes unknown, no Duration, no Cues)."""
    path = tmp_path / "cut.mkv"
    with path.open("wb") as f:
        recorder = Recorder(f.write, **H264)
        for arrival, packet in host_packets(
            encoded_media(codec="H264"), Host.random(random.Random(28)), start=0.0, to_s=3.0
        ):
            recorder.feed(packet, arrival)
    assert ffmpeg_decode_errors(path) == ""
    probe = ffprobe(path)
    assert sorted(s["codec_name"] for s in probe.streams) == ["h264", "opus"]
    assert 2.0 < probe.end_of("opus") <= 3.0
