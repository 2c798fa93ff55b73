"""Experiment (not kept): a Chromium simulcast host and a viewer capped with tc; print."""

from __future__ import annotations

import subprocess
import time

from playwright.sync_api import BrowserContext

from tests.browser_support import ServerProcess
from tests.test_browser import browser, context, media_server, new_room, open_host, open_viewer, start_live  # noqa: F401

JS_LOCAL_PORT = """async () => {
  const pc = window.bitbasel.session.peerConnection; let pair = null; const c = {};
  (await pc.getStats()).forEach((r) => { if (r.type === 'candidate-pair' && r.nominated && r.state === 'succeeded') pair = r; c[r.id] = r; });
  return pair ? c[pair.localCandidateId].port : null;
}"""


def tc(*args: str) -> None:
    subprocess.run(["tc", *args], check=True)


def test_probe(context: BrowserContext, media_server: ServerProcess) -> None:  # noqa: F811
    room_id = new_room(media_server, "alice")
    host = open_host(context, media_server, room_id, "alice")
    start_live(host)
    viewer = open_viewer(context, media_server, room_id, "v1")
    viewer.page.wait_for_timeout(3000)
    port = viewer.page.evaluate(JS_LOCAL_PORT)
    print("viewer port", port)
    tc("qdisc", "add", "dev", "lo", "root", "handle", "1:", "htb", "default", "10")
    tc("class", "add", "dev", "lo", "parent", "1:", "classid", "1:10", "htb", "rate", "10gbit")
    tc("class", "add", "dev", "lo", "parent", "1:", "classid", "1:20", "htb", "rate", "300kbit", "ceil", "300kbit")
    start = time.monotonic()
    last = 0
    for second in range(110):
        if second == 30:
            tc("filter", "add", "dev", "lo", "protocol", "ip", "parent", "1:", "prio", "1", "u32", "match", "ip", "dport", str(port), "0xffff", "flowid", "1:20")
            print("CAPPED")
        if second == 65:
            tc("filter", "del", "dev", "lo", "parent", "1:", "prio", "1")
            print("UNCAPPED")
        viewer.page.wait_for_timeout(1000)
        stats = media_server.room_stats(room_id)["forwarding"]
        layers = [(layer["bitrate_bps"] // 1000, layer["viewers"]) for layer in stats["layers"]]
        inbound = viewer.inbound().get("video", {})
        frames = inbound.get("framesDecoded", 0)
        quality = viewer.page.evaluate("() => window.bitbasel.session.quality")
        peers = media_server.rest("GET", f"/room/{room_id}/peers").json()["peers"]
        est = [p.get("estimate_bps") for p in peers if p["role"] == "viewer"]
        print(f"{time.monotonic() - start:5.1f} layers={layers} w={inbound.get('frameWidth')} fps={frames - last} q={quality and quality['layer']}/{quality and quality['reason']} pad={stats['padding_bytes'] // 1000}k est={est}")
        last = frames
    print(media_server.log_tail(30))
