"""Every host stack to every viewer stack: Chromium, Firefox ESR, GStreamer webrtcbin, aiortc.

One room per host stack; in it one viewer of each stack, started together. Each viewer must
decode video and receive audio. The standard doors are stacks too: a GStreamer WHIP publisher
(x264enc, H.264) and Chromium on the WHEP page; in the WHIP publisher's H.264 room the viewers
without H.264 (Firefox ESR here, the GStreamer VP8 viewer) must keep their audio ("audio").
Browsers use the project's own pages (web/golive.html,
web/watch.html: the JS client, `bundlePolicy: "max-bundle"`), GStreamer tests/gst_peer.py
(`max-bundle`, its default RSA certificate), aiortc tests/peer_process.py. The first-frame
times are printed as a table and written to tests/artifacts/interop_matrix.json: for the
browsers from the page's `watch()` call, for GStreamer and aiortc from the viewer process's
start (aiortc: after its imports), each to its first decoded video frame.

Inside the suite's private namespace only (Firefox's second `lo` address and default route:
tests/firefox_support.py); the server listens on 127.0.0.1 and that address.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

import pytest

from tests.browser_support import (
    CHROMIUM,
    JS_AUDIO_SAMPLES_OVER,
    JS_FRAMES_DECODED_OVER,
    ServerProcess,
    chromium_browser,
    poll_page,
    server_process,
    write_metrics,
)
from tests.firefox_support import FirefoxDriver, FirefoxPage, firefox, namespace_lan, server_toml, unavailable_reason
from tests.gst_support import GstPeer, availability
from tests.peer_process import PeerProcess, start_peer

pytestmark = pytest.mark.browser

STACKS = ["chromium", "firefox", "gstreamer", "aiortc"]
# ... and the standard doors: a GStreamer WHIP publisher (x264enc: H.264 + Opus, as OBS sends)
# and Chromium on the minimal WHEP page (web/whep.html)
HOST_STACKS = [*STACKS, "whip"]
VIEWER_STACKS = [*STACKS, "whep"]
# the viewers that cannot decode H.264 (Firefox ESR here, tests/gst_peer.py's VP8 viewer) keep
# their audio in an H.264 room: their cell says "audio"
H264_HOSTS = ("whip",)
H264_VIEWERS = ("chromium", "aiortc", "whep")
SIMULCAST_HOSTS = ("chromium", "firefox")  # the browsers publish simulcast from the golive page
WAIT_S = 40.0
VIDEO_FRAMES = 10
AUDIO_SAMPLES = 24_000  # browsers: half a second at 48 kHz
AUDIO_FRAMES = 10  # GStreamer buffers, aiortc frames

if not CHROMIUM.exists():
    pytest.skip(f"Chromium is not installed at {CHROMIUM}", allow_module_level=True)
if (firefox_missing := unavailable_reason()) is not None:
    pytest.skip(firefox_missing, allow_module_level=True)
if not (gst := availability())[0]:
    pytest.skip(gst[1], allow_module_level=True)


# whether the viewer's last decoded frame is `width` wide
JS_VIDEO_WIDTH_IS = """async (width) => {
  const s = window.bitbasel && window.bitbasel.session;
  if (!s || !s.peerConnection) return false;
  let found = false;
  (await s.peerConnection.getStats()).forEach((r) => {
    if (r.type === 'inbound-rtp' && r.kind === 'video' && r.frameWidth === width) found = true;
  });
  return found;
}"""

# ms from the page's watch() call to its first frame (the JS client's timings), or null
JS_FIRST_FRAME_MS = """() => { const b = window.bitbasel, t = b && b.session && b.session.timings;
  return t && t.firstFrame !== undefined ? Math.round(t.firstFrame - b.startedAt) : null; }"""


class Stacks:
    """What each stack needs to publish or watch in a room, with everything it starts cleaned
    up by one ExitStack."""

    def __init__(self, server: ServerProcess, chromium: Any, ff: FirefoxDriver, cleanup: ExitStack) -> None:
        self.server = server
        self.chromium = chromium
        self.ff = ff
        self.cleanup = cleanup
        self.chromium_viewer: Any = None  # the Chromium viewer's page, once started

    # ---- hosts

    def start_host(self, stack: str, room_id: str, user: str) -> None:
        query = urlencode({"room": room_id, "user": user})
        if stack == "chromium":
            context = self.chromium.new_context()
            self.cleanup.callback(context.close)
            page = context.new_page()
            page.goto(f"{self.server.url}/?{query}")
            page.wait_for_function("() => !!(window.bitbasel && window.bitbasel.stream)", timeout=WAIT_S * 1000)
            page.click("#start")
            page.wait_for_selector('#status[data-state="live"]', state="attached", timeout=WAIT_S * 1000)
        elif stack == "firefox":
            ff_page = self.ff.open(f"{self.server.url}/?{query}")
            self.cleanup.callback(ff_page.close)
            wait_ff(ff_page, "() => !!(window.bitbasel && window.bitbasel.stream)", None, "the fake camera")
            ff_page.evaluate("() => document.getElementById('start').click()")
            wait_ff(ff_page, "() => document.getElementById('status').dataset.state === 'live'", None, "live")
        elif stack == "gstreamer":
            peer = GstPeer("host", self.server.ws_url, room_id, user_id=user, seconds=120).start()
            self.cleanup.callback(peer.stop)
            peer.wait_event("connected", WAIT_S)
        elif stack == "whip":
            url = f"{self.server.url}/whip/{room_id}"
            peer = GstPeer.whip_publisher(url, encoder="x264enc", seconds=120).start()
            self.cleanup.callback(peer.stop)
            peer.wait_event("connected", WAIT_S)
        else:
            bot = start_peer(self.server, room_id, "host", user=user)
            self.cleanup.callback(bot.stop)
        self.server.wait_room(room_id, has_host=True, timeout=WAIT_S)

    # ---- viewers: start() returns a function that waits for media and gives the first-frame ms

    def start_viewer(self, stack: str, room_id: str, *, video: bool = True) -> Callable[[], int | str]:
        """`video=False`: the viewer cannot decode the room's codec; its audio is waited for."""
        url = f"{self.server.url}/watch/{room_id}"
        if stack == "whep":
            context = self.chromium.new_context()
            self.cleanup.callback(context.close)
            page = context.new_page()
            started = time.monotonic()
            page.goto(f"{self.server.url}/whep.html?room={room_id}")

            def whep_media() -> int:
                poll_page(page, JS_FRAMES_DECODED_OVER, 0, timeout=WAIT_S, what="WHEP: a first frame")
                first_ms = round(1000 * (time.monotonic() - started))
                poll_page(page, JS_FRAMES_DECODED_OVER, VIDEO_FRAMES, timeout=WAIT_S, what="WHEP: video")
                poll_page(page, JS_AUDIO_SAMPLES_OVER, AUDIO_SAMPLES, timeout=WAIT_S, what="WHEP: audio")
                return first_ms

            return whep_media
        if stack == "chromium":
            context = self.chromium.new_context()
            self.cleanup.callback(context.close)
            page = context.new_page()
            page.goto(url)
            self.chromium_viewer = page

            def chromium_media() -> int:
                poll_page(page, JS_FRAMES_DECODED_OVER, VIDEO_FRAMES, timeout=WAIT_S, what="Chromium: video")
                poll_page(page, JS_AUDIO_SAMPLES_OVER, AUDIO_SAMPLES, timeout=WAIT_S, what="Chromium: audio")
                return int(page.evaluate(JS_FIRST_FRAME_MS))

            return chromium_media
        if stack == "firefox":
            ff_page = self.ff.open(url)
            self.cleanup.callback(ff_page.close)

            def firefox_media() -> int | str:
                if not video:
                    wait_ff(ff_page, JS_AUDIO_SAMPLES_OVER, AUDIO_SAMPLES, "audio")
                    return "audio"
                wait_ff(ff_page, JS_FRAMES_DECODED_OVER, VIDEO_FRAMES, "video")
                wait_ff(ff_page, JS_AUDIO_SAMPLES_OVER, AUDIO_SAMPLES, "audio")
                return int(ff_page.evaluate(JS_FIRST_FRAME_MS))

            return firefox_media
        if stack == "gstreamer":
            peer = GstPeer("viewer", self.server.ws_url, room_id, seconds=120).start()
            self.cleanup.callback(peer.stop)

            def gstreamer_media() -> int | str:
                if not video:
                    peer.wait_event("stats", WAIT_S, lambda s: s["audio_buffers"] >= AUDIO_FRAMES)
                    return "audio"
                first = peer.wait_event("first_frame", WAIT_S)
                peer.wait_event(
                    "stats",
                    WAIT_S,
                    lambda s: s["video_frames"] >= VIDEO_FRAMES and s["audio_buffers"] >= AUDIO_FRAMES,
                )
                return int(first["ms"])

            return gstreamer_media
        bot = PeerProcess(self.server, room_id, "viewer")
        self.cleanup.callback(bot.stop)

        def aiortc_media() -> int:
            return bot.wait_frames(video=VIDEO_FRAMES, audio=AUDIO_FRAMES, timeout=WAIT_S)[2]

        return aiortc_media


