"""`GET /metrics` on a front of media workers: every worker's exposition, summed.

Each worker renders its own `/metrics` (api/metrics.py); the front scrapes the ready ones at
once (each within SCRAPE_TIMEOUT_SECONDS) and adds up the samples that share a name and
labels: rooms, sessions, packets and bytes, drops by reason, histogram buckets (the workers'
bucket bounds are the same). So one scrape of the node counts every room and viewer wherever
they sit. ``bitbasel_workers`` (configured) and ``bitbasel_workers_scraped`` (answered this
time) say when a sum is partial: a worker that is starting again is left out of that scrape,
and its counters start again from zero when it is back (Prometheus's ``rate`` reads that as
a counter reset).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import httpx
import trio
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from front.worker_pool import Worker, WorkerPool

SCRAPE_TIMEOUT_SECONDS = 5.0

_SampleKey = tuple[str, tuple[tuple[str, str], ...]]


def merge_expositions(texts: Iterable[str]) -> list[Metric]:
    """The families of several text expositions, with the samples of the same name and labels
    summed; families and samples in the order first seen."""
    families: dict[str, Metric] = {}
    sums: dict[str, dict[_SampleKey, float]] = {}
    for text in texts:
        for family in text_string_to_metric_families(text):
            if family.name not in families:
                families[family.name] = Metric(family.name, family.documentation, family.type, family.unit)
                sums[family.name] = {}
            values = sums[family.name]
            for sample in family.samples:
                key = (sample.name, tuple(sorted(sample.labels.items())))
                values[key] = values.get(key, 0.0) + sample.value
    for name, family in families.items():
        for (sample_name, labels), value in sums[name].items():
            family.add_sample(sample_name, dict(labels), value)
    return list(families.values())


class _Families(Collector):
    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterator[Metric]:
        return iter(self._families)


def render(texts: list[str | None]) -> bytes:
    """The node's exposition: the answered workers' summed, and how many answered."""
    families = merge_expositions(text for text in texts if text is not None)
    families.append(GaugeMetricFamily("bitbasel_workers", "Media workers of this node", value=len(texts)))
    answered = sum(text is not None for text in texts)
    families.append(GaugeMetricFamily("bitbasel_workers_scraped", "Media workers summed in this scrape", answered))
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Families(families))
    return generate_latest(registry)


async def scrape_workers(pool: WorkerPool) -> list[str | None]:
    """Each worker's `/metrics` text, None for one that is not ready or did not answer in time."""
    texts: list[str | None] = [None] * len(pool.workers)

    async def scrape(slot: int, worker: Worker) -> None:
        if not worker.ready.is_set():
            return
        with trio.move_on_after(SCRAPE_TIMEOUT_SECONDS):
            try:
                response = await pool.http.get(worker.url + "/metrics", headers=pool.auth)
            except httpx.HTTPError:
                return
            if response.status_code == 200:
                texts[slot] = response.text

    async with trio.open_nursery() as nursery:
        for slot, worker in enumerate(pool.workers):
            nursery.start_soon(scrape, slot, worker)
    return texts
