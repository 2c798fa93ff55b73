"""The pages of the headless-Chromium tests: a tab of the go-live or watch page with its
uncaught errors recorded, and the steps every browser test takes (a room, a host page live,
a viewer page). Every wait is bounded."""

from __future__ import annotations

import time
from collections.abc import Callable
from itertools import count
from typing import Any
from urllib.parse import urlencode

import pytest
from playwright.sync_api import BrowserContext, Page

from tests.browser_support import (
    JS_AUDIO_SAMPLES_OVER,
    JS_FRAMES_DECODED_OVER,
    JS_INBOUND,
    JS_OUTBOUND,
    WAIT_MS,
    ServerProcess,
    poll_page,
)

WAIT_S = WAIT_MS / 1000

_post_ids = count(1)


def require_client_served(server: ServerProcess) -> None:
    """Fail at once, rather than let every page wait for a module that never loads."""
    module = server.rest("GET", "/static/bitbasel-media.js")
    if module.status_code != 200:
        pytest.fail(
            f"GET /static/bitbasel-media.js answers {module.status_code}: {module.text[:200]} "
            "(api/pages.py serves the pages and the JS client from web/)"
        )


class Tab:
    """A page with its uncaught errors and the WebSockets it opened recorded."""

    def __init__(self, context: BrowserContext, name: str) -> None:
        self.name = name
        self.page: Page = context.new_page()
        self.errors: list[str] = []
        self.console: list[str] = []
        self.websockets: list[str] = []
        self.page.on("pageerror", lambda exc: self.errors.append(str(exc)))
        self.page.on("console", lambda msg: self.console.append(f"{msg.type}: {msg.text}"))
        self.page.on("websocket", lambda ws: self.websockets.append(ws.url))

    def state(self) -> str | None:
        return self.page.get_attribute("#status", "data-state")

    def wait_state(self, state: str) -> None:
        try:
            self.page.wait_for_selector(f'#status[data-state="{state}"]', state="attached")
        except Exception as exc:
            raise AssertionError(
                f"{self.name}: #status never became {state!r} (is {self.state()!r}); console: {self.console[-10:]}"
            ) from exc

    def inbound(self) -> dict[str, dict[str, Any]]:
        return self.page.evaluate(JS_INBOUND) or {}

    def outbound(self) -> dict[str, dict[str, Any]]:
        return self.page.evaluate(JS_OUTBOUND) or {}

    def video_frames(self) -> int:
        return int(self.inbound().get("video", {}).get("framesDecoded", 0))

    def wait_frames_over(self, n: int) -> None:
        poll_page(self.page, JS_FRAMES_DECODED_OVER, n, timeout=WAIT_S, what=f"{self.name}: over {n} frames decoded")

    def wait_audio_samples_over(self, n: int) -> None:
        poll_page(self.page, JS_AUDIO_SAMPLES_OVER, n, timeout=WAIT_S, what=f"{self.name}: over {n} audio samples")

    def assert_no_errors(self) -> None:
        assert not self.errors, f"{self.name}: uncaught errors in the page: {self.errors}"


def wait_until(page: Page, condition: Callable[[], Any], what: str, timeout: float = WAIT_S) -> Any:
    """Check `condition` every 100 ms, bounded. Waits with `page.wait_for_timeout` so that
    Playwright keeps delivering events (a plain time.sleep would hold them back)."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what} (last: {value!r})")
        page.wait_for_timeout(100)


def new_room(server: ServerProcess, host_user: str = "alice") -> str:
    return server.create_room(f"post_browser_{next(_post_ids)}", host_user)


def open_host(context: BrowserContext, server: ServerProcess, room_id: str | None, user: str, **query: str) -> Tab:
    """The go-live page with the fake camera on (not live yet)."""
    host = Tab(context, "host")
    params = {"user": user, **query}
    if room_id:
        params["room"] = room_id
    host.page.goto(f"{server.url}/?{urlencode(params)}")
    host.page.wait_for_function("() => !!(window.bitbasel && window.bitbasel.stream)")
    return host


def start_live(host: Tab) -> None:
    host.page.click("#start")
    host.wait_state("live")


def open_viewer(context: BrowserContext, server: ServerProcess, room_id: str, name: str, **query: str) -> Tab:
    viewer = Tab(context, name)
    suffix = f"?{urlencode(query)}" if query else ""
    viewer.page.goto(f"{server.url}/watch/{room_id}{suffix}")
    viewer.page.wait_for_function("() => !!(window.bitbasel && window.bitbasel.session)")
    return viewer


def open_whep_page(context: BrowserContext, server: ServerProcess, room_id: str, name: str) -> Tab:
    """The minimal WHEP player (web/whep.html): its peer connection is `window.whep.peerConnection`."""
    tab = Tab(context, name)
    tab.page.goto(f"{server.url}/whep.html?room={room_id}")
    tab.page.wait_for_function("() => !!(window.whep && window.whep.peerConnection)")
    return tab
