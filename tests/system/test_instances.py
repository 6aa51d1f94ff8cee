"""Two relay instances on one Redis: the same events, the same ids, resumable on either."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import random
import time
import uuid
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient

from progress_relay.http.app import create_app
from progress_relay.http.keys import BROKER
from tests.support.app import make_settings, publish, publish_many, stream_opener
from tests.support.redis_server import RedisServer
from tests.support.sse_client import Frame, SSEReader

Client = TestClient[Any, Any]
TERMINAL = ("complete", "failed", "cancelled")


# The instances of these tests run in the test's own event loop beside all its clients: on a
# loaded machine a Redis reply can take longer than the default `broker.timeout` (2 s). The
# tests are about what is delivered, not how fast.
LOADED_BROKER_TIMEOUT = 10.0


@pytest.fixture
async def two_instances(
    aiohttp_client: Any, redis_server: RedisServer
) -> tuple[TestClient[Any, Any], TestClient[Any, Any]]:
    broker = {
        "url": redis_server.url,
        "key_prefix": f"i{uuid.uuid4().hex[:10]}:",
        "timeout": LOADED_BROKER_TIMEOUT,
    }
    a = await aiohttp_client(create_app(make_settings(broker=broker)))
    b = await aiohttp_client(create_app(make_settings(broker=broker)))
    return a, b


async def test_subscribers_on_both_instances_get_identical_frames(two_instances) -> None:
    a, b = two_instances
    first = await publish(a, "tab", "progress", {"percent": 1})
    async with (
        stream_opener(a)("/v1/jobs/tab/stream") as (_, on_a),
        stream_opener(b)("/v1/jobs/tab/stream") as (_, on_b),
    ):
        assert [f.id for f in await on_a.events(1)] == [first]
        assert [f.id for f in await on_b.events(1)] == [first]
        ids = [first]
        for step in range(2, 12):
            publisher = a if step % 2 else b
            ids.append(await publish(publisher, "tab", "progress", {"percent": step}))
        ids.append(await publish(b, "tab", "complete", {"result": "ok"}))
        async with stream_opener(b)("/v1/jobs/tab/stream") as (_, late):
            from_late = await late.until_end()
        from_a = await on_a.until_end()
        from_b = await on_b.until_end()
    raw = [(f.id, f.event, f.data) for f in from_a]
    assert raw == [(f.id, f.event, f.data) for f in from_b]
    assert [f.id for f in from_a] == ids[1:]
    assert [f.id for f in from_late] == ids


async def test_multi_job_stream_resumes_on_the_other_instance(two_instances) -> None:
    a, b = two_instances
    published: list[str] = []
    for round_ in range(4):
        for index, job in enumerate(("x", "y", "z")):
            instance = a if (round_ + index) % 2 else b
            published += await publish_many(instance, job, [("progress", {"step": round_})])
    async with stream_opener(a)("/v1/stream?job=x&job=y&job=z") as (_, reader):
        seen = await reader.events(5)
    assert [f.id for f in seen] == published[:5]
    for job in ("x", "y", "z"):
        published += await publish_many(a if job == "y" else b, job, [("complete", {})])
    headers = {"Last-Event-ID": seen[-1].id or ""}
    async with stream_opener(b)("/v1/stream?job=x&job=y&job=z", headers=headers) as (_, reader):
        rest = await reader.until_end()
    assert [f.id for f in rest] == published[5:]
    assert [f.json["job"] for f in rest[-3:]] == ["x", "y", "z"]


def seq_of(event_id: str) -> int:
    return int(event_id.rsplit("-", 1)[1])


def compact(data: Any) -> str:
    return json.dumps(data, separators=(",", ":"))


def as_published(event: str | None, payload: Any) -> Any:
    """A progress payload as its publisher sent it: the relay adds the snapshot's
    ``eta_seconds`` to it (the same bytes for every subscriber, checked apart)."""
    if event != "progress" or "eta_seconds" not in payload:
        return payload
    eta = payload["eta_seconds"]
    assert isinstance(eta, float) and eta >= 0, payload
    return {key: value for key, value in payload.items() if key != "eta_seconds"}


async def relays(aiohttp_client: Any, redis_server: RedisServer, **sections: Any) -> list[Client]:
    """Two instances of one deployment: the same Redis, the same (fresh) key prefix."""
    broker = {
        "url": redis_server.url,
        "key_prefix": f"i{uuid.uuid4().hex[:10]}:",
        "timeout": LOADED_BROKER_TIMEOUT,
    }
    settings = make_settings(broker=broker, **sections)
    return [await aiohttp_client(create_app(settings)) for _ in range(2)]


async def test_streams_opened_before_and_during_publishing_get_the_same_bytes_on_both(
    two_instances,
) -> None:
    a, b = two_instances
    published: list[tuple[str, str, Any]] = []  # (id, event, data) in publish order

    async def publish_step(step: int) -> None:
        instance = a if step % 2 else b
        if step % 5 == 4:
            batch = [("log", {"message": f"line {step}.{i}", "level": "info"}) for i in range(3)]
            ids = await publish_many(instance, "same", batch)
            published.extend((i, name, data) for i, (name, data) in zip(ids, batch, strict=True))
        else:
            data = {"percent": step, "stage": f"stage {step}"}
            published.append((await publish(instance, "same", "progress", data), "progress", data))

    path = "/v1/jobs/same/stream"
    async with contextlib.AsyncExitStack() as stack:
        # Opened before the job's first event: both wait for it, each on its own instance.
        _, on_a = await stack.enter_async_context(stream_opener(a)(path))
        _, on_b = await stack.enter_async_context(stream_opener(b)(path))
        for step in range(10):
            await publish_step(step)
        # Opened mid-way: full replay on B, and a resume on A from the fifth event.
        _, late = await stack.enter_async_context(stream_opener(b)(path))
        resume_from = published[4][0]
        _, resumed = await stack.enter_async_context(
            stream_opener(a)(path, headers={"Last-Event-ID": resume_from})
        )
        late_head = await late.events(3)  # attached and replaying before the rest comes
        for step in range(10, 20):
            await publish_step(step)
        done = {"result": {"pages": 3}, "message": "done"}
        published.append((await publish(b, "same", "complete", done), "complete", done))
        frames = {
            "a": await on_a.until_end(),
            "b": await on_b.until_end(),
            "late": [*late_head, *await late.until_end()],
            "resumed": await resumed.until_end(),
        }
    # The data as the relay stored it: what was published, progress with the relay's ETA.
    stored = await (await a.get("/v1/jobs/same/events")).json()
    relay_data = {event["id"]: event["data"] for event in stored["events"]}
    assert [as_published(name, relay_data[i]) for i, name, _ in published] == [
        data for _, _, data in published
    ]
    expected = [
        f"id: {i}\nevent: {name}\ndata: {compact(relay_data[i])}\n\n".encode()
        for i, name, _ in published
    ]
    assert [f.raw for f in frames["a"]] == expected
    assert [f.raw for f in frames["b"]] == expected
    assert [f.raw for f in frames["late"]] == expected
    assert [f.raw for f in frames["resumed"]] == expected[5:]
    seqs = [seq_of(i) for i, _, _ in published]
    assert seqs == sorted(set(seqs))


async def test_multi_job_stream_hops_between_instances_while_both_publish(two_instances) -> None:
    a, b = two_instances
    jobs = ("hx", "hy", "hz")
    path = "/v1/stream?job=hx&job=hy&job=hz"
    rng = random.Random(7)
    published: list[tuple[str, str]] = []  # (job, id); one publisher at a time: global id order
    for n, job in enumerate(jobs):
        published.append((job, await publish((a, b)[n % 2], job, "progress", {"percent": 0})))

    async def publisher() -> None:
        for step in range(1, 61):
            job = rng.choice(jobs)
            published.append((job, await publish((a, b)[step % 2], job, "log", {"message": job})))
            if step % 5 == 0:
                await asyncio.sleep(0.01)
        for n, job in enumerate(jobs):
            published.append((job, await publish((a, b)[n % 2], job, "complete", {})))

    seen: list[Frame] = []
    hops = 0
    async with asyncio.timeout(30):
        task = asyncio.create_task(publisher())
        while {f.json["job"] for f in seen if f.event == "complete"} != set(jobs):
            instance = (a, b)[hops % 2]  # A first, then B, A, ...
            headers = {"Last-Event-ID": seen[-1].id or ""} if seen else {}
            hops += 1
            async with stream_opener(instance)(path, headers=headers) as (response, reader):
                assert response.status == 200, "the stream ended before every job did"
                for _ in range(rng.randint(1, 8)):
                    frame = await reader.next(timeout=10)
                    if frame is None:
                        break
                    if frame.event is not None:
                        seen.append(frame)
        await task
        last = {"Last-Event-ID": seen[-1].id or ""}
        assert (await (a, b)[hops % 2].get(path, headers=last)).status == 204
    assert hops >= 6
    assert [(f.json["job"], f.id) for f in seen] == published
    seqs = [seq_of(f.id or "") for f in seen]
    assert all(x < y for x, y in itertools.pairwise(seqs))


async def test_multi_job_replay_racing_a_publish_on_the_other_instance_keeps_id_order(
    two_instances,
) -> None:
    """A multi-job stream reads its jobs' histories while another instance publishes to
    several of them. It must still send every event once and in id order, else a client
    resuming from its last id (the highest it saw) skips a lower one or gets one twice.

    The only white-box part: B's broker is wrapped so that A publishes to both jobs right
    after B's read, before B hands the stream over to live delivery."""
    a, b = two_instances
    x1 = await publish(a, "rx", "progress", {"percent": 1})
    y1 = await publish(a, "ry", "progress", {"percent": 1})
    broker: Any = b.app[BROKER]
    original = broker.replays
    raced: list[str] = []

    async def read_then_race(reads: Any) -> Any:
        found = await original(reads)
        if not raced:
            raced.append(await publish(a, "rx", "progress", {"percent": 2}))
            raced.append(await publish(a, "ry", "progress", {"percent": 2}))
            raced.append(await publish(a, "rx", "progress", {"percent": 3}))
        return found

    broker.replays = read_then_race
    try:
        async with stream_opener(b)("/v1/stream?job=rx&job=ry") as (_, reader):
            frames = await reader.events(5)
    finally:
        broker.replays = original
    received = [(f.json["job"], f.id) for f in frames]
    expected = [("rx", x1), ("ry", y1), ("rx", raced[0]), ("ry", raced[1]), ("rx", raced[2])]
    assert received == expected, "ids on a multi-job stream must be strictly increasing"


