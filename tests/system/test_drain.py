"""Graceful drain: SIGTERM with 500 open streams and a publish in flight."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import AsyncIterator

import aiohttp
import pytest

from progress_relay.http.keys import HUB
from tests.support.app import MakeClient, publish
from tests.support.process import start_relay
from tests.support.sse_client import SSEReader

STREAMS = 500
GRACE = 3.0
DRAIN_RETRY_MS = 4000


async def last_frame_of(session: aiohttp.ClientSession, url: str, opened: asyncio.Event) -> int:
    """Follow a stream to its end; the `retry:` it ended with (-1: none)."""
    async with session.get(url) as response:
        assert response.status == 200
        reader = SSEReader(response)
        first = await reader.next(timeout=30)  # the `retry:` every stream starts with
        assert first is not None and first.retry is not None
        opened.set()
        last = -1
        while (frame := await reader.next(timeout=30)) is not None:
            if frame.retry is not None:
                last = frame.retry
        return last


async def test_sigterm_ends_every_stream_with_a_jittered_retry_and_finishes_publishes() -> None:
    relay = start_relay(
        env={
            "PROGRESS_RELAY_SERVER_SHUTDOWN_TIMEOUT": str(GRACE),
            "PROGRESS_RELAY_SERVER_DRAIN_RETRY_MS": str(DRAIN_RETRY_MS),
        }
    )
    base = relay.base_url
    try:
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector) as session:
            opened = [asyncio.Event() for _ in range(STREAMS)]
            streams = [
                asyncio.create_task(
                    last_frame_of(
                        session,
                        f"{base}/v1/jobs/job-{n % 25}/stream"
                        if n % 2
                        else f"{base}/v1/stream?job=job-{n % 25}&job=other",
                        opened[n],
                    )
                )
                for n in range(STREAMS)
            ]
            await asyncio.wait_for(asyncio.gather(*(event.wait() for event in opened)), 60)

            # A publish whose body is still arriving when the signal comes.
            body_sent = asyncio.Event()

            async def slow_body() -> AsyncIterator[bytes]:
                yield b'{"events":[{"event":"log","data":{"message":"first"}},'
                body_sent.set()
                await asyncio.sleep(0.5)
                yield b'{"event":"log","data":{"message":"second"}}]}'

            publishing = asyncio.create_task(
                session.post(
                    f"{base}/v1/jobs/job-1/events",
                    data=slow_body(),
                    headers={"Content-Type": "application/json"},
                )
            )
            await body_sent.wait()
            await asyncio.sleep(0.1)
            started = time.monotonic()
            relay.process.send_signal(signal.SIGTERM)
            published = await asyncio.wait_for(publishing, 10)
            assert published.status == 200, await published.text()
            assert len((await published.json())["ids"]) == 2
            retries = await asyncio.wait_for(asyncio.gather(*streams), 10)
        log = relay.wait(timeout=GRACE + 5)
        elapsed = time.monotonic() - started
    finally:
        relay.close()
    assert relay.process.returncode == 0, log
    assert elapsed < GRACE + 2, f"exited {elapsed:.2f} s after SIGTERM"
    # Every stream ended with a retry hint in [10 %, 100 %] of drain_retry_ms, spread out.
    assert all(DRAIN_RETRY_MS // 10 <= retry <= DRAIN_RETRY_MS for retry in retries), retries
    assert len(set(retries)) > STREAMS // 4
    assert "Traceback" not in log, log
    print(f"\nexit {elapsed:.2f} s after SIGTERM; retry hints {min(retries)}-{max(retries)} ms")


@pytest.mark.memory_only
async def test_while_draining_new_streams_and_readiness_are_refused(
    make_client: MakeClient,
) -> None:
    client = await make_client(stream={"retry_ms": 2000})
    await publish(client, "job", "log", {"message": "before"})
    client.app[HUB].shutdown()
    stream = await client.get("/v1/jobs/job/stream")
    assert stream.status == 503
    assert (await stream.json())["error"]["code"] == "shutting_down"
    assert stream.headers["Retry-After"] == "2"
    ready = await client.get("/readyz")
    assert ready.status == 503
    assert (await ready.json())["error"]["code"] == "shutting_down"
    # Requests that are not streams are still answered while in-flight work finishes.
    assert (await client.get("/v1/jobs/job")).status == 200
