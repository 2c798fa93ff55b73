"""Publish and watch through the SFU with real aiortc peers over loopback.

Every test runs a real server and real WebRTC peers (ICE, DTLS, SRTP) on
127.0.0.1; the suite runs in a private network namespace (scripts/test).
"""

from __future__ import annotations

import asyncio
import gc
import os
from pathlib import Path

import pytest
import trio
import trio_asyncio
from aiortc import RTCPeerConnection, RTCSessionDescription

from media_server_client.aiortc_hooks import lose_rtp_received, observe_rtp_received, restrict_host_addresses
from media_server_client.messages import Answer, Candidate, Error, Offer, Ping, Pong
from media_server_client.signaling import SessionClosed, connect_signaling
from media_server_client.sources import TestPatternTrack, ToneTrack, file_tracks
from tests.media_support import (
    create_room,
    frames_at_least,
    host,
    make_webm,
    media_payloads,
    media_server,
    payload_type_of,
    room_stats,
    server_stats,
    viewer,
)
from tests.serving import http_client, make_config
from tests.turn_support import available as coturn_available
from tests.turn_support import coturn

SMALL = {"width": 160, "height": 120, "fps": 15}


def small_tracks() -> list[TestPatternTrack | ToneTrack]:
    return [TestPatternTrack(**SMALL), ToneTrack()]


async def test_three_viewers_decode_the_hosts_media_byte_for_byte() -> None:
    with trio.fail_after(90):
        async with media_server() as server:
            room_id = await create_room(server)
            async with (
                viewer(server, room_id, record_received_rtp=True) as v1,
                viewer(server, room_id, record_received_rtp=True) as v2,
                viewer(server, room_id) as v3,
            ):
                # viewers joined before the host: they need no new offer when it publishes
                async with host(
                    server, room_id, record_sent_rtp=True, tracks=[TestPatternTrack(320, 240, 15), ToneTrack()]
                ) as h:
                    for v in (v1, v2, v3):
                        await v.wait_for(frames_at_least(video=20, audio=50))
                        assert v.state.video_size == (320, 240)
                        await v.wait_for(lambda s: s.room.has_host and s.room.viewer_count == 3)
                    stats = await room_stats(server, room_id)
                    totals = await server_stats(server)
                host_vp8 = payload_type_of(h.pc.localDescription.sdp, "VP8")
                host_opus = payload_type_of(h.pc.localDescription.sdp, "opus")
                sent_video = media_payloads(h, host_vp8, vp8=True)
                sent_audio = media_payloads(h, host_opus, vp8=False)
                for v in (v1, v2):
                    viewer_vp8 = payload_type_of(v.pc.localDescription.sdp, "VP8")
                    viewer_opus = payload_type_of(v.pc.localDescription.sdp, "opus")
                    got_video = media_payloads(v, viewer_vp8, vp8=True)
                    got_audio = media_payloads(v, viewer_opus, vp8=False)
                    assert len(got_video) >= 20 and len(got_audio) >= 50
                    assert got_video <= sent_video, "a viewer got VP8 bytes the host never sent"
                    assert got_audio <= sent_audio, "a viewer got Opus bytes the host never sent"
                    assert {r.ssrc for r in v.state.rtp if r.payload_type == viewer_vp8} == {
                        next(r.ssrc for r in v.state.rtp if r.payload_type == viewer_vp8)
                    }
    assert stats["has_host"] is True and stats["viewer_count"] == 3
    assert stats["bytes_received"] > 20_000 and stats["bytes_sent"] > 3 * 20_000
    assert totals["total_bytes_sent"] >= stats["bytes_sent"] and totals["total_viewers"] == 3


async def test_late_viewer_gets_its_first_frame_promptly() -> None:
    with trio.fail_after(60):
        async with media_server() as server:
            room_id = await create_room(server)
            async with host(server, room_id, tracks=small_tracks()) as h:
                await h.wait_connected()
                async with viewer(server, room_id) as early:
                    await early.wait_for(frames_at_least(video=10))
                    await trio.sleep(2)  # long past the encoder's first keyframe
                    async with viewer(server, room_id) as late:
                        await late.wait_for(frames_at_least(video=1))
                        assert late.state.first_video_frame_at is not None
                        waited = late.state.first_video_frame_at - late.started_at
    print(f"late viewer: first decoded frame {waited * 1000:.0f} ms after joining")
    assert waited < 5.0  # generous; bench/fanout.py reports the measured time


