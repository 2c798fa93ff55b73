"""End to end in headless Chromium: web/golive.html, web/watch.html and
web/bitbasel-media.js against a real server process.

The host page publishes Chromium's fake camera and microphone; viewer pages
decode the video and play the audio (read from `getStats()`), follow the host
stopping and going live again without reloading, follow a REST stop, and
reconnect after a signaling drop. Time to first frame is measured and written
to tests/artifacts/browser_metrics.json.

Playwright's sync API (plain sync tests, away from pytest-trio's loop) drives
Debian's Chromium (/usr/bin/chromium; Playwright's own browser download is
never used). Loopback only: run inside `unshare -rn` (scripts/test). Every wait
is bounded.
"""

from __future__ import annotations

import os
import shutil
import statistics
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tests.browser_support import (
    ARTIFACTS,
    CHROMIUM,
    JS_VIDEO_PIXELS,
    REPO,
    SERVER_TOML,
    WAIT_MS,
    ServerProcess,
    poll_page,
    server_process,
    write_metrics,
)
from tests.turn_support import available as coturn_available
from tests.turn_support import coturn

pytestmark = pytest.mark.browser

if not CHROMIUM.exists():
    pytest.skip(f"Chromium is not installed at {CHROMIUM} (apt-get install chromium)", allow_module_level=True)

from playwright.sync_api import Browser, BrowserContext, Page  # noqa: E402

from tests.browser_pages import (  # noqa: E402
    Tab,
    new_room,
    open_host,
    open_viewer,
    require_client_served,
    start_live,
    wait_until,
)

WAIT_S = WAIT_MS / 1000
DOCS_IMG = REPO / "docs" / "img"
METRICS_FILE = "browser_metrics.json"
TTFF_RUNS = 5


# ---- fixtures -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def media_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with server_process(tmp_path_factory.mktemp("browser")) as server:
        require_client_served(server)
        yield server


# ---- helpers ----------------------------------------------------------------------------------


def time_to_first_frame_ms(viewer: Tab) -> float:
    """From the page's watch() call to the first video frame shown (the client's timings)."""
    value = poll_page(
        viewer.page,
        """() => { const b = window.bitbasel, t = b.session.timings;
                   return t.firstFrame === undefined ? null : t.firstFrame - b.startedAt; }""",
        timeout=WAIT_S,
        what=f"{viewer.name}: first frame",
    )
    return float(value)


# ---- tests --------------------------------------------------------------------------------------


def test_pages_and_module_are_served_phone_ready(media_server: ServerProcess) -> None:
    for path in ("/", "/watch/room_123"):
        response = media_server.rest("GET", path)
        assert response.status_code == 200, (path, response.status_code, response.text[:200])
        assert response.headers["content-type"].startswith("text/html")
        html = response.text
        assert 'name="viewport"' in html
        assert "https://" not in html and "http://" not in html, f"{path} loads something from elsewhere"
    module = media_server.rest("GET", "/static/bitbasel-media.js")
    assert module.status_code == 200, (module.status_code, module.text[:200])
    assert "javascript" in module.headers["content-type"]
    assert module.headers["access-control-allow-origin"] == "*"
    assert "export function goLive" in module.text and "export function watch" in module.text
    css = media_server.rest("GET", "/static/style.css")
    assert css.status_code == 200 and "text/css" in css.headers["content-type"]


