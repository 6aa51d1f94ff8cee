"""Redis: a job's keys expire together, ``ttl`` after its last publish (lua/publish.lua).

A publish that creates no key leaves the expirations alone while the job's is within
min(1 s, 1 % of its lifetime) of that; one that creates a key (the first log line, progress
point, idempotency key) gives every key the job's lifetime at once.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as redis
from aiohttp.test_utils import TestClient

from progress_relay.http.app import create_app
from tests.support.app import make_settings, publish

IDLE_MS = 100_000
PREFIX = "lifetimes:"
JOB = f"{PREFIX}job:j"


@pytest.fixture
async def connection(redis_server: Any) -> AsyncIterator[redis.Redis]:
    connection = redis.Redis.from_url(redis_server.url)
    yield connection
    await connection.aclose()


@pytest.fixture
async def client(aiohttp_client: Any, redis_server: Any) -> TestClient[Any, Any]:
    broker = {"url": redis_server.url, "key_prefix": PREFIX}
    jobs = {"idle_ttl": IDLE_MS / 1000, "finished_ttl": 5}
    client: TestClient[Any, Any] = await aiohttp_client(
        create_app(make_settings(broker=broker, jobs=jobs))
    )
    return client


async def test_a_publish_within_the_slack_leaves_the_expirations(
    client: TestClient[Any, Any], connection: redis.Redis
) -> None:
    await publish(client, "j", "tick", {"n": 1})
    assert IDLE_MS - 1000 < await connection.pttl(JOB) <= IDLE_MS
    await connection.pexpire(JOB, IDLE_MS - 500)  # within the slack of 1 s: left as it is
    await publish(client, "j", "tick", {"n": 2})
    assert await connection.pttl(JOB) <= IDLE_MS - 500
    await connection.pexpire(JOB, IDLE_MS - 5000)  # past it: every key's is set again
    await publish(client, "j", "tick", {"n": 3})
    job, history = await connection.pttl(JOB), await connection.pttl(f"{JOB}:h")
    assert IDLE_MS - 1000 < job <= IDLE_MS
    assert IDLE_MS - 1000 < history <= IDLE_MS
    score = await connection.zscore(f"{PREFIX}jobs", "j")
    assert score is not None and score > 0


async def test_keys_a_publish_creates_get_the_jobs_lifetime(
    client: TestClient[Any, Any], connection: redis.Redis
) -> None:
    await publish(client, "j", "tick", {"n": 1})
    await connection.pexpire(JOB, IDLE_MS - 500)  # within the slack
    await publish(client, "j", "log", {"message": "first line"})
    assert IDLE_MS - 1000 < await connection.pttl(f"{JOB}:logs") <= IDLE_MS
    await connection.pexpire(JOB, IDLE_MS - 500)
    await publish(client, "j", "progress", {"percent": 10})
    assert IDLE_MS - 1000 < await connection.pttl(f"{JOB}:eta") <= IDLE_MS
    await connection.pexpire(JOB, IDLE_MS - 500)
    response = await client.post("/v1/jobs/j/events", json={"event": "tick", "key": "once"})
    assert response.status == 200
    for key in (f"{JOB}:k", f"{JOB}:kt"):
        assert IDLE_MS - 1000 < await connection.pttl(key) <= IDLE_MS


async def test_a_terminal_event_sets_the_finished_lifetime(
    client: TestClient[Any, Any], connection: redis.Redis
) -> None:
    await publish(client, "j", "tick", {"n": 1})
    await publish(client, "j", "complete", {})
    assert 0 < await connection.pttl(JOB) <= 5000
    assert 0 < await connection.pttl(f"{JOB}:h") <= 5000
