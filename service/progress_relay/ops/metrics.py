"""/metrics in the Prometheus text format, from a registry of this app's own.

The relay's counters are plain integers (core/counts.py) read at scrape time by a collector,
so counting costs the hot path nothing but an integer add per publish or per write. Jobs by status
are asked of the broker at scrape time (with Redis, one pipelined read of every job's status).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Histogram, ProcessCollector, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from progress_relay.core.hub import Hub
from progress_relay.wire.errors import RelayError
from progress_relay.wire.snapshot import STATUSES

log = logging.getLogger(__name__)


# name, help, attribute of RelayCounts
_COUNTERS = (
    ("events_published", "Events accepted by publishes and cancel requests.", "published"),
    (
        "events_deduplicated",
        "Published events not published again: their idempotency key was already seen.",
        "duplicates",
    ),
    ("frames_delivered", "SSE frames written to streams.", "delivered"),
    ("stream_writes", "Writes to streams; each carries one or more frames.", "writes"),
    ("events_replayed", "Events sent from history to streams that (re)connected.", "replayed"),
    ("resets", "`reset` frames sent: history could not be replayed exactly.", "resets"),
    ("no_content", "Streams answered 204: finished and seen, or gone.", "no_content"),
    ("frames_conflated", "Waiting progress frames replaced by a newer one.", "conflated"),
    ("subscribers_dropped", "Streams dropped for falling too far behind.", "dropped"),
    ("write_timeouts", "Streams dropped because a write blocked too long.", "write_timeouts"),
    ("broker_errors", "Requests and catch-ups that found the broker unavailable.", "broker_errors"),
)


class _RelayCollector(Collector):
    def __init__(self, hub: Hub) -> None:
        self._hub = hub
        self.jobs: dict[str, int] | None = None

    def collect(self) -> Iterator[Metric]:
        hub = self._hub
        streams = GaugeMetricFamily("progress_relay_open_streams", "Streams open on this instance.")
        streams.add_metric([], hub.streams)
        yield streams
        if self.jobs is not None:
            jobs = GaugeMetricFamily(
                "progress_relay_jobs", "Jobs held by the broker, by status.", labels=["status"]
            )
            for status in STATUSES:
                jobs.add_metric([status], self.jobs.get(status, 0))
            yield jobs
        counts = hub.counts
        for name, text, attribute in _COUNTERS:
            counter = CounterMetricFamily(f"progress_relay_{name}", text)
            counter.add_metric([], getattr(counts, attribute))
            yield counter


class Metrics:
    def __init__(self, hub: Hub) -> None:
        self._hub = hub
        self.registry = CollectorRegistry()
        self._relay = _RelayCollector(hub)
        self.registry.register(self._relay)
        ProcessCollector(registry=self.registry)  # RSS, CPU seconds, open file descriptors
        self.publish_seconds = Histogram(
            "progress_relay_publish_seconds",
            "Time to store and fan out one publish request, broker included.",
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
            registry=self.registry,
        )
        hub.publish_timer = self.publish_seconds.observe

    async def render(self) -> bytes:
        try:
            self._relay.jobs = await self._hub.job_counts()
        except RelayError as exc:
            log.warning("/metrics without job counts: %s", exc)
            self._relay.jobs = None
        return generate_latest(self.registry)
