"""Firefox ESR (Debian's `firefox-esr`) against a real server process, over WebDriver BiDi.

Firefox watches and goes live on the project's own pages (web/watch.html, web/golive.html,
whose JS client asks for `bundlePolicy: "max-bundle"`: Firefox marks every m-line after the
first `a=bundle-only` with port 0), and a plain `RTCPeerConnection` watches with each
`bundlePolicy`. Firefox keeps its default mDNS setting (host addresses hidden behind `.local`
names where it hides them). The other end is an aiortc bot in a process of its own.
Inside the suite's private namespace only: `lo`, with a second address and a default route
for Firefox (tests/firefox_support.py says why); the server listens on both addresses.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.browser_support import (
    ARTIFACTS,
    JS_AUDIO_SAMPLES_OVER,
    JS_FRAMES_DECODED_OVER,
    ServerProcess,
    server_process,
)
from tests.firefox_support import FirefoxDriver, FirefoxPage, firefox, namespace_lan, server_toml, unavailable_reason
from tests.peer_process import PeerProcess, start_peer

pytestmark = pytest.mark.browser

if (reason := unavailable_reason()) is not None:
    pytest.skip(reason, allow_module_level=True)

WAIT_S = 30.0


@pytest.fixture(scope="module")
def media_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with (
        namespace_lan() as lan,
        server_process(tmp_path_factory.mktemp("firefox"), server_toml(lan)) as server,
    ):
        yield server


@pytest.fixture(scope="module")
def ff() -> Iterator[FirefoxDriver]:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with firefox(ARTIFACTS / "firefox_driver.log") as driver:
        yield driver


def poll(page: FirefoxPage, js: str, arg: Any = None, *, what: str, timeout: float = WAIT_S) -> Any:
    deadline = time.monotonic() + timeout
    value = None
    while time.monotonic() < deadline:
        value = page.evaluate(js, arg)
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(
        f"timed out after {timeout} s waiting for {what} (last: {value!r}); console: {page.console[-10:]}"
    )


def new_room(server: ServerProcess, host_user: str) -> str:
    return server.create_room(f"post_firefox_{time.monotonic_ns()}", host_user)


# ---- on the project's own pages -------------------------------------------------------------


def test_firefox_watches_on_the_projects_watch_page(ff: FirefoxDriver, media_server: ServerProcess) -> None:
    room_id = new_room(media_server, "alice")
    host = start_peer(media_server, room_id, "host")
    try:
        started = time.monotonic()
        page = ff.open(f"{media_server.url}/watch/{room_id}")
        poll(page, JS_FRAMES_DECODED_OVER, 15, what="Firefox: 15 video frames decoded")
        print(f"\nFirefox viewer (watch page, max-bundle): 15 frames after {time.monotonic() - started:.2f} s")
        poll(page, JS_AUDIO_SAMPLES_OVER, 24_000, what="Firefox: half a second of audio")
        media_server.wait_room(room_id, viewer_count=1, has_host=True)
        state = page.evaluate("() => document.getElementById('status').dataset.state")
        assert state == "live", state
        assert not page.errors, page.errors
        page.close()
    finally:
        host.stop()


def test_firefox_goes_live_on_the_projects_golive_page(ff: FirefoxDriver, media_server: ServerProcess) -> None:
    room_id = new_room(media_server, "bob")
    page = ff.open(f"{media_server.url}/?room={room_id}&user=bob")
    viewer: PeerProcess | None = None
    try:
        poll(page, "() => !!(window.bitbasel && window.bitbasel.stream)", what="Firefox: the fake camera")
        page.evaluate("() => document.getElementById('start').click()")
        poll(page, "() => document.getElementById('status').dataset.state === 'live'", what="Firefox: live")
        media_server.wait_room(room_id, has_host=True)
        viewer = start_peer(media_server, room_id, "viewer")
        first_ms = viewer.wait_frames(video=15, audio=20)[2]
        print(f"\naiortc viewer of a Firefox host: first frame {first_ms} ms after its start")
        assert not page.errors, page.errors
    finally:
        if viewer is not None:
            viewer.stop()
        page.close()


def test_firefox_in_an_h264_room_keeps_its_audio_and_is_told(ff: FirefoxDriver, media_server: ServerProcess) -> None:
    """Firefox ESR here has no H.264: its offer has VP8 only, so in a room whose host publishes
    H.264 it gets `unsupported_codec`, then `quality` audio_only, and its session goes on."""
    room_id = new_room(media_server, "alice")
    host = start_peer(media_server, room_id, "host", options=("--video-codec", "H264"))
    try:
        page = ff.open(f"{media_server.url}/watch/{room_id}")
        poll(page, JS_AUDIO_SAMPLES_OVER, 48_000, what="Firefox: a second of audio")
        told = poll(
            page,
            "() => { const m = document.getElementById('message'); return m.textContent.includes('unsupported_codec') "
            "&& document.getElementById('layer').dataset.layer === 'audio_only' && m.textContent; }",
            what="Firefox: told unsupported_codec, audio only",
        )
        assert "audio only" in told, told
        assert page.evaluate(JS_FRAMES_DECODED_OVER, 0) is False
        assert page.evaluate("() => document.getElementById('status').dataset.state") == "live"
        media_server.wait_room(room_id, viewer_count=1, has_host=True)
        assert not page.errors, page.errors
        page.close()
    finally:
        host.stop()


# ---- a plain RTCPeerConnection, each bundlePolicy --------------------------------------------

# Joins as viewer with a plain RTCPeerConnection of the given bundlePolicy, trickles its
# candidates, decodes; returns what it saw (no JS client of ours involved).
JS_PLAIN_VIEWER = """async ({ wsUrl, roomId, bundlePolicy, seconds }) => {
  const ws = new WebSocket(wsUrl);
  await new Promise((ok, fail) => { ws.onopen = ok; ws.onerror = () => fail(new Error('ws error')); });
  const inbox = [];
  let wake = () => {};
  ws.onmessage = (e) => { inbox.push(JSON.parse(e.data)); wake(); };
  const next = async (type) => {
    for (;;) {
      const i = inbox.findIndex((m) => m.type === type || m.type === 'error');
      if (i >= 0) {
        const m = inbox.splice(i, 1)[0];
        if (m.type === 'error') throw new Error(`${m.code}: ${m.message}`);
        return m;
      }
      await new Promise((r) => { wake = r; });
    }
  };
  const started = performance.now();
  ws.send(JSON.stringify({ type: 'join', room_id: roomId, role: 'viewer' }));
  const joined = await next('joined');
  const pc = new RTCPeerConnection({ bundlePolicy, iceServers: joined.ice_servers });
  pc.addTransceiver('video', { direction: 'recvonly' });
  pc.addTransceiver('audio', { direction: 'recvonly' });
  const candidates = [];
  pc.onicecandidate = (e) => {
    const c = e.candidate;
    if (c && c.candidate) candidates.push(c.candidate);
    ws.send(JSON.stringify(c && c.candidate
      ? { type: 'candidate', candidate: c.candidate, sdpMid: c.sdpMid, sdpMLineIndex: c.sdpMLineIndex }
      : { type: 'candidate', candidate: '', sdpMid: null, sdpMLineIndex: null }));
  };
  await pc.setLocalDescription(await pc.createOffer());
  const offer = pc.localDescription.sdp;
  ws.send(JSON.stringify({ type: 'offer', sdp: offer }));
  let answer;
  try {
    answer = await next('answer');
  } catch (err) {
    pc.close(); ws.close();
    return { refused: String(err.message), bundlePolicy };
  }
  await pc.setRemoteDescription({ type: 'answer', sdp: answer.sdp });
  const deadline = performance.now() + seconds * 1000;
  let video = 0, audio = 0, firstFrameMs = null;
  while (performance.now() < deadline) {
    (await pc.getStats()).forEach((r) => {
      if (r.type === 'inbound-rtp' && r.kind === 'video') video = r.framesDecoded || 0;
      if (r.type === 'inbound-rtp' && r.kind === 'audio') audio = r.packetsReceived || 0;
    });
    if (video > 0 && firstFrameMs === null) firstFrameMs = Math.round(performance.now() - started);
    if (video > 10 && audio > 10) break;
    await new Promise((r) => setTimeout(r, 100));
  }
  const result = {
    bundlePolicy, video, audio, firstFrameMs,
    bundleOnly: (offer.match(/a=bundle-only/g) || []).length,
    group: /a=group:BUNDLE/.test(answer.sdp),
    mdnsCandidates: candidates.filter((c) => c.split(' ')[4].endsWith('.local')).length,
    candidates: candidates.length,
    connectionState: pc.connectionState,
  };
  pc.close();
  ws.close();
  return result;
}"""


@pytest.mark.parametrize("bundle_policy", ["max-bundle", "balanced", "max-compat"])
def test_a_plain_firefox_peer_connection_watches_with_each_bundle_policy(
    ff: FirefoxDriver, media_server: ServerProcess, bundle_policy: str
) -> None:
    room_id = new_room(media_server, "carol")
    host = start_peer(media_server, room_id, "host", user="carol")
    try:
        page = ff.open(f"{media_server.url}/static/style.css")  # any page of the server's origin
        arg = {"wsUrl": media_server.ws_url, "roomId": room_id, "bundlePolicy": bundle_policy, "seconds": WAIT_S}
        result = page.evaluate(JS_PLAIN_VIEWER, arg, timeout=WAIT_S + 30)
        print(f"\nFirefox plain RTCPeerConnection, {bundle_policy}: {result}")
        assert "refused" not in result, result
        assert result["video"] > 10 and result["audio"] > 10, result
        if bundle_policy == "max-bundle":
            assert result["bundleOnly"] >= 1, "Firefox marks the m-lines after the first bundle-only"
        page.close()
    finally:
        host.stop()
