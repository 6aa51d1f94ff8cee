"""The Redis broker's pipeline (brokers/redis_pipeline.py), against a real redis-server: the calls
of one turn go out as one batch on one connection, each gets its own reply, and an error reply
fails its own call only; it keeps a few connections of its own, calls wait for one when all are
busy, a Redis restart costs nothing to an idle pipeline, and a Redis that stops answering fails
the batch within its timeout."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import BlockingConnectionPool, ConnectionPool, Redis
from redis.asyncio.connection import Connection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from progress_relay.brokers.redis_pipeline import Pipeline, pack
from progress_relay.http.app import create_app
from tests.support.app import make_settings
from tests.support.redis_server import RedisServer


@pytest.fixture
async def pool(redis_server: RedisServer) -> Any:
    pool = BlockingConnectionPool.from_url(redis_server.url, protocol=2, max_connections=4)
    yield pool
    await pool.aclose()


@pytest.fixture
async def own_redis(tmp_path: Path) -> Any:
    """A redis-server of the test's own (it is restarted or paused) and a pool that makes
    connections to it without a socket timeout, as the broker's pipeline has."""
    server = RedisServer(tmp_path)
    server.start()
    pool = ConnectionPool.from_url(server.url, protocol=2, socket_connect_timeout=2)
    yield server, pool
    server.resume()
    await pool.aclose()
    server.stop()


@pytest.fixture
async def pipeline(pool: Any) -> Any:
    pipeline = Pipeline(pool)
    yield pipeline
    await pipeline.close()  # the pipeline's connections are its own


