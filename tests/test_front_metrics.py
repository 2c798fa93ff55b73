"""front/metrics.py without sockets: workers' expositions summed by name and labels."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from front.metrics import merge_expositions, render

WORKER_0 = """# HELP bitbasel_rooms Rooms not stopped
# TYPE bitbasel_rooms gauge
bitbasel_rooms 2.0
# HELP bitbasel_rtp_dropped_packets_total RTP packets dropped by the routers
# TYPE bitbasel_rtp_dropped_packets_total counter
bitbasel_rtp_dropped_packets_total{reason="malformed"} 1.0
bitbasel_rtp_dropped_packets_total{reason="too_old"} 4.0
# HELP bitbasel_delay_seconds Forwarding delay
# TYPE bitbasel_delay_seconds histogram
bitbasel_delay_seconds_bucket{le="0.001"} 3.0
bitbasel_delay_seconds_bucket{le="+Inf"} 5.0
bitbasel_delay_seconds_count 5.0
bitbasel_delay_seconds_sum 0.01
"""
WORKER_1 = """# HELP bitbasel_rooms Rooms not stopped
# TYPE bitbasel_rooms gauge
bitbasel_rooms 1.0
# HELP bitbasel_rtp_dropped_packets_total RTP packets dropped by the routers
# TYPE bitbasel_rtp_dropped_packets_total counter
bitbasel_rtp_dropped_packets_total{reason="too_old"} 6.0
bitbasel_rtp_dropped_packets_total{reason="duplicate"} 2.0
# HELP bitbasel_delay_seconds Forwarding delay
# TYPE bitbasel_delay_seconds histogram
bitbasel_delay_seconds_bucket{le="0.001"} 1.0
bitbasel_delay_seconds_bucket{le="+Inf"} 1.0
bitbasel_delay_seconds_count 1.0
bitbasel_delay_seconds_sum 0.0005
"""


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_samples_of_the_same_name_and_labels_are_summed_and_the_rest_kept() -> None:
    merged = {f.name: f for f in merge_expositions([WORKER_0, WORKER_1])}
    assert [s.value for s in merged["bitbasel_rooms"].samples] == [3.0]
    assert merged["bitbasel_rtp_dropped_packets"].type == "counter"
    drops = {s.labels["reason"]: s.value for s in merged["bitbasel_rtp_dropped_packets"].samples}
    assert drops == {"malformed": 1.0, "too_old": 10.0, "duplicate": 2.0}


def test_the_node_exposition_parses_back_with_histograms_whole_and_the_workers_counted() -> None:
    out = samples(render([WORKER_0, None, WORKER_1]).decode())
    assert out[("bitbasel_rooms", ())] == 3.0
    assert out[("bitbasel_delay_seconds_bucket", (("le", "0.001"),))] == 4.0
    assert out[("bitbasel_delay_seconds_bucket", (("le", "+Inf"),))] == 6.0
    assert out[("bitbasel_delay_seconds_count", ())] == 6.0
    assert abs(out[("bitbasel_delay_seconds_sum", ())] - 0.0105) < 1e-9
    assert out[("bitbasel_workers", ())] == 3.0 and out[("bitbasel_workers_scraped", ())] == 2.0


def test_no_worker_answering_gives_the_counts_alone() -> None:
    out = samples(render([None, None]).decode())
    assert out == {("bitbasel_workers", ()): 2.0, ("bitbasel_workers_scraped", ()): 0.0}
