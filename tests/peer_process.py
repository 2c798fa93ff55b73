"""A host or viewer bot in a process of its own (for tests that SIGSTOP or kill a peer, and
for the interop tests, whose browsers are driven synchronously).

    python -m tests.peer_process WS_URL ROOM_ID host|viewer [--decode] [--user USER]

Prints `connected` once its peer connection is up, then runs until killed. With `--decode` a
viewer decodes what it gets and prints `frames VIDEO AUDIO FIRST_FRAME_MS GAP_MS` every 0.25 s
(FIRST_FRAME_MS: from the start of the process to the first video frame, -1 before it;
GAP_MS: the longest time between two decoded video frames since the last report).

A viewer with `--qualities low,high,... --dump FILE` asks for each quality in turn (the next
one `--every` seconds after the server's `quality` message answered the last), prints
`quality LAYER` for each answer, then writes the video RTP it received (JSON: the VP8 payload
type, the layers it was told, and per packet ssrc, seq, timestamp and the payload's first
bytes) to FILE and prints `dumped`.
"""

from __future__ import annotations

import argparse
import json
import queue
import re
import subprocess
import sys
import threading
import time
from typing import TYPE_CHECKING, Any

import trio
import trio_asyncio

from media_server_client.bots import Bot, open_host, open_viewer
from media_server_client.messages import Quality
from media_server_client.sources import TestPatternTrack, ToneTrack

if TYPE_CHECKING:
    from tests.browser_support import ServerProcess

LOOPBACK = ["127.0.0.1"]
WAIT_S = 30.0


