"""A room across workers with real Chromium (issue 21): a simulcast host page and two viewer
pages, `[cluster] workers = 2`, `room_viewers_per_worker = 1`, so the second viewer is on the
other worker (an edge), fed by a relay. The host has been live a while before it joins, so
the host no longer sends the rid on its layers: the edge learns them from its origin. The edge
viewer decodes, and its own layer choice works there (`set_quality low` gives the low layer)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.browser_support import CHROMIUM, SERVER_TOML, ServerProcess, chromium_browser, poll_page, server_process

pytestmark = pytest.mark.browser

if not CHROMIUM.exists():
    pytest.skip(f"Chromium is not installed at {CHROMIUM} (apt-get install chromium)", allow_module_level=True)

from tests.browser_pages import new_room, open_host, open_viewer, require_client_served, start_live  # noqa: E402

LOW_WIDTH = 320

# the width of the viewer's last decoded frame, once it is `width`
JS_WIDTH_IS = """async (width) => {
  let found = false;
  (await window.bitbasel.session.peerConnection.getStats()).forEach((r) => {
    if (r.type === 'inbound-rtp' && r.kind === 'video' && r.frameWidth === width) found = true;
  });
  return found;
}"""


@pytest.fixture(scope="module")
def two_workers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    directory: Path = tmp_path_factory.mktemp("relays")
    toml = SERVER_TOML + "[cluster]\nworkers = 2\nroom_viewers_per_worker = 1\n"
    with server_process(directory, toml) as server:
        require_client_served(server)
        yield server


def test_a_browser_viewer_on_an_edge_gets_the_simulcast_hosts_layers(two_workers: ServerProcess) -> None:
    server = two_workers
    with chromium_browser() as browser:
        context = browser.new_context(viewport={"width": 1280, "height": 720})
        context.set_default_timeout(30_000)
        try:
            room_id = new_room(server)
            host = open_host(context, server, room_id, "alice")
            start_live(host)
            first = open_viewer(context, server, room_id, "on-origin")
            first.wait_frames_over(30)
            time.sleep(3)  # the host's layers have been reported on for a while: no rid on them now
            second = open_viewer(context, server, room_id, "on-edge")
            second.wait_frames_over(30)

            stats: dict[str, Any] = httpx.get(f"{server.url}/stats", timeout=10).json()
            per_worker = sorted(w["stats"]["total_viewers"] for w in stats["workers"])
            assert per_worker == [1, 1], stats["workers"]
            room = httpx.get(f"{server.url}/room/{room_id}/stats", timeout=10).json()
            assert len([layer for layer in room["forwarding"]["layers"] if layer["flowing"]]) == 3

            second.page.evaluate("() => window.bitbasel.session.setQuality('low')")
            poll_page(second.page, JS_WIDTH_IS, LOW_WIDTH, timeout=10, what="the edge viewer at the low layer")
            second.wait_audio_samples_over(24_000)
            for tab in (host, first, second):
                tab.assert_no_errors()
        finally:
            context.close()
