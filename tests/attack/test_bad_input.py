"""Hostile input gets a 4xx that names the problem, on both brokers, and changes nothing: JSON
nested past the limit, absurd cursors and numbers, lifetimes no broker can honour, and (on
Redis) stored state a script must refuse before it writes anything."""

from __future__ import annotations

from typing import Any

import pytest
import redis.asyncio as redis
from aiohttp.test_utils import TestClient

from progress_relay.http.keys import SETTINGS
from tests.support.app import MakeClient, error_of, publish, stream_opener

Client = TestClient[Any, Any]
JSON = {"Content-Type": "application/json"}


def nested(levels: int, inner: bytes = b"1") -> bytes:
    return b"[" * levels + inner + b"]" * levels


@pytest.mark.parametrize("levels", [1_000, 100_000])
async def test_deeply_nested_json_is_400_json_too_deep(
    make_client: MakeClient, levels: int
) -> None:
    """Nested deep enough to exhaust the decoder's stack (it was a 500 RecursionError)."""
    client = await make_client()
    body = b'{"event":"custom","data":' + nested(levels) + b"}"
    message = await error_of(
        await client.post("/v1/jobs/deep/events", data=body, headers=JSON), 400, "json_too_deep"
    )
    assert "64 levels" in message and "limits.max_json_depth" in message
    meta = b'{"id":"deep","meta":' + nested(levels) + b"}"
    await error_of(await client.post("/v1/jobs", data=meta, headers=JSON), 400, "json_too_deep")
    batch = b'{"events":[{"event":"custom","data":' + nested(levels) + b"}]}"
    await error_of(
        await client.post("/v1/jobs/deep/events", data=batch, headers=JSON), 400, "json_too_deep"
    )
    assert (await client.get("/v1/jobs/deep")).status == 404


async def test_the_depth_limit_counts_levels_of_the_whole_body(make_client: MakeClient) -> None:
    client = await make_client(limits={"max_json_depth": 8})
    # The body is one level, so its data may nest 7 more.
    ok = b'{"event":"custom","data":' + nested(7) + b"}"
    assert (await client.post("/v1/jobs/d/events", data=ok, headers=JSON)).status == 200
    too_deep = b'{"event":"custom","data":' + nested(8) + b"}"
    await error_of(
        await client.post("/v1/jobs/d/events", data=too_deep, headers=JSON), 400, "json_too_deep"
    )
    # Brackets inside strings are text, not nesting.
    text = b'{"event":"log","data":{"message":"' + b"[{" * 500 + b'\\"]"}}'
    assert (await client.post("/v1/jobs/d/events", data=text, headers=JSON)).status == 200
    history = await (await client.get("/v1/jobs/d/events")).json()
    assert len(history["events"]) == 2


@pytest.mark.parametrize(
    "query",
    [
        "cursor=" + "9" * 5000,  # was a 500 (int() of more than 4,300 digits)
        "cursor=" + "9" * 20,  # past any position
        "cursor=%EF%BC%91",  # a full-width digit
        "limit=" + "9" * 5000,
        "limit=%EF%BC%91%EF%BC%90",  # full-width 10, which int() would take
        "limit=1_0",
        "limit=%2010",
        "limit=1e3",
    ],
)
async def test_absurd_cursors_and_numbers_are_400(make_client: MakeClient, query: str) -> None:
    client = await make_client()
    await publish(client, "listed", "progress", {"percent": 1})
    message = await error_of(await client.get(f"/v1/jobs?{query}"), 400, "invalid_parameter")
    assert len(message) < 300  # the value is shown cut short, never echoed whole
    history = await client.get(f"/v1/jobs/listed/events?{query.replace('cursor', 'limit')}")
    await error_of(history, 400, "invalid_parameter")


@pytest.mark.parametrize("ttl", [1e16, 1e300, 1e9 + 1])
async def test_a_ttl_no_broker_can_honour_is_422_and_creates_nothing(
    make_client: MakeClient, ttl: float
) -> None:
    """On Redis, `ttl` 1e16 was a 503 with Redis's script error, yet the job's key was written
    without expiry and missing from the index, and later publishes were stored but never
    delivered live."""
    client = await make_client()
    response = await client.post("/v1/jobs", json={"id": "z1", "ttl": ttl})
    message = await error_of(response, 422, "invalid_body")
    assert "$.ttl" in message
    assert (await client.get("/v1/jobs/z1")).status == 404
    async with stream_opener(client)("/v1/jobs/z1/stream") as (_, reader):
        first = await publish(client, "z1", "progress", {"percent": 5})
        [frame] = await reader.events(1)
        assert frame.id == first


