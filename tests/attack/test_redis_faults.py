"""Acknowledged against stored events through Redis faults: Redis killed with SIGKILL (and
restarted from its AOF, `appendfsync always`), and Redis frozen with SIGSTOP past
`broker.timeout`, while publishers keep publishing and retry what was refused, with and without
idempotency keys.

What the relay promises, and these runs check:
- every acknowledged event is stored (200 means in Redis, and on disk with appendfsync always);
- with keys, nothing is stored twice, however often a publisher retries;
- without keys, a retry of a publish that timed out may be stored twice (a frozen Redis runs
  the first attempt when it wakes): the count is reported, not hidden;
- every refusal is 503 broker_unavailable with Retry-After, and once Redis answers again no
  publish is refused.

FAULT_EVENTS (default 60) sets the events per publisher; docs/reliability.md has a run of 500.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient

from progress_relay.http.app import create_app
from tests.support.app import make_settings
from tests.support.redis_server import RedisServer

Client = TestClient[Any, Any]
EVENTS = int(os.environ.get("FAULT_EVENTS", "60"))
PUBLISHERS = 4
pytestmark = pytest.mark.timeout(120)


@dataclass
class Tally:
    acked: list[tuple[str, int]] = field(default_factory=list)
    refused: int = 0
    without_retry_after: int = 0
    refused_after_recovery: int = 0
    back_at: float = float("inf")  # when Redis answered again (monotonic)


async def _publisher(client: Client, job: str, keyed: bool, tally: Tally) -> None:
    """Publishes EVENTS events in order, each until acknowledged, as a worker's client does
    (the same key on every attempt when keyed)."""
    for n in range(EVENTS):
        body: dict[str, Any] = {"event": "progress", "data": {"step": n}}
        if keyed:
            body["key"] = f"{job}-{n}"
        while True:
            started = time.monotonic()
            try:
                response = await client.post(f"/v1/jobs/{job}/events", json=body)
            except aiohttp.ClientError:
                await asyncio.sleep(0.05)
                continue
            if response.status == 200:
                tally.acked.append((job, n))
                break
            assert response.status == 503, await response.text()
            assert (await response.json())["error"]["code"] == "broker_unavailable"
            tally.refused += 1
            tally.without_retry_after += "Retry-After" not in response.headers
            if started > tally.back_at:
                tally.refused_after_recovery += 1
            await asyncio.sleep(0.05)  # shorter than Retry-After, to keep the run short
        await asyncio.sleep(0.005)


async def _stored(client: Client, job: str) -> list[int]:
    response = await client.get(f"/v1/jobs/{job}/events?limit=1000")
    assert response.status == 200
    return [event["data"]["step"] for event in (await response.json())["events"]]


@pytest.fixture
def aof_redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path, aof=True)
    server.start()
    yield server
    server.kill()


async def _wait_answering(server: RedisServer) -> None:
    async with asyncio.timeout(10):
        while not await asyncio.to_thread(server.ping):  # noqa: ASYNC110 - polling Redis
            await asyncio.sleep(0.02)


async def _kill(server: RedisServer) -> None:
    port = server.port
    server.kill()  # SIGKILL
    await asyncio.sleep(0.5)
    server.port = port
    await asyncio.to_thread(server.start)  # from its AOF


async def _freeze(server: RedisServer) -> None:
    server.pause()  # SIGSTOP: connections stay open, nothing is answered
    await asyncio.sleep(1.5)  # three times broker.timeout
    server.resume()


async def _run(
    server: RedisServer, aiohttp_client: Any, fault: Callable[[RedisServer], Any], keyed: bool
) -> tuple[Tally, list[list[int]]]:
    settings = make_settings(
        broker={"url": server.url, "key_prefix": f"x{uuid.uuid4().hex[:8]}:", "timeout": 0.5}
    )
    client: Client = await aiohttp_client(create_app(settings))
    tally = Tally()
    jobs = [f"p{i}" for i in range(PUBLISHERS)]
    publishers = [asyncio.create_task(_publisher(client, job, keyed, tally)) for job in jobs]
    async with asyncio.timeout(90):
        while len(tally.acked) < PUBLISHERS * EVENTS // 3:  # noqa: ASYNC110 - a third done
            await asyncio.sleep(0.01)
        await fault(server)
        await _wait_answering(server)
        tally.back_at = time.monotonic() + 0.1  # requests sent before then may meet the fault
        await asyncio.gather(*publishers)
    stored = [await _stored(client, job) for job in jobs]
    duplicates = sum(sum(n - 1 for n in Counter(steps).values()) for steps in stored)
    print(
        f"\n{fault.__name__.strip('_')} keyed={keyed}: acknowledged {len(tally.acked)}, "
        f"stored {sum(map(len, stored))}, stored twice {duplicates}, refused {tally.refused}"
    )
    return tally, stored


@pytest.mark.parametrize("fault", [_kill, _freeze], ids=["kill-9", "sigstop"])
@pytest.mark.parametrize("keyed", [True, False], ids=["keys", "no-keys"])
async def test_acknowledged_events_are_stored_and_keys_store_them_once(
    aof_redis: RedisServer,
    aiohttp_client: Any,
    fault: Callable[[RedisServer], Any],
    keyed: bool,
) -> None:
    tally, stored = await _run(aof_redis, aiohttp_client, fault, keyed)
    assert len(tally.acked) == PUBLISHERS * EVENTS
    for steps in stored:
        assert sorted(set(steps)) == list(range(EVENTS))  # every acknowledged event is stored
        if keyed:
            assert steps == list(range(EVENTS))  # once each, in order
        else:
            assert steps == sorted(steps)  # a duplicate lands next to its first
    assert tally.refused > 0  # the fault was met
    assert tally.without_retry_after == 0
    assert tally.refused_after_recovery == 0
