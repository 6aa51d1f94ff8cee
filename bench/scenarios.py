"""The scenarios: each an async function of a running server and the options, returning its
metrics. Every one checks delivery while it measures: each subscriber must see each event of
its job once, in order (``lost``, ``duplicates``)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import servers
from bench.load import CONNECT_CONCURRENCY, Load, spread
from bench.procstat import Sampler, run_queue_wait, self_cpu, usage
from bench.publisher import (
    PipelinedConnection,
    PublishTally,
    close_all,
    drain_all,
    open_connections,
    paced,
    payload,
)
from bench.servers import HOST, Server

Metrics = dict[str, float | int | str]


@dataclass(frozen=True)
class Options:
    scale: float = 1.0
    # Latency is read from one subscriber in this many (all of them parse sequences).
    sample_every: int = 10
    # fanout stops publishing after this many seconds (a slow server then delivers fewer than
    # 2,000 events; its rate is measured on what it was given), to bound the bench's runtime.
    fanout_limit: float = 20.0


@dataclass(frozen=True)
class Metric:
    key: str
    label: str
    better: str  # "higher", "lower", or "zero" (a correctness count)
    digits: int = 0


def _count(base: int, scale: float) -> int:
    return max(1, round(base * scale))


def _seconds(base: float, scale: float, floor: float = 1.0) -> float:
    return max(floor, base * min(1.0, scale))


def _job_ids(prefix: str, count: int) -> list[str]:
    run = uuid.uuid4().hex[:8]
    return [f"{prefix}-{run}-{index}" for index in range(count)]


def _percentile(values: list[int], fraction: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] / 1000.0


class Window:
    """The server's CPU and peak RSS, and the generator's CPU, over a measurement window."""

    def __init__(self, server: Server) -> None:
        self.sampler = Sampler(server.pids)
        self.pids = server.pids

    def __enter__(self) -> Window:
        self.started = time.perf_counter()
        self.server_cpu_start = usage(self.pids).cpu_s
        self.generator_cpu_start = self_cpu()
        self.server_wait_start = run_queue_wait(self.pids)
        self.generator_wait_start = run_queue_wait([os.getpid()])
        self.sampler.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.sampler.__exit__(*exc)
        self.wall = time.perf_counter() - self.started
        self.server_cpu = usage(self.pids).cpu_s - self.server_cpu_start
        self.generator_cpu = self_cpu() - self.generator_cpu_start
        self.server_wait = run_queue_wait(self.pids) - self.server_wait_start
        self.generator_wait = run_queue_wait([os.getpid()]) - self.generator_wait_start

    def metrics(self) -> Metrics:
        wall = max(self.wall, 1e-9)
        return {
            "server_cpu_pct": 100.0 * self.server_cpu / wall,
            "server_peak_rss_mb": self.sampler.peak_rss_kb / 1024.0,
            "generator_cpu_pct": 100.0 * self.generator_cpu / wall,
            "server_cpu_wait_pct": 100.0 * self.server_wait / wall,
            "generator_cpu_wait_pct": 100.0 * self.generator_wait / wall,
        }

    def generator_capacity(self, events: int) -> float:
        """Events the generator would take per second of a whole CPU, at its cost per event
        in this window: far above the server's rate means the generator was not the limit."""
        return events / self.generator_cpu if self.generator_cpu > 0 else float("nan")


def _delivery(load: Load) -> Metrics:
    tally = load.tally
    errors = sum(tally.errors.values())
    kinds = ", ".join(f"{kind}: {n}" for kind, n in sorted(tally.errors.items()))
    return {
        "lost": load.lost,
        "undelivered": load.undelivered,
        "duplicates": tally.duplicates,
        "errors": errors,
        "error_kinds": kinds or "-",
        "reconnects": load.reconnects,
    }


