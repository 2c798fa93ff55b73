"""A viewer process of the benchmarks: N aiortc viewers of one room of our server, RTP counted,
nothing decoded (started by ``harness.start_viewer_procs``, not run by hand).

Each viewer is a real aiortc peer (``open_viewer(decode=False)``) whose SRTP-unprotected RTP is
counted at the DTLS transport (``harness.ViewerCounter``), never handed to aiortc's jitter
buffer or decoder. Talks to the bench as ``harness.serve_viewers`` says: ``progress``, ``ready``
(every viewer had a keyframe), ``snap`` and ``quit`` on stdin, ``closed``.

Since aiortc's receive path is bypassed, aiortc sends no RTCP for what arrives. With
``--receiver-reports`` each viewer sends, once a second, what a browser's receiver sends: a
compound RR (a block per stream: fraction and cumulative lost, extended highest sequence, LSR
and DLSR of the server's last SR) + REMB (``--remb-kbps``), so that the server's estimator has
real input for every viewer. ``--quality`` sends ``set_quality`` after joining.

    viewers.py --url ws://127.0.0.1:PORT/ws --room ROOM_ID --viewers N [--first-index I] [--stagger S]
               [--quality low,medium,high] [--receiver-reports] [--remb-kbps 400,1200,4000]

A list (``--quality``, ``--remb-kbps``) is dealt out by viewer index: viewer I gets the
(I mod len)-th item, so that viewers spread over several processes split as one room would.
"""

from __future__ import annotations

import argparse
import random
import re
import secrets
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, cast

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parent.parent))  # this checkout's media.rtcp

import trio
import trio_asyncio
from harness import LOOPBACK, KindCounter, ViewerCounter, serve_viewers

from media.errors import MalformedPacket
from media.rtcp import ReportBlock, SenderReport, build_remb, build_rr, parse_rtcp_untrusted
from media_server_client import aiortc_hooks as adapter
from media_server_client.bots import open_viewer
from media_server_client.containment import open_contained_loop
from media_server_client.messages import Quality, SetQuality
from tests.raw_peer import raw_peer

QUALITIES: tuple[Quality, ...] = ("auto", "high", "medium", "low", "audio_only")
RtcpSend = Callable[[bytes], Awaitable[None]]
REPORT_INTERVAL = 1.0  # seconds between two compounds of one viewer (a browser's is ~1 s)
DEFAULT_REMB_KBPS = 5000


def _ignore(data: bytes) -> None:
    pass


def section_ssrc(sdp: str, kind: str) -> int | None:
    """The first ``a=ssrc`` of the ``m=<kind>`` section (the server's stream to this viewer)."""
    sections = re.split(r"^(?=m=)", sdp, flags=re.MULTILINE)
    for section in sections:
        if section.startswith(f"m={kind} "):
            found = re.search(r"^a=ssrc:(\d+) ", section, re.MULTILINE)
            return int(found.group(1)) if found else None
    return None


class ReceiverReports:
    """One viewer's RTCP as a browser sends it: RR (a block per stream received) + REMB."""

    def __init__(self, counter: ViewerCounter, sdp: str, remb_bps: int) -> None:
        self.ssrc = secrets.randbits(32) or 1
        self.remb_bps = remb_bps
        self.streams: list[tuple[int, KindCounter]] = []
        for kind, kind_counter in (("video", counter.video), ("audio", counter.audio)):
            ssrc = section_ssrc(sdp, kind)
            if ssrc is not None:
                self.streams.append((ssrc, kind_counter))
        self._previous: dict[int, tuple[int, int]] = {}  # ssrc -> (expected, received) at the last report
        self._last_sr: dict[int, tuple[int, float]] = {}  # ssrc -> (NTP middle 32 bits, when it came)
        self.sent = 0

    def on_rtcp(self, data: bytes) -> None:
        """The server's RTCP to this viewer: its SRs' times are echoed in the next report."""
        try:
            packets = parse_rtcp_untrusted(data)
        except MalformedPacket:
            return
        for packet in packets:
            if isinstance(packet, SenderReport):
                self._last_sr[packet.ssrc] = ((packet.ntp >> 16) & 0xFFFFFFFF, time.monotonic())

    def _block(self, ssrc: int, counter: KindCounter, now: float) -> ReportBlock:
        expected, received = counter.expected(), counter.count
        before_expected, before_received = self._previous.get(ssrc, (0, 0))
        self._previous[ssrc] = (expected, received)
        interval_expected = expected - before_expected
        interval_lost = interval_expected - (received - before_received)
        fraction = (interval_lost << 8) // interval_expected if interval_expected > 0 and interval_lost > 0 else 0
        lsr, dlsr = 0, 0
        if ssrc in self._last_sr:
            lsr, at = self._last_sr[ssrc]
            dlsr = int((now - at) * 65536)
        return ReportBlock(ssrc, min(fraction, 255), max(0, expected - received), counter.highest, 0, lsr, dlsr)

    def compound(self) -> bytes:
        now = time.monotonic()
        blocks = [self._block(ssrc, counter, now) for ssrc, counter in self.streams if counter.count]
        ssrcs = [ssrc for ssrc, _ in self.streams]
        return build_rr(self.ssrc, blocks) + build_remb(self.ssrc, self.remb_bps, ssrcs)


