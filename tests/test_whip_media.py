"""WHIP and WHEP with real encoders and players (issue 22's media rows): a GStreamer webrtcbin
WHIP publisher (x264enc, openh264enc, and x264enc in High profile as OBS's x264 sends by
default: what OBS and hardware encoders send, H.264 + Opus)
watched by Chromium on the minimal WHEP page (web/whep.html: fetch + RTCPeerConnection only)
and by Chromium on the watch page (the WebSocket client); a Chromium host publishing H.264
through the WebSocket client, watched on the WHEP page; a page of another origin publishing
over WHIP through CORS as Chromium enforces it (preflight with a bearer).

Each Chromium viewer must show `video/H264` as its inbound codec and decode more than 100
frames within 10 s of its first one (15 fps sources). The server runs as a process
(tests/browser_support.py); Chromium is Debian's; loopback only.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.browser_support import (
    CHROMIUM,
    JS_FRAMES_DECODED_OVER,
    JS_INBOUND_VIDEO_MIME,
    WAIT_MS,
    ServerProcess,
    poll_page,
    server_process,
)
from tests.gst_support import GstPeer
from tests.gst_support import available as gst_available

pytestmark = pytest.mark.browser

if not CHROMIUM.exists():
    pytest.skip(f"Chromium is not installed at {CHROMIUM} (apt-get install chromium)", allow_module_level=True)

from playwright.sync_api import BrowserContext  # noqa: E402

from tests.browser_pages import (  # noqa: E402
    Tab,
    new_room,
    open_host,
    open_viewer,
    open_whep_page,
    require_client_served,
    start_live,
)

FRAMES = 100
WITHIN_S = 10.0


@pytest.fixture(scope="module")
def media_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with server_process(tmp_path_factory.mktemp("whip")) as server:
        require_client_served(server)
        yield server


def assert_decodes_h264(tab: Tab) -> None:
    """video/H264 inbound, and over FRAMES frames decoded within WITHIN_S of the first one."""
    poll_page(tab.page, JS_FRAMES_DECODED_OVER, 0, timeout=WAIT_MS / 1000, what=f"{tab.name}: a first frame")
    first = time.monotonic()
    poll_page(tab.page, JS_FRAMES_DECODED_OVER, FRAMES, timeout=WITHIN_S + 5, what=f"{tab.name}: {FRAMES} frames")
    took = time.monotonic() - first
    assert took <= WITHIN_S, f"{tab.name}: {FRAMES} frames took {took:.1f} s"
    assert tab.page.evaluate(JS_INBOUND_VIDEO_MIME) == "video/H264"
    tab.assert_no_errors()


@pytest.mark.skipif(not gst_available(), reason="GStreamer webrtcbin is not usable from the system Python")
@pytest.mark.parametrize("encoder", ["x264enc", "openh264enc", "x264enc-high"])
def test_a_gstreamer_whip_publisher_is_watched_over_whep_and_websocket(
    encoder: str, context: BrowserContext, media_server: ServerProcess, tmp_path: Path
) -> None:
    room_id = new_room(media_server)
    with GstPeer.whip_publisher(f"{media_server.url}/whip/{room_id}", encoder=encoder, seconds=60) as publisher:
        created = publisher.wait_event("created", timeout=20)
        assert created["status"] == 201, publisher.describe()
        assert created["location"].startswith(f"/whip/{room_id}/") and created["etag"]
        publisher.wait_event("connected", timeout=20)
        media_server.wait_room(room_id, has_host=True)
        whep = open_whep_page(context, media_server, room_id, "whep viewer")
        ws_viewer = open_viewer(context, media_server, room_id, "websocket viewer")
        assert_decodes_h264(whep)
        assert_decodes_h264(ws_viewer)
        assert media_server.room_stats(room_id)["viewer_count"] == 2
        thumbnail = media_server.rest("GET", f"/room/{room_id}/thumbnail.jpg")  # decoded from its H.264
        assert thumbnail.status_code == 200 and thumbnail.content[:2] == b"\xff\xd8", thumbnail.text
        assert thumbnail.headers["x-frame-size"] == "320x240"
    deleted = publisher.find_event("deleted")
    assert deleted is not None and deleted["status"] == 200, publisher.describe()
    media_server.wait_room(room_id, has_host=False, timeout=5)


def test_a_chromium_h264_host_is_watched_over_whep(context: BrowserContext, media_server: ServerProcess) -> None:
    room_id = new_room(media_server)
    host = open_host(context, media_server, room_id, "alice", codec="H264")
    start_live(host)
    whep = open_whep_page(context, media_server, room_id, "whep viewer")
    assert_decodes_h264(whep)
    sent = host.page.evaluate(
        """async () => { let mime = null; const pc = window.bitbasel.session.peerConnection;
           const stats = await pc.getStats();
           stats.forEach((r) => { if (r.type === 'outbound-rtp' && r.kind === 'video' && r.codecId)
             mime = stats.get(r.codecId).mimeType; });
           return mime; }"""
    )
    assert sent == "video/H264"
    host.assert_no_errors()


JS_CROSS_ORIGIN_WHIP = """async ([server, roomId]) => {
  // a canvas and an oscillator: this page is not a secure context, so no camera
  const canvas = Object.assign(document.createElement('canvas'), { width: 320, height: 240 });
  const g = canvas.getContext('2d');
  let n = 0;
  const paint = setInterval(() => { g.fillStyle = `hsl(${(n += 7) % 360} 80% 50%)`; g.fillRect(0, 0, 320, 240); }, 66);
  const audio = new AudioContext();
  const tone = audio.createOscillator();
  const sink = audio.createMediaStreamDestination();
  tone.connect(sink); tone.start();
  const tracks = [...sink.stream.getAudioTracks(), ...canvas.captureStream(15).getVideoTracks()];
  const pc = new RTCPeerConnection({ iceServers: [] });
  for (const track of tracks) pc.addTransceiver(track, { direction: 'sendonly' });
  await pc.setLocalDescription(await pc.createOffer());
  const bearer = { Authorization: 'Bearer a-token-the-page-holds' };  // not simple: a CORS preflight
  const created = await fetch(`${server}/whip/${roomId}`, {
    method: 'POST', headers: { ...bearer, 'Content-Type': 'application/sdp' }, body: pc.localDescription.sdp,
  });
  const location = created.headers.get('Location'), etag = created.headers.get('ETag');
  await pc.setRemoteDescription({ type: 'answer', sdp: await created.text() });
  for (let i = 0; i < 100 && pc.connectionState !== 'connected'; i++) await new Promise((r) => setTimeout(r, 100));
  const connected = pc.connectionState;
  const session = new URL(location, server).href;
  const patched = await fetch(session, {
    method: 'PATCH', headers: { ...bearer, 'Content-Type': 'application/trickle-ice-sdpfrag', 'If-Match': etag },
    body: 'a=end-of-candidates\\r\\n',
  });
  window.whipSession = session;
  return { status: created.status, location, etag, connected, patched: patched.status };
}"""

JS_DELETE = """async () => (await fetch(window.whipSession, {
  method: 'DELETE', headers: { Authorization: 'Bearer a-token-the-page-holds' } })).status"""


@contextmanager
def another_origin() -> Iterator[str]:
    """A blank page served from another origin (another port of loopback) by a plain HTTP
    server. (Not Playwright's `context.route`: with it, Playwright answers CORS preflights
    itself, and the server's would never be tested.)"""

    class Blank(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = b"<!doctype html><title>studio</title>"
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Blank)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_a_page_on_another_origin_publishes_over_whip(context: BrowserContext, media_server: ServerProcess) -> None:
    """CORS as a browser enforces it: a page of another origin POSTs its offer with a bearer
    (preflighted), reads `Location` and `ETag`, PATCHes and DELETEs its session."""
    room_id = new_room(media_server)
    with another_origin() as studio:
        tab = Tab(context, "studio")
        tab.page.goto(f"{studio}/live")
        result = tab.page.evaluate(JS_CROSS_ORIGIN_WHIP, [media_server.url, room_id])
        assert result["status"] == 201 and result["connected"] == "connected", result
        assert result["location"].startswith(f"/whip/{room_id}/") and result["etag"], result
        assert result["patched"] == 204, result
        media_server.wait_room(room_id, has_host=True)
        assert tab.page.evaluate(JS_DELETE) == 200
        media_server.wait_room(room_id, has_host=False, timeout=5)
        tab.assert_no_errors()
