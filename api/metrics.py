"""`GET /metrics`: the server's state in Prometheus's text format (prometheus_client).

Nothing is counted on the media path for it: a scrape asks the supervisor for its
totals (rooms, sessions, the routers' counters summed over every room since the
start, forgotten rooms included, so counters never go back), reads the media
port's counters and forwarding-delay histogram, Trio's wake-up lag, the
WebSocket close codes and the webhook counts, and renders them on a registry
made for that scrape. Names and units after Prometheus's conventions
(`bitbasel_` prefix, `_total` counters, `_bytes`, `_seconds`).

Access, `[metrics] access`: `"off"` (404), `"open"` (like /health), `"api_key"`
(default: the REST API's bearer key, when one is set).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

import trio
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from actors.supervisor import ServerMetrics
from media.delay_histogram import DelayHistogram, DelaySnapshot
from media.router import DROP_REASONS, KEYFRAME_CAUSES
from transport.media_port import MediaPort
from transport.relay_port import RelayStatistics
from transport.settings import TRANSPORT_PROBLEMS

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
#: How often Trio's wake-up lag is sampled (each sample is one wake-up of an idle server).
LOOP_LAG_PERIOD_SECONDS = 0.5


class LoopLag:
    """How much later than asked Trio wakes a sleeping task: the control plane's lag."""

    def __init__(self) -> None:
        self.histogram = DelayHistogram()

    async def run(self) -> None:
        while True:
            start = trio.current_time()
            await trio.sleep(LOOP_LAG_PERIOD_SECONDS)
            late = trio.current_time() - start - LOOP_LAG_PERIOD_SECONDS
            self.histogram.record(int(late * 1e9))


def _histogram(name: str, documentation: str, snapshot: DelaySnapshot) -> HistogramMetricFamily:
    buckets: list[tuple[str, float]] = []
    cumulative = 0
    for bound_us, count in zip(snapshot.bounds_us, snapshot.counts, strict=False):
        cumulative += count
        buckets.append((repr(bound_us / 1e6), cumulative))
    buckets.append(("+Inf", snapshot.total))
    return HistogramMetricFamily(name, documentation, buckets=buckets, sum_value=snapshot.sum_us / 1e6)


class _Snapshot(Collector):
    """The metric families of one scrape, made from values read just before."""

    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterator[Metric]:
        return iter(self._families)


