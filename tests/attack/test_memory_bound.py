"""The total memory bound (limits.memory_bytes on the memory broker, Redis's maxmemory on Redis):
what the relay counts is what Python holds; past the bound the oldest finished histories go
first, then publishes and creates are refused whole with 503 memory_full, while reads and open
streams go on."""

from __future__ import annotations

import gc
import logging
import tracemalloc
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
import redis.asyncio as redis
from aiohttp.test_utils import TestClient
from msgspec import Raw

from progress_relay.brokers.memory import MemoryBroker
from progress_relay.config import JobSettings
from progress_relay.http.app import create_app
from progress_relay.wire.events import Draft, parse_publish
from tests.support.app import error_of, make_settings, parse_metrics, publish, stream_opener
from tests.support.redis_server import RedisServer

Client = TestClient[Any, Any]
MIB = 1024 * 1024
TEXT = "y" * 10_000  # one event of about 10 KB


def drafts(body: dict[str, Any]) -> list[Draft]:
    return parse_publish(
        msgspec.json.encode(body), max_event_bytes=65536, max_batch_events=1000, max_json_depth=64
    )


async def _load(broker: MemoryBroker, kind: str) -> None:
    """200 jobs of one kind of content, 30 events each, the finished ones with a result."""
    for j in range(200):
        job = f"{kind}-{j}"
        if kind == "meta":
            meta = Raw(msgspec.json.encode({"user": j, "tags": ["a"] * 50}))
            await broker.create(job, ttl=None, meta=meta)
        for i in range(30):
            body: dict[str, Any]
            if kind == "progress":
                data = {"percent": i, "stage": "s" * 20, "message": f"step {i}"}
                body = {"event": "progress", "data": data}
            elif kind == "logs":
                body = {"event": "log", "data": {"message": "x" * 200}}
            elif kind == "keys":
                body = {"event": "content", "data": {"text": "tok"}, "key": f"{j}-{i}-key"}
            elif kind == "large":
                body = {"event": "chunk", "data": {"text": "y" * 5000}}
            elif kind == "text":
                body = {"event": "content", "data": {"text": "tok " * 100}}
            else:
                body = {"event": "custom", "data": [1, 2, 3]}
            await broker.publish(job, drafts(body))
        if kind in ("meta", "progress"):
            result = {"pages": [{"n": k} for k in range(40)]}
            await broker.publish(job, drafts({"event": "complete", "data": {"result": result}}))


@pytest.mark.parametrize("kind", ["progress", "logs", "keys", "large", "text", "meta", "custom"])
async def test_what_the_relay_counts_is_what_python_holds(kind: str) -> None:
    """Counted from above, and not by much: the bound is one on the process's memory."""
    broker = MemoryBroker(JobSettings(), memory_bytes=1 << 30)
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        await _load(broker, kind)
        for j in range(200):
            await broker.snapshot(f"{kind}-{j}")  # a reader's view of its text is kept
        gc.collect()
        traced = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    held = (await broker.memory()).held
    assert traced <= held <= 1.5 * traced, (held, traced)
    for j in range(200):
        await broker.delete(f"{kind}-{j}")
    assert (await broker.memory()).held == 0


@pytest.fixture
async def relay(aiohttp_client: Any) -> Any:
    async def make(**sections: Any) -> Client:
        sections.setdefault("limits", {"memory_bytes": MIB})
        client: Client = await aiohttp_client(create_app(make_settings(**sections)))
        return client

    return make


async def metrics(client: Client) -> dict[str, float]:
    return parse_metrics(await (await client.get("/metrics")).text())


async def chunk(client: Client, job: str, text: str = TEXT) -> Any:
    """An event of about 10 KB that only history keeps (a `content` event's text is kept in
    the snapshot too)."""
    return await client.post(
        f"/v1/jobs/{job}/events", json={"event": "chunk", "data": {"text": text}}
    )


async def history(client: Client, job: str) -> list[str]:
    response = await client.get(f"/v1/jobs/{job}/events?limit=1000")
    assert response.status == 200
    return [event["id"] for event in (await response.json())["events"]]