def test_the_platform_imports_the_module_from_its_own_origin_and_joins(
    context: BrowserContext, media_server: ServerProcess
) -> None:
    """A front end on another origin imports /static/bitbasel-media.js (CORS) and joins a room."""
    room_id = new_room(media_server)
    platform = "http://platform.test"
    context.route(
        f"{platform}/**",
        lambda route: route.fulfill(
            status=200,
            content_type="text/html",
            body="<!doctype html><title>platform</title><video id=v muted playsinline></video>",
        ),
    )
    tab = Tab(context, "platform")
    tab.page.goto(f"{platform}/post/42")
    result = tab.page.evaluate(
        """async ([server, roomId]) => {
            const m = await import(server + '/static/bitbasel-media.js');
            const session = m.watch({ serverUrl: server, roomId, userId: 'fan_1',
                                      videoElement: document.getElementById('v') });
            const joined = await new Promise((resolve, reject) => {
              session.addEventListener('joined', (e) => resolve(e.detail));
              session.addEventListener('error', (e) => reject(new Error(e.detail.code)));
              setTimeout(() => reject(new Error('no joined within 20 s')), 20000);
            });
            await new Promise((r) => setTimeout(r, 0));
            const state = session.state;
            session.close();
            return { joined, state, closed: session.state, url: m.signalingUrl(server),
                     finals: m.FINAL_CLOSE_CODES };
        }""",
        [media_server.url, room_id],
    )
    joined = result["joined"]
    assert joined["type"] == "joined" and joined["protocol"] == 1
    assert joined["room_id"] == room_id and joined["role"] == "viewer"
    assert joined["has_host"] is False and joined["viewer_count"] == 1
    assert result["state"] == "offline"  # joined, no host yet
    assert result["closed"] == "closed"
    assert result["url"] == media_server.url.replace("http://", "ws://") + "/ws"
    assert result["finals"] == [4401, 4403, 4404, 4410, 4451]
    media_server.wait_room(room_id, viewer_count=0)
    tab.assert_no_errors()