async def test_host_leaves_and_returns_and_viewers_resume_without_a_new_offer() -> None:
    with trio.fail_after(90):
        async with media_server() as server:
            room_id = await create_room(server)
            async with viewer(server, room_id) as v:
                async with host(server, room_id, tracks=small_tracks()):
                    await v.wait_for(frames_at_least(video=10, audio=20))
                await v.wait_for(lambda s: not s.room.has_host)
                before = v.state.video_frames, v.state.audio_frames
                assert (await room_stats(server, room_id))["has_host"] is False
                async with host(server, room_id, tracks=small_tracks()):
                    await v.wait_for(lambda s: s.room.has_host)
                    await v.wait_for(frames_at_least(video=before[0] + 10, audio=before[1] + 20))
                assert v.state.connection_state == "connected"


async def test_a_nack_is_served_from_the_cache() -> None:
    dropped: set[int] = set()
    received_again: set[int] = set()

    def lose_some(vp8_pt: int):  # type: ignore[no-untyped-def]
        def lose(header: bytes) -> bool:
            if header[1] & 0x7F != vp8_pt:
                return False
            seq = int.from_bytes(header[2:4], "big")
            if seq in dropped:
                received_again.add(seq)
                return False
            if seq % 25 == 0 and len(dropped) < 10:
                dropped.add(seq)
                return True  # lost on its first way
            return False

        return lose

    with trio.fail_after(60):
        async with media_server() as server:
            room_id = await create_room(server)
            async with host(server, room_id, tracks=small_tracks()), viewer(server, room_id, kinds=("video",)) as v:
                vp8_pt = payload_type_of(v.pc.localDescription.sdp, "VP8")
                lose_rtp_received(v.pc, lose_some(vp8_pt))
                await v.wait_for(lambda s: len(received_again) >= 3)
                stats = await room_stats(server, room_id)
    assert stats["forwarding"]["retransmissions"] >= 3
    assert received_again <= dropped


async def test_bad_sdp_gets_an_error_while_other_viewers_keep_receiving() -> None:
    with trio.fail_after(60):
        async with media_server() as server:
            room_id = await create_room(server)
            async with host(server, room_id, tracks=small_tracks()), viewer(server, room_id) as good:
                await good.wait_for(frames_at_least(video=5))
                async with connect_signaling(server.ws_url) as bad:
                    await bad.join(room_id, "viewer")
                    pc = RTCPeerConnection()
                    pc.addTransceiver("video", direction="recvonly")
                    offer = await trio_asyncio.aio_as_trio(pc.createOffer)()
                    await trio_asyncio.aio_as_trio(pc.close)()
                    # well formed but without DTLS fingerprint: nothing could authenticate the peer
                    no_fingerprint = "".join(
                        line for line in offer.sdp.splitlines(keepends=True) if not line.startswith("a=fingerprint")
                    )
                    for sdp in [
                        "this is not sdp",
                        "v=0\r\n",
                        "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n",
                        no_fingerprint,
                    ]:
                        await bad.send(Offer(sdp=sdp))
                        error = await bad.receive()
                        assert isinstance(error, Error) and error.code == "bad_sdp", error
                    # a candidate of the refused offer, already on its way: ignored, no error
                    candidate = "candidate:1 1 udp 2130706431 127.0.0.1 9 typ host"
                    await bad.send(Candidate(candidate=candidate, sdpMid="0", sdpMLineIndex=0))
                    await bad.send(Ping())
                    await bad.expect(Pong)
                    count = good.state.video_frames
                    await good.wait_for(frames_at_least(video=count + 10))


