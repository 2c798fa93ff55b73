"""Starting a real server for a test: in-process, on 127.0.0.1, port 0.

Testing policy (after trio-websocket's): loopback only, port 0, no STUN server,
an absolute `trio.fail_after` around every I/O test, `autojump_clock` for timing
logic. The suite is run inside a private network namespace (.ci/run).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import msgspec
import trio

from api.server import ServerAddress, run_server
from core.config import Config

LOOPBACK_TOML = """
[server]
host = "127.0.0.1"
port = 0
[ice]
host_addresses = ["127.0.0.1"]
stun_servers = []
"""


def make_config(**sections: dict[str, Any]) -> Config:
    """The loopback test config with some sections' keys replaced."""
    config = msgspec.toml.decode(LOOPBACK_TOML, type=Config)
    for name, values in sections.items():
        config = msgspec.structs.replace(config, **{name: msgspec.structs.replace(getattr(config, name), **values)})
    return config


class RunningServer(msgspec.Struct):
    address: ServerAddress
    shutdown: trio.Event
    config: Config

    @property
    def url(self) -> str:
        return self.address.url

    @property
    def ws_url(self) -> str:
        return self.address.url.replace("http", "ws", 1) + "/ws"


@asynccontextmanager
async def running_server(config: Config | None = None) -> AsyncIterator[RunningServer]:
    config = config or make_config()
    shutdown = trio.Event()
    async with trio.open_nursery() as nursery:
        address = await nursery.start(run_server, config, shutdown)
        try:
            yield RunningServer(address=address, shutdown=shutdown, config=config)
        finally:
            shutdown.set()


@asynccontextmanager
async def http_client(server: RunningServer, **kwargs: Any) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server.url, timeout=10, **kwargs) as client:
        yield client
