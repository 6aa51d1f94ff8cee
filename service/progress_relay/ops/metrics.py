"""/metrics in the Prometheus text format (OpenMetrics when asked), from a registry of this
app's own.

The relay's counters are plain integers (core/counts.py) read at scrape time by a collector,
so counting costs the hot path nothing but an integer add per publish or per write. Jobs by status
are asked of the broker at scrape time (with Redis, one pipelined read of every job's status).
HTTP requests are counted by http/observe.py once answered, by route template, never by path:
every label has a bounded set of values. Names follow the Prometheus naming conventions; every
metric is listed in docs/operations.md.
"""

from __future__ import annotations

import logging
import platform
from collections.abc import Callable, Iterator

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    Info,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector

from progress_relay import __version__
from progress_relay.brokers import MemoryUse
from progress_relay.core.hub import Hub
from progress_relay.ops.webhooks import Webhooks
from progress_relay.wire.errors import RelayError
from progress_relay.wire.snapshot import STATUSES

log = logging.getLogger(__name__)

# A fast relay answers in well under a millisecond; a slow broker or a large batch takes longer.
_REQUEST_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
# Streams stay open as long as their jobs run: seconds to hours.
_STREAM_BUCKETS = (1, 5, 15, 60, 300, 900, 1800, 3600, 3 * 3600, 12 * 3600)
# Any other method is counted as "other": a client must not be able to mint label values.
_METHODS = frozenset(("GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH"))
UNMATCHED = "unmatched"
"""The route label of a request that matched no route (404, 405)."""


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
    (
        "write_timeouts",
        "Streams dropped because their client acknowledged nothing for stream.write_timeout.",
        "write_timeouts",
    ),
    ("broker_errors", "Requests and catch-ups that found the broker unavailable.", "broker_errors"),
    (
        "memory_refused",
        "Publishes, creates and cancels refused with 503 memory_full.",
        "memory_refused",
    ),
)


class _RelayCollector(Collector):
    def __init__(self, hub: Hub) -> None:
        self._hub = hub
        self.jobs: dict[str, int] | None = None
        self.memory: MemoryUse | None = None
        self.webhooks: Webhooks | None = None
        self.webhooks_dropped: int | None = None

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
        memory = self.memory
        if memory is not None:
            held = GaugeMetricFamily(
                "progress_relay_memory_bytes",
                "Bytes the broker holds for jobs (memory: the relay's count; Redis: used_memory).",
            )
            held.add_metric([], memory.held)
            yield held
            limit = GaugeMetricFamily(
                "progress_relay_memory_limit_bytes",
                "The bound on them: limits.memory_bytes, or Redis's maxmemory (0: none).",
            )
            limit.add_metric([], memory.limit)
            yield limit
            dropped = CounterMetricFamily(
                "progress_relay_histories_dropped",
                "Finished jobs' histories dropped to stay within the memory bound.",
            )
            dropped.add_metric([], memory.histories_dropped)
            yield dropped
        yield from self._webhooks()
        counts = hub.counts
        for name, text, attribute in _COUNTERS:
            counter = CounterMetricFamily(f"progress_relay_{name}", text)
            counter.add_metric([], getattr(counts, attribute))
            yield counter

    def _webhooks(self) -> Iterator[Metric]:
        webhooks = self.webhooks
        if webhooks is None:
            return
        counts = webhooks.counts
        for name, text, value in (
            ("webhooks_delivered", "Webhook deliveries a receiver took (2xx).", counts.delivered),
            ("webhooks_retried", "Webhook attempts after a delivery's first.", counts.retried),
            (
                "webhooks_failed",
                "Webhook deliveries given up after webhooks.retry_for.",
                counts.failed,
            ),
        ):
            counter = CounterMetricFamily(f"progress_relay_{name}", text)
            counter.add_metric([], value)
            yield counter
        if self.webhooks_dropped is not None:
            dropped = CounterMetricFamily(
                "progress_relay_webhooks_dropped",
                "Webhook deliveries dropped, the oldest first, past webhooks.outbox_size "
                "(with Redis: by every instance).",
            )
            dropped.add_metric([], self.webhooks_dropped)
            yield dropped


