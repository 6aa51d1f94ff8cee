"""Heartbeats of real streams come from the Hub's one timer (core/heartbeat.py), not from a task
per stream, and a stream that ends leaves it."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from progress_relay.http.app import create_app
from progress_relay.http.keys import HUB
from tests.support.app import make_settings

STREAMS = 1000
PING = b": ping\n\n"


async def _open(port: int, job: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /v1/jobs/%s/stream HTTP/1.1\r\nHost: relay\r\n\r\n" % job.encode())
    await writer.drain()
    return reader, writer


async def _until(condition: Callable[[], bool]) -> None:
    """Polls the relay's own state (it has no event for these), bounded by the test timeout."""
    while not condition():  # noqa: ASYNC110
        await asyncio.sleep(0.01)


async def _until_ping(reader: asyncio.StreamReader) -> None:
    seen = b""
    while PING not in seen:
        seen += await asyncio.wait_for(reader.read(4096), 10)
        assert seen, "the stream ended"


async def test_a_thousand_streams_get_heartbeats_from_one_timer(aiohttp_client: Any) -> None:
    app = create_app(make_settings(broker={"url": "memory://"}, stream={"heartbeat": 0.3}))
    client = await aiohttp_client(app)
    hub = app[HUB]
    port = client.server.port
    await client.post("/v1/jobs/hb/events", json={"event": "progress", "data": {"percent": 1}})
    streams = [await _open(port, "hb") for _ in range(STREAMS)]
    try:
        await _until(lambda: hub.heartbeat.streams == STREAMS)  # each joins once it is live
        assert hub.heartbeat.armed
        pings = [
            task
            for task in asyncio.all_tasks()
            if getattr(task.get_coro(), "__name__", "") == "_ping"
        ]
        assert pings == []
        await asyncio.gather(*(_until_ping(reader) for reader, _ in streams))
    finally:
        for _, writer in streams:
            writer.close()
    await _until(lambda: not hub.streams)
    assert hub.heartbeat.streams == 0
    assert not hub.heartbeat.armed


async def test_a_finished_stream_leaves_the_heartbeat(aiohttp_client: Any) -> None:
    app = create_app(make_settings(broker={"url": "memory://"}, stream={"heartbeat": 0.2}))
    client = await aiohttp_client(app)
    hub = app[HUB]
    await client.post("/v1/jobs/done/events", json={"event": "progress", "data": {}})
    response = await client.get("/v1/jobs/done/stream")
    await _until(lambda: hub.heartbeat.streams == 1)
    await client.post("/v1/jobs/done/events", json={"event": "complete", "data": {}})
    body = await asyncio.wait_for(response.read(), 10)  # the stream ends after `complete`
    assert b"event: complete" in body
    await _until(lambda: not hub.streams)
    assert hub.heartbeat.streams == 0
    assert not hub.heartbeat.armed