async def _publish_in_order(
    server: Server, jobs: list[str], first_seq: int, count: int, depth: int = 64
) -> PublishTally:
    """``count`` events to each job, each job's over one connection (so in order)."""
    tally = PublishTally()
    per_port: dict[int, list[PipelinedConnection]] = {}
    for port in server.ports:
        per_port[port] = await open_connections(HOST, port, min(8, len(jobs)), tally, depth)
    try:
        for seq in range(first_seq, first_seq + count):
            for index, job in enumerate(jobs):
                port = server.ports[index % len(server.ports)]
                connections = per_port[port]
                connection = connections[(index // len(server.ports)) % len(connections)]
                if not connection.has_room:
                    await connection.wait_room()
                connection.write(server.publish_request(job, port, payload(seq)))
        for connections in per_port.values():
            await drain_all(connections)
    finally:
        for connections in per_port.values():
            close_all(connections)
    return tally


# -- fanout -------------------------------------------------------------------------------------


async def fanout(server: Server, options: Options) -> Metrics:
    """One job, 1,000 subscribers, 2,000 events published as fast as they are accepted."""
    subscribers = _count(1000, options.scale)
    events = _count(2000, options.scale)
    (job,) = _job_ids("fanout", 1)
    sample_every = max(1, subscribers // 100)
    load = Load(server, spread(server, [job], subscribers, events, sample_every))
    # A stream the server drops for being slow is resumed, as EventSource would; the drop is
    # still counted (errors, reconnects).
    load.resume_on_drop = True
    connect_s = await load.connect_all()
    port = server.ports[0]
    tally = PublishTally()
    (publisher,) = await open_connections(HOST, port, 1, tally, depth=32)
    try:
        with Window(server) as window:
            started = time.perf_counter()
            stop_at = started + options.fanout_limit
            published = 0
            while published < events and time.perf_counter() < stop_at:
                if not publisher.has_room:
                    await publisher.wait_room()
                publisher.write(server.publish_request(job, port, payload(published)))
                published += 1
            await publisher.drain()
            published_at = time.perf_counter()
            if published < events:
                load.retarget(published)
            complete = await load.wait_complete(within=30.0)
            ended = load.tally.completed_at if complete else time.perf_counter()
    finally:
        publisher.close()
        load.close_all()
    delivered = subscribers * published - load.lost - load.undelivered
    latencies = load.tally.latencies_us
    return {
        "delivered_per_s": delivered / (ended - started),
        "generator_capacity_per_s": window.generator_capacity(delivered),
        "events_published": published,
        "publish_per_s": published / (published_at - started),
        "latency_p50_ms": _percentile(latencies, 0.50),
        "latency_p99_ms": _percentile(latencies, 0.99),
        "connect_s": connect_s,
        **window.metrics(),
        **_delivery(load),
        "publish_errors": tally.errors,
        "complete": "yes" if complete else "no (timeout)",
    }


# -- many ---------------------------------------------------------------------------------------


async def many(
    server: Server, options: Options, connect_concurrency: int = CONNECT_CONCURRENCY
) -> Metrics:
    """10,000 subscribers over 1,000 jobs; 10 events/s per job (10,000 publishes/s) for 10 s.

    A server that does not take the target rate is measured again for half the duration at
    80 % of the rate it reached: the latency of a rate it sustains, next to the latency of the
    overload (where every queue is full and latency only says how long the queues are)."""
    job_count = _count(1000, options.scale)
    per_job = 10
    per_job_rate = 10.0
    duration = _seconds(10.0, options.scale * 10)
    events = max(1, round(per_job_rate * duration))
    jobs = _job_ids("many", job_count)
    load = Load(server, spread(server, jobs, per_job, events, options.sample_every))
    connect_s = await load.connect_all(concurrency=connect_concurrency)
    tally = PublishTally()
    ports = server.ports
    connections: list[PipelinedConnection] = []
    per_port = min(8, max(1, job_count // len(ports)))
    for port in ports:
        connections += await open_connections(HOST, port, per_port, tally, depth=64)
    # Job j always goes to the same connection (so its events stay in order), on port j % ports.
    job_connection = [
        (j % len(ports)) * per_port + (j // len(ports)) % per_port for j in range(job_count)
    ]
    requests_port = [ports[j % len(ports)] for j in range(job_count)]
    job_index = {job: j for j, job in enumerate(jobs)}
    next_seq = [0] * job_count
    issued = [0]  # publishes so far, over both phases: the round-robin over jobs continues

    def request(i: int) -> bytes:
        job = (issued[0] + i) % job_count
        seq = next_seq[job]
        next_seq[job] = seq + 1
        return server.publish_request(jobs[job], requests_port[job], payload(seq))

    async def phase(rate: float, seconds: float) -> tuple[int, float, bool]:
        total = max(1, round(rate * seconds))
        offset = issued[0]
        sent, publishing_s = await paced(
            connections,
            rate,
            total,
            lambda i: job_connection[(offset + i) % job_count],
            request,
            # A server that cannot take the rate gets what it took in 1.5 times the duration.
            deadline=asyncio.get_running_loop().time() + seconds * 1.5,
        )
        issued[0] += sent
        await drain_all(connections)
        load.retarget(lambda job: next_seq[job_index[job]])
        complete = await load.wait_complete(within=15.0)
        return sent, publishing_s, complete

    target_rate = per_job_rate * job_count
    try:
        with Window(server) as window:
            started = time.perf_counter()
            sent, publishing_s, complete = await phase(target_rate, duration)
            ended = load.tally.completed_at if complete else time.perf_counter()
        reached = sent / publishing_s
        latencies = load.tally.latencies_us
        at_target = {
            "latency_p50_ms": _percentile(latencies, 0.50),
            "latency_p99_ms": _percentile(latencies, 0.99),
        }
        delivered = per_job * sent - load.lost - load.undelivered
        sustained = {"sustained_per_s": reached, **at_target}
        if reached < 0.95 * target_rate and not complete:
            # Still delivering the overload's backlog: no rate here is known to be sustained.
            nan = float("nan")
            sustained = {"sustained_per_s": nan, "latency_p50_ms": nan, "latency_p99_ms": nan}
        elif reached < 0.95 * target_rate:
            load.tally.latencies_us = []
            sent2, publishing2_s, complete = await phase(0.8 * reached, duration / 2)
            latencies = load.tally.latencies_us
            sustained = {
                "sustained_per_s": sent2 / publishing2_s,
                "latency_p50_ms": _percentile(latencies, 0.50),
                "latency_p99_ms": _percentile(latencies, 0.99),
            }
    finally:
        close_all(connections)
        load.close_all()
    return {
        "publish_target_per_s": target_rate,
        "publish_per_s": reached,
        "delivered_per_s": delivered / (ended - started),
        "generator_capacity_per_s": window.generator_capacity(delivered),
        "latency_p50_at_target_ms": at_target["latency_p50_ms"],
        "latency_p99_at_target_ms": at_target["latency_p99_ms"],
        **sustained,
        "connect_s": connect_s,
        **window.metrics(),
        **_delivery(load),
        "publish_errors": tally.errors,
        "complete": "yes" if complete else "no (timeout)",
    }


# -- many-sdk -----------------------------------------------------------------------------------

_ROOT = Path(__file__).resolve().parents[1]


async def many_sdk(server: Server, options: Options) -> Metrics:
    """``many`` published through the SDK: 10,000 subscribers over 1,000 jobs, 10 events/s per
    job for 10 s, from one process (bench/sdk_publisher.py: a task per job on one AsyncRelay,
    batching across jobs) whose CPU is measured on its own."""
    job_count = _count(1000, options.scale)
    per_job = 10
    per_job_rate = 10.0
    duration = _seconds(10.0, options.scale * 10)
    events = max(1, round(per_job_rate * duration))
    jobs = _job_ids("sdk", job_count)
    load = Load(server, spread(server, jobs, per_job, events, options.sample_every))
    connect_s = await load.connect_all()
    next_seq = dict.fromkeys(jobs, 0)

    async def phase(rate: float, seconds: float) -> tuple[dict[str, Any], bool]:
        spec = {
            "url": f"http://{HOST}:{server.ports[0]}",
            "jobs": jobs,
            "first": [next_seq[job] for job in jobs],
            "per_job": max(1, round(rate / job_count * seconds)),
            "rate": rate / job_count,
            # A relay that cannot take the rate gets what it took in 1.5 times the duration.
            "deadline_s": seconds * 1.5,
            "batch_window": 0.005,
        }
        child = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bench.sdk_publisher",
            cwd=_ROOT,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        out, _ = await child.communicate(json.dumps(spec).encode())
        if child.returncode != 0:
            raise RuntimeError(f"many-sdk: the SDK publisher exited with {child.returncode}")
        report: dict[str, Any] = json.loads(out)
        for job, sent in zip(jobs, report["sent"], strict=True):
            next_seq[job] += sent
        load.retarget(lambda job: next_seq[job])
        complete = await load.wait_complete(within=15.0)
        return report, complete

    target_rate = per_job_rate * job_count
    try:
        with Window(server) as window:
            started = time.perf_counter()
            report, complete = await phase(target_rate, duration)
            ended = load.tally.completed_at if complete else time.perf_counter()
        published = sum(report["sent"])
        publishing_s = max(float(report["publishing_s"]), 1e-9)
        reached = published / publishing_s
        latencies = load.tally.latencies_us
        at_target = {
            "latency_p50_ms": _percentile(latencies, 0.50),
            "latency_p99_ms": _percentile(latencies, 0.99),
        }
        delivered = per_job * published - load.lost - load.undelivered
        sustained = {"sustained_per_s": reached, **at_target}
        if reached < 0.95 * target_rate and complete:
            # As in `many`: the latency of a rate the relay sustains, 80 % of the one reached.
            load.tally.latencies_us = []
            second, complete = await phase(0.8 * reached, duration / 2)
            latencies = load.tally.latencies_us
            sustained = {
                "sustained_per_s": sum(second["sent"]) / max(second["publishing_s"], 1e-9),
                "latency_p50_ms": _percentile(latencies, 0.50),
                "latency_p99_ms": _percentile(latencies, 0.99),
            }
        elif reached < 0.95 * target_rate:
            nan = float("nan")
            sustained = {"sustained_per_s": nan, "latency_p50_ms": nan, "latency_p99_ms": nan}
    finally:
        load.close_all()
    return {
        "publish_target_per_s": target_rate,
        "publish_per_s": reached,
        "delivered_per_s": delivered / (ended - started),
        "latency_p50_at_target_ms": at_target["latency_p50_ms"],
        "latency_p99_at_target_ms": at_target["latency_p99_ms"],
        **sustained,
        "publisher_cpu_pct": 100.0 * float(report["cpu_s"]) / publishing_s,
        "publisher_requests_per_s": int(report["requests"]) / publishing_s,
        "events_per_request": published / max(1, int(report["requests"])),
        "generator_capacity_per_s": window.generator_capacity(delivered),
        "connect_s": connect_s,
        **window.metrics(),
        **_delivery(load),
        "publish_errors": int(report["errors"]),
        "publish_error_kinds": str(report["error_kinds"]),
        "complete": "yes" if complete else "no (timeout)",
    }


# -- idle ---------------------------------------------------------------------------------------


async def idle(server: Server, options: Options) -> Metrics:
    """10,000 idle streams for 20 s: memory per stream, CPU, time to open them all."""
    streams = _count(10_000, options.scale)
    hold = _seconds(20.0, options.scale, floor=0.5)
    jobs = _job_ids("idle", max(1, streams // 10))
    await asyncio.sleep(0.3)
    before = usage(server.pids)
    load = Load(server, spread(server, jobs, 10 if streams >= 10 else streams, 1, 1_000_000))
    try:
        connect_s = await load.connect_all()
        # One event per job: every stream is live, not only answered.
        publish = await _publish_in_order(server, jobs, 0, 1)
        complete = await load.wait_complete(within=30.0)
        with Window(server) as window:
            await asyncio.sleep(hold)
            after = usage(server.pids)
    finally:
        load.close_all()
    opened = load.tally.connected
    heartbeats = load.tally.heartbeats
    return {
        "streams": opened,
        "connect_s": connect_s,
        "kb_per_stream": (after.rss_kb - before.rss_kb) / max(1, opened),
        "cpu_s_idle": window.server_cpu,
        "rss_before_mb": before.rss_kb / 1024.0,
        "rss_with_streams_mb": after.rss_kb / 1024.0,
        "heartbeats_per_stream": heartbeats / max(1, opened),
        "hold_s": hold,
        "generator_cpu_pct": window.metrics()["generator_cpu_pct"],
        **_delivery(load),
        "publish_errors": publish.errors,
        "complete": "yes" if complete else "no (timeout)",
    }


# -- storm --------------------------------------------------------------------------------------


async def storm(server: Server, options: Options) -> Metrics:
    """10,000 subscribers over 1,000 jobs go away, 50 events per job are published, and all
    come back at once with Last-Event-ID: time until all have caught up, lost, duplicated."""
    job_count = _count(1000, options.scale)
    per_job = 10
    missed = 50
    jobs = _job_ids("storm", job_count)
    load = Load(server, spread(server, jobs, per_job, 1, options.sample_every))
    try:
        await load.connect_all()
        first = await _publish_in_order(server, jobs, 0, 1)
        if not await load.wait_complete(within=30.0):
            raise RuntimeError(f"storm: {load.undelivered} subscribers missed the first event")
        load.close_all()
        await asyncio.sleep(0.5)  # the server notices the streams are gone
        away = await _publish_in_order(server, jobs, 1, missed)
        for subscription in load.subscriptions:
            subscription.target = 1 + missed
        with Window(server) as window:
            started = time.perf_counter()
            reconnect_s = await load.connect_all(resume=True)
            complete = await load.wait_complete(within=30.0)
            ended = load.tally.completed_at if complete else time.perf_counter()
    finally:
        load.close_all()
    return {
        "subscribers": len(load.subscriptions),
        "catch_up_s": ended - started,
        "reconnect_s": reconnect_s,
        "delivered_per_s": len(load.subscriptions) * missed / (ended - started),
        "generator_capacity_per_s": window.generator_capacity(len(load.subscriptions) * missed),
        **window.metrics(),
        **_delivery(load),
        "publish_errors": first.errors + away.errors,
        "complete": "yes" if complete else "no (timeout)",
    }


# -- publish ------------------------------------------------------------------------------------


async def _saturate(
    server: Server, duration: float, request_for: Callable[[str, int], bytes]
) -> tuple[PublishTally, float, Metrics]:
    tally = PublishTally()
    port = server.ports[0]
    connections = await open_connections(HOST, port, 8, tally, depth=16)
    jobs = _job_ids("publish", 100)
    counter = [0]

    async def keep_full(connection: PipelinedConnection, end: float) -> None:
        while time.perf_counter() < end:
            await connection.wait_room()
            counter[0] += 1
            connection.write(request_for(jobs[counter[0] % len(jobs)], port))

    try:
        with Window(server) as window:
            started = time.perf_counter()
            end = started + duration
            await asyncio.gather(*(keep_full(c, end) for c in connections))
            await drain_all(connections)
            elapsed = time.perf_counter() - started
    finally:
        close_all(connections)
    return tally, elapsed, window.metrics()


async def publish(server: Server, options: Options) -> Metrics:
    """HTTP publishes per second: single events, and batches of 50 (progress-relay only)."""
    duration = _seconds(5.0, options.scale * 5)
    single, elapsed, window = await _saturate(
        server, duration, lambda job, port: server.publish_request(job, port, payload(0))
    )
    metrics: Metrics = {
        "publish_per_s": single.accepted / elapsed,
        "server_cpu_pct": window["server_cpu_pct"],
        "generator_cpu_pct": window["generator_cpu_pct"],
        "publish_errors": single.errors,
    }
    if server.batch:
        batch_size = 50
        batch = [payload(0)] * batch_size
        batched, elapsed, _ = await _saturate(
            server, duration, lambda job, port: server.batch_request(job, port, batch)
        )
        metrics["batch_events_per_s"] = batched.accepted * batch_size / elapsed
        metrics["batch_requests_per_s"] = batched.accepted / elapsed
        metrics["publish_errors"] = single.errors + batched.errors
    return metrics


async def publish_redis(server: Server, options: Options) -> Metrics:
    """``publish`` against one relay on Redis, then against one on the memory broker in the same
    run: what Redis costs a publish, as a ratio (``redis_vs_memory``)."""
    on_redis = await publish(server, options)
    with servers.progress_relay() as memory:
        on_memory = await publish(memory, options)
    metrics: Metrics = {
        **on_redis,
        "memory_publish_per_s": on_memory["publish_per_s"],
        "redis_vs_memory": float(on_redis["publish_per_s"]) / float(on_memory["publish_per_s"]),
        "memory_server_cpu_pct": on_memory["server_cpu_pct"],
        "publish_errors": int(on_redis["publish_errors"]) + int(on_memory["publish_errors"]),
    }
    if "batch_events_per_s" in on_redis and "batch_events_per_s" in on_memory:
        metrics["memory_batch_events_per_s"] = on_memory["batch_events_per_s"]
        metrics["batch_redis_vs_memory"] = float(on_redis["batch_events_per_s"]) / float(
            on_memory["batch_events_per_s"]
        )
    return metrics


# -- the table of scenarios ---------------------------------------------------------------------


@contextlib.contextmanager
def _relay_on_redis() -> Iterator[Server]:
    with servers.redis_server() as url, servers.progress_relay(instances=2, redis_url=url) as relay:
        yield relay


@contextlib.contextmanager
def _one_relay_on_redis() -> Iterator[Server]:
    with servers.redis_server() as url, servers.progress_relay(redis_url=url) as relay:
        yield relay


ServerFactory = Callable[[], contextlib.AbstractContextManager[Server]]


@dataclass(frozen=True)
class Scenario:
    name: str
    run: Callable[[Server, Options], Awaitable[Metrics]]
    servers: dict[str, ServerFactory]  # the ones it runs against; the others are "n/a"
    metrics: tuple[Metric, ...]


_ALL: dict[str, ServerFactory] = {
    "progress-relay": servers.progress_relay,
    "nchan": servers.nchan,
    "naive": servers.naive_relay,
}
_CORRECTNESS = (
    Metric("lost", "lost events (gaps)", "zero"),
    Metric("undelivered", "not delivered by the end (lost or late)", "zero"),
    Metric("duplicates", "duplicated events", "zero"),
    Metric("errors", "stream errors / drops", "zero"),
    Metric("error_kinds", "what the errors were", "zero"),
)
_RESOURCES = (
    Metric("server_cpu_pct", "server CPU %", "lower"),
    Metric("server_cpu_wait_pct", "server waiting for a CPU % (noise; summed)", "lower"),
    Metric("server_peak_rss_mb", "server peak RSS MB", "lower", 1),
    Metric("generator_cpu_pct", "generator CPU %", "lower"),
    Metric("generator_capacity_per_s", "generator capacity events/s (per CPU s)", "higher"),
)
_MANY_METRICS = (
    Metric("publish_target_per_s", "publishes/s asked (10 per job)", "higher"),
    Metric("publish_per_s", "publishes/s reached", "higher"),
    Metric("delivered_per_s", "delivered events/s", "higher"),
    Metric("latency_p50_at_target_ms", "latency p50 ms at the target rate", "lower", 1),
    Metric("latency_p99_at_target_ms", "latency p99 ms at the target rate", "lower", 1),
    Metric("sustained_per_s", "sustained publishes/s (80 % of reached)", "higher"),
    Metric("latency_p50_ms", "latency p50 ms, sustained rate", "lower", 1),
    Metric("latency_p99_ms", "latency p99 ms, sustained rate", "lower", 1),
    Metric("connect_s", "connect 10k s", "lower", 2),
    *_RESOURCES,
    *_CORRECTNESS,
)

SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario(
            "fanout",
            fanout,
            _ALL,
            (
                Metric("delivered_per_s", "delivered events/s", "higher"),
                Metric("publish_per_s", "publishes/s accepted", "higher"),
                Metric("events_published", "events published (limit 20 s)", "higher"),
                Metric("latency_p50_ms", "latency p50 ms", "lower", 1),
                Metric("latency_p99_ms", "latency p99 ms", "lower", 1),
                Metric("connect_s", "connect s", "lower", 2),
                *_RESOURCES,
                *_CORRECTNESS,
                Metric("reconnects", "resumed after a drop", "zero"),
            ),
        ),
        Scenario("many", many, _ALL, _MANY_METRICS),
        Scenario(
            "idle",
            idle,
            _ALL,
            (
                Metric("kb_per_stream", "memory per stream KB", "lower", 1),
                Metric("connect_s", "open all streams s", "lower", 2),
                Metric("cpu_s_idle", "server CPU s while idle", "lower", 2),
                Metric("rss_with_streams_mb", "RSS with streams MB", "lower", 1),
                Metric("heartbeats_per_stream", "heartbeats per stream", "higher", 2),
                Metric("generator_cpu_pct", "generator CPU %", "lower"),
                *_CORRECTNESS,
            ),
        ),
        Scenario(
            "storm",
            storm,
            {"progress-relay": servers.progress_relay, "nchan": servers.nchan},
            (
                Metric("catch_up_s", "all caught up s", "lower", 2),
                Metric("reconnect_s", "all reconnected s", "lower", 2),
                Metric("delivered_per_s", "missed events/s", "higher"),
                *_RESOURCES,
                *_CORRECTNESS,
            ),
        ),
        Scenario(
            "publish",
            publish,
            _ALL,
            (
                Metric("publish_per_s", "publishes/s (1 event)", "higher"),
                Metric("batch_events_per_s", "events/s (batches of 50)", "higher"),
                Metric("server_cpu_pct", "server CPU %", "lower"),
                Metric("generator_cpu_pct", "generator CPU %", "lower"),
                Metric("publish_errors", "failed publishes", "zero"),
            ),
        ),
        Scenario(
            "publish-redis",
            publish_redis,
            {"progress-relay": _one_relay_on_redis},
            (
                Metric("publish_per_s", "publishes/s (1 event), on Redis", "higher"),
                Metric("memory_publish_per_s", "publishes/s (1 event), memory broker", "higher"),
                Metric("redis_vs_memory", "Redis ÷ memory, same run (target ≥ 0.70)", "higher", 2),
                Metric("batch_events_per_s", "events/s (batches of 50), on Redis", "higher"),
                Metric("memory_batch_events_per_s", "events/s (batches of 50), memory", "higher"),
                Metric("batch_redis_vs_memory", "batches: Redis ÷ memory, same run", "higher", 2),
                Metric("server_cpu_pct", "relay CPU % on Redis (Redis's own not counted)", "lower"),
                Metric("memory_server_cpu_pct", "relay CPU % on memory", "lower"),
                Metric("publish_errors", "failed publishes", "zero"),
            ),
        ),
        Scenario(
            "many-sdk",
            many_sdk,
            {"progress-relay": servers.progress_relay},  # Nchan and the naive relay have no SDK
            (
                Metric("publish_target_per_s", "publishes/s asked (10 per job)", "higher"),
                Metric("publish_per_s", "publishes/s reached (through the SDK)", "higher"),
                Metric("delivered_per_s", "delivered events/s", "higher"),
                Metric("latency_p50_at_target_ms", "latency p50 ms at the target rate", "lower", 1),
                Metric("latency_p99_at_target_ms", "latency p99 ms at the target rate", "lower", 1),
                Metric("sustained_per_s", "sustained publishes/s (80 % of reached)", "higher"),
                Metric("latency_p50_ms", "latency p50 ms, sustained rate", "lower", 1),
                Metric("latency_p99_ms", "latency p99 ms, sustained rate", "lower", 1),
                Metric("publisher_cpu_pct", "publisher process CPU % (the SDK)", "lower"),
                Metric("publisher_requests_per_s", "HTTP requests/s the SDK sent", "lower"),
                Metric("events_per_request", "events per request", "higher", 1),
                Metric("publish_errors", "failed publishes", "zero"),
                Metric("connect_s", "connect 10k s", "lower", 2),
                *_RESOURCES,
                *_CORRECTNESS,
            ),
        ),
        Scenario(
            "many-redis",
            # 100 stream opens at a time: the relay's Redis pool (redis-py's default of 100
            # connections) answers 503 "Too many connections" to more at once.
            functools.partial(many, connect_concurrency=100),
            {"progress-relay": _relay_on_redis},
            _MANY_METRICS,
        ),
    )
}


def median(values: list[float]) -> float:
    return statistics.median(values)
