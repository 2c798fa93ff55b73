"""BitBasel Media Server entry point.

    python app.py [--config PATH] [--host H] [--port P]

Serves REST and WebSocket signaling; prints `listening on http://HOST:PORT`
once it accepts connections. A bad configuration exits with code 2.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from pathlib import Path

import msgspec
import trio

from api.server import check_tls_files, run_server
from core.config import Config, ConfigError, load_config

log = logging.getLogger("bitbasel")


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="app.py", description="BitBasel Media Server (WebRTC SFU)")
    parser.add_argument("--config", type=Path, default=Path("config.toml"), help="TOML config file")
    parser.add_argument("--host", help="override [server] host")
    parser.add_argument("--port", type=int, help="override [server] port (0 = any free port)")
    parser.add_argument("--state-path", help='override [cluster] state_path (the room directory; "" = none)')
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
    return config


async def main(config: Config) -> None:
    shutdown = trio.Event()
    async with trio.open_nursery() as nursery:

        async def wait_for_signal() -> None:
            with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                async for signum in signals:
                    log.info("received %s", signal.Signals(signum).name)
                    shutdown.set()
                    return

        nursery.start_soon(wait_for_signal)
        address = await nursery.start(run_server, config, shutdown)
        scheme = "https" if config.server.tls else "http"
        print(f"listening on {scheme}://{address.host}:{address.port}", flush=True)
        await shutdown.wait()
    log.info("stopped")


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
        trio.run(main, config)
    except* ConfigError as group:  # found while starting (e.g. the media port is taken)
        failure = next(e for e in group.exceptions if isinstance(e, ConfigError))
    if failure is not None:
        print(f"config error: {failure}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(run(sys.argv[1:]))
