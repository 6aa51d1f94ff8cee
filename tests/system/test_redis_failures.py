"""What survives which failure on the Redis broker: a killed instance, Redis going away, and
Redis restarting with and without persistence. Every Redis here is a real redis-server of its
own, so stopping it affects no other test."""

from __future__ import annotations

import asyncio
import signal
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis.asyncio as redis
from aiohttp.test_utils import TestClient
from httpx_sse import connect_sse

from progress_relay.http.app import create_app
from tests.support.app import make_settings, publish, stream_opener
from tests.support.process import start_relay
from tests.support.redis_server import RedisServer


@pytest.fixture
def aof_redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path, aof=True)
    server.start()
    yield server
    server.kill()


@pytest.fixture
def volatile_redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path, aof=False)
    server.start()
    yield server
    server.kill()


@pytest.fixture
async def relay_on(aiohttp_client: Any) -> AsyncIterator[Any]:
    prefix = f"f{uuid.uuid4().hex[:8]}:"

    async def make(server: RedisServer, **sections: Any) -> TestClient[Any, Any]:
        settings = make_settings(
            broker={"url": server.url, "key_prefix": prefix, "timeout": 0.5},
            stream={"heartbeat": 0.2},
            **sections,
        )
        client: TestClient[Any, Any] = await aiohttp_client(create_app(settings))
        return client

    yield make


async def _wait_ready(client: TestClient[Any, Any], ready: bool, seconds: float = 15) -> None:
    async with asyncio.timeout(seconds):
        # Polling is the point: this is what a load balancer does with /readyz.
        while ((await client.get("/readyz")).status == 200) is not ready:  # noqa: ASYNC110
            await asyncio.sleep(0.05)


def test_a_killed_instance_loses_nothing_its_peer_resumes_exactly(
    volatile_redis: RedisServer,
) -> None:
    env = {"PROGRESS_RELAY_BROKER_URL": volatile_redis.url}
    a, b = start_relay(env=env), start_relay(env=env)
    try:
        ids = []
        seen: list[str] = []
        with httpx.Client(timeout=5) as http:
            for i in range(5):
                response = http.post(
                    f"{a.base_url}/v1/jobs/k/events",
                    json={"event": "progress", "data": {"step": i}},
                )
                ids += response.json()["ids"]
            with connect_sse(http, "GET", f"{a.base_url}/v1/jobs/k/stream") as source:
                for event in source.iter_sse():
                    if event.data:
                        seen.append(event.id)
                    if len(seen) == 3:
                        break
            a.process.kill()  # kill -9, in the middle of the job
            a.wait()
            for i in range(5, 8):
                response = http.post(
                    f"{b.base_url}/v1/jobs/k/events",
                    json={"event": "progress", "data": {"step": i}},
                )
                ids += response.json()["ids"]
            response = http.post(f"{b.base_url}/v1/jobs/k/events", json={"event": "complete"})
            ids += response.json()["ids"]
            headers = {"Last-Event-ID": seen[-1]}
            with connect_sse(http, "GET", f"{b.base_url}/v1/jobs/k/stream", headers=headers) as src:
                resumed = [(event.id, event.event) for event in src.iter_sse() if event.data]
        assert [event_id for event_id, _ in resumed] == ids[3:]
        assert resumed[-1][1] == "complete"
    finally:
        for relay in (a, b):
            if relay.process.poll() is None:
                relay.stop(signal.SIGTERM)


