"""POST /v1/events on a Redis of its own: the pipeline of publish.lua runs after Redis lost its
scripts (a restart), and each job's refusal when Redis is past its maxmemory."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as redis
from aiohttp import web
from aiohttp.test_utils import TestClient

from progress_relay.http.app import create_app
from tests.support.app import make_settings, parse_metrics
from tests.support.redis_server import RedisServer

Client = TestClient[Any, web.Application]


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(
        tmp_path, options=("--maxmemory", "1gb", "--maxmemory-policy", "noeviction")
    )
    server.start()
    yield server
    server.kill()


@pytest.fixture
async def client(own_redis: RedisServer, aiohttp_client: Any) -> AsyncIterator[Client]:
    prefix = f"x{uuid.uuid4().hex[:8]}:"
    settings = make_settings(broker={"url": own_redis.url, "key_prefix": prefix})
    yield await aiohttp_client(create_app(settings))


def events(*jobs: str) -> dict[str, Any]:
    return {"events": [{"job": job, "event": "log", "data": {"message": job}} for job in jobs]}


async def test_a_batch_is_published_after_redis_lost_its_scripts(
    client: Client, own_redis: RedisServer
) -> None:
    assert (await client.post("/v1/events", json=events("warm"))).status == 200
    connection = redis.Redis.from_url(own_redis.url)
    try:
        await connection.script_flush()
    finally:
        await connection.aclose()
    response = await client.post("/v1/events", json=events("a", "b", "a"))
    assert response.status == 200, await response.text()
    jobs = {job["job"]: job["ids"] for job in (await response.json())["jobs"]}
    assert [len(jobs["a"]), len(jobs["b"])] == [2, 1]
    history = await (await client.get("/v1/jobs/a/events")).json()
    assert [e["id"] for e in history["events"]] == jobs["a"]


async def test_a_full_redis_refuses_each_job_and_publishes_nothing(
    client: Client, own_redis: RedisServer
) -> None:
    assert (await client.post("/v1/events", json=events("before"))).status == 200
    connection = redis.Redis.from_url(own_redis.url)
    try:
        used = (await connection.info("memory"))["used_memory"]
        await connection.config_set("maxmemory", used - 200_000)
        response = await client.post("/v1/events", json=events("before", "fresh"))
        assert response.status == 207
        body = await response.json()
        for job in body["jobs"]:
            assert (job["status"], job["error"]["code"]) == (503, "memory_full")
            assert "OOM" not in job["error"]["message"]
        assert await connection.keys("*fresh*") == []
    finally:
        await connection.config_set("maxmemory", "1gb")
        await connection.aclose()
    history = await (await client.get("/v1/jobs/before/events")).json()
    assert len(history["events"]) == 1
    scraped = parse_metrics(await (await client.get("/metrics")).text())
    assert scraped["progress_relay_memory_refused_total"] == 2


async def test_a_batch_that_finds_redis_gone_is_refused_whole(
    client: Client, own_redis: RedisServer
) -> None:
    assert (await client.post("/v1/events", json=events("warm"))).status == 200
    own_redis.kill()
    response = await client.post("/v1/events", json=events("a", "b"))
    assert response.status == 503, await response.text()
    assert (await response.json())["error"]["code"] == "broker_unavailable"
