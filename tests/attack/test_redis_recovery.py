"""Redis comes back, and nobody is told it went away: after a restart an instance that sat idle
answers every request (it answered 503 to 15 of 16 concurrent publishes, its pooled connections
each failing once); a call whose connection was lost is made once more when that cannot publish
twice; every 503 broker_unavailable says when to come back (Retry-After)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from progress_relay.http.app import create_app
from tests.support.app import error_of, make_settings, publish, stream_opener
from tests.support.fault_proxy import FaultProxy
from tests.support.redis_server import RedisServer

Client = TestClient[Any, Any]
pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def aof_redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path, aof=True)
    server.start()
    yield server
    server.kill()


@pytest.fixture
def relay_on(aiohttp_client: Any) -> Any:
    async def make(url: str) -> Client:
        settings = make_settings(
            broker={"url": url, "key_prefix": f"r{uuid.uuid4().hex[:8]}:", "timeout": 1.0}
        )
        client: Client = await aiohttp_client(create_app(settings))
        return client

    return make


@pytest.fixture
async def proxy(aof_redis: RedisServer) -> AsyncIterator[FaultProxy]:
    faulty = FaultProxy(aof_redis.port)
    await faulty.start()
    yield faulty
    await faulty.close()


def _body(job: str, n: int, keyed: bool) -> dict[str, Any]:
    body: dict[str, Any] = {"event": "progress", "data": {"step": n}}
    if keyed:
        body["key"] = f"{job}-{n}"
    return body


async def _burst(client: Client, n: int, keyed: bool) -> list[int]:
    """16 publishes at once, to 16 jobs: 16 pooled connections."""
    responses = await asyncio.gather(
        *(client.post(f"/v1/jobs/j{i}/events", json=_body(f"j{i}", n, keyed)) for i in range(16))
    )
    return [response.status for response in responses]


async def _steps(client: Client, job: str) -> list[int]:
    response = await client.get(f"/v1/jobs/{job}/events")
    assert response.status == 200, await response.text()
    return [event["data"]["step"] for event in (await response.json())["events"]]


async def test_an_instance_idle_through_a_redis_restart_answers_every_publish(
    aof_redis: RedisServer, relay_on: Any
) -> None:
    client = await relay_on(aof_redis.url)
    assert await _burst(client, 0, keyed=False) == [200] * 16
    aof_redis.stop()
    await asyncio.sleep(1.5)
    aof_redis.start()  # the same port, the same data (AOF)
    await asyncio.sleep(1.0)  # the instance sits idle while Redis is back
    assert await _burst(client, 1, keyed=False) == [200] * 16  # not one spurious 503
    assert await _burst(client, 2, keyed=True) == [200] * 16
    assert [await _steps(client, f"j{i}") for i in range(16)] == [[0, 1, 2]] * 16
    # Ready again once its pub/sub listener has reconnected (its own backoff: not at once).
    assert await _ready_within(client, 10.0)


async def _ready_within(client: TestClient[Any, Any], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while (await client.get("/readyz")).status != 200:
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.1)
    return True


async def test_a_keyed_publish_whose_reply_was_lost_is_made_again_and_stored_once(
    proxy: FaultProxy, relay_on: Any
) -> None:
    client = await relay_on(proxy.url)
    await publish(client, "lost", "progress", {"step": 0})
    proxy.lose_reply()
    response = await client.post("/v1/jobs/lost/events", json=_body("lost", 1, keyed=True))
    assert response.status == 200, await response.text()
    assert proxy.cut == 1
    assert await _steps(client, "lost") == [0, 1]
    # The retry returned the first run's id, the one history has.
    history = await (await client.get("/v1/jobs/lost/events")).json()
    assert (await response.json())["ids"] == [history["events"][1]["id"]]


async def test_a_publish_without_keys_whose_reply_was_lost_is_not_made_twice(
    proxy: FaultProxy, relay_on: Any
) -> None:
    """Redis ran it; the relay cannot know, so it does not run it again: 503, with Retry-After.
    A publisher that sends keys (the SDKs do) can retry it safely."""
    client = await relay_on(proxy.url)
    await publish(client, "once", "progress", {"step": 0})
    proxy.lose_reply()
    response = await client.post("/v1/jobs/once/events", json=_body("once", 1, keyed=False))
    message = await error_of(response, 503, "broker_unavailable")
    assert response.headers["Retry-After"] == "1"
    assert "Connection" not in message and "closed" not in message
    assert await _steps(client, "once") == [0, 1]  # stored once: it is not made again
    retried = await client.post("/v1/jobs/once/events", json=_body("once", 1, keyed=True))
    assert retried.status == 200


async def test_reads_creates_cancels_and_deletes_are_made_again_after_a_lost_connection(
    proxy: FaultProxy, relay_on: Any
) -> None:
    """Whether the lost call ran or not, a second run gives the answer of one."""
    client = await relay_on(proxy.url)
    await publish(client, "r", "progress", {"step": 0})
    calls = [
        ("GET", "/v1/jobs/r", 200),
        ("GET", "/v1/jobs/r/events", 200),
        ("GET", "/v1/jobs", 200),
        ("POST", "/v1/jobs/r/cancel", 202),
    ]
    for method, path, expected in calls:
        for lose in (proxy.lose_request, proxy.lose_reply):
            lose()
            response = await client.request(method, path)
            assert response.status == expected, (method, path, await response.text())
    assert proxy.cut == 2 * len(calls)
    created = []
    for n, lose in enumerate((proxy.lose_request, proxy.lose_reply)):
        lose()
        response = await client.post("/v1/jobs", json={"id": f"new-{n}"})
        created.append(response.status)
    # The second run of a create that ran finds the job made: 200 rather than 201.
    assert created == [201, 200]
    proxy.lose_request()  # a delete that ran and lost its reply finds nothing the second time
    assert (await client.delete("/v1/jobs/r")).status == 204
    assert (await client.get("/v1/jobs/r")).status == 404


async def test_every_503_broker_unavailable_says_when_to_come_back(
    aof_redis: RedisServer, relay_on: Any
) -> None:
    client = await relay_on(aof_redis.url)
    await publish(client, "down", "progress", {"step": 0})
    aof_redis.stop()
    started = time.monotonic()
    for method, path, body in [
        ("POST", "/v1/jobs/down/events", {"event": "progress", "data": {"step": 1}}),
        ("POST", "/v1/jobs", {"id": "other"}),
        ("GET", "/v1/jobs/down", None),
        ("GET", "/v1/jobs/down/events", None),
        ("GET", "/v1/jobs", None),
        ("POST", "/v1/jobs/down/cancel", None),
        ("DELETE", "/v1/jobs/down", None),
        ("GET", "/v1/jobs/down/stream", None),
        ("GET", "/v1/stream?job=down&job=other", None),
        ("GET", "/readyz", None),
    ]:
        response = await client.request(method, path, json=body)
        message = await error_of(response, 503, "broker_unavailable")
        assert response.headers["Retry-After"] == "1", (method, path)
        for internal in ("Error", "errno", "111", "Connection refused", "connecting to"):
            assert internal not in message, (path, message)
    assert time.monotonic() - started < 15
    aof_redis.start()
    async with asyncio.timeout(15):
        while (await client.get("/readyz")).status != 200:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
    async with stream_opener(client)("/v1/jobs/down/stream") as (response, reader):
        assert response.status == 200
        assert [frame.json["step"] for frame in await reader.events(1)] == [0]