async def send_reports(reports: ReceiverReports, send: RtcpSend) -> None:
    """A compound every REPORT_INTERVAL (the first at a random phase: 100 viewers do not report
    at the same moment), until cancelled or the transport closes."""
    await trio.sleep(random.uniform(0, REPORT_INTERVAL))
    while True:
        try:
            await send(reports.compound())
        except ConnectionError:
            return
        reports.sent += 1
        await trio.sleep(REPORT_INTERVAL)


def dealt(items: list[Any], index: int) -> Any:
    """Viewer ``index``'s item of a list dealt out by index."""
    return items[index % len(items)]


async def hold(args: argparse.Namespace, reports: ReceiverReports, send: RtcpSend, quit_now: trio.Event) -> None:
    """A connected viewer: its receiver reports (if asked for) until ``quit_now``."""
    async with trio.open_nursery() as nursery:
        if args.receiver_reports:
            nursery.start_soon(send_reports, reports, send)
        await quit_now.wait()
        nursery.cancel_scope.cancel()


def reports_for(args: argparse.Namespace, counter: ViewerCounter, sdp: str) -> ReceiverReports:
    counter.set_payload_types(sdp)
    return ReceiverReports(counter, sdp, 1000 * dealt(args.remb_kbps, counter.index))


async def join_aiortc(args: argparse.Namespace, counter: ViewerCounter, quit_now: trio.Event) -> None:
    """An aiortc viewer (the bots' ``open_viewer``), its RTP counted at its DTLS transport."""
    user_id = f"viewer{counter.index}"
    async with open_viewer(args.url, args.room, user_id=user_id, host_addresses=LOOPBACK, decode=False) as bot:
        if args.quality:
            await bot.set_quality(dealt(args.quality, counter.index))
        reports = reports_for(args, counter, bot.pc.remoteDescription.sdp)
        dtls_transports = adapter.dtls_transports(bot.pc)
        for dtls in dtls_transports:
            adapter.tap_srtp_receive(dtls, counter.on_rtp, reports.on_rtcp if args.receiver_reports else _ignore)
        await bot.wait_connected()
        counter.connected()
        # HOOK RTCDtlsTransport._send_rtp: SRTCP-protects what is RTCP, and sends it
        send = cast(RtcpSend, trio_asyncio.aio_as_trio(dtls_transports[0]._send_rtp))
        await hold(args, reports, send, quit_now)


async def join_raw(args: argparse.Namespace, counter: ViewerCounter, quit_now: trio.Event) -> None:
    """A viewer of raw parts (``tests/raw_peer.py``: a UDP socket, STUN, the project's DTLS,
    pylibsrtp; the MID header extension offered, as aiortc does): the same work for the server,
    a fraction of an aiortc viewer's CPU for the client."""
    user_id = f"viewer{counter.index}"
    async with raw_peer(args.url, args.room, user_id=user_id, mid_extension=True, connect=False) as (peer, session):
        if args.quality:
            await session.send(SetQuality(quality=dealt(args.quality, counter.index)))
        reports = reports_for(args, counter, peer.answer)
        peer.on_rtp = counter.on_rtp
        if args.receiver_reports:
            peer.on_rtcp = reports.on_rtcp
        await peer.connect()
        counter.connected()
        await hold(args, reports, peer.send_rtcp, quit_now)


async def viewers_main(args: argparse.Namespace) -> None:
    join = join_raw if args.kind == "raw" else join_aiortc

    async def one(counter: ViewerCounter, quit_now: trio.Event) -> None:
        await join(args, counter, quit_now)

    async with open_contained_loop():
        await serve_viewers(args.viewers, args.first_index, args.stagger, one)


def _list(kind: Callable[[str], Any]) -> Callable[[str], list[Any]]:
    return lambda text: [kind(item) for item in text.split(",")]


def _quality(text: str) -> Quality:
    if text not in QUALITIES:
        raise argparse.ArgumentTypeError(f"{text!r} is not one of {', '.join(QUALITIES)}")
    return text


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", required=True, help="the server's WebSocket URL")
    parser.add_argument("--room", required=True)
    parser.add_argument("--viewers", type=int, default=1)
    parser.add_argument("--first-index", type=int, default=0)
    parser.add_argument("--stagger", type=float, default=0.05, help="seconds between two viewers' joins")
    parser.add_argument(
        "--kind", choices=("aiortc", "raw"), default="aiortc", help="aiortc peers, or peers of raw parts (lean)"
    )
    parser.add_argument("--quality", type=_list(_quality), default=[], help="set_quality, dealt out by viewer index")
    parser.add_argument("--receiver-reports", action="store_true", help="RR + REMB once a second, as a browser")
    parser.add_argument(
        "--remb-kbps", type=_list(int), default=[DEFAULT_REMB_KBPS], help="the REMB, dealt out by viewer index"
    )
    args = parser.parse_args(argv)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the bench stops us (quit / SIGTERM)
    trio.run(viewers_main, args)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
