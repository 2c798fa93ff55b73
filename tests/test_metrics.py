"""`GET /metrics`: Prometheus text, parsed with prometheus_client's own parser, counters moving
with real media (aiortc bots through an in-process server)."""

from __future__ import annotations

from typing import Any

import httpx
import trio
from prometheus_client.parser import text_string_to_metric_families

from media_server_client.signaling import SessionClosed, connect_signaling
from media_server_client.sources import TestPatternTrack, ToneTrack
from tests.media_support import create_room, host, media_server, viewer
from tests.serving import http_client, make_config


def parse(text: str) -> dict[str, Any]:
    """{sample name + sorted labels: value} of every sample."""
    samples: dict[str, Any] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            samples[f"{sample.name}{{{labels}}}"] = sample.value
    return samples


async def scrape(client: httpx.AsyncClient, **headers: str) -> dict[str, Any]:
    response = await client.get("/metrics", headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    return parse(response.text)


async def test_metrics_move_with_media_and_sessions() -> None:
    with trio.fail_after(60):
        async with media_server(make_config(metrics={"access": "open"})) as server, http_client(server) as client:
            before = await scrape(client)
            assert before["bitbasel_rooms{}"] == 0
            room_id = await create_room(server)
            async with (
                host(server, room_id, tracks=[TestPatternTrack(160, 120, 15), ToneTrack()]),
                viewer(server, room_id) as v,
            ):
                await v.wait_for(lambda s: s.video_frames >= 10)
                during = await scrape(client)
            # a refused join: its close code is counted
            async with connect_signaling(server.ws_url) as session:
                try:
                    await session.join("room_000000000000", "viewer")
                except SessionClosed:
                    pass
                else:
                    raise AssertionError("joined a room that does not exist")
            with trio.fail_after(10):
                # the close is counted as the server sends it, just after the client saw it
                while (after := await scrape(client))["bitbasel_websocket_closes_total{code=4404}"] < 1:  # noqa: ASYNC110
                    await trio.sleep(0.1)
    assert during["bitbasel_rooms{}"] == 1
    assert during["bitbasel_sessions{role=host}"] == 1 and during["bitbasel_sessions{role=viewer}"] == 1
    assert during["bitbasel_rtp_received_packets_total{}"] > 20
    assert during["bitbasel_rtp_forwarded_packets_total{}"] > 20
    assert during["bitbasel_media_received_bytes_total{}"] > 0 and during["bitbasel_media_sent_bytes_total{}"] > 0
    assert during["bitbasel_plis_sent_total{}"] >= 1  # the viewer's join asked the host for a keyframe
    # the forwarding delay: one observation per host RTP packet, in seconds
    count = during["bitbasel_forwarding_delay_seconds_count{}"]
    assert count >= during["bitbasel_rtp_received_packets_total{}"] * 0.9
    assert during["bitbasel_forwarding_delay_seconds_bucket{le=+Inf}"] == count
    assert 0 < during["bitbasel_forwarding_delay_seconds_sum{}"] < count  # well under a second each
    assert during["bitbasel_event_loop_lag_seconds_count{}"] >= 1
    # counters never go back, also once the sessions have left
    for name in ("bitbasel_rtp_received_packets_total{}", "bitbasel_media_sent_bytes_total{}"):
        assert after[name] >= during[name] > before[name]
    assert after["bitbasel_sessions{role=viewer}"] == 0


async def test_metrics_access_off_open_or_behind_the_api_key() -> None:
    with trio.fail_after(30):
        async with media_server(make_config(metrics={"access": "off"})) as server, http_client(server) as client:
            response = await client.get("/metrics")
            assert response.status_code == 404 and response.json()["error"] == "not_found"
        config = make_config(metrics={"access": "api_key"}, auth={"api_key": "k" * 32})
        async with media_server(config) as server, http_client(server) as client:
            refused = await client.get("/metrics")
            assert refused.status_code == 401 and refused.json()["error"] == "unauthorized"
            assert "bitbasel_rooms{}" in await scrape(client, Authorization="Bearer " + "k" * 32)
        config = make_config(metrics={"access": "open"}, auth={"api_key": "k" * 32})
        async with media_server(config) as server, http_client(server) as client:
            assert "bitbasel_rooms{}" in await scrape(client)  # open: no key needed