SOAK_SEED = int(os.environ.get("SOAK_SEED", "20261123"))  # a failure names its seed
SOAK_JOBS = 200
SOAK_EVENTS = 200  # per job; the last one is `complete`
SOAK_BATCH = 20
SOAK_RING = 60  # events of history kept per job
SOAK_SUBSCRIBERS = 40
SOAK_PUBLISHERS = 8  # publish requests in flight at once


def soak_event(job: str, index: int) -> tuple[str, Any]:
    if index == SOAK_EVENTS - 1:
        return "complete", {"result": {"job": job}}
    if index % 10 == 9:
        return "log", {"message": f"{job} {index}", "level": "info"}
    return "progress", {"percent": index // 2, "step": index, "stage": job}


class SoakSubscriber:
    """One client: its jobs, every event frame it read over all its connections."""

    def __init__(self, index: int, jobs: list[str]) -> None:
        self.rng = random.Random(SOAK_SEED * 1000 + index)
        self.index = index
        self.multi = self.rng.random() < 0.5
        self.jobs = (
            self.rng.sample(jobs, self.rng.randint(2, 5)) if self.multi else [self.rng.choice(jobs)]
        )
        if self.multi:
            self.path = "/v1/stream?" + "&".join(f"job={job}" for job in self.jobs)
        else:
            self.path = f"/v1/jobs/{self.jobs[0]}/stream"
        self.frames: list[Frame] = []
        self.last: str | None = None
        self.connections = 0
        self.cut = 0  # connections that ended before every job did (a drop is allowed)

    def job_and_payload(self, frame: Frame) -> tuple[str, Any]:
        body = frame.json
        if self.multi:
            assert set(body) == {"job", "data"}, frame.raw
            return body["job"], body["data"]
        return self.jobs[0], body

    def finished(self) -> set[str]:
        done = set()
        for frame in self.frames:
            job, payload = self.job_and_payload(frame)
            if frame.event in TERMINAL or (
                frame.event == "reset" and payload["status"] in ("completed", "failed", "cancelled")
            ):
                done.add(job)
        return done

    def url(self) -> tuple[str, dict[str, str]]:
        if self.last is None:
            return self.path, {}
        if self.rng.random() < 0.7:
            return self.path, {"Last-Event-ID": self.last}
        joiner = "&" if self.multi else "?"
        return f"{self.path}{joiner}last_event_id={self.last}", {}

    async def run(self, instances: tuple[Client, Client]) -> None:
        rng = self.rng
        await asyncio.sleep(rng.uniform(0, 1.5))
        while self.finished() != set(self.jobs):
            url, headers = self.url()
            self.connections += 1
            response = await rng.choice(instances).get(url, headers=headers)
            try:
                assert response.status == 200, (
                    f"subscriber {self.index} after {self.last}: {response.status} "
                    f"{await response.text()}"
                )
                reader = SSEReader(response)
                budget = rng.choice(
                    [
                        0,
                        rng.randint(1, 20),
                        rng.randint(20, 300),
                    ]
                )
                read = 0
                while read < budget:
                    try:
                        frame = await reader.next(timeout=30)
                    except (aiohttp.ClientPayloadError, aiohttp.ClientConnectionError):
                        frame = None
                    if frame is None:
                        if self.finished() != set(self.jobs):
                            self.cut += 1
                        break
                    if frame.event is None:
                        continue  # the `retry:` frame
                    self.frames.append(frame)
                    if frame.id is not None:
                        self.last = frame.id
                    read += 1
            finally:
                response.close()
            await asyncio.sleep(rng.uniform(0, 0.03))
        # Seen to the end: resuming anywhere is 204, so a browser stops reconnecting.
        url, headers = self.url()
        response = await rng.choice(instances).get(url, headers=headers)
        response.close()
        assert response.status == 204, f"subscriber {self.index}: {response.status} at the end"

    def check(self, published: dict[str, list[tuple[str, str, Any]]]) -> int:
        """Every event of each job exactly once, in order, or after a `reset` every event past
        its id exactly once; ids strictly increasing over all connections. Returns the resets."""
        who = f"subscriber {self.index} (seed {SOAK_SEED}, {self.path})"
        seqs = [seq_of(frame.id) for frame in self.frames if frame.id is not None]
        for before, after in itertools.pairwise(seqs):
            assert before < after, f"{who}: id seq {after} came after {before}"
        by_job: dict[str, list[tuple[Frame, Any]]] = {job: [] for job in self.jobs}
        for frame in self.frames:
            job, payload = self.job_and_payload(frame)
            assert job in by_job, f"{who}: a frame of job {job}"
            by_job[job].append((frame, payload))
        resets = 0
        for job, got in by_job.items():
            expected = published[job]
            ids = [event_id for event_id, _, _ in expected]
            position = 0  # index in `expected` of the event due next
            for frame, payload in got:
                if frame.event == "reset":
                    resets += 1
                    assert payload["id"] == job, f"{who}: {frame.raw!r}"
                    # Only the last reset of a group carries an id; each names its position.
                    reflected = payload["last_event_id"]
                    assert frame.id in (None, reflected), f"{who}: {frame.raw!r}"
                    after = ids.index(reflected) + 1 if reflected is not None else 0
                    assert after >= position, f"{who}: reset to {reflected} behind what it saw"
                    position = after
                    continue
                assert position < len(ids), f"{who}: {job}: {frame.id} after its terminal event"
                assert frame.id == ids[position], (
                    f"{who}: {job}: expected {ids[position]}, got {frame.id}"
                    + (" (a duplicate)" if frame.id in ids[:position] else " (events missed)")
                )
                sent = as_published(frame.event, payload)
                assert (frame.event, sent) == expected[position][1:], f"{who}: {frame.raw!r}"
                position += 1
            assert position == len(ids), f"{who}: {job}: {position} of {len(ids)} events"
        return resets


async def test_soak_reconnecting_subscribers_get_every_event_exactly_once(
    aiohttp_client: Any, redis_server: RedisServer
) -> None:
    # A ring shorter than a job's history: a subscriber away for long gets `reset`.
    settings = {"pending_ttl": 600.0, "ring_events": SOAK_RING}
    a, b = await relays(aiohttp_client, redis_server, jobs=settings)
    instances = (a, b)
    jobs = [f"soak{n:03d}" for n in range(SOAK_JOBS)]
    published: dict[str, list[tuple[str, str, Any]]] = {job: [] for job in jobs}
    subscribers = [SoakSubscriber(n, jobs) for n in range(SOAK_SUBSCRIBERS)]
    gate = asyncio.Semaphore(SOAK_PUBLISHERS)
    started = time.monotonic()

    async def create(n: int, job: str) -> None:
        # Every job exists (pending) before anyone subscribes: a resume naming a job that
        # does not exist is answered like one that was deleted.
        async with gate:
            response = await instances[n % 2].post("/v1/jobs", json={"id": job})
            assert response.status == 201, await response.text()

    async def publish_batch(n: int, job: str, round_: int) -> None:
        start = round_ * SOAK_BATCH
        batch = [soak_event(job, index) for index in range(start, start + SOAK_BATCH)]
        async with gate:
            ids = await publish_many(instances[(n + round_) % 2], job, batch)
        published[job].extend((i, name, data) for i, (name, data) in zip(ids, batch, strict=True))

    async def publisher() -> None:
        rng = random.Random(SOAK_SEED)
        for round_ in range(SOAK_EVENTS // SOAK_BATCH):
            order = list(enumerate(jobs))
            rng.shuffle(order)
            await asyncio.gather(*(publish_batch(n, job, round_) for n, job in order))
            await asyncio.sleep(0.1)

    async with asyncio.timeout(90):
        await asyncio.gather(*(create(n, job) for n, job in enumerate(jobs)))
        async with asyncio.TaskGroup() as group:
            group.create_task(publisher())
            for subscriber in subscribers:
                group.create_task(subscriber.run(instances))
    elapsed = time.monotonic() - started

    raw: dict[tuple[bool, str], bytes] = {}
    for subscriber in subscribers:
        for frame in subscriber.frames:
            if frame.event != "reset" and frame.id is not None:
                first = raw.setdefault((subscriber.multi, frame.id), frame.raw)
                assert frame.raw == first, "the same event, different bytes"
    for job in jobs:
        assert len(published[job]) == SOAK_EVENTS
    resets = sum(subscriber.check(published) for subscriber in subscribers)
    connections = sum(subscriber.connections for subscriber in subscribers)
    frames = sum(len(subscriber.frames) for subscriber in subscribers)
    cut = sum(subscriber.cut for subscriber in subscribers)
    print(
        f"soak: {SOAK_JOBS}x{SOAK_EVENTS} events, {SOAK_SUBSCRIBERS} subscribers, "
        f"{connections} connections, {frames} frames, {resets} resets, {cut} cut, "
        f"{elapsed:.1f} s"
    )


async def test_a_burst_of_stream_opens_waits_for_redis_connections_instead_of_failing(
    aiohttp_client: Any, redis_server: RedisServer
) -> None:
    """Far more streams opening at once than `broker.pool_size` connections: each waits for a
    connection (redis-py's plain pool answered "Too many connections", a 503)."""
    broker = {
        "url": redis_server.url,
        "key_prefix": f"i{uuid.uuid4().hex[:10]}:",
        "pool_size": 4,
        "timeout": LOADED_BROKER_TIMEOUT,
    }
    relay = await aiohttp_client(create_app(make_settings(broker=broker)))
    first = await publish(relay, "burst", "progress", {"percent": 1})

    async def open_and_read() -> str | None:
        async with stream_opener(relay)("/v1/jobs/burst/stream") as (response, reader):
            assert response.status == 200, await response.text()
            [frame] = await reader.events(1)
            return frame.id

    assert await asyncio.gather(*(open_and_read() for _ in range(200))) == [first] * 200