async def test_the_calls_of_one_turn_go_out_as_one_batch_each_with_its_reply(
    pipeline: Pipeline,
) -> None:
    key = f"pipe:{uuid.uuid4().hex}"
    replies = await asyncio.gather(*(pipeline.call("INCRBY", key, n) for n in range(1, 101)))
    assert pipeline.sent == 1
    # Redis ran them in the order they were called: each reply is the running sum.
    assert replies == [n * (n + 1) // 2 for n in range(1, 101)]


async def test_calls_of_later_turns_are_later_batches(pipeline: Pipeline) -> None:
    key = f"pipe:{uuid.uuid4().hex}"
    assert await pipeline.call("SET", key, "a") == b"OK"
    assert await pipeline.call("GET", key) == b"a"
    assert pipeline.sent == 2


async def test_an_error_reply_fails_its_own_call_only(pipeline: Pipeline) -> None:
    key = f"pipe:{uuid.uuid4().hex}"
    calls = [
        pipeline.call("SET", key, "text"),
        pipeline.call("INCR", key),  # not an integer: an error reply
        pipeline.call("GET", key),
    ]
    done = await asyncio.gather(*calls, return_exceptions=True)
    assert done[0] == b"OK"
    assert isinstance(done[1], ResponseError)
    assert done[2] == b"text"
    assert pipeline.sent == 1
    # The connection is still in step: the next batch reads its own replies.
    assert await pipeline.call("GET", key) == b"text"


async def test_a_caller_that_stops_waiting_leaves_the_batch_going(pool: Any) -> None:
    pipeline = Pipeline(pool, size=1)  # one connection: the GET goes after the SET
    key = f"pipe:{uuid.uuid4().hex}"
    given_up = pipeline.call("SET", key, "kept")
    given_up.cancel()
    await asyncio.sleep(0)
    assert await pipeline.call("GET", key) == b"kept"
    await pipeline.close()


async def test_calls_wait_for_a_connection_when_all_carry_a_batch(pool: Any) -> None:
    pipeline = Pipeline(pool, size=1)
    key = f"pipe:{uuid.uuid4().hex}"

    async def later(n: int) -> Any:
        await asyncio.sleep(0)  # a turn later: the first batch is under way
        return await pipeline.call("INCRBY", key, n)

    first = pipeline.call("INCRBY", key, 1)
    replies = await asyncio.gather(first, *(later(n) for n in range(2, 6)))
    assert replies == [1, 3, 6, 10, 15]  # in the order called
    assert pipeline.sent == 2  # the four that waited went out together on the one connection
    await pipeline.close()


async def test_an_idle_pipeline_survives_a_redis_restart(own_redis: Any) -> None:
    server, pool = own_redis
    pipeline = Pipeline(pool, timeout=2)
    try:
        assert await pipeline.call("PING") == b"PONG"
        server.restart()
        await asyncio.sleep(0.1)  # Redis's close of the connection has come
        # The idle connection that Redis closed is opened again before use: no call fails.
        assert await pipeline.call("PING") == b"PONG"
    finally:
        await pipeline.close()


async def test_a_redis_that_answers_nothing_fails_the_batch_within_its_timeout(
    own_redis: Any,
) -> None:
    server, pool = own_redis
    pipeline = Pipeline(pool, timeout=0.5)
    try:
        assert await pipeline.call("PING") == b"PONG"
        server.pause()
        calls = (pipeline.call("PING"), pipeline.call("PING"))
        done = await asyncio.wait_for(asyncio.gather(*calls, return_exceptions=True), 5)
        assert all(isinstance(result, TimeoutError) for result in done), done
        server.resume()
        # The stuck connection was closed: the next call goes out on a fresh one.
        assert await pipeline.call("PING") == b"PONG"
        # A call that waited for a busy connection is bounded from when it was made.
        single = Pipeline(pool, size=1, timeout=1.0)
        server.pause()
        loop = asyncio.get_running_loop()
        first = single.call("PING")
        await asyncio.sleep(0.6)
        made = loop.time()
        waited = single.call("PING")  # the one connection is stuck with the first
        done = await asyncio.wait_for(asyncio.gather(first, waited, return_exceptions=True), 5)
        assert all(isinstance(result, TimeoutError) for result in done), done
        # About 1.0 s after it was made, not 1.0 s after the first failed (1.4 s).
        assert loop.time() - made < 1.25
        server.resume()
        await single.close()
    finally:
        server.resume()
        await pipeline.close()


async def test_an_unreachable_redis_fails_every_call_of_the_batch() -> None:
    pool = BlockingConnectionPool.from_url(
        "redis://127.0.0.1:1/0", protocol=2, socket_connect_timeout=1
    )
    pipeline = Pipeline(pool)
    calls = (pipeline.call("PING"), pipeline.call("PING"))
    done = await asyncio.gather(*calls, return_exceptions=True)
    assert all(isinstance(result, RedisConnectionError) for result in done), done
    await pipeline.close()
    await pool.aclose()


@pytest.mark.parametrize(
    "command",
    [
        ("EVALSHA", "0123abcd", 2, "job:a", "job:b", b"", b"\x00\xff", 40, 2.5, -7),
        ("SET", "é", "ü" * 300),
        ("PING",),
    ],
)
def test_pack_makes_the_bytes_redis_py_makes(command: tuple[Any, ...]) -> None:
    assert pack(command) == b"".join(Connection().pack_command(*command))


def test_pack_refuses_a_bool() -> None:
    with pytest.raises(TypeError, match="bool"):
        pack(("SET", "k", True))


async def test_a_publish_after_redis_lost_its_scripts_loads_them_again(
    aiohttp_client: Any, redis_server: RedisServer
) -> None:
    broker = {"url": redis_server.url, "key_prefix": f"t{uuid.uuid4().hex[:12]}:"}
    client = await aiohttp_client(create_app(make_settings(broker=broker)))
    body = {"event": "progress", "data": {"percent": 1}}
    first = await client.post("/v1/jobs/lost/events", json=body)
    assert first.status == 200
    redis = Redis.from_url(redis_server.url)
    await redis.script_flush()
    await redis.aclose()
    again = await client.post("/v1/jobs/lost/events", json=body)
    assert again.status == 200, await again.text()
    assert (await again.json())["ids"] != (await first.json())["ids"]
