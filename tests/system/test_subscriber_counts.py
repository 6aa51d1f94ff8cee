"""A snapshot's `subscribers` counts the open streams of every instance on one Redis, and a dead
instance's streams stop counting within `broker.instance_ttl`."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient

from progress_relay.http.app import create_app
from tests.support.app import make_settings, publish
from tests.support.process import start_relay
from tests.support.redis_server import RedisServer

TTL = 1.5  # broker.instance_ttl of these relays
BOUND = 10 * TTL  # how long a count may take to settle (generous: CI machines are shared)


def redis_broker(redis_server: RedisServer) -> dict[str, Any]:
    return {
        "url": redis_server.url,
        "key_prefix": f"c{uuid.uuid4().hex[:10]}:",
        "instance_ttl": TTL,
    }


async def subscribers(client: TestClient[Any, Any] | aiohttp.ClientSession, url: str) -> int:
    response = await client.get(url)
    assert response.status == 200, await response.text()
    count: int = (await response.json())["subscribers"]
    return count


async def settles(read: Any, expected: int) -> int:
    """The count once it is ``expected``, or what it still is after BOUND seconds."""
    deadline = time.monotonic() + BOUND
    while True:
        count: int = await read()
        if count == expected or time.monotonic() > deadline:
            return count
        await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def open_streams(get: Any, url: str, n: int) -> AsyncIterator[None]:
    """``n`` open streams, each past its first chunk (so the relay has attached it)."""
    responses = []
    try:
        for _ in range(n):
            response = await get(url)
            assert response.status == 200
            await response.content.readany()
            responses.append(response)
        yield
    finally:
        for response in responses:
            response.close()


async def test_every_instance_counts_and_closing_brings_it_to_zero(
    aiohttp_client: Any, redis_server: RedisServer
) -> None:
    broker = redis_broker(redis_server)
    a = await aiohttp_client(create_app(make_settings(broker=broker)))
    b = await aiohttp_client(create_app(make_settings(broker=broker)))
    await publish(a, "shared", "progress", {"percent": 5})
    async with (
        open_streams(a.get, "/v1/jobs/shared/stream", 1),
        open_streams(b.get, "/v1/jobs/shared/stream", 2),
    ):
        assert await settles(lambda: subscribers(a, "/v1/jobs/shared"), 3) == 3
        assert await settles(lambda: subscribers(b, "/v1/jobs/shared"), 3) == 3

        async def listed() -> int:
            response = await a.get("/v1/jobs")
            jobs = (await response.json())["jobs"]
            count: int = next(job["subscribers"] for job in jobs if job["id"] == "shared")
            return count

        assert await settles(listed, 3) == 3
    assert await settles(lambda: subscribers(a, "/v1/jobs/shared"), 0) == 0
    assert await settles(lambda: subscribers(b, "/v1/jobs/shared"), 0) == 0


async def test_a_killed_instance_stops_counting(
    aiohttp_client: Any, redis_server: RedisServer
) -> None:
    broker = redis_broker(redis_server)
    a = await aiohttp_client(create_app(make_settings(broker=broker)))
    env = {f"PROGRESS_RELAY_BROKER_{key.upper()}": str(value) for key, value in broker.items()}
    b = start_relay(env=env)
    try:
        await publish(a, "orphaned", "progress", {"percent": 5})
        # A's own stream keeps the job's counts alive in Redis: B's must go by B's key alone.
        async with (
            open_streams(a.get, "/v1/jobs/orphaned/stream", 1),
            aiohttp.ClientSession(b.base_url) as session,
            open_streams(session.get, "/v1/jobs/orphaned/stream", 2),
        ):
            assert await settles(lambda: subscribers(a, "/v1/jobs/orphaned"), 3) == 3
            b.process.send_signal(signal.SIGKILL)  # no goodbye: only the TTL can tell
            b.wait()
            assert await settles(lambda: subscribers(a, "/v1/jobs/orphaned"), 1) == 1
    finally:
        b.close()


@pytest.mark.parametrize("url", ["memory://"])
async def test_the_memory_broker_counts_its_own_streams(aiohttp_client: Any, url: str) -> None:
    a = await aiohttp_client(create_app(make_settings(broker={"url": url})))
    await publish(a, "local", "progress", {"percent": 5})
    async with open_streams(a.get, "/v1/jobs/local/stream", 2):
        assert await subscribers(a, "/v1/jobs/local") == 2
    assert await settles(lambda: subscribers(a, "/v1/jobs/local"), 0) == 0