def lowest_layer_reaches_chromium(server: ServerProcess, room_id: str, page: Any) -> list[int]:
    """A browser host publishes simulcast from its fake camera (two or three layers by its
    height: the JS client's rule), and a Chromium viewer that asks for `low` decodes the
    lowest one: the host's layers reach a viewer of either browser. The layers' widths,
    lowest first."""
    deadline = time.monotonic() + WAIT_S
    while True:
        layers = server.room_stats(room_id)["forwarding"]["layers"]
        widths = sorted(layer["width"] for layer in layers if layer["flowing"] and layer["width"])
        if len(widths) >= 2:
            break
        if time.monotonic() >= deadline:
            raise AssertionError(f"the host's simulcast layers never flowed: {layers}")
        time.sleep(0.2)
    page.evaluate("() => window.bitbasel.session.setQuality('low')")
    poll_page(page, JS_VIDEO_WIDTH_IS, widths[0], timeout=WAIT_S, what=f"Chromium: the {widths[0]}-wide layer")
    return widths


def wait_ff(page: FirefoxPage, js: str, arg: Any, what: str) -> Any:
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        value = page.evaluate(js, arg)
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"Firefox: no {what} within {WAIT_S} s; console: {page.console[-10:]}")


@pytest.fixture(scope="module")
def stacks_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    directory = tmp_path_factory.mktemp("matrix")
    with namespace_lan() as lan, server_process(directory, server_toml(lan)) as server:
        yield server