async def test_past_the_bound_finished_histories_go_first_then_publishes_are_refused(
    relay: Any,
) -> None:
    client = await relay()
    # Three finished jobs with 200 KB of history each, the oldest first.
    first_ids = {}
    for n in range(3):
        first_ids[n] = (await (await chunk(client, f"done-{n}")).json())["ids"][0]
        for _ in range(19):
            assert (await chunk(client, f"done-{n}")).status == 200
        await publish(client, f"done-{n}", "complete", {"result": {"n": n}})
    live = await publish(client, "live", "progress", {"percent": 1})
    async with stream_opener(client)("/v1/jobs/live/stream", headers={"Last-Event-ID": live}) as (
        _,
        live_reader,
    ):
        # A running job takes the memory: the finished histories make room, oldest first.
        filled = []
        while (await metrics(client))["progress_relay_histories_dropped_total"] < 2:
            response = await chunk(client, "filler")
            assert response.status == 200, await response.text()
            filled += (await response.json())["ids"]
            held = await metrics(client)
            assert held["progress_relay_memory_bytes"] <= held["progress_relay_memory_limit_bytes"]
        opener = stream_opener(client)
        async with opener("/v1/jobs/done-0/stream", headers={"Last-Event-ID": first_ids[0]}) as (
            _,
            reader,
        ):
            [reset] = await reader.events(1)
            assert reset.event == "reset" and reset.json["result"] == {"n": 0}
        assert len(await history(client, "done-2")) == 21  # the newest finished: still there

        # Until nothing finished is left to drop: then a publish is refused whole.
        while True:
            response = await chunk(client, "filler")
            if response.status != 200:
                break
            filled += (await response.json())["ids"]
        message = await error_of(response, 503, "memory_full")
        assert "memory bound" in message
        assert response.headers["Retry-After"] == "5"
        assert await history(client, "filler") == filled  # nothing of the refused publish
        assert (await metrics(client))["progress_relay_histories_dropped_total"] == 3
        # New jobs are refused too, and leave nothing behind.
        await error_of(await client.post("/v1/jobs", json={"id": "new"}), 503, "memory_full")
        await error_of(await chunk(client, "new"), 503, "memory_full")
        assert (await client.get("/v1/jobs/new")).status == 404
        # Reads and streams go on.
        assert (await client.get("/v1/jobs/filler")).status == 200
        async with stream_opener(client)("/v1/jobs/filler/stream") as (response, reader):
            assert response.status == 200
            assert [f.id for f in await reader.events(len(filled))] == filled
        scraped = await metrics(client)
        assert scraped["progress_relay_memory_refused_total"] == 3
        assert scraped["progress_relay_memory_bytes"] <= MIB
        # Ending a job is let through, larger than the room left: its own history makes room.
        done = await publish(client, "filler", "complete", {"result": {"text": "r" * 20_000}})
        async with stream_opener(client)("/v1/jobs/filler/stream") as (_, reader):
            [reset] = await reader.events(1)
            assert (reset.event, reset.id) == ("reset", done)
        # With that history gone there is room again, for the bystander too.
        again = await publish(client, "live", "progress", {"percent": 2})
        [frame] = await live_reader.events(1)
        assert frame.id == again
    assert (await client.post("/v1/jobs", json={"id": "new"})).status == 201


async def test_a_job_at_its_history_limit_keeps_publishing_at_the_bound(relay: Any) -> None:
    """A publish that pushes as much out of its job's history as it adds does not grow the
    total: it is not refused, however full the relay is."""
    client = await relay(jobs={"ring_events": 5})
    jobs = 0
    while (await chunk(client, f"j{jobs}")).status == 200:
        for _ in range(4):
            if (await chunk(client, f"j{jobs}")).status != 200:
                break
        jobs += 1
    await error_of(await chunk(client, "another"), 503, "memory_full")
    before = await history(client, "j0")
    assert len(before) == 5
    for _ in range(10):
        response = await chunk(client, "j0")
        assert response.status == 200, await response.text()
    assert len(await history(client, "j0")) == 5
    assert (await metrics(client))["progress_relay_memory_bytes"] <= MIB


async def test_creating_jobs_stops_at_the_bound_and_deleting_makes_room(relay: Any) -> None:
    client = await relay(jobs={"max_jobs": 100_000})
    meta = {"user": "u" * 2000}
    created = 0
    while True:
        response = await client.post("/v1/jobs", json={"id": f"c{created}", "meta": meta})
        if response.status != 201:
            break
        created += 1
    await error_of(response, 503, "memory_full")
    assert 100 < created < 1000  # 1 MiB of jobs of about 5 KB each
    assert (await client.get(f"/v1/jobs/c{created}")).status == 404
    assert (await client.delete("/v1/jobs/c0")).status == 204
    again = await client.post("/v1/jobs", json={"id": f"c{created}", "meta": meta})
    assert again.status == 201


