"""Webhooks against real HTTP receivers on loopback: every event of a room's life in order,
signatures that verify, retries after a 500, and a dead receiver that slows nothing."""

from __future__ import annotations

import time
from typing import Any

import pytest
import trio

from core.webhook_signature import SIGNATURE_HEADER, sign_webhook  # the server's side
from media_server_client import WebhookSignatureError, verify_webhook  # the receiver's (the client package)
from media_server_client import webhooks as client_webhooks
from media_server_client.signaling import connect_signaling
from media_server_client.sources import TestPatternTrack, ToneTrack
from tests.media_support import create_room, host, media_server, viewer
from tests.serving import http_client, make_config
from tests.webhook_receiver import Receiver, webhook_receiver
from tests.whip_support import whep_viewer, whip_publisher

SECRET = "webhook-secret-of-the-tests-0123"


def small_tracks() -> list[Any]:
    return [TestPatternTrack(160, 120, 15), ToneTrack()]


async def wait_for(receiver: Receiver, condition: Any, within: float = 15) -> None:
    await trio.to_thread.run_sync(receiver.wait_for, condition, within)


def verified(receiver: Receiver) -> list[dict[str, Any]]:
    return [verify_webhook(d.body, d.headers.get(SIGNATURE_HEADER), SECRET) for d in receiver.deliveries]


# ---- signatures (no server) -----------------------------------------------------------------


def test_a_signature_verifies_and_anything_altered_or_old_does_not() -> None:
    """The server's signature (core.webhook_signature) checked by the client's verify_webhook."""
    body = b'{"id":"e1","type":"room_started","room_id":"room_1","post_id":"p","created_at":1,"data":{}}'
    now = 1_800_000_000
    header = sign_webhook(body, SECRET, timestamp=now)
    assert verify_webhook(body, header, SECRET, now=now + 10)["id"] == "e1"
    # the client's own sign_webhook (for receivers' tests) signs as the server does
    assert client_webhooks.sign_webhook(body, SECRET, timestamp=now) == header
    assert client_webhooks.SIGNATURE_HEADER == SIGNATURE_HEADER
    for bad_body, bad_header, bad_secret, at in [
        (body.replace(b"room_1", b"room_2"), header, SECRET, now),  # altered body
        (body, header, "another-secret-of-the-test-suite", now),  # forged with another secret
        (body, header, SECRET, now + 301),  # a replay, five minutes later
        (body, None, SECRET, now),  # no header
        (body, "v1=abc", SECRET, now),  # no timestamp
        (body, header.replace("t=", "t=1"), SECRET, now),  # timestamp altered
    ]:
        with pytest.raises(WebhookSignatureError):
            verify_webhook(bad_body, bad_header, bad_secret, now=at)


# ---- a room's life ----------------------------------------------------------------------------


async def test_every_event_of_a_rooms_life_arrives_in_order_and_signed() -> None:
    with webhook_receiver() as receiver, trio.fail_after(60):
        config = make_config(webhooks={"urls": [receiver.url], "secret": SECRET, "viewer_events": True})
        async with media_server(config) as server, http_client(server) as client:
            room_id = await create_room(server, post="post_hooks", host="alice")
            async with host(server, room_id, tracks=small_tracks()):
                await wait_for(receiver, lambda r: "host_live" in r.types())
                async with viewer(server, room_id) as v:
                    await v.wait_for(lambda s: s.video_frames >= 5)
                await wait_for(receiver, lambda r: "viewer_left" in r.types())
            await wait_for(receiver, lambda r: "host_left" in r.types())
            assert (await client.post(f"/room/{room_id}/stop")).status_code == 200
            await wait_for(receiver, lambda r: "room_stopped" in r.types())
    events = verified(receiver)
    assert [e["type"] for e in events] == [
        "room_started",
        "host_live",
        "viewer_joined",
        "viewer_left",
        "host_left",
        "room_stopped",
    ]
    assert len({e["id"] for e in events}) == len(events)
    assert all(e["room_id"] == room_id and e["post_id"] == "post_hooks" for e in events)
    assert events[0]["data"] == {"host_user_id": "alice"}
    assert events[1]["data"]["user_id"] == "alice"
    assert events[2]["data"]["viewer_count"] == 1 and events[3]["data"]["viewer_count"] == 0
    assert events[4]["data"]["was_live"] is True
    assert events[5]["data"] == {"reason": "api"}
    created = [e["created_at"] for e in events]
    assert created == sorted(created) and abs(created[0] - time.time()) < 120
    assert all(d.headers["X-BitBasel-Event-Id"] == d.event["id"] for d in receiver.deliveries)