class PeerProcess:
    """An aiortc bot (tests/peer_process.py) in its own process."""

    def __init__(
        self, server: ServerProcess, room_id: str, role: str, *, user: str = "alice", options: tuple[str, ...] = ()
    ) -> None:
        argv = [sys.executable, "-m", "tests.peer_process", server.ws_url, room_id, role, "--user", user, *options]
        if role == "viewer":
            argv.append("--decode")
        self.lines: list[str] = []  # every line read so far
        self.process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        self.frames = (0, 0, -1)
        self.gaps_ms: list[int] = []  # per `frames` line once decoding: the longest gap between frames in it
        self.redirected_to: str | None = None  # a `reconnect` message's URL, once seen
        self._lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._pump, name="peer-process-stdout", daemon=True).start()

    def _pump(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._lines.put(line.strip())
        self._lines.put(None)

    def wait_connected(self, timeout: float = WAIT_S) -> None:
        self._read_until(lambda line: line == "connected", "connected", timeout)

    def _note(self, line: str) -> None:
        """What a line of the bot says: its frame counts, or the URL a `reconnect` named."""
        self.lines.append(line)
        if line.startswith("frames "):
            v, a, first, gap = (int(x) for x in line.split()[1:5])
            self.frames = (v, a, first)
            if first >= 0:
                self.gaps_ms.append(gap)
        elif line.startswith("redirected "):
            self.redirected_to = line.split()[1]

    def latest_frames(self) -> tuple[int, int, int]:
        """The frame counts of the newest line printed so far (the lines not read yet skipped)."""
        while True:
            try:
                line = self._lines.get_nowait()
            except queue.Empty:
                return self.frames
            if line is not None:
                self._note(line)

    def wait_redirected(self, timeout: float = WAIT_S) -> str:
        self._read_until(lambda _: self.redirected_to is not None, "a reconnect message", timeout)
        assert self.redirected_to is not None
        return self.redirected_to

    def wait_frames(self, video: int, audio: int, timeout: float = WAIT_S) -> tuple[int, int, int]:
        def enough(line: str) -> bool:
            return line.startswith("frames ") and self.frames[0] >= video and self.frames[1] >= audio

        self._read_until(enough, f"{video} video and {audio} audio frames", timeout)
        return self.frames

    def _read_until(self, done: Any, what: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                line = self._lines.get(timeout=remaining)
            except queue.Empty:
                break
            if line is None:
                raise AssertionError(f"the aiortc bot exited ({self.process.wait(5)}) before {what}")
            self._note(line)
            if done(line):
                return
        raise AssertionError(f"the aiortc bot: no {what} within {timeout} s (last: {self.frames})")

    def wait_line(self, line: str, timeout: float = WAIT_S) -> None:
        self._read_until(lambda read: read == line, repr(line), timeout)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)


def start_peer(
    server: ServerProcess, room_id: str, role: str, user: str = "alice", options: tuple[str, ...] = ()
) -> PeerProcess:
    peer = PeerProcess(server, room_id, role, user=user, options=options)
    try:
        peer.wait_connected()
    except BaseException:
        peer.stop()
        raise
    return peer


async def switch_and_dump(peer: Bot, qualities: list[Quality], every: float, dump: str) -> None:
    """Ask for each quality in turn (see the module's docstring), then write what came."""
    told: list[str] = []
    for quality in qualities:
        previous = peer.state.quality
        await peer.set_quality(quality)
        with trio.fail_after(WAIT_S):
            state = await peer.wait_for(lambda s, p=previous: s.quality is not p and s.quality is not None)
        assert state.quality is not None
        told.append(str(state.quality.layer))
        print(f"quality {state.quality.layer}", flush=True)
        await trio.sleep(every)
    answer = peer.pc.remoteDescription.sdp
    vp8 = int(re.search(r"a=rtpmap:(\d+) VP8/90000", answer).group(1))  # type: ignore[union-attr]
    packets = [[r.ssrc, r.sequence, r.timestamp, r.payload[:16].hex()] for r in peer.state.rtp if r.payload_type == vp8]
    await trio.Path(dump).write_text(json.dumps({"vp8": vp8, "told": told, "packets": packets}))
    print("dumped", flush=True)


async def main(
    url: str,
    room_id: str,
    role: str,
    *,
    decode: bool = False,
    user: str = "alice",
    qualities: list[Quality] | None = None,
    every: float = 3.0,
    dump: str | None = None,
    video_codec: str | None = None,
) -> None:
    started = trio.current_time()
    async with trio_asyncio.open_loop():
        if role == "host":
            tracks = [TestPatternTrack(160, 120, 15), ToneTrack()]
            bot = open_host(url, room_id, user_id=user, host_addresses=LOOPBACK, tracks=tracks, video_codec=video_codec)
        else:
            recording = dump is not None
            bot = open_viewer(url, room_id, host_addresses=LOOPBACK, decode=decode, record_received_rtp=recording)
        async with bot as peer, trio.open_nursery() as nursery:
            await peer.wait_connected()
            print("connected", flush=True)

            async def report_redirect() -> None:  # a `reconnect` message named another node
                state = await peer.wait_for(lambda s: s.redirected_to is not None)
                print(f"redirected {state.redirected_to}", flush=True)

            nursery.start_soon(report_redirect)
            if qualities and dump:
                nursery.start_soon(switch_and_dump, peer, qualities, every, dump)
            while role == "viewer" and decode:
                state = peer.state
                first = state.first_video_frame_at
                first_ms = -1 if first is None else round(1000 * (first - started))
                gap_ms = round(1000 * state.longest_video_gap)
                state.longest_video_gap = 0.0  # the next report's gap starts here
                print(f"frames {state.video_frames} {state.audio_frames} {first_ms} {gap_ms}", flush=True)
                await trio.sleep(0.25)
            await trio.sleep_forever()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("room_id")
    parser.add_argument("role", choices=["host", "viewer"])
    parser.add_argument("--decode", action="store_true")
    parser.add_argument("--user", default="alice")
    parser.add_argument("--qualities", type=lambda text: text.split(","), default=None)
    parser.add_argument("--every", type=float, default=3.0)
    parser.add_argument("--dump", default=None)
    parser.add_argument("--video-codec", default=None, help="host: publish this video codec alone (VP8, H264)")
    args = parser.parse_args(sys.argv[1:])
    trio.run(
        lambda: main(
            args.url,
            args.room_id,
            args.role,
            decode=args.decode,
            user=args.user,
            qualities=args.qualities,
            every=args.every,
            dump=args.dump,
            video_codec=args.video_codec,
        )
    )