async def test_a_ttl_past_jobs_max_ttl_is_422(make_client: MakeClient) -> None:
    client = await make_client(jobs={"max_ttl": 100})
    message = await error_of(
        await client.post("/v1/jobs", json={"id": "t1", "ttl": 101}), 422, "invalid_body"
    )
    assert "jobs.max_ttl" in message
    assert (await client.post("/v1/jobs", json={"id": "t1", "ttl": 100})).status == 201


@pytest.mark.parametrize(
    "data",
    [
        {"step": 10**30, "total_steps": 10**300},
        {"percent": 1e-300, "eta_seconds": 1e308},
        {"stage": "\u0000\u2028\ud7ff", "message": "\U0001f600" * 1000},
    ],
)
async def test_extreme_numbers_and_text_are_stored_and_read_back(
    make_client: MakeClient, data: dict[str, Any]
) -> None:
    client = await make_client()
    await publish(client, "n", "progress", data)
    snapshot = await (await client.get("/v1/jobs/n")).json()
    for name, value in data.items():
        assert snapshot[name] == value
    async with stream_opener(client)("/v1/jobs/n/stream") as (_, reader):
        [frame] = await reader.events(1)
        assert {k: frame.json[k] for k in data} == data


async def test_numbers_past_what_json_decoders_take_are_422(make_client: MakeClient) -> None:
    client = await make_client()
    too_long = b'{"event":"progress","data":{"step":' + b"9" * 5000 + b"}}"
    await error_of(
        await client.post("/v1/jobs/n/events", data=too_long, headers=JSON), 422, "invalid_event"
    )
    out_of_range = b'{"event":"progress","data":{"eta_seconds":1e400}}'
    await error_of(
        await client.post("/v1/jobs/n/events", data=out_of_range, headers=JSON),
        422,
        "invalid_event",
    )
    assert (await client.get("/v1/jobs/n")).status == 404


# -- Redis: every script checks before it writes ----------------------------------------------


def _redis_of(client: Client) -> tuple[redis.Redis, str]:
    """A connection to the relay's Redis, and its key prefix."""
    settings = client.app[SETTINGS]
    return redis.Redis.from_url(settings.broker.url), settings.broker.key_prefix


@pytest.fixture
async def redis_client(make_client: MakeClient) -> Client:
    """A relay on Redis (the tests using it choose the `redis` broker)."""
    return await make_client()


@pytest.mark.parametrize("broker", ["redis"], indirect=True)
async def test_a_stored_lifetime_out_of_range_is_ignored_not_half_applied(
    redis_client: Client,
) -> None:
    """A job hash whose own `ttl` no PEXPIRE takes (written by an older relay): the publish
    used to fail after storing its event, which then never reached live readers."""
    client = redis_client
    connection, prefix = _redis_of(client)
    try:
        await publish(client, "old", "progress", {"percent": 1})
        await connection.hset(f"{prefix}job:old", "ttl", "10000000000000000000")
        async with stream_opener(client)("/v1/jobs/old/stream?replay=none") as (_, reader):
            second = await publish(client, "old", "progress", {"percent": 2})
            [frame] = await reader.events(1)
            assert frame.id == second
        assert 0 < await connection.pttl(f"{prefix}job:old") <= 3_600_000
    finally:
        await connection.aclose()


@pytest.mark.parametrize("broker", ["redis"], indirect=True)
async def test_history_ahead_of_the_sequence_is_refused_before_anything_is_written(
    redis_client: Client,
) -> None:
    client = redis_client
    connection, prefix = _redis_of(client)
    try:
        for percent in range(5):
            await publish(client, "ahead", "progress", {"percent": percent})
        await connection.set(f"{prefix}seq", 1)  # the sequence lost, the job not
        before = await connection.hgetall(f"{prefix}job:ahead")
        length = await connection.xlen(f"{prefix}job:ahead:h")
        response = await client.post(
            "/v1/jobs/ahead/events", json={"event": "progress", "data": {"percent": 9}}
        )
        message = await error_of(response, 503, "broker_unavailable")
        assert "script" not in message and "ERR" not in message
        assert response.headers["Retry-After"] == "1"
        assert await connection.hgetall(f"{prefix}job:ahead") == before
        assert await connection.xlen(f"{prefix}job:ahead:h") == length
        assert await connection.get(f"{prefix}seq") == b"1"
    finally:
        await connection.aclose()
