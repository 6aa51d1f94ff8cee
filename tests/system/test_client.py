"""The asyncio SDK (progress_relay.client.AsyncRelay) against real relay processes, both brokers."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import httpx
import pytest

from progress_relay.client import (
    AsyncRelay,
    Event,
    JobFinished,
    JobNotFound,
    JobState,
    RelayUnavailable,
)
from tests.support.client_support import (
    Proxy,
    RunningRelay,
    free_port,
    history,
    job_id,
    launch,
    own_relay,
    shared_relay,
    unavailable_response,
)

__all__ = ["own_relay", "shared_relay"]  # fixtures


@pytest.fixture
async def relay(shared_relay: RunningRelay) -> AsyncIterator[AsyncRelay]:
    async with AsyncRelay(shared_relay.url, retry_budget=10) as client:
        yield client


@pytest.fixture
def proxy(shared_relay: RunningRelay) -> Iterator[Proxy]:
    proxy = Proxy(shared_relay.port)
    yield proxy
    proxy.close()


def names(events: list[dict[str, Any]]) -> list[str]:
    return [event["event"] for event in events]


async def collect(stream: AsyncIterator[Event]) -> list[Event]:
    return [event async for event in stream]


async def test_every_method(relay: AsyncRelay, shared_relay: RunningRelay) -> None:
    job = await relay.create_job(job_id(), ttl=60, meta={"kind": "report"})
    assert job.status_url == f"{shared_relay.url}/v1/jobs/{job.id}"
    assert (await relay.snapshot(job.id))["meta"] == {"kind": "report"}
    first = await relay.progress(job.id, 12.5, stage="upload", message="Uploading")
    assert first is not None and first.cancel_requested is False
    await relay.log(job.id, "uploaded", level="info")
    await relay.content(job.id, "tok")
    await relay.publish(job.id, "tool.call", {"name": "search"})
    await relay.batch(job.id, [("log", {"message": "b1"}), ("progress", {"percent": 50})])
    assert (await relay.cancel(job.id))["cancel_requested"] is True
    assert not relay.cancel_requested(job.id)  # no publish has said so yet
    done = await relay.complete(job.id, [1, 2], message="ok")
    assert done.cancel_requested is True
    events = history(shared_relay.url, job.id)
    assert (await relay.history(job.id))["events"] == events
    assert names(events) == [
        "progress", "log", "content", "tool.call", "log", "progress", "cancel_requested",
        "complete",
    ]  # fmt: skip
    assert events[0]["data"] == {"percent": 12.5, "stage": "upload", "message": "Uploading"}
    assert events[-1] == {
        "id": done.ids[0],
        "event": "complete",
        "data": {"result": [1, 2], "message": "ok"},
    }
    with pytest.raises(JobFinished):
        await relay.content(job.id, "late")
    failing, stopping = job_id(), job_id()
    await relay.fail(failing, "boom", code="E1")
    await relay.cancelled(stopping)
    assert (await relay.snapshot(failing))["error"]["code"] == "E1"
    assert (await relay.snapshot(stopping))["status"] == "cancelled"
    listed = {snap["id"] async for snap in relay.jobs(status="completed", page_size=2)}
    assert job.id in listed and failing not in listed
    await relay.delete(job.id)
    with pytest.raises(JobNotFound) as missing:
        await relay.snapshot(job.id)
    assert missing.value.code == "job_not_found"


async def test_relay_down_raises_relay_unavailable() -> None:
    async with AsyncRelay(f"http://127.0.0.1:{free_port()}", retry_budget=0.5) as relay:
        with pytest.raises(RelayUnavailable) as down:
            await relay.log(job_id(), "x")
    assert "gave up after" in str(down.value)


async def test_track_success(relay: AsyncRelay, shared_relay: RunningRelay) -> None:
    job = job_id()
    async with relay.track(job, stages=["upload", "transcribe", "summarize"]) as tracker:
        await tracker.stage("upload")
        await relay.flush(job)
        await tracker.stage("transcribe", message="Transcribing")
        await relay.flush(job)
        await tracker.progress(0.5, message="half")
        await relay.flush(job)
        await tracker.log("chunk 3 done")
        await tracker.content("text")
        tracker.result = {"url": "u"}
    events = history(shared_relay.url, job)
    assert [(e["event"], e["data"].get("percent"), e["data"].get("stage")) for e in events] == [
        ("progress", 0, "upload"),
        ("progress", 33.33, "transcribe"),
        ("progress", 50, "transcribe"),
        ("log", None, None),
        ("content", None, None),
        ("complete", None, None),
    ]
    assert events[-1]["data"] == {"result": {"url": "u"}}


async def test_track_failure(relay: AsyncRelay) -> None:
    job = job_id()
    with pytest.raises(KeyError):
        async with relay.track(job, stages={"a": 50, "b": 100}) as tracker:
            await tracker.stage("b")
            raise KeyError("missing")
    state = await relay.snapshot(job)
    assert (state["status"], state["error"]["code"]) == ("failed", "KeyError")
    assert state["percent"] == 50  # the held stage went out before `failed`


async def test_track_cancel(relay: AsyncRelay, shared_relay: RunningRelay) -> None:
    job = job_id()
    steps = 0
    async with relay.track(job, stages=["a", "b"]) as tracker:
        await tracker.stage("a")
        async with httpx.AsyncClient() as http:
            assert (await http.post(f"{shared_relay.url}/v1/jobs/{job}/cancel")).status_code == 202
        for i in range(100):
            await tracker.log(f"step {i}")
            steps += 1
    assert steps == 1  # the first log learnt of the cancel; the next call raised
    assert tracker.cancelled
    assert names(history(shared_relay.url, job)) == [
        "progress",
        "cancel_requested",
        "log",
        "cancelled",
    ]


async def test_task_cancellation_ends_the_job_as_cancelled(relay: AsyncRelay) -> None:
    job = job_id()
    started = asyncio.Event()

    async def worker() -> None:
        async with relay.track(job) as tracker:
            await tracker.progress(0.1)
            started.set()
            await asyncio.sleep(60)

    task = asyncio.create_task(worker())
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert (await relay.snapshot(job))["status"] == "cancelled"


async def test_coalescing(shared_relay: RunningRelay) -> None:
    job = job_id()
    rate = 10
    async with AsyncRelay(shared_relay.url, progress_rate=rate) as relay:
        started = time.monotonic()
        for i in range(1000):
            await relay.progress(job, i / 10)
            await relay.log(job, f"log {i}")
        elapsed = time.monotonic() - started
    events = history(shared_relay.url, job)
    progress = [e["data"]["percent"] for e in events if e["event"] == "progress"]
    assert [e["data"]["message"] for e in events if e["event"] == "log"] == [
        f"log {i}" for i in range(1000)
    ]
    assert 2 <= len(progress) <= rate * elapsed + 2
    assert progress[-1] == 99.9


async def test_a_held_progress_is_flushed_by_a_timer(relay: AsyncRelay) -> None:
    job = job_id()
    await relay.progress(job, 1)
    assert await relay.progress(job, 2) is None
    deadline = time.monotonic() + 10
    while (await relay.snapshot(job))["percent"] != 2:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.02)


async def test_lost_responses_and_503_are_retried_without_duplicates(
    relay: AsyncRelay, proxy: Proxy, shared_relay: RunningRelay
) -> None:
    job = job_id()
    async with AsyncRelay(proxy.url, batch_window=0) as through_proxy:  # the single-job route
        proxy.lose_next_response(b"first")
        one = await through_proxy.log(job, "first")
        proxy.answer_next(unavailable_response("0.1"), f"/v1/jobs/{job}/events".encode())
        two = await through_proxy.log(job, "second")
        proxy.lose_next_response(b"complete")
        three = await through_proxy.complete(job)
    assert (proxy.lost, proxy.answered) == (2, 1)
    events = history(shared_relay.url, job)
    assert [e["id"] for e in events] == [*one.ids, *two.ids, *three.ids]


async def test_subscribe_replays_then_follows_live_until_the_end(relay: AsyncRelay) -> None:
    job = job_id()
    await relay.log(job, "before")
    received: list[Event] = []
    async for event in relay.subscribe(job):
        received.append(event)
        if event.event == "log":
            await relay.progress(job, 50)
            await relay.complete(job)
    assert [(e.event, e.job) for e in received] == [
        ("log", job),
        ("progress", job),
        ("complete", job),
    ]
    assert received[0].data == {"message": "before", "level": "info"}
    # From the terminal event's id nothing more will ever come: 204, the iterator ends at once.
    assert await collect(relay.subscribe(job, last_event_id=received[-1].id)) == []
    # From an earlier id, exactly what followed it.
    rest = await collect(relay.subscribe(job, last_event_id=received[0].id))
    assert [e.id for e in rest] == [e.id for e in received[1:]]


async def test_subscribe_resumes_across_network_drops(
    relay: AsyncRelay, proxy: Proxy, shared_relay: RunningRelay
) -> None:
    job = job_id()
    await relay.log(job, "0")
    received: list[str] = []
    async with AsyncRelay(proxy.url) as reader:
        async for event in reader.subscribe(job):
            received.append(event.id or "")
            if len(received) < 5:
                await relay.log(job, str(len(received)))
                proxy.cut()
            elif len(received) == 5:
                await relay.complete(job)
    assert received == [e["id"] for e in history(shared_relay.url, job)]
    assert len(proxy.requests) >= 2  # it did reconnect


async def test_a_silent_stream_is_reopened_after_the_read_timeout(
    relay: AsyncRelay, proxy: Proxy, shared_relay: RunningRelay
) -> None:
    """The relay pings every second here; a stream that carries nothing for 3 s is dead."""
    job = job_id()
    await relay.log(job, "0")
    received: list[str] = []
    async with AsyncRelay(proxy.url, stream_read_timeout=3) as reader:
        async for event in reader.subscribe(job):
            received.append(event.id or "")
            if len(received) == 1:
                proxy.freeze()
                await relay.log(job, "1")
                await relay.complete(job)
    assert received == [e["id"] for e in history(shared_relay.url, job)]
    assert len(proxy.requests) == 2


async def test_subscribe_yields_reset_when_history_cannot_cover_the_gap(
    own_relay: Callable[..., RunningRelay],
) -> None:
    running = own_relay(PROGRESS_RELAY_JOBS_RING_EVENTS="3")
    job = job_id()
    async with AsyncRelay(running.url) as relay:
        first = await relay.log(job, "0")
        for i in range(1, 6):
            await relay.log(job, str(i))
        stream = relay.subscribe(job, last_event_id=first.ids[0])
        reset = await anext(stream)
        assert reset.event == "reset"
        assert reset.data["id"] == job and reset.data["status"] == "running"
        await relay.complete(job)
        rest = await collect(stream)
        assert [e.event for e in rest] == ["complete"]


async def test_a_reload_mid_answer_rebuilds_the_whole_text_of_5000_content_events(
    own_relay: Callable[..., RunningRelay],
) -> None:
    """A reader follows an answer of 5,000 `content` events, "reloads" (leaves, and comes back
    with its last id) after 2,500, and misses 1,500 more than the ring (1,000) holds: its
    `reset` carries the text so far, and live events continue it to the end."""
    running = own_relay(
        PROGRESS_RELAY_JOBS_RING_EVENTS="1000", PROGRESS_RELAY_JOBS_RING_BYTES=str(1 << 20)
    )
    job = job_id()
    pieces = [f"t{i} \u00e9\u20ac " for i in range(5000)]

    async def publish(relay: AsyncRelay, part: list[str]) -> str:
        last = ""
        for start in range(0, len(part), 1000):
            batch = [("content", {"text": text}) for text in part[start : start + 1000]]
            last = (await relay.batch(job, batch)).ids[-1]
        return last

    async with AsyncRelay(running.url, progress_rate=0) as relay:
        until = await publish(relay, pieces[:2500])
        state = JobState(job)
        resets = 0
        async with contextlib.aclosing(relay.subscribe(job)) as events:
            async for event in events:
                resets += event.event == "reset"
                state.apply(event)
                if event.id == until:
                    break  # the reload
        assert (resets, state.content) == (1, "".join(pieces[:2500]))  # 2,500 > the ring
        await publish(relay, pieces[2500:4000])
        stream = relay.subscribe(job, last_event_id=state.last_event_id)
        reset = await anext(stream)
        assert reset.event == "reset"
        state.apply(reset)
        assert state.content == "".join(pieces[:4000])

        async def finish() -> None:
            await publish(relay, pieces[4000:])
            await relay.complete(job, message="done")

        worker = asyncio.create_task(finish())
        async for event in stream:  # to the end: `complete`
            state.apply(event)
        await worker
        final = await relay.snapshot(job)
    assert state.content == "".join(pieces) == final["content"]
    assert (state.status, state.message, state.content_truncated) == ("completed", "done", False)
    assert state == JobState.from_snapshot(final)


async def test_wait_returns_the_final_snapshot(relay: AsyncRelay) -> None:
    job = job_id()
    await relay.progress(job, 10)

    async def work() -> None:
        await asyncio.sleep(0.2)
        await relay.progress(job, 80)
        await relay.fail(job, "disk full", code="ENOSPC")

    worker = asyncio.create_task(work())
    final = await relay.wait(job)
    await worker
    assert (final["status"], final["error"]["code"]) == ("failed", "ENOSPC")
    assert (await relay.wait(job))["status"] == "failed"  # already finished: at once


async def test_wait_for_a_job_published_later(relay: AsyncRelay) -> None:
    job = job_id()

    async def work() -> None:
        await asyncio.sleep(0.2)
        await relay.complete(job, "r")

    worker = asyncio.create_task(work())
    final = await relay.wait(job)
    await worker
    assert final["result"] == "r"


@pytest.mark.parametrize("broker", ["redis"])
async def test_publishing_and_subscribing_across_a_relay_restart(
    broker: str, redis_server: Any
) -> None:
    """kill -9 of the relay while a worker publishes and a service follows the stream: the
    worker's events each reach history once, and the subscriber gets each once, in order."""
    running = launch(broker, redis_server)
    job = job_id()
    count = 120
    try:
        async with (
            AsyncRelay(running.url, retry_budget=30) as worker,
            AsyncRelay(running.url, retry_budget=30) as reader,
        ):
            await worker.log(job, "log 0")
            seen: list[Event] = []

            async def follow() -> None:
                async for event in reader.subscribe(job):
                    seen.append(event)

            follower = asyncio.create_task(follow())
            loop = asyncio.get_running_loop()
            for i in range(1, count):
                await worker.log(job, f"log {i}")
                if i in (40, 80):
                    loop.call_later(0.005, running.restart)
            await worker.complete(job)
            await asyncio.wait_for(follower, 60)
        events = history(running.url, job)
        assert [e["data"].get("message") for e in events] == [f"log {i}" for i in range(count)] + [
            None
        ]
        assert [e.id for e in seen] == [e["id"] for e in events]
    finally:
        running.close()


async def test_fast_stages_each_arrive_before_their_logs(
    relay: AsyncRelay, shared_relay: RunningRelay
) -> None:
    job = job_id()
    stages = ["fetch", "parse", "render"]
    async with relay.track(job, stages=stages) as tracker:
        for name in stages:
            await tracker.stage(name)
            for step in range(20):
                await tracker.progress(step / 20)
            await tracker.log(f"{name} done")
    events = history(shared_relay.url, job)
    seen = [(e["event"], e["data"].get("stage") or e["data"].get("message")) for e in events]
    for name in stages:
        assert seen.index(("progress", name)) < seen.index(("log", f"{name} done")), seen
    assert len([n for n, _ in seen if n == "progress"]) < 3 * 20