async def test_a_whip_host_and_whep_viewer_make_the_same_events() -> None:
    """The doors' sessions are a host and a viewer like any: host_live when the WHIP publisher's
    media flows, viewer_joined/left for a WHEP viewer, host_left on the WHIP DELETE."""
    with webhook_receiver() as receiver, trio.fail_after(60):
        config = make_config(webhooks={"urls": [receiver.url], "secret": SECRET, "viewer_events": True})
        async with media_server(config) as server, http_client(server) as client:
            room_id = await create_room(server, post="post_doors", host="alice")
            async with whip_publisher(server.url, room_id, tracks=small_tracks()) as publisher:
                await wait_for(receiver, lambda r: "host_live" in r.types())
                async with whep_viewer(server.url, room_id) as watcher:
                    await watcher.wait_frames(video=5)
                    assert (await client.delete(watcher.location)).status_code == 200
                await wait_for(receiver, lambda r: "viewer_left" in r.types())
                assert (await client.delete(publisher.location)).status_code == 200
                await wait_for(receiver, lambda r: "host_left" in r.types())
    events = verified(receiver)
    types = ["room_started", "host_live", "viewer_joined", "viewer_left", "host_left", "room_stopped"]
    assert [e["type"] for e in events] == types  # (room_stopped: the server's shutdown)
    assert events[1]["data"]["user_id"] == "alice"  # auth off: the WHIP publisher is the room's host user


async def test_a_receiver_that_fails_gets_the_event_again_and_in_order() -> None:
    with webhook_receiver(statuses=[500, 503]) as receiver, trio.fail_after(60):
        config = make_config(webhooks={"urls": [receiver.url], "secret": SECRET})
        async with media_server(config) as server, http_client(server) as client:
            room_id = await create_room(server)
            assert (await client.post(f"/room/{room_id}/stop")).status_code == 200
            await wait_for(receiver, lambda r: r.types()[-1:] == ["room_stopped"])
            metrics = (await client.get("/metrics")).text
    events = verified(receiver)
    # the first event twice refused, then delivered: the same id three times, then the next
    assert [e["type"] for e in events] == ["room_started"] * 3 + ["room_stopped"]
    assert len({e["id"] for e in events[:3]}) == 1
    gaps = [b.at - a.at for a, b in zip(receiver.deliveries[:2], receiver.deliveries[1:3], strict=True)]
    assert gaps[0] >= 0.3 and gaps[1] >= gaps[0] * 1.2  # backoff: 0.5 s, then about twice that
    assert 'bitbasel_webhook_deliveries_total{result="retried"} 2.0' in metrics


async def test_a_dead_receiver_delays_no_media_no_rest_and_no_other_receiver() -> None:
    with webhook_receiver(hang=True) as dead, webhook_receiver() as alive, trio.fail_after(60):
        config = make_config(
            webhooks={"urls": [dead.url, alive.url], "secret": SECRET, "timeout_seconds": 1, "retry_for_seconds": 2}
        )
        async with media_server(config) as server, http_client(server) as client:
            room_id = await create_room(server)
            async with host(server, room_id, tracks=small_tracks()), viewer(server, room_id) as v:
                await wait_for(alive, lambda r: "host_live" in r.types(), within=10)
                frames = v.state.video_frames
                started = trio.current_time()
                for _ in range(10):
                    await client.get("/stats")
                rest_seconds = trio.current_time() - started
                await v.wait_for(lambda s: s.video_frames >= frames + 15)  # media keeps flowing
            assert rest_seconds < 2.0, f"10 REST requests took {rest_seconds:.2f} s"
            assert dead.deliveries, "the dead receiver was tried"
            # given up after retry_for_seconds: counted
            with trio.fail_after(15):
                while 'result="failed"} 0.0' in (metrics := (await client.get("/metrics")).text):  # noqa: ASYNC110
                    await trio.sleep(0.2)
            assert 'bitbasel_webhook_deliveries_total{result="failed"}' in metrics
    assert alive.types()[:2] == ["room_started", "host_live"]


async def test_viewer_events_are_off_unless_asked_for() -> None:
    with webhook_receiver() as receiver, trio.fail_after(30):
        config = make_config(webhooks={"urls": [receiver.url], "secret": SECRET})
        async with media_server(config) as server, http_client(server) as client:
            room_id = await create_room(server)
            async with connect_signaling(server.ws_url) as session:
                await session.join(room_id, "viewer")
            assert (await client.post(f"/room/{room_id}/stop")).status_code == 200
            await wait_for(receiver, lambda r: "room_stopped" in r.types())
    assert receiver.types() == ["room_started", "room_stopped"]
