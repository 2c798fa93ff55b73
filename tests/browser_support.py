"""Helpers for the headless-Chromium tests (tests/test_browser.py).

The server runs as a subprocess (`python app.py --config <tmp> --port 0`), so
Playwright's sync API drives Chromium from plain sync test functions, away from
pytest-trio's loop. Chromium is Debian's (`/usr/bin/chromium`): Playwright's
own browser download is never used.

Every wait is bounded; nothing leaves loopback (run the suite inside
`unshare -rn`).
"""

from __future__ import annotations

import asyncio
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parent.parent
ARTIFACTS = REPO / "tests" / "artifacts"
CHROMIUM = Path(os.environ.get("BITBASEL_CHROMIUM", "/usr/bin/chromium"))

START_TIMEOUT_S = 30.0
WAIT_MS = 30_000  # every browser wait

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--use-fake-device-for-media-stream",
    "--use-fake-ui-for-media-stream",
    "--allow-loopback-in-peer-connection",
    # LocalNetworkAccessChecks: the "platform" page of the cross-origin test is not on loopback, the server is
    "--disable-features=WebRtcHideLocalIpsWithMdns,LocalNetworkAccessChecks",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-gpu",
    "--autoplay-policy=no-user-gesture-required",
]

SERVER_TOML = """
[server]
host = "127.0.0.1"
port = 0
[ice]
host_addresses = ["127.0.0.1"]
udp_port = 0
stun_servers = []
"""


