"""BitBasel Media Server entry point.

    python app.py [--config PATH] [--host H] [--port P]

Serves REST and WebSocket signaling; prints `listening on http://HOST:PORT`
once it accepts connections. A bad configuration exits with code 2.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from pathlib import Path

import msgspec
import trio

from api.server import ServerAddress, check_tls_files, run_server
from core.config import Config, ConfigError, load_config
from front.app import run_front

log = logging.getLogger("bitbasel")


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="app.py", description="BitBasel Media Server (WebRTC SFU)")
    parser.add_argument("--config", type=Path, default=Path("config.toml"), help="TOML config file")
    parser.add_argument("--host", help="override [server] host")
    parser.add_argument("--port", type=int, help="override [server] port (0 = any free port)")
    parser.add_argument("--state-path", help='override [cluster] state_path (the room directory; "" = none)')
    parser.add_argument("--worker-index", type=int, help=argparse.SUPPRESS)  # set by the front for its workers
    parser.add_argument("--node-id", help=argparse.SUPPRESS)  # the front's node id, for its workers' rows
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    return parser.parse_args(argv)


def effective_config(args: argparse.Namespace) -> Config:
    config = load_config(args.config)
    server = config.server
    if args.host is not None:
        server = msgspec.structs.replace(server, host=args.host)
    if args.port is not None:
        if not 0 <= args.port <= 65535:
            raise ConfigError(f"--port: {args.port} is not in 0..65535")
        server = msgspec.structs.replace(server, port=args.port)
    config = msgspec.structs.replace(config, server=server)
    if args.state_path is not None:
        cluster = msgspec.structs.replace(config.cluster, state_path=args.state_path)
        config = msgspec.structs.replace(config, cluster=cluster)
    if args.node_id is not None:
        config = msgspec.structs.replace(config, cluster=msgspec.structs.replace(config.cluster, node_id=args.node_id))
    if args.worker_index is not None:
        config = worker_config(config, args.worker_index)
    return config


def worker_config(config: Config, index: int) -> Config:
    """A media worker of the front (front/app.py): loopback HTTP for the front only, its own
    UDP port (`udp_port + index`; any with 0) and room directory."""
    ice = config.ice
    udp_port = ice.udp_port + index if ice.udp_port else 0
    state_path = f"{config.cluster.state_path}.worker{index}" if config.cluster.state_path else ""
    return msgspec.structs.replace(
        config,
        server=msgspec.structs.replace(config.server, host="127.0.0.1", port=0, certfile="", keyfile=""),
        ice=msgspec.structs.replace(ice, udp_port=udp_port),
        cluster=msgspec.structs.replace(config.cluster, workers=1, state_path=state_path),
    )


def worker_argv(args: argparse.Namespace) -> list[str]:
    """What the front passes on to each worker (the same config and overrides)."""
    argv = ["--config", str(args.config), "--log-level", args.log_level]
    if args.state_path is not None:
        argv += ["--state-path", args.state_path]
    return argv


def runs_front(config: Config) -> bool:
    """Several workers, or a node of a cluster: a front (front/app.py) over worker processes."""
    return config.cluster.workers != 1 or bool(config.cluster.redis_url)


async def exit_with_the_front() -> None:
    """A worker ends when its front does: the front holds the other end of the worker's stdin, so
    end of file there means the front is gone (even by kill -9) and nothing may serve its rooms."""
    stream = trio.lowlevel.FdStream(os.dup(sys.stdin.fileno()))
    while await stream.receive_some(4096):
        pass
    log.critical("the front is gone: this worker stops now (its rooms move to a live node)")
    os._exit(1)


async def main(config: Config, front_args: list[str] | None = None, worker_index: int | None = None) -> None:
    shutdown = trio.Event()
    async with trio.open_nursery() as nursery:

        async def wait_for_signal() -> None:
            with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                async for signum in signals:
                    log.info("received %s", signal.Signals(signum).name)
                    shutdown.set()
                    return

        nursery.start_soon(wait_for_signal)
        watching = trio.CancelScope()  # a worker watches its front until its own shutdown is done
        if worker_index is not None:

            async def watch_the_front() -> None:
                with watching:
                    await exit_with_the_front()

            nursery.start_soon(watch_the_front)
        if front_args is not None:  # [cluster] workers: the front of the media workers
            bind = await nursery.start(run_front, config, shutdown, front_args)
            print(f"listening on {bind}", flush=True)
        else:

            async def serve(*, task_status: trio.TaskStatus[ServerAddress] = trio.TASK_STATUS_IGNORED) -> None:
                await run_server(config, shutdown, worker_index=worker_index, task_status=task_status)
                watching.cancel()

            address = await nursery.start(serve)
            scheme = "https" if config.server.tls else "http"
            print(f"listening on {scheme}://{address.host}:{address.port}", flush=True)
        await shutdown.wait()
    log.info("stopped")


def first_config_error(group: BaseExceptionGroup[ConfigError]) -> ConfigError:
    """The first ConfigError of `group`, however deep: each nursery it crossed wraps it once
    more (the front's, inside `main`'s), and `except*` keeps that nesting."""
    found: BaseException = group
    while isinstance(found, BaseExceptionGroup):
        found = found.exceptions[0]
    assert isinstance(found, ConfigError)
    return found


def run(argv: list[str]) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    try:
        config = effective_config(args)
        check_tls_files(config)
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2
    failure: ConfigError | None = None
    try:
        front = worker_argv(args) if runs_front(config) and args.worker_index is None else None
        trio.run(main, config, front, args.worker_index)
    except* ConfigError as group:  # found while starting (e.g. the media port is taken)
        failure = first_config_error(group)
    if failure is not None:
        print(f"config error: {failure}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(run(sys.argv[1:]))