def _with_ice_credentials(sdp: str, ufrag: str, pwd: str) -> str:
    """The offer a client sends for an ICE restart: the same, with new ICE credentials."""
    lines = []
    for line in sdp.split("\r\n"):
        if line.startswith("a=ice-ufrag:"):
            line = f"a=ice-ufrag:{ufrag}"
        elif line.startswith("a=ice-pwd:"):
            line = f"a=ice-pwd:{pwd}"
        lines.append(line)
    return "\r\n".join(lines)


def _ice_ufrag(sdp: str) -> str:
    return next(line.split(":", 1)[1] for line in sdp.split("\r\n") if line.startswith("a=ice-ufrag:"))


def _fingerprint(sdp: str) -> str:
    return next(line for line in sdp.split("\r\n") if line.startswith("a=fingerprint:"))


async def test_a_later_offer_restarts_ice_and_nothing_else_while_media_flows() -> None:
    aio = trio_asyncio.aio_as_trio
    with trio.fail_after(60):
        async with media_server() as server:
            room_id = await create_room(server)
            async with host(server, room_id, tracks=small_tracks()), connect_signaling(server.ws_url) as session:
                await session.join(room_id, "viewer")
                pc = RTCPeerConnection()
                try:
                    pc.addTransceiver("video", direction="recvonly")
                    pc.addTransceiver("audio", direction="recvonly")
                    restrict_host_addresses(pc, ["127.0.0.1"])
                    await aio(pc.setLocalDescription)(await aio(pc.createOffer)())
                    offer = pc.localDescription.sdp
                    await session.send(Offer(sdp=offer))
                    answer = await session.expect(Answer)
                    await aio(pc.setRemoteDescription)(RTCSessionDescription(sdp=answer.sdp, type="answer"))
                    received: list[bytes] = []
                    observe_rtp_received(pc, received.append)

                    async def more_rtp(count: int = 20) -> None:
                        target = len(received) + count
                        while len(received) < target:  # noqa: ASYNC110 (filled by aiortc's loop)
                            await trio.sleep(0.05)

                    await more_rtp()
                    # the same offer again: the same answer (nothing changes)
                    await session.send(Offer(sdp=offer))
                    again = await session.expect(Answer)
                    assert _ice_ufrag(again.sdp) == _ice_ufrag(answer.sdp)
                    # new ICE credentials: an ICE restart, new server credentials, same DTLS
                    restart = _with_ice_credentials(offer, "rstr", "restartpasswordrestartpass")
                    await session.send(Offer(sdp=restart))
                    restarted = await session.expect(Answer)
                    assert _ice_ufrag(restarted.sdp) != _ice_ufrag(answer.sdp)
                    assert _fingerprint(restarted.sdp) == _fingerprint(answer.sdp)
                    assert "a=setup:active" in restarted.sdp
                    await more_rtp()  # media goes on (on the old path until new checks select one)
                    # anything else changed: bad_sdp, and the session and its media go on
                    video_only = restart[: restart.index("m=audio")]  # video was added first
                    forged = "a=fingerprint:sha-256 " + ":".join(["AB"] * 32)
                    for changed in (video_only, restart.replace(_fingerprint(restart), forged)):
                        await session.send(Offer(sdp=changed))
                        refusal = await session.expect(Error)
                        assert refusal.code == "bad_sdp", refusal
                    await more_rtp()
                    await session.send(Offer(sdp=restart))  # the restart's credentials again: its answer
                    assert _ice_ufrag((await session.expect(Answer)).sdp) == _ice_ufrag(restarted.sdp)
                    assert (await room_stats(server, room_id))["viewer_count"] == 1
                finally:
                    await aio(pc.close)()


