"""Recording a live room end to end: real aiortc hosts through an in-process server, the file
checked with ffprobe (duration within 2 % of the live time) and ffmpeg (decodes, no error)."""

from __future__ import annotations

from pathlib import Path

import trio

from media_server_client import verify_webhook
from media_server_client.sources import TestPatternTrack, ToneTrack
from tests.media_support import host, media_server
from tests.rtp_recordings import ffmpeg_decode_errors, ffprobe
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
            download = await client.get(f"/room/{room_id}/recordings/{info['recording_id']}.webm")
            assert download.status_code == 200 and download.headers["content-type"] == "video/webm"
            missing = await client.get(f"/room/{room_id}/recordings/rec_nope.webm")
            assert missing.status_code == 404
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
            unknown = await client.post("/room/room_000000000001/recording/start")
            assert unknown.status_code == 404 and unknown.json()["error"] == "room_not_found"
