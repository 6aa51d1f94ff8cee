"""Hand-over from replay to live delivery: nothing missed, nothing twice, whatever the timing."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp.test_utils import TestClient, TestServer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from progress_relay.http.app import create_app
from tests.support.app import make_settings, publish_many, stream_opener
from tests.support.sse_client import Frame

TOTAL = 1000


async def _run_interleaving(
    batches: list[int], yields: list[int], connect_after: int, resume_from: int | None, ring: int
) -> tuple[list[str], list[Frame]]:
    """Publish TOTAL events in ``batches`` while one subscriber connects mid-way."""
    app = create_app(make_settings(jobs={"ring_events": ring}))
    async with TestClient(TestServer(app)) as client:
        open_stream = stream_opener(client)
        published: list[str] = []
        connected = asyncio.Event()

        async def publisher() -> None:
            index = 0
            number = 0
            while len(published) < TOTAL:
                size = min(batches[number % len(batches)], TOTAL - len(published))
                events = [("progress", {"percent": 0, "step": index + i}) for i in range(size)]
                published.extend(await publish_many(client, "job", events))
                index += size
                if number == connect_after:
                    connected.set()
                for _ in range(yields[number % len(yields)]):
                    await asyncio.sleep(0)
                number += 1
            connected.set()
            last = await publish_many(client, "job", [("complete", {})])
            published.extend(last)

        task = asyncio.create_task(publisher())
        await connected.wait()
        headers = {}
        if resume_from is not None and published:
            headers["Last-Event-ID"] = published[min(resume_from, len(published) - 1)]
        async with open_stream("/v1/jobs/job/stream", headers=headers) as (_, reader):
            frames = await reader.until_end(timeout=20)
        await task
        assert len(published) == TOTAL + 1
        if "Last-Event-ID" in headers:
            published = published[published.index(headers["Last-Event-ID"]) + 1 :]
        return published, frames


def _check_exactly_once_or_reset(published: list[str], frames: list[Frame]) -> None:
    ids = [frame.id for frame in frames]
    if frames and frames[0].event == "reset":
        # An explicit reset, then exactly the events after the position it names.
        position = published.index(frames[0].id) if frames[0].id in published else -1
        assert ids[1:] == published[position + 1 :]
        assert all(frame.event != "reset" for frame in frames[1:])
    else:
        assert ids == published, "every event exactly once, in order"


@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    batches=st.lists(st.integers(1, 120), min_size=8, max_size=60),
    yields=st.lists(st.integers(0, 5), min_size=1, max_size=8),
    connect_after=st.integers(0, 40),
    resume_from=st.one_of(st.none(), st.integers(0, TOTAL)),
    small_ring=st.booleans(),
)
def test_a_subscriber_connecting_during_publishing_sees_each_event_once(
    batches: list[int],
    yields: list[int],
    connect_after: int,
    resume_from: int | None,
    small_ring: bool,
) -> None:
    ring = 50 if small_ring else 2000
    published, frames = asyncio.run(
        _run_interleaving(batches, yields, connect_after, resume_from, ring)
    )
    if ring >= TOTAL + 1:
        assert [frame.id for frame in frames] == published
    else:
        _check_exactly_once_or_reset(published, frames)


async def test_three_subscribers_joining_during_a_thousand_events_get_all_of_them(
    make_client: Any,
) -> None:
    client: TestClient[Any, Any] = await make_client()
    open_stream = stream_opener(client)
    published: list[str] = []
    progressed = asyncio.Condition()

    async def publisher() -> None:
        for start in range(0, TOTAL, 25):
            events = [("log", {"message": str(i)}) for i in range(start, start + 25)]
            published.extend(await publish_many(client, "many", events))
            async with progressed:
                progressed.notify_all()
        published.extend(await publish_many(client, "many", [("complete", {})]))

    async def subscriber(delay_batches: int) -> list[str | None]:
        async with progressed:
            await progressed.wait_for(lambda: len(published) >= delay_batches * 25)
        async with open_stream("/v1/jobs/many/stream") as (_, reader):
            return [frame.id for frame in await reader.until_end(timeout=20)]

    task = asyncio.create_task(publisher())
    results = await asyncio.gather(subscriber(1), subscriber(10), subscriber(30))
    await task
    for ids in results:
        assert ids == published
