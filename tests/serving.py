"""Starting a real server for a test: in-process, on 127.0.0.1, port 0.

Testing policy (after trio-websocket's): loopback only, port 0, no STUN server,
an absolute `trio.fail_after` around every I/O test, `autojump_clock` for timing
logic. The suite is run inside a private network namespace (.ci/run).
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any, TypeVar

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
udp_port = 0
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


T = TypeVar("T")
ROOT = Path(__file__).resolve().parent.parent


@contextmanager
def app_process(*args: str) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """`python app.py ARGS` in a child process: yields it and the first line it printed
    (`listening on ...` once it serves). Killed at exit if still running."""
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "app.py"), *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        yield process, process.stdout.readline().strip()
    finally:
        process.kill()
        process.wait()


class ServerProcess(msgspec.Struct):
    process: subprocess.Popen[str]
    url: str
    log_path: Path

    @property
    def ws_url(self) -> str:
        return self.url.replace("http", "ws", 1) + "/ws"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@contextmanager
def server_process(directory: Path, *, port: int = 0, **sections: dict[str, Any]) -> Iterator[ServerProcess]:
    """`python app.py` on 127.0.0.1 with loopback candidates, `[debug] fault_injection` on (for
    `/debug/runtime`) and `sections` merged into its config. Its log goes to a file, so a chatty
    server never blocks on a full pipe. Killed at exit if still running."""
    config: dict[str, dict[str, Any]] = {
        "ice": {"host_addresses": ["127.0.0.1"], "udp_port": 0},
        "debug": {"fault_injection": True},
    }
    for name, values in sections.items():
        config[name] = {**config.get(name, {}), **values}
    config_path = directory / "server.toml"
    # JSON scalars and lists of them are valid TOML values
    config_path.write_text(
        "".join(
            f"[{name}]\n" + "".join(f"{key} = {msgspec.json.encode(value).decode()}\n" for key, value in values.items())
            for name, values in config.items()
        )
    )
    log_path = directory / f"server-{len(list(directory.glob('server-*.log')))}.log"
    command = [sys.executable, str(ROOT / "app.py"), "--config", str(config_path), "--host", "127.0.0.1"]
    command += ["--port", str(port)]
    with log_path.open("w") as log:
        process = subprocess.Popen(
            command,
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
        )
    try:
        assert process.stdout is not None
        line = process.stdout.readline().strip()
        if not line.startswith("listening on "):
            raise AssertionError(f"the server did not start: {line!r}\n{log_path.read_text()[-3000:]}")
        yield ServerProcess(process=process, url=line.removeprefix("listening on "), log_path=log_path)
    finally:
        process.kill()
        process.wait()


async def create_room(client: httpx.AsyncClient, post: str) -> str:
    """A room for `post` hosted by user `alice`, through a client of a running server."""
    response = await client.post("/room/create", json={"post_id": post, "host_user_id": "alice"})
    response.raise_for_status()
    room_id: str = response.json()["room_id"]
    return room_id


def prometheus_values(text: str) -> dict[str, float]:
    """A Prometheus text exposition as ``{'name{labels}': value}`` (labels as written)."""
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            values[name] = float(value)
    return values


async def poll_until(fetch: Callable[[], Awaitable[T]], holds: Callable[[T], bool], *, interval: float = 0.1) -> T:
    """Fetch a remote process's state until `holds(state)` (another process: no event to wait on).
    Bound it with `trio.fail_after`."""
    while True:
        state = await fetch()
        if holds(state):
            return state
        await trio.sleep(interval)