def test_go_live_two_viewers_stop_resume_and_rest_stop(context: BrowserContext, media_server: ServerProcess) -> None:
    # the creator creates the room from the go-live page (REST open) and goes live
    host = open_host(context, media_server, None, "alice", post="post_browser_main")
    host.page.click("#create-room")
    host.page.wait_for_function("() => document.getElementById('room-id').value.startsWith('room_')")
    room_id = host.page.input_value("#room-id")
    share = host.page.get_attribute("#share-link", "href")
    assert share is not None and share == f"{media_server.url}/watch/{room_id}"

    # viewer 1 is there before the host publishes: it waits, offline
    early = open_viewer(context, media_server, room_id, "viewer-early")
    early.wait_state("offline")

    start_live(host)
    media_server.wait_room(room_id, has_host=True)

    # viewer 2 comes once the host is live, through the share link
    late = Tab(context, "viewer-late")
    late.page.goto(share)
    viewers = [early, late]

    for v in viewers:
        v.wait_state("live")
        v.wait_frames_over(15)

        # the decoded size is the host's sent size (wait: the host's encoder adapts at the start)
        def same_width(v: Tab = v) -> bool:
            width = int(v.inbound()["video"]["frameWidth"])
            return width > 0 and width == host.outbound()["video"]["frameWidth"]

        wait_until(v.page, same_width, f"{v.name}: decoded width == the host's sent width")
        # audio arrives and keeps arriving
        inbound = v.inbound()["audio"]
        v.wait_audio_samples_over(inbound["totalSamplesReceived"] + 48_000 // 2)
        assert v.inbound()["audio"]["packetsReceived"] > inbound["packetsReceived"]
    for tab in (host, *viewers):
        tab.page.wait_for_function("() => document.getElementById('viewers').textContent === '2'")
    media_server.wait_room(room_id, viewer_count=2, has_host=True)

    # what a person sees: the fake camera's picture, not a black box
    pixels = late.page.evaluate(JS_VIDEO_PIXELS, "#video")
    assert pixels is not None and pixels["width"] > 0, pixels
    assert pixels["mean"] > 20 and pixels["stdev"] > 5, f"the video looks blank: {pixels}"
    save_screenshot(late.page, "watch.png")
    save_screenshot(host.page, "golive.png")

    # the host stops: the viewers stay, offline
    host.page.click("#stop")
    host.wait_state("idle")
    for v in viewers:
        v.wait_state("offline")
    media_server.wait_room(room_id, has_host=False, viewer_count=2)
    frames_before = {v.name: v.video_frames() for v in viewers}

    # ...and goes live again: the viewers resume without reloading or a new offer
    start_live(host)
    for v in viewers:
        v.wait_state("live")
        v.wait_frames_over(frames_before[v.name] + 15)
        assert len(v.websockets) == 1, f"{v.name} reconnected: {v.websockets}"
    assert len(host.websockets) == 2  # one signaling session per go-live

    # the platform ends the room over REST: every page shows it
    response = media_server.rest("POST", f"/room/{room_id}/stop")
    assert response.status_code == 200 and response.json()["status"] == "stopped"
    for v in viewers:
        v.wait_state("offline")
        v.page.wait_for_selector('#status[data-ended="true"][data-reason="api"]', state="attached")
        assert len(v.websockets) == 1, f"{v.name} reconnected after `stopped`: {v.websockets}"
    host.wait_state("idle")
    assert len(host.websockets) == 2, f"the host reconnected after `stopped`: {host.websockets}"
    for tab in (host, *viewers):
        tab.assert_no_errors()


def test_a_viewer_reconnects_after_a_signaling_drop(context: BrowserContext, media_server: ServerProcess) -> None:
    room_id = new_room(media_server, "bob")
    host = open_host(context, media_server, room_id, "bob")
    start_live(host)
    viewer = open_viewer(context, media_server, room_id, "viewer")
    viewer.wait_frames_over(10)
    first_peer = viewer.page.evaluate("window.bitbasel.session.peerId")

    # the signaling socket drops (not a final close): a new session, a new peer connection
    viewer.page.evaluate("window.bitbasel.session._ws.close()")
    wait_until(viewer.page, lambda: len(viewer.websockets) == 2, "a second WebSocket")
    viewer.wait_state("live")
    second_peer = viewer.page.evaluate("window.bitbasel.session.peerId")
    assert second_peer and second_peer != first_peer
    viewer.wait_frames_over(10)  # counters of the new peer connection
    media_server.wait_room(room_id, viewer_count=1, has_host=True)
    host.assert_no_errors()
    viewer.assert_no_errors()


# The selected candidate pair's local port and id, as the viewer's browser sees them.
JS_SELECTED_PAIR = """async () => {
  const pc = window.bitbasel.session.peerConnection;
  const report = await pc.getStats();
  let pairId = null;
  report.forEach((r) => {
    if (r.type === 'transport' && r.selectedCandidatePairId) pairId = r.selectedCandidatePairId;
  });
  const pair = pairId && report.get(pairId);
  const local = pair && report.get(pair.localCandidateId);
  return pair ? { id: pairId, localPort: local ? local.port : null, state: pair.state } : null;
}"""

# Samples framesDecoded every 50 ms; `window.frameGaps()` gives the longest time without a new frame.
JS_SAMPLE_FRAMES = """() => {
  let last = 0, lastAt = performance.now(), longest = 0;
  const timer = setInterval(async () => {
    const pc = window.bitbasel.session.peerConnection;
    if (!pc) return;
    let decoded = 0;
    (await pc.getStats()).forEach((r) => {
      if (r.type === 'inbound-rtp' && r.kind === 'video') decoded = r.framesDecoded;
    });
    const t = performance.now();
    if (decoded > last) { longest = Math.max(longest, t - lastAt); last = decoded; lastAt = t; }
  }, 50);
  window.frameGaps = () => { clearInterval(timer); return Math.max(longest, performance.now() - lastAt); };
}"""


def test_a_viewer_restarts_ice_mid_stream_and_keeps_decoding(
    context: BrowserContext, media_server: ServerProcess
) -> None:
    room_id = new_room(media_server, "carol")
    host = open_host(context, media_server, room_id, "carol")
    start_live(host)
    viewer = open_viewer(context, media_server, room_id, "viewer")
    viewer.wait_frames_over(15)
    peer_id = viewer.page.evaluate("window.bitbasel.session.peerId")
    before = viewer.page.evaluate(JS_SELECTED_PAIR)
    assert before and before["localPort"], before
    viewer.page.evaluate(JS_SAMPLE_FRAMES)
    viewer.page.wait_for_timeout(500)
    assert viewer.page.evaluate("window.bitbasel.session.restartIce('test')") is True

    def moved() -> Any:  # a new ICE generation: new local candidates, a new selected pair
        now = viewer.page.evaluate(JS_SELECTED_PAIR)
        return now if now and now["localPort"] != before["localPort"] and now["state"] == "succeeded" else None

    after = wait_until(viewer.page, moved, "a new selected candidate pair after the ICE restart")
    viewer.wait_frames_over(viewer.video_frames() + 30)  # decoding on the new path
    longest_gap_ms = float(viewer.page.evaluate("window.frameGaps()"))
    print(f"\nICE restart: {before} -> {after}, longest gap between decoded frames {longest_gap_ms:.0f} ms")
    assert longest_gap_ms < 2000, f"video stalled {longest_gap_ms:.0f} ms across the ICE restart"
    # the same session: no new WebSocket, the same peer, still counted once
    assert len(viewer.websockets) == 1 and viewer.page.evaluate("window.bitbasel.session.peerId") == peer_id
    assert viewer.page.evaluate("window.bitbasel.session.iceRestarts") == 1
    # the browser reports a network change: the client restarts ICE by itself
    viewer.page.evaluate("window.dispatchEvent(new Event('online'))")
    wait_until(viewer.page, lambda: viewer.page.evaluate("window.bitbasel.session.iceRestarts") == 2, "a 2nd restart")

    def moved_again() -> bool:
        now = viewer.page.evaluate(JS_SELECTED_PAIR)
        return bool(now) and now["id"] != after["id"] and now["state"] == "succeeded"

    wait_until(viewer.page, moved_again, "a new selected pair after the network change")
    viewer.wait_frames_over(viewer.video_frames() + 15)
    assert len(viewer.websockets) == 1
    media_server.wait_room(room_id, viewer_count=1, has_host=True)
    host.assert_no_errors()
    viewer.assert_no_errors()


# The selected pair's local candidate type ('host', 'srflx', 'prflx' or 'relay') and its relay protocol.
JS_SELECTED_LOCAL_CANDIDATE = """async () => {
  const pc = window.bitbasel.session.peerConnection;
  if (!pc) return null;
  const report = await pc.getStats();
  let local = null;
  report.forEach((r) => {
    if (r.type === 'transport' && r.selectedCandidatePairId) {
      const pair = report.get(r.selectedCandidatePairId);
      local = pair ? report.get(pair.localCandidateId) : null;
    }
  });
  return local ? { type: local.candidateType, address: local.address, port: local.port } : null;
}"""


@pytest.mark.skipif(not coturn_available(), reason="coturn is not installed (apt-get install coturn)")
def test_a_relay_only_viewer_watches_through_coturn(context: BrowserContext, tmp_path: Path) -> None:
    """A viewer that may only use TURN (`iceTransportPolicy: "relay"`, the watch page's
    `?relay=1`) gets coturn's URL and per-session credentials in `joined` and decodes."""
    with coturn(tmp_path) as turn:
        toml = SERVER_TOML + f'turn_servers = ["{turn.url}"]\nturn_secret = "{turn.secret}"\n'
        with server_process(tmp_path, toml) as server:
            room_id = new_room(server, "dave")
            host = open_host(context, server, room_id, "dave")
            start_live(host)
            viewer = open_viewer(context, server, room_id, "relay-viewer", relay="1")
            try:
                viewer.wait_frames_over(15)
            except AssertionError as exc:
                raise AssertionError(f"{exc}\ncoturn's log:\n{turn.log_tail()}") from exc
            local = viewer.page.evaluate(JS_SELECTED_LOCAL_CANDIDATE)
            assert local is not None and local["type"] == "relay", local
            servers = viewer.page.evaluate("window.bitbasel.session._sessionIceServers")
            assert [s["urls"] for s in servers] == [[turn.url]], servers
            expiry, _, user = servers[0]["username"].partition(":")  # coturn's use-auth-secret username
            assert int(expiry) > time.time() + 3600 and user == viewer.page.evaluate("window.bitbasel.session.peerId")
            server.wait_room(room_id, viewer_count=1, has_host=True)
            host.assert_no_errors()
            viewer.assert_no_errors()


def test_final_refusals_are_not_retried(context: BrowserContext, media_server: ServerProcess) -> None:
    viewer = open_viewer(context, media_server, "room_000000000001", "viewer")
    viewer.wait_state("error")
    assert viewer.page.get_attribute("#status", "data-reason") == "room_not_found"
    # a retry would come after the first backoff delay (500 ms +-25 %): give it three times that
    viewer.page.wait_for_timeout(1500)
    assert len(viewer.websockets) == 1, viewer.websockets
    assert viewer.page.evaluate("window.bitbasel.session.closeReason.code") == 4404

    # a host that is not the room's host user is refused (forbidden, 4403): no retry either
    room_id = new_room(media_server, "carol")
    impostor = open_host(context, media_server, room_id, "mallory")
    impostor.page.click("#start")
    impostor.wait_state("error")
    impostor.page.wait_for_timeout(1500)
    assert len(impostor.websockets) == 1, impostor.websockets
    viewer.assert_no_errors()
    impostor.assert_no_errors()


def test_tokens_from_the_page_query(context: BrowserContext, tmp_path: Path) -> None:
    secret = "s" * 40
    with server_process(tmp_path, SERVER_TOML + f'[auth]\nsecret = "{secret}"\n') as server:
        require_client_served(server)
        created = server.rest("POST", "/room/create", json={"post_id": "post_tok", "host_user_id": "dana"}).json()
        room_id, host_token = created["room_id"], created["host_token"]
        assert host_token
        viewer_token = server.rest(
            "POST", f"/room/{room_id}/token", json={"role": "viewer", "user_id": "fan_7"}
        ).json()["token"]

        host = open_host(context, server, room_id, "", token=host_token)
        start_live(host)
        viewer = open_viewer(context, server, room_id, "viewer", token=viewer_token)
        viewer.wait_state("live")
        viewer.wait_frames_over(10)

        intruder = open_viewer(context, server, room_id, "intruder", token="not-a-token")
        intruder.wait_state("error")
        assert intruder.page.get_attribute("#status", "data-reason") == "unauthorized"
        intruder.page.wait_for_timeout(1500)
        assert len(intruder.websockets) == 1, intruder.websockets
        for tab in (host, viewer, intruder):
            tab.assert_no_errors()


def test_time_to_first_frame(browser: Browser, media_server: ServerProcess) -> None:
    """From a viewer page's watch() call to its first decoded frame, over several fresh viewers."""
    host_context = browser.new_context()
    try:
        room_id = new_room(media_server, "erin")
        host = open_host(host_context, media_server, room_id, "erin")
        start_live(host)
        samples: list[float] = []
        for run in range(TTFF_RUNS):
            # a fresh context per run: nothing cached, a new peer connection each time
            phone = run == TTFF_RUNS - 1
            ctx = browser.new_context(
                viewport={"width": 390, "height": 844} if phone else {"width": 1280, "height": 720},
                device_scale_factor=2 if phone else 1,
            )
            ctx.set_default_timeout(WAIT_MS)
            try:
                viewer = open_viewer(ctx, media_server, room_id, f"viewer-{run}")
                samples.append(time_to_first_frame_ms(viewer))
                viewer.wait_frames_over(0)
                if phone:
                    viewer.wait_frames_over(10)
                    save_screenshot(viewer.page, "watch-phone.png")
                viewer.assert_no_errors()
            finally:
                ctx.close()
        host.assert_no_errors()
    finally:
        host_context.close()
    median = statistics.median(samples)
    print(
        f"\ntime to first frame (watch() -> first frame), {len(samples)} viewers: median {median:.0f} ms, "
        f"samples {[round(s) for s in samples]}"
    )
    write_metrics(
        METRICS_FILE,
        {
            "time_to_first_frame_ms": {
                "median": round(median, 1),
                "samples": [round(s, 1) for s in samples],
                "runs": len(samples),
                "from": "watch() call in the viewer page",
                "to": "first video frame presented (requestVideoFrameCallback)",
            },
            "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        },
    )
    assert median < 10_000, "a viewer took more than 10 s to show the host's video"


def save_screenshot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / name
    page.screenshot(path=str(path))
    if os.environ.get("UPDATE_DOCS_SCREENSHOTS") == "1":  # refresh docs/img/ on purpose only
        DOCS_IMG.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, DOCS_IMG / name)
