"""A host or viewer bot in a process of its own (for tests that SIGSTOP or kill a peer, and
for the interop tests, whose browsers are driven synchronously).

    python -m tests.peer_process WS_URL ROOM_ID host|viewer [--decode] [--user USER]

Prints `connected` once its peer connection is up, then runs until killed. With `--decode` a
viewer decodes what it gets and prints `frames VIDEO AUDIO FIRST_FRAME_MS` every 0.25 s
(FIRST_FRAME_MS: from the start of the process to the first video frame, -1 before it).
"""

from __future__ import annotations

import argparse
import sys

import trio
import trio_asyncio

from media_server_client.bots import open_host, open_viewer
from media_server_client.sources import TestPatternTrack, ToneTrack

LOOPBACK = ["127.0.0.1"]


async def main(url: str, room_id: str, role: str, *, decode: bool = False, user: str = "alice") -> None:
    started = trio.current_time()
    async with trio_asyncio.open_loop():
        if role == "host":
            tracks = [TestPatternTrack(160, 120, 15), ToneTrack()]
            bot = open_host(url, room_id, user_id=user, host_addresses=LOOPBACK, tracks=tracks)
        else:
            bot = open_viewer(url, room_id, host_addresses=LOOPBACK, decode=decode)
        async with bot as peer:
            await peer.wait_connected()
            print("connected", flush=True)
            while role == "viewer" and decode:
                state = peer.state
                first = state.first_video_frame_at
                first_ms = -1 if first is None else round(1000 * (first - started))
                print(f"frames {state.video_frames} {state.audio_frames} {first_ms}", flush=True)
                await trio.sleep(0.25)
            await trio.sleep_forever()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("room_id")
    parser.add_argument("role", choices=["host", "viewer"])
    parser.add_argument("--decode", action="store_true")
    parser.add_argument("--user", default="alice")
    args = parser.parse_args(sys.argv[1:])
    trio.run(lambda: main(args.url, args.room_id, args.role, decode=args.decode, user=args.user))