def test_every_host_stack_to_every_viewer_stack(stacks_server: ServerProcess, tmp_path_factory: Any) -> None:
    server = stacks_server
    first_frame_ms: dict[str, dict[str, int | str]] = {}
    layer_widths: dict[str, list[int]] = {}
    failures: list[str] = []
    log = tmp_path_factory.mktemp("matrix-firefox") / "firefox_driver.log"
    with chromium_browser() as chromium, firefox(log) as ff:
        for host_stack in HOST_STACKS:
            user = f"host_{host_stack}"
            room_id = server.create_room(f"post_matrix_{host_stack}", user)
            with ExitStack() as cleanup:
                stacks = Stacks(server, chromium, ff, cleanup)
                stacks.start_host(host_stack, room_id, user)
                waits = {
                    viewer: stacks.start_viewer(
                        viewer, room_id, video=host_stack not in H264_HOSTS or viewer in H264_VIEWERS
                    )
                    for viewer in VIEWER_STACKS
                }
                row = first_frame_ms.setdefault(host_stack, {})
                for viewer_stack, wait in waits.items():
                    try:
                        row[viewer_stack] = wait()
                    except AssertionError as exc:
                        failures.append(f"{host_stack} -> {viewer_stack}: {str(exc)[:600]}")
                server.wait_room(room_id, viewer_count=len(VIEWER_STACKS), has_host=True, timeout=WAIT_S)
                if host_stack in SIMULCAST_HOSTS:
                    try:
                        viewer_page = stacks.chromium_viewer
                        layer_widths[host_stack] = lowest_layer_reaches_chromium(server, room_id, viewer_page)
                    except AssertionError as exc:
                        failures.append(f"{host_stack} simulcast -> chromium: {str(exc)[:600]}")
            server.rest("POST", f"/room/{room_id}/stop")
    width = max(len(s) for s in VIEWER_STACKS) + 2
    corner = "host / viewer"
    lines = [f"{corner:<16}" + "".join(f"{v:>{width}}" for v in VIEWER_STACKS)]
    for host_stack in HOST_STACKS:
        cells = [first_frame_ms[host_stack].get(v) for v in VIEWER_STACKS]
        lines.append(f"{host_stack:<16}" + "".join(f"{'FAIL' if c is None else c:>{width}}" for c in cells))
    print("\nfirst frame (ms), host stack x viewer stack:\n" + "\n".join(lines))
    print(f"simulcast layers (frame widths) of the browser hosts: {layer_widths}")
    write_metrics(
        "interop_matrix.json",
        {
            "first_frame_ms": first_frame_ms,
            "simulcast_layer_widths": layer_widths,
            "from": "browsers: the page's watch() call; GStreamer and aiortc: the viewer process's start",
            "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        },
    )
    assert not failures, "\n".join(failures)
