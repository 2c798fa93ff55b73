"""A viewer process of the benchmarks: N aiortc viewers of one room of our server, RTP counted,
nothing decoded (started by ``harness.start_viewer_procs``, not run by hand).

Each viewer is a real aiortc peer (``open_viewer(decode=False)``) whose SRTP-unprotected RTP is
counted at the DTLS transport (``harness.ViewerCounter``), never handed to aiortc's jitter
buffer or decoder. Talks to the bench as ``harness.serve_viewers`` says: ``progress``, ``ready``
(every viewer had a keyframe), ``snap`` and ``quit`` on stdin, ``closed``.

    viewers.py --url ws://127.0.0.1:PORT/ws --room ROOM_ID --viewers N [--first-index I] [--stagger S]
"""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import trio
from harness import LOOPBACK, ViewerCounter, serve_viewers

from media_server_client import aiortc_hooks as adapter
from media_server_client.bots import open_viewer
from media_server_client.containment import open_contained_loop


def _ignore(data: bytes) -> None:
    pass


async def viewers_main(url: str, room_id: str, count: int, first_index: int, stagger: float) -> None:
    async def join(counter: ViewerCounter, quit_now: trio.Event) -> None:
        user_id = f"viewer{counter.index}"
        async with open_viewer(url, room_id, user_id=user_id, host_addresses=LOOPBACK, decode=False) as bot:
            counter.set_payload_types(bot.pc.remoteDescription.sdp)
            for dtls in adapter.dtls_transports(bot.pc):
                adapter.tap_srtp_receive(dtls, counter.on_rtp, _ignore)
            await bot.wait_connected()
            counter.connected()
            await quit_now.wait()

    async with open_contained_loop():
        await serve_viewers(count, first_index, stagger, join)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", required=True, help="the server's WebSocket URL")
    parser.add_argument("--room", required=True)
    parser.add_argument("--viewers", type=int, default=1)
    parser.add_argument("--first-index", type=int, default=0)
    parser.add_argument("--stagger", type=float, default=0.05, help="seconds between two viewers' joins")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the bench stops us (quit / SIGTERM)
    trio.run(viewers_main, args.url, args.room, args.viewers, args.first_index, args.stagger)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
