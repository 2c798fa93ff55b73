"""Recording a live room end to end: real aiortc hosts through an in-process server, the file
checked with ffprobe (duration within 2 % of the live time) and ffmpeg (decodes, no error):
a VP8 host's is WebM, an H.264 host's (libx264 through aiortc) Matroska."""

from __future__ import annotations

from pathlib import Path

import trio

from media_server_client import verify_webhook
from media_server_client.sources import TestPatternTrack, ToneTrack
from tests.media_support import host, media_server
from tests.rtp_recordings import doc_type, ffmpeg_decode_errors, ffprobe
from tests.serving import http_client, make_config
from tests.webhook_receiver import webhook_receiver

SECRET = "recording-tests-webhook-secret-0"


def tracks() -> list[TestPatternTrack | ToneTrack]:
    return [TestPatternTrack(320, 240, 15), ToneTrack()]


async def test_a_recorded_room_with_its_host_leaving_and_coming_back_is_one_clean_webm(tmp_path: Path) -> None:
    with webhook_receiver() as receiver, trio.fail_after(90):
        config = make_config(
            recordings={"directory": str(tmp_path / "recordings")},
            webhooks={"urls": [receiver.url], "secret": SECRET},
        )
        async with media_server(config) as server, http_client(server) as client:
            created = await client.post(
                "/room/create", json={"post_id": "p_rec", "host_user_id": "alice", "record": True}
            )
            room_id = created.json()["room_id"]
            async with host(server, room_id, tracks=tracks()) as first:
                await first.wait_connected()
                live_from = trio.current_time()
                await trio.sleep(4.0)
            await trio.sleep(2.0)  # the host is away: the file's timeline keeps the gap
            async with host(server, room_id, tracks=tracks()) as second:
                await second.wait_connected()
                await trio.sleep(4.0)
                stopped = await client.post(f"/room/{room_id}/recording/stop")
                live_seconds = trio.current_time() - live_from
            info = stopped.json()
            assert stopped.status_code == 200 and info["state"] == "ready" and info["stop_reason"] == "api", info
            listed = (await client.get(f"/room/{room_id}/recordings")).json()["recordings"]
            assert [r["recording_id"] for r in listed] == [info["recording_id"]]
            assert (listed[0]["file"], listed[0]["format"]) == (f"{info['recording_id']}.webm", "webm")
            download = await client.get(f"/room/{room_id}/recordings/{info['recording_id']}.webm")
            assert download.status_code == 200 and download.headers["content-type"] == "video/webm"
            missing = await client.get(f"/room/{room_id}/recordings/rec_nope.webm")
            assert missing.status_code == 404
            not_matroska = await client.get(f"/room/{room_id}/recordings/{info['recording_id']}.mkv")
            assert not_matroska.status_code == 404 and not_matroska.json()["error"] == "not_found"
            with trio.fail_after(10):
                await trio.to_thread.run_sync(receiver.wait_for, lambda r: "recording_ready" in r.types(), 10)
    path = tmp_path / "recordings" / room_id / f"{info['recording_id']}.webm"
    assert download.content == path.read_bytes()
    probe = ffprobe(path)
    assert {s["codec_name"] for s in probe.streams} == {"vp8", "opus"}
    assert (probe.stream("vp8")["width"], probe.stream("vp8")["height"]) == (320, 240)
    assert abs(probe.duration - live_seconds) <= 0.02 * live_seconds, (probe.duration, live_seconds)
    assert ffmpeg_decode_errors(path) == ""
    ready = [
        verify_webhook(d.body, d.headers.get("X-BitBasel-Signature"), SECRET)
        for d in receiver.deliveries
        if d.event["type"] == "recording_ready"
    ]
    assert ready[0]["data"]["recording_id"] == info["recording_id"] and ready[0]["data"]["bytes"] == path.stat().st_size


