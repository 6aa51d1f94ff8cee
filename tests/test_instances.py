"""Two relay instances on one Redis: the same events, the same ids, resumable on either."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from service.app import create_app
from tests.conftest import make_settings, publish, publish_many, stream_opener
from tests.redis_server import RedisServer


@pytest.fixture
async def two_instances(
    aiohttp_client: Any, redis_server: RedisServer
) -> tuple[TestClient[Any, Any], TestClient[Any, Any]]:
    broker = {"url": redis_server.url, "key_prefix": f"i{uuid.uuid4().hex[:10]}:"}
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
