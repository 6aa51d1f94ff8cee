"""Every limit: reached, answered as documented, and nothing else disturbed.

Each test keeps a bystander: a job with an open stream, published to before and after the limit
is hit. It must receive exactly its own events, and the job the limit refused must be unchanged.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from progress_relay.http.rate import RateLimiter
from tests.support.app import MakeClient, publish, stream_opener

Client = TestClient[Any, web.Application]


@asynccontextmanager
async def bystander(client: Client, headers: dict[str, str] | None = None) -> AsyncIterator[None]:
    """An open stream of job `calm` that must see its events, in order, whatever happens."""
    first = await _publish(client, "calm", 1, headers)
    async with stream_opener(client)(
        "/v1/jobs/calm/stream", headers={"Last-Event-ID": first, **(headers or {})}
    ) as (response, reader):
        assert response.status == 200
        yield
        second = await _publish(client, "calm", 2, headers)
        [frame] = await reader.events(1)
        assert (frame.id, frame.json["percent"]) == (second, 2)


async def _publish(client: Client, job: str, percent: int, headers: dict[str, str] | None) -> str:
    response = await client.post(
        f"/v1/jobs/{job}/events",
        json={"event": "progress", "data": {"percent": percent}},
        headers=headers or {},
    )
    assert response.status == 200, await response.text()
    ids: list[str] = (await response.json())["ids"]
    return ids[0]


async def refused(response: Any, status: int, code: str, retry_after: bool = False) -> str:
    assert response.status == status, await response.text()
    body = await response.json()
    assert body["error"]["code"] == code
    if retry_after:
        assert int(response.headers["Retry-After"]) >= 1
    else:
        assert "Retry-After" not in response.headers
    message: str = body["error"]["message"]
    return message


async def history_ids(client: Client, job: str) -> list[str]:
    response = await client.get(f"/v1/jobs/{job}/events")
    assert response.status == 200
    return [event["id"] for event in (await response.json())["events"]]


async def test_event_payload_bytes(make_client: MakeClient) -> None:
    client = await make_client(limits={"max_event_bytes": 100})
    before = await publish(client, "big", "log", {"message": "x" * 50})
    async with bystander(client):
        response = await client.post(
            "/v1/jobs/big/events", json={"event": "log", "data": {"message": "x" * 100}}
        )
        assert "limit is 100" in await refused(response, 413, "payload_too_large")
    assert await history_ids(client, "big") == [before]


async def test_events_per_batch(make_client: MakeClient) -> None:
    client = await make_client(limits={"max_batch_events": 5}, stream={"queue_frames": 5})
    before = await publish(client, "batch", "log", {"message": "a"})
    async with bystander(client):
        events = [{"event": "log", "data": {"message": str(i)}} for i in range(6)]
        response = await client.post("/v1/jobs/batch/events", json={"events": events})
        assert "at most 5 events" in await refused(response, 413, "payload_too_large")
    assert await history_ids(client, "batch") == [before]


async def test_request_body(make_client: MakeClient) -> None:
    client = await make_client(limits={"max_request_bytes": 2000})
    before = await publish(client, "body", "log", {"message": "a"})
    async with bystander(client):
        response = await client.post(
            "/v1/jobs/body/events",
            data=b'{"event":"log","data":{"message":"' + b"y" * 3000 + b'"}}',
            headers={"Content-Type": "application/json"},
        )
        await refused(response, 413, "payload_too_large")
    assert await history_ids(client, "body") == [before]


async def test_number_of_jobs(make_client: MakeClient) -> None:
    client = await make_client(jobs={"max_jobs": 3, "finished_ttl": 30})
    async with bystander(client):  # job 1 of 3
        assert (await client.post("/v1/jobs", json={"id": "j2"})).status == 201
        await publish(client, "j3", "log", {"message": "a"})
        created = await client.post("/v1/jobs", json={"id": "j4"})
        message = await refused(created, 503, "too_many_jobs", retry_after=True)
        assert "maximum of 3 jobs" in message
        assert created.headers["Retry-After"] == "30"
        published = await client.post(
            "/v1/jobs/j4/events", json={"event": "progress", "data": {"percent": 1}}
        )
        await refused(published, 503, "too_many_jobs", retry_after=True)
        assert (await client.get("/v1/jobs/j4")).status == 404
        # Jobs that exist go on as before, and a deleted one frees its place.
        await publish(client, "j3", "log", {"message": "b"})
        assert (await client.post("/v1/jobs", json={"id": "j2"})).status == 200
        assert (await client.delete("/v1/jobs/j2")).status == 204
        assert (await client.post("/v1/jobs", json={"id": "j4"})).status == 201


async def test_an_expired_job_frees_its_place(make_client: MakeClient) -> None:
    client = await make_client(jobs={"max_jobs": 1}, reaper={"interval": 0.05})
    assert (await client.post("/v1/jobs", json={"id": "short", "ttl": 0.2})).status == 201
    assert (await client.post("/v1/jobs", json={"id": "next"})).status == 503
    for _ in range(100):
        await asyncio.sleep(0.05)
        response = await client.post("/v1/jobs", json={"id": "next"})
        if response.status == 201:
            break
    assert response.status == 201


async def test_open_streams_in_total(make_client: MakeClient) -> None:
    client = await make_client(limits={"max_streams": 3}, stream={"retry_ms": 2000})
    open_stream = stream_opener(client)
    async with bystander(client):  # stream 1 of 3
        async with open_stream("/v1/jobs/a/stream") as (second, _):
            assert second.status == 200
            async with open_stream("/v1/jobs/b/stream") as (third, _):
                assert third.status == 200
                fourth = await client.get("/v1/jobs/c/stream")
                message = await refused(fourth, 503, "too_many_streams", retry_after=True)
                assert fourth.headers["Retry-After"] == "2"
                assert "maximum of 3 open streams" in message
                multi = await client.get("/v1/stream?job=c&job=d")
                await refused(multi, 503, "too_many_streams", retry_after=True)
        # Two closed: their places are free again (the hub notices the close).
        for _ in range(50):
            again = await client.get("/v1/jobs/c/stream")
            if again.status == 200:
                break
            await asyncio.sleep(0.02)
        assert again.status == 200
        again.close()


async def test_open_streams_per_job(make_client: MakeClient) -> None:
    client = await make_client(limits={"max_streams_per_job": 2})
    open_stream = stream_opener(client)
    async with (
        bystander(client),
        open_stream("/v1/jobs/hot/stream") as (one, reader_one),
        open_stream("/v1/stream?job=hot&job=other") as (two, _),
    ):
        assert (one.status, two.status) == (200, 200)
        third = await client.get("/v1/jobs/hot/stream")
        assert "job hot" in await refused(third, 503, "too_many_streams", True)
        multi = await client.get("/v1/stream?job=fresh&job=hot")
        await refused(multi, 503, "too_many_streams", retry_after=True)
        # Other jobs are not limited by this one, and the open streams go on.
        other = await client.get("/v1/jobs/other/stream")
        assert other.status == 200
        other.close()
        sent = await publish(client, "hot", "log", {"message": "still here"})
        [frame] = await reader_one.events(1)
        assert frame.id == sent


async def test_jobs_per_multi_job_stream(make_client: MakeClient) -> None:
    client = await make_client(limits={"max_stream_jobs": 3})
    async with bystander(client):
        ok = await client.get("/v1/stream?job=a&job=b&job=c")
        assert ok.status == 200
        ok.close()
        many = await client.get("/v1/stream?job=a&job=b&job=c&job=d")
        message = await refused(many, 413, "payload_too_large")
        assert "at most 3 jobs" in message and "got 4" in message


@pytest.mark.memory_only
async def test_publishes_per_second_per_token(make_client: MakeClient) -> None:
    client = await make_client(
        auth={"publish_tokens": ["one", "two"]},
        limits={"publish_rate": 0.5, "publish_burst": 3},
    )
    one = {"Authorization": "Bearer one"}
    two = {"Authorization": "Bearer two"}
    async with bystander(client, two):  # two publishes by token two, one now, one at the end
        ids = [await _publish(client, "busy", p, one) for p in range(3)]
        response = await client.post(
            "/v1/jobs/busy/events", json={"event": "progress", "data": {"percent": 1}}, headers=one
        )
        message = await refused(response, 429, "rate_limited", retry_after=True)
        assert response.headers["Retry-After"] == "2"  # one request back every 2 s
        assert "publisher" in message and "one" not in message.split()
        cancel = await client.post("/v1/jobs/busy/cancel", headers=one)
        assert cancel.status == 202  # only publishes are rate limited
    assert await history_ids(client, "busy") == [*ids, (await history_ids(client, "busy"))[-1]]
    assert len(await history_ids(client, "busy")) == 4  # three progress + cancel_requested


@pytest.mark.memory_only
async def test_open_publishing_is_limited_per_client_address(make_client: MakeClient) -> None:
    client = await make_client(limits={"publish_rate": 0.1, "publish_burst": 2})
    await publish(client, "x", "log", {"message": "1"})
    await publish(client, "y", "log", {"message": "2"})  # the bucket is per client, not per job
    response = await client.post(
        "/v1/jobs/z/events", json={"event": "progress", "data": {"percent": 1}}
    )
    message = await refused(response, 429, "rate_limited", retry_after=True)
    assert "address" in message
    assert response.headers["Retry-After"] == "10"


def test_rate_limiter_refills_and_forgets_idle_buckets() -> None:
    now = [0.0]
    limiter = RateLimiter(rate=2.0, burst=2, clock=lambda: now[0])
    assert [limiter.take("a") for _ in range(3)] == [0, 0, 1]
    now[0] = 0.5  # one token back
    assert (limiter.take("a"), limiter.take("a")) == (0, 1)
    assert limiter.take("b") == 0  # buckets are independent
    for n in range(20_000):
        now[0] += 10  # every bucket has refilled by the time the table is pruned
        limiter.take(f"k{n}")
    assert len(limiter._buckets) <= 10_001