@dataclass
class ServerProcess:
    url: str
    process: subprocess.Popen[str]
    log_path: Path
    lines: list[str] = field(default_factory=list)

    @property
    def ws_url(self) -> str:
        return self.url.replace("http", "ws", 1) + "/ws"

    def rest(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        return httpx.request(method, self.url + path, timeout=10, **kwargs)

    def create_room(self, post_id: str, host_user_id: str) -> str:
        response = self.rest("POST", "/room/create", json={"post_id": post_id, "host_user_id": host_user_id})
        response.raise_for_status()
        return str(response.json()["room_id"])

    def room_stats(self, room_id: str) -> dict[str, Any]:
        response = self.rest("GET", f"/room/{room_id}/stats")
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result

    def wait_room(self, room_id: str, timeout: float = 30.0, **expected: Any) -> dict[str, Any]:
        """Poll the room's stats until every expected field has its value."""
        deadline = time.monotonic() + timeout
        stats: dict[str, Any] = {}
        while time.monotonic() < deadline:
            stats = self.room_stats(room_id)
            if all(stats.get(k) == v for k, v in expected.items()):
                return stats
            time.sleep(0.1)
        raise AssertionError(f"room {room_id}: expected {expected} within {timeout} s, last stats {stats}")

    def log_tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


@contextmanager
def server_process(tmp_dir: Path, toml: str = SERVER_TOML, command: list[str] | None = None) -> Iterator[ServerProcess]:
    """Start `app.py` on a free loopback port; stop it with SIGINT (then SIGKILL) at the end."""
    config = tmp_dir / "browser-test.toml"
    config.write_text(toml)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    log_path = ARTIFACTS / "browser_server.log"
    log_file = log_path.open("w")
    process = subprocess.Popen(
        [*(command or [sys.executable, "app.py"]), "--config", str(config), "--port", "0"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=log_file,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert process.stdout is not None
    stdout = process.stdout
    lines: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        for line in stdout:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=pump, name="server-stdout", daemon=True).start()
    url = None
    deadline = time.monotonic() + START_TIMEOUT_S
    seen: list[str] = []
    try:
        while url is None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise RuntimeError(f"the server printed no 'listening on' line within {START_TIMEOUT_S} s: {seen}")
            try:
                line = lines.get(timeout=remaining)
            except queue.Empty:
                continue
            if line is None:
                raise RuntimeError(f"the server exited ({process.wait()}): {seen}\n{log_path.read_text()[-4000:]}")
            seen.append(line.rstrip())
            if line.startswith("listening on "):
                url = line.split("listening on ", 1)[1].strip()
        yield ServerProcess(url=url, process=process, log_path=log_path, lines=seen)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)
        log_file.close()


# ---- in-page helpers (JavaScript evaluated with page.evaluate) ---------------------------------

# The viewer's inbound-rtp counters, per kind.
JS_INBOUND = """async () => {
  const s = (window.bitbasel && window.bitbasel.session) || window.whep;  // whep.html: window.whep
  if (!s || !s.peerConnection) return null;
  const out = {};
  (await s.peerConnection.getStats()).forEach((r) => {
    if (r.type === 'inbound-rtp') out[r.kind] = {
      framesDecoded: r.framesDecoded ?? 0, frameWidth: r.frameWidth ?? 0, frameHeight: r.frameHeight ?? 0,
      packetsReceived: r.packetsReceived ?? 0, bytesReceived: r.bytesReceived ?? 0,
      totalSamplesReceived: r.totalSamplesReceived ?? 0, packetsLost: r.packetsLost ?? 0,
      keyFramesDecoded: r.keyFramesDecoded ?? 0, codecId: r.codecId ?? null,
    };
  });
  return out;
}"""

# The host's outbound-rtp counters, per kind (the biggest stream per kind).
JS_OUTBOUND = """async () => {
  const s = (window.bitbasel && window.bitbasel.session) || window.whep;  // whep.html: window.whep
  if (!s || !s.peerConnection) return null;
  const out = {};
  (await s.peerConnection.getStats()).forEach((r) => {
    if (r.type !== 'outbound-rtp') return;
    const prev = out[r.kind];
    if (prev && prev.bytesSent >= (r.bytesSent ?? 0)) return;
    out[r.kind] = {
      framesEncoded: r.framesEncoded ?? 0, frameWidth: r.frameWidth ?? 0, frameHeight: r.frameHeight ?? 0,
      packetsSent: r.packetsSent ?? 0, bytesSent: r.bytesSent ?? 0,
    };
  });
  return out;
}"""

# The inbound video's codec (`mimeType` of its codec stats), e.g. "video/H264".
JS_INBOUND_VIDEO_MIME = """async () => {
  const s = (window.bitbasel && window.bitbasel.session) || window.whep;
  if (!s || !s.peerConnection) return null;
  const stats = await s.peerConnection.getStats();
  let mime = null;
  stats.forEach((r) => {
    if (r.type === 'inbound-rtp' && r.kind === 'video' && r.codecId && stats.get(r.codecId)) {
      mime = stats.get(r.codecId).mimeType;
    }
  });
  return mime;
}"""

# True once the viewer's inbound video has decoded more than `arg` frames.
JS_FRAMES_DECODED_OVER = """async (n) => {
  const s = (window.bitbasel && window.bitbasel.session) || window.whep;  // whep.html: window.whep
  if (!s || !s.peerConnection) return false;
  let decoded = 0;
  (await s.peerConnection.getStats()).forEach((r) => {
    if (r.type === 'inbound-rtp' && r.kind === 'video') decoded = r.framesDecoded ?? 0;
  });
  return decoded > n;
}"""

# True once the viewer's inbound audio has received more than `arg` samples.
JS_AUDIO_SAMPLES_OVER = """async (n) => {
  const s = (window.bitbasel && window.bitbasel.session) || window.whep;  // whep.html: window.whep
  if (!s || !s.peerConnection) return false;
  let samples = 0;
  (await s.peerConnection.getStats()).forEach((r) => {
    if (r.type === 'inbound-rtp' && r.kind === 'audio') samples = r.totalSamplesReceived ?? 0;
  });
  return samples > n;
}"""

# How bright and how varied the <video>'s current frame is (0..255 per channel, mean and stdev).
JS_VIDEO_PIXELS = """(selector) => {
  const v = document.querySelector(selector);
  if (!v || !v.videoWidth) return null;
  const c = document.createElement('canvas');
  c.width = 160; c.height = 90;
  const g = c.getContext('2d');
  g.drawImage(v, 0, 0, c.width, c.height);
  const d = g.getImageData(0, 0, c.width, c.height).data;
  let sum = 0, sq = 0, n = 0;
  for (let i = 0; i < d.length; i += 4) {
    const y = 0.299 * d[i] + 0.587 * d[i + 1] + 0.114 * d[i + 2];
    sum += y; sq += y * y; n++;
  }
  const mean = sum / n;
  return { width: v.videoWidth, height: v.videoHeight, mean, stdev: Math.sqrt(Math.max(0, sq / n - mean * mean)) };
}"""


def write_metrics(name: str, values: dict[str, Any]) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / name
    existing: dict[str, Any] = {}
    if path.exists():
        try:
            existing = json.loads(path.read_text())
        except ValueError:
            existing = {}
    existing.update(values)
    path.write_text(json.dumps(existing, indent=2, sort_keys=True) + "\n")
    return path


def poll_page(page: Any, script: str, arg: Any = None, *, timeout: float = WAIT_MS / 1000, what: str = "") -> Any:
    """Evaluate an (async) page function every 100 ms until it returns something truthy.

    `page.wait_for_function` does not await a predicate's Promise (a pending
    Promise is truthy), and getStats() is async: hence this bounded loop.
    """
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        last = page.evaluate(script, arg)
        if last:
            return last
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what or script[:80]!r} (last: {last!r})")
        page.wait_for_timeout(100)


@contextmanager
def chromium_browser() -> Iterator[Any]:
    """Debian's Chromium under Playwright's sync API (a `playwright.sync_api.Browser`).

    Playwright's sync API runs its own asyncio loop, made by asyncio.new_event_loop(). With
    trio_asyncio imported (the server's tests import it) the global policy would make that a
    trio-asyncio SyncTrioEventLoop, which cannot run Playwright: use asyncio's default policy
    while the browser is up."""
    from playwright.sync_api import sync_playwright

    previous_policy = asyncio.get_event_loop_policy()
    asyncio.set_event_loop_policy(asyncio.DefaultEventLoopPolicy())
    try:
        with sync_playwright() as playwright:
            launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, timeout=WAIT_MS)
            try:
                yield launched
            finally:
                launched.close()
    finally:
        asyncio.set_event_loop_policy(previous_policy)
