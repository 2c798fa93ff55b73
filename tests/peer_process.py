"""A host or viewer bot in a process of its own (for tests that SIGSTOP or kill a peer).

    python -m tests.peer_process WS_URL ROOM_ID host|viewer

Prints `connected` once its peer connection is up, then runs until killed.
"""

from __future__ import annotations

import sys

import trio
import trio_asyncio

from media_server_client.bots import open_host, open_viewer
from media_server_client.sources import TestPatternTrack, ToneTrack

LOOPBACK = ["127.0.0.1"]


async def main(url: str, room_id: str, role: str) -> None:
    async with trio_asyncio.open_loop():
        if role == "host":
            tracks = [TestPatternTrack(160, 120, 15), ToneTrack()]
            bot = open_host(url, room_id, user_id="alice", host_addresses=LOOPBACK, tracks=tracks)
        else:
            bot = open_viewer(url, room_id, host_addresses=LOOPBACK, decode=False)
        async with bot as peer:
            await peer.wait_connected()
            print("connected", flush=True)
            await trio.sleep_forever()


if __name__ == "__main__":
    trio.run(main, *sys.argv[1:4])