class Metrics:
    def __init__(self, hub: Hub, broker: str) -> None:
        """``broker``: the kind that runs, "memory" or "redis" (a label of build_info)."""
        self._hub = hub
        self.registry = registry = CollectorRegistry()
        self._relay = _RelayCollector(hub)
        registry.register(self._relay)
        ProcessCollector(registry=registry)  # RSS, CPU seconds, open file descriptors
        self.publish_duration = Histogram(
            "progress_relay_publish_duration_seconds",
            "Time to store and fan out one publish request, broker included.",
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
            registry=registry,
        )
        hub.publish_timer = self.publish_duration.observe
        Info("progress_relay_build", "The relay that runs: always 1.", registry=registry).info(
            {"version": __version__, "python": platform.python_version(), "broker": broker}
        )
        self._requests = Counter(
            "progress_relay_http_requests_total",
            "HTTP requests answered, by method, route template and status; streams once ended.",
            ("method", "route", "status"),
            registry=registry,
        )
        self._durations = Histogram(
            "progress_relay_http_request_duration_seconds",
            "Time to answer an HTTP request, streams excepted, by method and route template.",
            ("method", "route"),
            buckets=_REQUEST_BUCKETS,
            registry=registry,
        )
        self._streams = Histogram(
            "progress_relay_stream_duration_seconds",
            "How long SSE streams stayed open, by route template.",
            ("route",),
            buckets=_STREAM_BUCKETS,
            registry=registry,
        )
        # Each label set's child, looked up once: prometheus_client's labels() takes a lock and
        # checks its arguments every time. Bounded: methods x routes x statuses the relay answers.
        self._counted: dict[tuple[str, str, int], Callable[[], None]] = {}
        self._timed: dict[tuple[str, str, bool], Callable[[float], None]] = {}

    def watch_webhooks(self, webhooks: Webhooks) -> None:
        self._relay.webhooks = webhooks
        latency = Histogram(
            "progress_relay_webhook_latency_seconds",
            "Time from an event's publish to its webhook delivery, retries included.",
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 15, 60, 300, 900, 3600),
            registry=self.registry,
        )
        webhooks.latency_timer = latency.observe

    def answered(
        self, method: str, route: str | None, status: int, seconds: float, *, stream: bool
    ) -> None:
        """One HTTP request answered (a stream: ended). ``route`` is the route's template, None
        for a request that matched none."""
        if method not in _METHODS:
            method = "other"
        if route is None:
            route = UNMATCHED
        key = (method, route, status)
        count = self._counted.get(key)
        if count is None:
            count = self._counted[key] = self._requests.labels(method, route, str(status)).inc
        count()
        timed = (method, route, stream)
        observe = self._timed.get(timed)
        if observe is None:
            histogram = (
                self._streams.labels(route) if stream else self._durations.labels(*timed[:2])
            )
            observe = self._timed[timed] = histogram.observe
        observe(seconds)

    async def render(self, accept: str = "") -> tuple[bytes, str]:
        """The exposition and its content type: OpenMetrics if ``accept`` (the request's Accept
        header) asks for it, else the Prometheus text format."""
        try:
            self._relay.jobs = await self._hub.job_counts()
        except RelayError as exc:
            log.warning("/metrics without job counts: %s", exc)
            self._relay.jobs = None
        try:
            self._relay.memory = await self._hub.memory()
        except RelayError as exc:
            log.warning("/metrics without memory use: %s", exc)
            self._relay.memory = None
        webhooks = self._relay.webhooks
        if webhooks is not None:
            try:
                self._relay.webhooks_dropped = await webhooks.outbox.dropped()
            except RelayError as exc:
                log.warning("/metrics without dropped webhooks: %s", exc)
                self._relay.webhooks_dropped = None
        if "application/openmetrics-text" in accept:
            encode, content_type = choose_encoder(accept)
            return encode(self.registry), content_type
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
