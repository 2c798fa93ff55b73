from __future__ import annotations

import os
import socket
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from tests.serving import RunningServer, make_config, running_server


def pytest_sessionstart(session: pytest.Session) -> None:
    """Refuse to run anywhere but a private network namespace with only loopback
    (`scripts/test` makes one with `unshare -rn`), so a test that reaches for an
    outside address cannot leak. BITBASEL_ALLOW_NETWORK=1 runs anyway."""
    interfaces = sorted(name for _, name in socket.if_nameindex())
    if interfaces != ["lo"] and os.environ.get("BITBASEL_ALLOW_NETWORK") != "1":
        raise pytest.UsageError(
            f"network interfaces {interfaces}: run the tests with scripts/test (a private network namespace "
            "where only loopback exists), or set BITBASEL_ALLOW_NETWORK=1"
        )


@pytest.fixture
async def server() -> AsyncIterator[RunningServer]:
    async with running_server(make_config(debug={"fault_injection": True})) as running:
        yield running


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Debian's Chromium under Playwright's sync API, for a module of browser tests."""
    from tests.browser_support import chromium_browser

    with chromium_browser() as launched:
        yield launched


@pytest.fixture
def context(browser: Any) -> Iterator[Any]:
    """A fresh browser context (its own cookies and pages) for one test; every wait bounded."""
    from tests.browser_support import WAIT_MS

    ctx = browser.new_context(viewport={"width": 1280, "height": 720})
    ctx.set_default_timeout(WAIT_MS)
    try:
        yield ctx
    finally:
        ctx.close()