async def test_without_redis_publishes_get_503_streams_stay_open_and_catch_up(
    volatile_redis: RedisServer, relay_on: Any
) -> None:
    client = await relay_on(volatile_redis)
    other = await relay_on(volatile_redis)  # a second instance that keeps its own subscriber
    first = await publish(client, "down", "progress", {"percent": 1})
    async with (
        stream_opener(client)("/v1/jobs/down/stream") as (_, reader),
        stream_opener(other)("/v1/jobs/down/stream") as (_, other_reader),
    ):
        assert [f.id for f in await reader.events(1)] == [first]
        assert [f.id for f in await other_reader.events(1)] == [first]
        port = volatile_redis.port
        volatile_redis.stop()
        refused = await client.post(
            "/v1/jobs/down/events", json={"event": "log", "data": {"message": "lost?"}}
        )
        assert refused.status == 503
        assert (await refused.json())["error"]["code"] == "broker_unavailable"
        await _wait_ready(client, False)
        # The stream is still open: heartbeats keep coming while Redis is away.
        ping = await reader.next(heartbeats=True)
        assert ping is not None and ping.comments == ["ping"]
        # Redis comes back empty on the same port; the epoch changes, so history is new.
        volatile_redis.port = port
        volatile_redis.start()
        await _wait_ready(client, True)
        await _wait_ready(other, True)
        [reset] = await reader.events(1)
        [other_reset] = await other_reader.events(1)
        assert reset.event == other_reset.event == "reset"
        again = await publish(client, "down", "progress", {"percent": 50})
        [live] = await reader.events(1)
        [other_live] = await other_reader.events(1)
        assert live.id == other_live.id == again


async def test_redis_restart_with_aof_loses_nothing_and_repeats_nothing(
    aof_redis: RedisServer, relay_on: Any
) -> None:
    client = await relay_on(aof_redis)
    other = await relay_on(aof_redis)
    ids = [await publish(client, "aof", "progress", {"step": i}) for i in range(3)]
    async with stream_opener(other)("/v1/jobs/aof/stream") as (_, reader):
        assert [f.id for f in await reader.events(3)] == ids
        aof_redis.restart()
        await _wait_ready(client, True)
        await _wait_ready(other, True)
        more = [await publish(client, "aof", "progress", {"step": i}) for i in range(3, 6)]
        more.append(await publish(client, "aof", "complete", {}))
        after = await reader.until_end(timeout=10)
    assert [f.id for f in after] == more, "the same epoch: the stream goes on without a reset"
    async with stream_opener(client)("/v1/jobs/aof/stream") as (_, replay):
        assert [f.id for f in await replay.until_end()] == ids + more


async def test_events_published_while_an_instance_was_cut_off_are_caught_up(
    aof_redis: RedisServer, relay_on: Any
) -> None:
    """The peer-shipped bug: a pub/sub reconnect that silently skips what it missed."""
    client = await relay_on(aof_redis)
    first = await publish(client, "gap", "progress", {"step": 0})
    async with stream_opener(client)("/v1/jobs/gap/stream") as (_, reader):
        assert [f.id for f in await reader.events(1)] == [first]
        # Cut only this instance's pub/sub connection; Redis itself stays up.
        killed = await _kill_pubsub_clients(aof_redis)
        assert killed >= 1
        missed = [await publish(client, "gap", "progress", {"step": i}) for i in range(1, 4)]
        frames = await reader.events(3, timeout=10)
    assert [f.id for f in frames] == missed


async def test_a_multi_job_stream_is_caught_up_in_id_order(
    aof_redis: RedisServer, relay_on: Any
) -> None:
    """Catching up several jobs must interleave them by id, not send one job after another:
    a client resumes from the last id it saw, so an id lower than that one would be lost."""
    client = await relay_on(aof_redis)
    first = [await publish(client, job, "progress", {"step": 0}) for job in ("gx", "gy")]
    async with stream_opener(client)("/v1/stream?job=gx&job=gy") as (_, reader):
        assert [f.id for f in await reader.events(2)] == first
        assert await _kill_pubsub_clients(aof_redis) >= 1
        missed = [
            (job, await publish(client, job, "progress", {"step": step}))
            for step in range(1, 4)
            for job in ("gx", "gy")
        ]
        frames = await reader.events(len(missed), timeout=10)
    assert [(f.json["job"], f.id) for f in frames] == missed


async def _kill_pubsub_clients(server: RedisServer) -> int:
    connection = redis.Redis.from_url(server.url)
    try:
        return int(await connection.execute_command("CLIENT", "KILL", "TYPE", "pubsub"))
    finally:
        await connection.aclose()