async def test_an_h264_hosts_recording_started_by_rest_is_one_clean_matroska_file(tmp_path: Path) -> None:
    """An aiortc host publishing H.264 alone (libx264, packetization mode 1): the recording,
    started over REST before the host comes, is `<recording_id>.mkv` (`file`, `format`),
    served as `video/x-matroska` (its `.webm` is 404), with an h264 stream of the host's frame
    size in avcC form plus opus, lasting the live time within 2 %, decoding with no error."""
    config = make_config(recordings={"directory": str(tmp_path / "recordings")})
    with trio.fail_after(60):
        async with media_server(config) as server, http_client(server) as client:
            created = await client.post("/room/create", json={"post_id": "p_h264", "host_user_id": "alice"})
            room_id = created.json()["room_id"]
            started = (await client.post(f"/room/{room_id}/recording/start")).json()
            assert started["state"] == "recording" and started["file"] is None  # the first keyframe decides
            async with host(server, room_id, video_codec="H264", tracks=tracks()) as h:
                await h.wait_connected()
                live_from = trio.current_time()
                assert "H264/90000" in h.pc.remoteDescription.sdp and "VP8" not in h.pc.remoteDescription.sdp
                await trio.sleep(8.0)  # the file starts at the first keyframe, some 80 ms in: 1 % of it
                stopped = await client.post(f"/room/{room_id}/recording/stop")
                live_seconds = trio.current_time() - live_from
            info = stopped.json()
            recording_id = info["recording_id"]
            assert stopped.status_code == 200 and info["state"] == "ready", info
            assert (info["file"], info["format"]) == (f"{recording_id}.mkv", "matroska")
            assert info["frames"]["video_frames_written"] > 100 and info["frames"]["audio_frames_written"] > 350
            listed = (await client.get(f"/room/{room_id}/recordings")).json()["recordings"]
            assert [(r["recording_id"], r["file"], r["format"]) for r in listed] == [
                (recording_id, f"{recording_id}.mkv", "matroska")
            ]
            download = await client.get(f"/room/{room_id}/recordings/{info['file']}")
            assert download.status_code == 200 and download.headers["content-type"] == "video/x-matroska"
            assert download.headers["content-disposition"].endswith(f'_{recording_id}.mkv"')
            not_webm = await client.get(f"/room/{room_id}/recordings/{recording_id}.webm")
            assert not_webm.status_code == 404 and not_webm.json()["error"] == "not_found"
    path = tmp_path / "recordings" / room_id / info["file"]
    assert download.content == path.read_bytes() and len(download.content) == info["bytes"]
    assert doc_type(path) == "matroska"
    probe = ffprobe(path)
    assert sorted(s["codec_name"] for s in probe.streams) == ["h264", "opus"]
    video = probe.stream("h264")
    assert (video["width"], video["height"]) == (320, 240)
    assert (video["is_avc"], video["nal_length_size"]) == ("true", "4")
    first = probe.packets_of("h264")[0]
    assert first["flags"].startswith("K") and float(first["pts_time"]) == 0.0
    assert abs(probe.duration - live_seconds) <= 0.02 * live_seconds, (probe.duration, live_seconds)
    assert ffmpeg_decode_errors(path) == ""


async def test_recording_start_and_stop_are_answered_for_every_room_state(tmp_path: Path) -> None:
    config = make_config(recordings={"directory": str(tmp_path)})
    with trio.fail_after(30):
        async with media_server(config) as server, http_client(server) as client:
            created = await client.post("/room/create", json={"post_id": "p", "host_user_id": "u"})
            room_id = created.json()["room_id"]
            not_recording = await client.post(f"/room/{room_id}/recording/stop")
            assert not_recording.status_code == 404 and not_recording.json()["error"] == "not_found"
            started = (await client.post(f"/room/{room_id}/recording/start")).json()
            again = (await client.post(f"/room/{room_id}/recording/start")).json()
            assert started["state"] == "recording" and again["recording_id"] == started["recording_id"]
            # the room stops: so does its recording (no host ever came: an empty file, still listed)
            await client.post(f"/room/{room_id}/stop")
            with trio.fail_after(10):
                while not (await client.get(f"/room/{room_id}/recordings")).json()["recordings"]:  # noqa: ASYNC110
                    await trio.sleep(0.1)
            listed = (await client.get(f"/room/{room_id}/recordings")).json()["recordings"]
            assert listed[0]["stop_reason"] == "room_stopped" and listed[0]["state"] == "ready"
            assert listed[0]["file"] is None and listed[0]["format"] is None  # no media: nothing to download
            unknown = await client.post("/room/room_000000000001/recording/start")
            assert unknown.status_code == 404 and unknown.json()["error"] == "room_not_found"
