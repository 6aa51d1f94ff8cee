"""Lifetimes: pending, idle and finished TTLs, the reaper task, and evictions that fail.

Most tests sweep by hand (the reaper's own interval is an hour there) so that what a sweep does is
checked without racing the timer; one test runs the real timer.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from progress_relay.brokers.memory import MemoryBroker
from progress_relay.config import JobSettings
from progress_relay.core.hub import Hub
from progress_relay.core.reaper import Reaper
from progress_relay.http.keys import REAPER
from progress_relay.wire.events import make_draft
from tests.support.app import MakeClient, make_settings, publish, stream_opener

HOUR = 3600.0
SHORT = 0.2


async def _outlive(ttl: float = SHORT) -> None:
    await asyncio.sleep(ttl * 1.5)


async def test_pending_stream_gets_job_not_found_from_the_timer_then_204(
    make_client: MakeClient,
) -> None:
    client = await make_client(jobs={"pending_ttl": SHORT}, reaper={"interval": 0.05})
    async with stream_opener(client)("/v1/jobs/ghost/stream") as (response, reader):
        assert response.status == 200
        [failed] = await reader.until_end(timeout=5)
    assert failed.event == "failed"
    assert failed.json == {"message": "job ghost was never published", "code": "job_not_found"}
    assert failed.id is not None
    again = await client.get("/v1/jobs/ghost/stream", headers={"Last-Event-ID": failed.id})
    assert again.status == 204


async def test_created_job_that_is_never_published_expires(make_client: MakeClient) -> None:
    client = await make_client(jobs={"pending_ttl": SHORT}, reaper={"interval": HOUR})
    reaper = client.app[REAPER]
    assert (await client.post("/v1/jobs", json={"id": "made"})).status == 201
    async with stream_opener(client)("/v1/jobs/made/stream") as (_, reader):
        assert (await reader.next()).retry == 3000
        await reaper.sweep()
        assert (await client.get("/v1/jobs/made")).status == 200
        await _outlive()
        await reaper.sweep()
        [failed] = await reader.until_end()
    assert (failed.event, failed.json["code"]) == ("failed", "job_not_found")
    assert (await client.get("/v1/jobs/made")).status == 404


async def test_a_job_ttl_replaces_the_pending_ttl(make_client: MakeClient) -> None:
    client = await make_client(jobs={"pending_ttl": HOUR}, reaper={"interval": HOUR})
    await client.post("/v1/jobs", json={"id": "brief", "ttl": SHORT})
    await client.post("/v1/jobs", json={"id": "default"})
    await _outlive()
    await client.app[REAPER].sweep()
    assert (await client.get("/v1/jobs/brief")).status == 404
    assert (await client.get("/v1/jobs/default")).status == 200


async def test_idle_running_job_expires_and_its_stream_is_told(make_client: MakeClient) -> None:
    client = await make_client(jobs={"idle_ttl": SHORT}, reaper={"interval": HOUR})
    reaper = client.app[REAPER]
    first = await publish(client, "idle", "progress", {"percent": 5})
    async with stream_opener(client)("/v1/jobs/idle/stream") as (_, reader):
        [progress] = await reader.events(1)
        assert progress.id == first
        await _outlive()
        await reaper.sweep()
        [failed] = await reader.until_end()
    assert failed.event == "failed"
    assert failed.json == {
        "message": "job idle stopped reporting progress and expired",
        "code": "job_expired",
    }
    assert failed.id is not None and failed.id != first
    assert int(failed.id.rsplit("-", 1)[1]) > int(first.rsplit("-", 1)[1])
    assert (await client.get("/v1/jobs/idle")).status == 404
    again = await client.get("/v1/jobs/idle/stream", headers={"Last-Event-ID": failed.id})
    assert again.status == 204


async def test_an_event_keeps_a_running_job_alive(make_client: MakeClient) -> None:
    client = await make_client(jobs={"idle_ttl": 0.4}, reaper={"interval": HOUR})
    await publish(client, "busy", "progress", {"percent": 1})
    for percent in range(2, 6):
        await asyncio.sleep(0.15)
        await publish(client, "busy", "progress", {"percent": percent})
        await client.app[REAPER].sweep()
    assert (await client.get("/v1/jobs/busy")).status == 200


async def test_finished_job_is_kept_for_finished_ttl_then_gone(make_client: MakeClient) -> None:
    client = await make_client(
        jobs={"finished_ttl": 0.4, "idle_ttl": SHORT}, reaper={"interval": HOUR}
    )
    reaper = client.app[REAPER]
    done = await publish(client, "done", "complete", {"result": 1})
    await _outlive()
    await reaper.sweep()
    response = await client.get("/v1/jobs/done")
    assert response.status == 200, "a finished job lives by finished_ttl, not idle_ttl"
    assert (await response.json())["status"] == "completed"
    await asyncio.sleep(0.4)
    await reaper.sweep()
    assert (await client.get("/v1/jobs/done")).status == 404
    again = await client.get("/v1/jobs/done/stream", headers={"Last-Event-ID": done})
    assert again.status == 204


async def test_eviction_ends_the_multi_job_stream_only_for_that_job(
    make_client: MakeClient,
) -> None:
    client = await make_client(jobs={"idle_ttl": 0.3}, reaper={"interval": HOUR})
    await publish(client, "old", "progress", {"percent": 1})
    await publish(client, "new", "progress", {"percent": 1})
    async with stream_opener(client)("/v1/stream?job=old&job=new") as (_, reader):
        assert len(await reader.events(2)) == 2
        for percent in range(2, 7):  # "new" keeps reporting, "old" goes quiet
            await asyncio.sleep(0.1)
            await publish(client, "new", "progress", {"percent": percent})
        await client.app[REAPER].sweep()
        frames = await reader.events(6)
        assert [f.json["job"] for f in frames[:5]] == ["new"] * 5
        assert (frames[5].json["job"], frames[5].json["data"]["code"]) == ("old", "job_expired")
        later = await publish(client, "new", "complete", {})
        [complete] = await reader.until_end()
    assert (complete.id, complete.json["job"]) == (later, "new")


class FlakyDeleteBroker(MemoryBroker):
    """Deleting one particular job fails, as a networked broker's call can."""

    def __init__(self, settings: JobSettings, failing: str) -> None:
        super().__init__(settings)
        self.failing = failing

    async def delete(self, job_id: str) -> Any:
        if job_id == self.failing:
            raise ConnectionError(f"lost the broker while deleting {job_id}")
        return await super().delete(job_id)