def render(
    server: ServerMetrics,
    port: MediaPort,
    *,
    loop_lag: DelaySnapshot,
    open_sessions: int,
    close_codes: Counter[int],
    webhooks: dict[str, int] | None = None,
    relay: RelayStatistics | None = None,
) -> bytes:
    """The text exposition of one scrape."""
    # read without the media lock: each counter is read whole, the histogram copied in one step
    delay = port.statistics.forwarding_delay.snapshot()
    counts = port.statistics
    port_counts = {
        "datagrams_received": counts.datagrams_received,
        "unknown_address": counts.unknown_address,
        "unknown_stun": counts.unknown_stun,
        "malformed": counts.malformed,
        "send_errors": counts.send_errors,
        "handler_errors": counts.handler_errors,
    }
    port_sessions = len(port.directory)
    forwarding = server.forwarding
    families: list[Metric] = []

    def gauge(name: str, documentation: str, value: float) -> None:
        families.append(GaugeMetricFamily(name, documentation, value=value))

    def counter(name: str, documentation: str, value: float) -> None:
        families.append(CounterMetricFamily(name, documentation, value=value))

    def labelled_counter(name: str, documentation: str, label: str, values: dict[str, int]) -> None:
        family = CounterMetricFamily(name, documentation, labels=[label])
        for key, value in sorted(values.items()):
            family.add_metric([key], value)
        families.append(family)

    gauge("bitbasel_rooms", "Rooms not stopped", server.active_rooms)
    gauge("bitbasel_rooms_known", "Rooms known (active and recently stopped)", server.known_rooms)
    sessions = GaugeMetricFamily("bitbasel_sessions", "Sessions joined to a room, by role", labels=["role"])
    sessions.add_metric(["host"], server.hosts)
    sessions.add_metric(["viewer"], server.viewers)
    families.append(sessions)
    gauge("bitbasel_websocket_sessions", "WebSocket signaling sessions open", open_sessions)
    gauge("bitbasel_media_sessions", "Peer connections registered on the media port", port_sessions)
    counter(
        "bitbasel_rtp_received_packets",
        "Host RTP packets received by the routers (an edge's through its relay too)",
        forwarding.packets_in,
    )
    counter("bitbasel_rtp_forwarded_packets", "RTP packets sent to viewers, resent ones too", forwarding.packets_out)
    counter("bitbasel_rtp_received_bytes", "Host RTP bytes received by the routers (before SRTP)", forwarding.bytes_in)
    counter("bitbasel_rtp_forwarded_bytes", "RTP bytes forwarded to viewers (before SRTP)", forwarding.bytes_out)
    counter("bitbasel_media_received_bytes", "SRTP/SRTCP bytes received from hosts", server.bytes_received)
    counter("bitbasel_media_sent_bytes", "SRTP/SRTCP bytes sent to viewers", server.bytes_sent)
    counter("bitbasel_nacks_served", "Viewer NACKs answered from the packet cache", forwarding.retransmissions)
    counter("bitbasel_plis_sent", "Keyframe requests (PLI) sent to hosts", forwarding.keyframe_requests_sent)
    counter("bitbasel_nacks_sent", "NACK packets sent to hosts for their losses", forwarding.nacks_sent)
    drops = CounterMetricFamily("bitbasel_rtp_dropped_packets", "RTP packets dropped by the routers", labels=["reason"])
    for reason in DROP_REASONS:
        drops.add_metric([reason], forwarding.drops.get(reason, 0))
    families.append(drops)
    labelled_counter(
        "bitbasel_layer_received_packets",
        "Host RTP packets received, by video layer",
        "layer",
        forwarding.layer_packets_in,
    )
    labelled_counter(
        "bitbasel_layer_switches", "Viewers' video layer changes, by reason", "reason", forwarding.layer_switches
    )
    labelled_counter(
        "bitbasel_keyframe_requests",
        "Keyframe requests (PLI) to hosts, by cause",
        "cause",
        {cause: forwarding.keyframe_requests.get(cause, 0) for cause in KEYFRAME_CAUSES},
    )
    layer_viewers = GaugeMetricFamily(
        "bitbasel_layer_viewers", "Viewers by the video layer they get now", labels=["layer"]
    )
    for layer in ("low", "medium", "high", "audio_only"):
        layer_viewers.add_metric([layer], server.layer_viewers.get(layer, 0))
    families.append(layer_viewers)
    counter("bitbasel_padding_bytes", "RTP padding sent to probe viewers' links", forwarding.padding_bytes)
    counter(
        "bitbasel_keyframe_waits",
        "Video packets held back from a viewer until its first keyframe",
        forwarding.drops.get("waiting_keyframe", 0),
    )
    problems = CounterMetricFamily(
        "bitbasel_transport_problems",
        "Peer connections' packets not sent or not read, and callback errors, by kind",
        labels=["kind"],
    )
    for kind in TRANSPORT_PROBLEMS:
        problems.add_metric([kind], server.transport_problems.get(kind, 0))
    families.append(problems)
    port_family = CounterMetricFamily("bitbasel_media_port_datagrams", "Datagrams of the media port", labels=["kind"])
    for kind, value in port_counts.items():
        port_family.add_metric([kind], value)
    families.append(port_family)
    families.append(
        _histogram(
            "bitbasel_forwarding_delay_seconds",
            "Kernel receive time of a host RTP packet to its send to every viewer",
            delay,
        )
    )
    families.append(
        _histogram("bitbasel_event_loop_lag_seconds", "How late Trio wakes a task that slept (control plane)", loop_lag)
    )
    labelled_counter(
        "bitbasel_websocket_closes",
        "WebSocket closes sent by the server",
        "code",
        {str(code): value for code, value in close_codes.items()},
    )
    counter("bitbasel_room_restarts", "Room actor restarts after a crash", server.room_restarts)
    counter("bitbasel_rooms_crashed", "Rooms stopped after crashing too often", server.rooms_crashed)
    if relay is not None:
        relay_family = CounterMetricFamily(
            "bitbasel_relay_datagrams", "Datagrams of the relay port (rooms across workers and nodes)", labels=["kind"]
        )
        for kind in RelayStatistics.__slots__:
            relay_family.add_metric([kind], getattr(relay, kind))
        families.append(relay_family)
    if webhooks is not None:
        deliveries = CounterMetricFamily("bitbasel_webhook_deliveries", "Webhook POSTs", labels=["result"])
        for result, value in sorted(webhooks.items()):
            deliveries.add_metric([result], value)
        families.append(deliveries)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Snapshot(families))
    return generate_latest(registry)
