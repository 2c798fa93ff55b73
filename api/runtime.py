"""`GET /debug/runtime`: what the process holds right now (tasks, fds, memory).

For leak hunting (tests/test_reliability.py, bench/soak.py): every number is
read fresh from Trio's task tree and /proc on each request.
"""

from __future__ import annotations

import os
from pathlib import Path

import msgspec
import trio

from media.delay_histogram import DelaySnapshot
from transport.media_port import MediaPort


class MediaPortStats(msgspec.Struct, frozen=True):
    udp_port: int
    sessions: int  # peer connections registered on the port
    datagrams_received: int
    unknown_address: int  # DTLS/RTP/RTCP from an address no session knows (dropped)
    unknown_stun: int  # STUN no session answers: unknown ufrag, malformed (dropped)
    malformed: int  # no known first byte (RFC 7983), or SRTP over 1,500 bytes (dropped)
    send_errors: int  # sendto refused, e.g. a full socket buffer (dropped)
    handler_errors: int  # datagrams whose handling raised (a bug; dropped, logged)
    #: RTP packets: kernel receive time to sent to every viewer (media/delay_histogram.py)
    forwarding_delay: DelaySnapshot


class RuntimeStats(msgspec.Struct, frozen=True):
    trio_tasks: int
    open_fds: int
    rss_bytes: int
    media_port: MediaPortStats | None = None


def _count_trio_tasks(task: trio.lowlevel.Task) -> int:
    return 1 + sum(_count_trio_tasks(child) for nursery in task.child_nurseries for child in nursery.child_tasks)


def _rss_bytes() -> int:
    try:
        resident_pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return 0
    return resident_pages * os.sysconf("SC_PAGE_SIZE")


def media_port_stats(port: MediaPort) -> MediaPortStats:
    counts = port.statistics  # read without the media lock (api/metrics.py says why)
    delay = counts.forwarding_delay.snapshot()
    return MediaPortStats(
        udp_port=port.port,
        sessions=len(port.directory),
        datagrams_received=counts.datagrams_received,
        unknown_address=counts.unknown_address,
        unknown_stun=counts.unknown_stun,
        malformed=counts.malformed,
        send_errors=counts.send_errors,
        handler_errors=counts.handler_errors,
        forwarding_delay=delay,
    )


def runtime_stats(port: MediaPort | None = None) -> RuntimeStats:
    root = trio.lowlevel.current_root_task()
    try:
        fds = len(os.listdir("/proc/self/fd"))
    except OSError:
        fds = 0
    return RuntimeStats(
        trio_tasks=_count_trio_tasks(root) if root is not None else 0,
        open_fds=fds,
        rss_bytes=_rss_bytes(),
        media_port=media_port_stats(port) if port is not None else None,
    )