@pytest.mark.memory_only  # Redis expires jobs itself; nothing is evicted one by one
async def test_one_failing_eviction_is_logged_and_the_sweep_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings = make_settings(jobs={"idle_ttl": SHORT})
    broker = FlakyDeleteBroker(settings.jobs, failing="b")
    hub = Hub(broker, settings)
    reaper = Reaper(broker, hub, HOUR)
    for job_id in ("a", "b", "c"):
        await broker.publish(job_id, [make_draft("progress", b'{"percent":1}', "$", 1024)])
    await _outlive()
    with caplog.at_level(logging.ERROR, logger="progress_relay.core.reaper"):
        assert await reaper.sweep() == 2
    assert await broker.snapshot("a") is None
    assert await broker.snapshot("c") is None
    assert await broker.snapshot("b") is not None
    [record] = caplog.records
    assert record.getMessage() == "evicting job b failed"
    assert record.exc_info is not None and "lost the broker" in str(record.exc_info[1])
    broker.failing = ""
    assert await reaper.sweep() == 1, "the next sweep retries the job that failed"


async def test_there_is_one_reaper_task_and_close_stops_it(make_client: MakeClient) -> None:
    client = await make_client(reaper={"interval": HOUR})
    reaper = client.app[REAPER]
    with pytest.raises(RuntimeError, match="already running"):
        reaper.start()
    assert [t for t in asyncio.all_tasks() if t.get_name() == "reaper"]
    await reaper.close()
    await reaper.close()
    assert not [t for t in asyncio.all_tasks() if t.get_name() == "reaper"]