# -- Redis: maxmemory with noeviction is the bound --------------------------------------------


@pytest.fixture
def small_redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(
        tmp_path, options=("--maxmemory", "3mb", "--maxmemory-policy", "noeviction")
    )
    server.start()
    yield server
    server.kill()


@pytest.fixture
async def on_small_redis(small_redis: RedisServer, aiohttp_client: Any) -> AsyncIterator[Client]:
    settings = make_settings(
        broker={"url": small_redis.url, "key_prefix": f"m{uuid.uuid4().hex[:8]}:"}
    )
    client: Client = await aiohttp_client(create_app(settings))
    yield client


async def test_a_full_redis_is_503_memory_full_and_nothing_is_half_written(
    on_small_redis: Client, small_redis: RedisServer
) -> None:
    client = on_small_redis
    big = "z" * 60_000
    jobs = 0
    while True:  # one 60 KB event per job, until Redis is past its 3 MB
        response = await chunk(client, f"big-{jobs}", big)
        if response.status != 200:
            break
        jobs += 1
    message = await error_of(response, 503, "memory_full")
    for internal in ("OOM", "script", "maxmemory'", "@user"):
        assert internal not in message
    assert int(response.headers["Retry-After"]) >= 1
    assert jobs > 10
    connection = redis.Redis.from_url(small_redis.url)
    try:
        # Redis counts the request being read too: a large one is refused a little before a
        # small one. Past the bound for certain from here on, whatever the size:
        used = (await connection.info("memory"))["used_memory"]
        await connection.config_set("maxmemory", used - 200_000)
        # Refused whole: the new job has no key at all, an existing one keeps its history.
        assert await connection.keys(f"*big-{jobs}*") == []
        first = await history(client, "big-0")
        await error_of(await chunk(client, "big-0", big), 503, "memory_full")
        assert await history(client, "big-0") == first
        await error_of(await client.post("/v1/jobs", json={"id": "fresh"}), 503, "memory_full")
        assert await connection.keys("*fresh*") == []
    finally:
        await connection.aclose()
    # Reads and streams go on; /metrics shows Redis's memory against its bound.
    assert (await client.get("/v1/jobs/big-0")).status == 200
    async with stream_opener(client)("/v1/jobs/big-0/stream") as (opened, reader):
        assert opened.status == 200
        assert [f.id for f in await reader.events(1)] == first
    scraped = await metrics(client)
    assert scraped["progress_relay_memory_limit_bytes"] == used - 200_000
    assert scraped["progress_relay_memory_bytes"] > scraped["progress_relay_memory_limit_bytes"]
    assert scraped["progress_relay_memory_refused_total"] == 3
    # Deleting jobs frees Redis: publishing works again.
    for n in range(jobs // 2):
        assert (await client.delete(f"/v1/jobs/big-{n}")).status == 204
    assert (await chunk(client, f"big-{jobs}", big)).status == 200


@pytest.mark.parametrize(
    ("options", "warning"),
    [
        ((), "Redis has no maxmemory"),
        (("--maxmemory", "1gb", "--maxmemory-policy", "allkeys-lru"), "allkeys-lru"),
        (("--maxmemory", "1gb", "--maxmemory-policy", "noeviction"), None),
    ],
)
async def test_the_relay_says_at_start_when_redis_does_not_bound_its_memory_safely(
    tmp_path: Path,
    aiohttp_client: Any,
    caplog: pytest.LogCaptureFixture,
    options: tuple[str, ...],
    warning: str | None,
) -> None:
    server = RedisServer(tmp_path, options=options)
    server.start()
    try:
        with caplog.at_level(logging.WARNING, logger="progress_relay.brokers.redis"):
            await aiohttp_client(create_app(make_settings(broker={"url": server.url})))
        said = [r.getMessage() for r in caplog.records if r.name == "progress_relay.brokers.redis"]
        if warning is None:
            assert said == []
        else:
            [line] = said
            assert warning in line and "noeviction" in line
    finally:
        server.kill()