async def test_a_failed_dtls_handshake_ends_the_session_with_dtls_failed() -> None:
    aio = trio_asyncio.aio_as_trio
    with trio.fail_after(60):
        async with media_server() as server:
            room_id = await create_room(server)
            async with connect_signaling(server.ws_url) as session:
                await session.join(room_id, "viewer")
                pc = RTCPeerConnection()
                try:
                    pc.addTransceiver("video", direction="recvonly")
                    restrict_host_addresses(pc, ["127.0.0.1"])
                    await aio(pc.setLocalDescription)(await aio(pc.createOffer)())
                    offer = pc.localDescription.sdp
                    forged = "\r\n".join(  # every hash the offer lists (the strongest one is checked)
                        "a=fingerprint:sha-256 " + ":".join(["AB"] * 32) if line.startswith("a=fingerprint:") else line
                        for line in offer.split("\r\n")
                    )
                    await session.send(Offer(sdp=forged))
                    answer = await session.expect(Answer)
                    await aio(pc.setRemoteDescription)(RTCSessionDescription(sdp=answer.sdp, type="answer"))
                    with pytest.raises(SessionClosed) as closed:
                        await session.wait_closed()
                finally:
                    await aio(pc.close)()
            assert closed.value.code == 4495 and closed.value.error is not None
            assert closed.value.error.code == "dtls_failed" and "fingerprint" in closed.value.error.message
            assert (await room_stats(server, room_id))["viewer_count"] == 0


async def test_host_offer_without_vp8_or_h264_is_unsupported_codec() -> None:
    with trio.fail_after(60):
        async with media_server() as server:
            room_id = await create_room(server)
            pc = RTCPeerConnection()
            pc.addTransceiver(TestPatternTrack(**SMALL), direction="sendonly")
            offer = await trio_asyncio.aio_as_trio(pc.createOffer)()
            await trio_asyncio.aio_as_trio(pc.close)()
            no_vp8 = offer.sdp.replace("VP8/90000", "H265/90000").replace("H264/90000", "AV1/90000")
            async with connect_signaling(server.ws_url) as session:
                await session.join(room_id, "host", user_id="alice")
                await session.send(Offer(sdp=no_vp8))
                with pytest.raises(SessionClosed) as closed:
                    await session.wait_closed()
                assert closed.value.code == 4415 and closed.value.error is not None
                assert closed.value.error.code == "unsupported_codec"


async def test_a_room_actor_crash_keeps_media_flowing() -> None:
    with trio.fail_after(60):
        async with media_server() as server:
            room_id = await create_room(server)
            async with host(server, room_id, tracks=small_tracks()), viewer(server, room_id) as v:
                await v.wait_for(frames_at_least(video=10))
                async with http_client(server) as client:
                    assert (await client.post(f"/debug/room/{room_id}/crash")).status_code == 200
                count = v.state.video_frames
                await v.wait_for(frames_at_least(video=count + 10))
                stats = await room_stats(server, room_id)
                assert stats["restarts"] == 1 and stats["viewer_count"] == 1 and stats["has_host"] is True
                assert v.state.connection_state == "connected" and v.state.closed is None and v.state.reconnects == 0


async def test_rest_stop_closes_every_peer_connection() -> None:
    with trio.fail_after(60):
        async with media_server() as server:
            room_id = await create_room(server)
            async with host(server, room_id, tracks=small_tracks()) as h, viewer(server, room_id) as v:
                await v.wait_for(frames_at_least(video=5))
                async with http_client(server) as client:
                    await client.post(f"/room/{room_id}/stop")
                for bot in (h, v):
                    state = await bot.wait_for(lambda s: s.closed is not None)
                    assert state.stopped is not None and state.stopped.reason == "api"
                    assert state.closed is not None and state.closed.code == 1000
                    await bot.wait_for(lambda s: s.connection_state in {"closed", "failed"})


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _live_peer_connections() -> int:
    gc.collect()
    return sum(1 for o in gc.get_objects() if isinstance(o, RTCPeerConnection) and o.connectionState != "closed")


async def _asyncio_tasks() -> int:
    return len(asyncio.all_tasks())


