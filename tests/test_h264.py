"""H.264 end to end (issue 22, in progress): an aiortc host publishing H.264 alone (libx264
through PyAV, packetization mode 1); aiortc viewers that negotiated VP8 and H.264 both receive
the host's H.264 under their own payload type and decode it, one joined before the host and
one after (its first frame is a keyframe found in H.264's NAL units); a viewer of VP8 alone
gets `unsupported_codec`, the audio, no video, and its session goes on; the room's thumbnail is
a JPEG of the host's frame size, decoded from an H.264 access unit."""

from __future__ import annotations

from typing import Any

import trio

from media_server_client.sources import TestPatternTrack, ToneTrack
from tests.media_support import create_room, frames_at_least, host, media_server, payload_type_of, viewer
from tests.serving import http_client
from tests.test_thumbnail import jpeg_size


def video_payload_types(bot: Any) -> set[int]:
    answer = bot.pc.remoteDescription.sdp
    known = {payload_type_of(answer, "H264"), payload_type_of(answer, "VP8")}
    return {r.payload_type for r in bot.state.rtp if r.payload_type in known}


async def test_an_h264_host_is_watched_by_viewers_that_negotiated_both_codecs() -> None:
    tracks = [TestPatternTrack(320, 240, 15), ToneTrack()]
    with trio.fail_after(90):
        async with media_server() as server:
            room_id = await create_room(server)
            async with (
                viewer(server, room_id, record_received_rtp=True) as early,
                host(server, room_id, video_codec="H264", tracks=tracks) as h,
            ):
                assert "H264/90000" in h.pc.remoteDescription.sdp and "VP8" not in h.pc.remoteDescription.sdp
                async with (
                    viewer(server, room_id, record_received_rtp=True) as late,
                    viewer(server, room_id, video_codec="VP8") as vp8_only,
                ):
                    for v in (early, late):
                        await v.wait_for(frames_at_least(video=20, audio=50))
                        assert v.state.video_size == (320, 240)
                        assert video_payload_types(v) == {payload_type_of(v.pc.remoteDescription.sdp, "H264")}
                    await vp8_only.wait_for(frames_at_least(audio=50))
                    assert vp8_only.state.video_frames == 0 and vp8_only.state.closed is None
                    assert [e.code for e in vp8_only.state.errors] == ["unsupported_codec"]
                    quality = vp8_only.state.quality
                    assert quality is not None and (quality.layer, quality.reason) == ("audio_only", "codec")
                    async with http_client(server) as client:  # the thumbnail decodes H.264
                        thumbnail = await client.get(f"/room/{room_id}/thumbnail.jpg")
    assert thumbnail.status_code == 200 and thumbnail.headers["x-frame-size"] == "320x240", thumbnail.text
    assert jpeg_size(thumbnail.content) == (320, 240)
