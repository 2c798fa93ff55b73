"""The router alone, a simulcast room against rooms of one layer (issue 20 without the transport;
not a test).

    .venv/bin/python bench/simulcast_micro.py [--viewers 100] [--seconds 20] [--profile]

``media.router.Router`` is fed what ``simulcast.py``'s rooms carry, with time passed in and no
I/O: the host's packets (its files packetized by ``raw_host.py``, 30 fps, Opus every 20 ms),
the host's sender reports once a second per stream, each viewer's RR + REMB once a second (REMB
by the quality it asks for, no loss), ``tick`` every 0.1 s followed by ``take_quality_changes``
and ``needed_rids`` as the room's ticker calls them. The viewers (quality ``low``, ``medium``,
``high`` in turn) offer the MID header extension as aiortc does; their ``send_rtp`` only counts.
After ``--warmup`` seconds of media (the high viewers' estimates climb to the top layer) the
next ``--seconds`` are timed (CPU time, best of ``--repeat``): ns of router per forwarded
packet, and per host packet. ``--profile`` runs the timed part once more under cProfile and
prints where the time goes, per forwarded packet.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parent.parent))

from make_media import SIMULCAST_LAYERS, load_simulcast_media
from raw_host import OPUS_PT, VP8_PT, AudioTrack, RtpStream, VideoLayer

from media.layers import Quality
from media.router import Router
from media.rtcp import ReportBlock, build_remb, build_rr
from media.rtp import MID_URI, RID_URI
from media.streams import SinkStream, SourceStream
from tests.raw_peer import MID_EXTENSION_ID, RID_EXTENSION_ID

QUALITIES: tuple[Quality, ...] = ("low", "medium", "high")
REMB_BPS = {"low": 400_000, "medium": 1_200_000, "high": 4_000_000}
VIEWER_MID_ID = 4  # aiortc's id for the MID extension (any id: one plan for all viewers)
TICK_SECONDS = 0.1  # actors/room.py's ticker
Event = tuple[float, int, Callable[[float], None]]  # (time, order among equal times, what happens)


class Room:
    """A router with a host of ``layers`` (names of SIMULCAST_LAYERS: simulcast when several)
    and ``viewers`` viewers; :meth:`events` is its timeline."""

    def __init__(self, layers: list[str], viewers: int) -> None:
        videos, audio = load_simulcast_media()
        files = dict(zip((layer.name for layer in SIMULCAST_LAYERS), videos, strict=True))
        rids = {layer.name: layer.rid for layer in SIMULCAST_LAYERS}
        simulcast = len(layers) > 1
        self.layers = [VideoLayer(name, rids[name] if simulcast else None, files[name], 0.0) for name in layers]
        self.audio = AudioTrack(audio, 0.0)
        self.router = Router(rtcp_ssrc=1, target_bitrate_bps=2_500_000)
        video_extensions = {MID_EXTENSION_ID: MID_URI} | ({RID_EXTENSION_ID: RID_URI} if simulcast else {})
        streams = [
            SourceStream("audio", OPUS_PT, 48_000, {MID_EXTENSION_ID: MID_URI}),
            SourceStream(
                "video", VP8_PT, 90_000, video_extensions, tuple(rids[name] for name in layers) if simulcast else ()
            ),
        ]
        self.router.attach_publisher(streams, _drop, 0.0)
        self.sent = 0
        self.viewer_rtcp: list[tuple[str, bytes]] = []
        for index in range(viewers):
            self._add_viewer(index)

    def _count(self, data: bytes) -> None:
        self.sent += 1

    def _add_viewer(self, index: int) -> None:
        audio_ssrc, video_ssrc = 0x10000 + 2 * index, 0x10001 + 2 * index
        sinks = [
            SinkStream("audio", audio_ssrc, OPUS_PT, 48_000, {MID_URI: VIEWER_MID_ID}, "0"),
            SinkStream("video", video_ssrc, VP8_PT, 90_000, {MID_URI: VIEWER_MID_ID}, "1"),
        ]
        quality = QUALITIES[index % len(QUALITIES)]
        viewer_id = f"v{index}"
        self.router.add_viewer(viewer_id, sinks, self._count, _drop, 0.0, quality)
        sender = 0x20000 + index
        blocks = [ReportBlock(ssrc, 0, 0, 0, 0, 0, 0) for ssrc in (video_ssrc, audio_ssrc)]
        compound = build_rr(sender, blocks) + build_remb(sender, REMB_BPS[quality], [video_ssrc, audio_ssrc])
        self.viewer_rtcp.append((viewer_id, compound))

    def events(self, start: float, end: float) -> list[Event]:
        """Everything that happens in [start, end), in order."""
        events: list[Event] = []
        frame = self.layers[0].file.frame_seconds
        for n in range(round(start / frame), round(end / frame)):
            at = n * frame
            for layer in self.layers:
                for packet in layer.frame_packets(at):
                    events.append((at, 1, self._rtp(packet)))
        audio_frame = self.audio.file.frame_seconds
        for n in range(round(start / audio_frame), round(end / audio_frame)):
            events.append((n * audio_frame, 0, self._rtp(self.audio.next_packet(n * audio_frame))))
        for n in range(round(start / TICK_SECONDS), round(end / TICK_SECONDS)):
            events.append((n * TICK_SECONDS + 0.001, 2, self._tick))
        streams: list[RtpStream] = [layer.rtp for layer in self.layers] + [self.audio.rtp]
        for second in range(int(start), int(end)):
            for stream in streams:
                events.append((second + 0.5, 3, self._sender_report(stream, second + 0.5)))
            for index, (viewer_id, compound) in enumerate(self.viewer_rtcp):
                at = second + index / len(self.viewer_rtcp)
                events.append((at, 4, self._viewer_rtcp(viewer_id, compound)))
        events.sort(key=lambda event: (event[0], event[1]))
        return events

    def _rtp(self, packet: bytes) -> Callable[[float], None]:
        on_rtp = self.router.on_publisher_rtp
        return lambda now: on_rtp(packet, now)

    def _sender_report(self, stream: RtpStream, at: float) -> Callable[[float], None]:
        report = stream.sender_report(at, 1_800_000_000.0 + at)
        on_rtcp = self.router.on_publisher_rtcp
        return lambda now: on_rtcp(report, now)

    def _viewer_rtcp(self, viewer_id: str, compound: bytes) -> Callable[[float], None]:
        on_rtcp = self.router.on_viewer_rtcp
        return lambda now: on_rtcp(viewer_id, compound, now)

    def _tick(self, now: float) -> None:
        self.router.tick(now)
        self.router.take_quality_changes()
        self.router.needed_rids(now)


def _drop(data: bytes) -> None:
    pass


def play(events: list[Event]) -> None:
    for at, _, happen in events:
        happen(at)


def measure(layers: list[str], args: argparse.Namespace) -> dict[str, float]:
    """(ns per forwarded packet, ns per host packet, forwarded per host packet), best of repeats,
    each on a new room warmed up the same way."""
    best: dict[str, float] = {}
    for _ in range(args.repeat):
        room = Room(layers, args.viewers)
        play(room.events(0.0, args.warmup))
        timed = room.events(args.warmup, args.warmup + args.seconds)
        sent0, in0 = room.sent, room.router.statistics().packets_in
        started = time.process_time_ns()
        play(timed)
        ns = time.process_time_ns() - started
        sent, host = room.sent - sent0, room.router.statistics().packets_in - in0
        if not best or ns / sent < best["ns_per_forwarded"]:
            layer_viewers = {layer.name: layer.viewers for layer in room.router.layers()}
            best = {"ns_per_forwarded": ns / sent, "ns_per_host": ns / host, "fan_out": sent / host, "sent": sent}
            best.update({f"viewers_{name}": float(count) for name, count in layer_viewers.items()})
    return best


def profile(layers: list[str], args: argparse.Namespace, top: int) -> None:
    room = Room(layers, args.viewers)
    play(room.events(0.0, args.warmup))
    timed = room.events(args.warmup, args.warmup + args.seconds)
    sent0 = room.sent
    profiler = cProfile.Profile(time.process_time)
    profiler.enable()
    play(timed)
    profiler.disable()
    sent = room.sent - sent0
    stats = pstats.Stats(profiler)
    rows = sorted(stats.stats.items(), key=lambda item: -item[1][2])  # type: ignore[attr-defined]
    print(f"\n{'+'.join(layers)}: cProfile, {sent:,} forwarded packets; ns per forwarded packet")
    print(f"{'tottime':>9} {'cumtime':>9} {'calls':>9}  function")
    for (path, line, name), (_, calls, tottime, cumtime, _) in rows[:top]:
        where = f"{Path(path).name}:{line}" if line else path
        print(f"{1e9 * tottime / sent:>9.0f} {1e9 * cumtime / sent:>9.0f} {calls:>9,}  {name} ({where})")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--viewers", type=int, default=100)
    parser.add_argument("--warmup", type=float, default=20.0, help="seconds of media before the timed part")
    parser.add_argument("--seconds", type=float, default=20.0, help="seconds of media timed")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--profile", action="store_true", help="and where the time goes (cProfile)")
    parser.add_argument("--top", type=int, default=25, help="functions shown by --profile")
    args = parser.parse_args(argv)
    rooms = {"simulcast": ["low", "medium", "high"], "high": ["high"], "medium": ["medium"]}
    results = {name: measure(layers, args) for name, layers in rooms.items()}
    print(f"router alone, {args.viewers} viewers, {args.seconds:.0f} s of media timed after {args.warmup:.0f} s")
    print(f"{'room':10} {'ns/fwd pkt':>10} {'ns/host pkt':>11} {'fan-out':>7}  layers: viewers")
    for name, r in results.items():
        viewers = " ".join(f"{k.removeprefix('viewers_')}={v:.0f}" for k, v in r.items() if k.startswith("viewers_"))
        print(f"{name:10} {r['ns_per_forwarded']:>10.0f} {r['ns_per_host']:>11.0f} {r['fan_out']:>7.1f}  {viewers}")
    for baseline in ("high", "medium"):
        ratio = results["simulcast"]["ns_per_forwarded"] / results[baseline]["ns_per_forwarded"]
        print(f"simulcast / {baseline}, router ns per forwarded packet: {ratio:.2f}x")
    if args.profile:
        for layers in rooms.values():
            profile(layers, args, args.top)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