async def test_twenty_viewers_join_and_leave_without_leaks() -> None:
    with trio.fail_after(120):
        async with media_server() as server:
            room_id = await create_room(server)
            async with host(server, room_id, tracks=small_tracks()) as h:
                await h.wait_connected()
                async with viewer(server, room_id, decode=False) as warmup:  # first-use allocations
                    await warmup.wait_connected()
                await trio.sleep(0.5)
                baseline = (_open_fds(), await trio_asyncio.aio_as_trio(_asyncio_tasks)(), _live_peer_connections())
                for round_ in range(2):
                    async with trio.open_nursery() as nursery:
                        for _ in range(10):
                            nursery.start_soon(_watch_briefly, server, room_id)
                    del round_
                await h.wait_for(lambda s: s.room.viewer_count == 0)
                with trio.fail_after(20):
                    while True:
                        after = (
                            _open_fds(),
                            await trio_asyncio.aio_as_trio(_asyncio_tasks)(),
                            _live_peer_connections(),
                        )
                        if after <= baseline:
                            break
                        await trio.sleep(0.5)
                stats = await room_stats(server, room_id)
    assert stats["viewer_count"] == 0 and stats["forwarding"]["viewer_count"] == 0
    assert after[0] <= baseline[0] and after[1] <= baseline[1] and after[2] <= baseline[2]


async def _watch_briefly(server, room_id: str) -> None:  # type: ignore[no-untyped-def]
    async with viewer(server, room_id, decode=False) as v:
        await v.wait_connected()


async def test_a_peer_connection_that_never_connects_ends_its_session() -> None:
    config = make_config(server={"connect_timeout_seconds": 1.0})
    with trio.fail_after(30):
        async with media_server(config) as server:
            room_id = await create_room(server)
            pc = RTCPeerConnection()
            pc.addTransceiver("video", direction="recvonly")
            offer = await trio_asyncio.aio_as_trio(pc.createOffer)()
            await trio_asyncio.aio_as_trio(pc.setLocalDescription)(offer)
            sdp = pc.localDescription.sdp  # its candidates are not on loopback: ICE cannot succeed here
            await trio_asyncio.aio_as_trio(pc.close)()
            async with connect_signaling(server.ws_url) as session:
                await session.join(room_id, "viewer")
                await session.send(Offer(sdp=sdp))
                with pytest.raises(SessionClosed) as closed:
                    await session.wait_closed()
            assert closed.value.code == 4408 and closed.value.error is not None
            assert closed.value.error.code == "timeout"
            assert (await room_stats(server, room_id))["viewer_count"] == 0


async def test_a_host_bot_publishes_a_file_without_reencoding(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = str(tmp_path / "clip.webm")
    make_webm(path)
    with trio.fail_after(60):
        async with media_server() as server:
            room_id = await create_room(server)
            tracks = await trio_asyncio.aio_as_trio(_file_tracks)(path)
            async with host(server, room_id, tracks=tracks), viewer(server, room_id) as v:
                await v.wait_for(frames_at_least(video=15, audio=10))
                assert v.state.video_size == (160, 120)


async def _file_tracks(path: str) -> list[object]:
    return list(file_tracks(path, decode=False))


def _local_candidate_types(pc: RTCPeerConnection) -> set[str]:
    ice_transport = pc.getTransceivers()[0].sender.transport.transport
    return {candidate.type for candidate in ice_transport.iceGatherer.getLocalCandidates()}


@pytest.mark.skipif(not coturn_available(), reason="coturn is not installed (apt-get install coturn)")
async def test_relay_only_bots_publish_and_watch_through_coturn(tmp_path: Path) -> None:
    """Both ends may only use TURN: `joined.ice_servers` gives them coturn with credentials
    minted for the session, and the ICE-lite server answers checks from coturn's relay address."""
    with coturn(tmp_path) as turn, trio.fail_after(60):
        config = make_config(ice={"turn_servers": [turn.url], "turn_secret": turn.secret})
        async with media_server(config) as server:
            room_id = await create_room(server)
            async with (
                host(server, room_id, tracks=small_tracks(), relay_only=True) as h,
                viewer(server, room_id, relay_only=True) as v,
            ):
                assert [s.urls for s in v.state.joined.ice_servers] == [[turn.url]]
                with trio.move_on_after(30):
                    await v.wait_for(frames_at_least(video=10, audio=20))
                assert v.state.video_frames >= 10, f"no media through coturn; its log:\n{turn.log_tail()}"
                for bot in (h, v):
                    assert _local_candidate_types(bot.pc) == {"relay"}
