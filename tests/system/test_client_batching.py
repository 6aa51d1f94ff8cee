"""Batching across jobs in both SDK clients, against real relay processes (both brokers): what
all jobs publish within ``batch_window`` goes in one ``POST /v1/events`` (counted by the relay's
own /metrics), each job's order and coalescing kept; an old relay (404) gets one request per job."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator

import httpx
import pytest

from progress_relay.client import AsyncRelay, BadRequest, JobFinished, Relay, RelayUnavailable
from tests.support.app import parse_metrics
from tests.support.client_support import (
    Proxy,
    RunningRelay,
    history,
    job_id,
    own_relay,
    shared_relay,
    unavailable_response,
)

__all__ = ["own_relay", "shared_relay"]  # fixtures

CROSS = "/v1/events"
SINGLE = "/v1/jobs/{job_id}/events"


def publishes(url: str) -> dict[str, float]:
    """POST requests the relay answered, by route."""
    metrics = parse_metrics(httpx.get(f"{url}/metrics").text)
    counts = {CROSS: 0.0, SINGLE: 0.0}
    for key, value in metrics.items():
        if key.startswith("progress_relay_http_requests_total{") and "method=POST" in key:
            for route in counts:
                if f"route={route}," in key:
                    counts[route] += value
    return counts


def grew(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {route: after[route] - before[route] for route in before}


@pytest.fixture
def proxy(shared_relay: RunningRelay) -> Iterator[Proxy]:
    proxy = Proxy(shared_relay.port)
    yield proxy
    proxy.close()


async def test_async_publishes_of_many_jobs_go_in_one_request(shared_relay: RunningRelay) -> None:
    jobs = [job_id() for _ in range(20)]
    before = publishes(shared_relay.url)
    async with AsyncRelay(shared_relay.url) as relay:
        await asyncio.gather(*(relay.log(job, "one") for job in jobs))
        assert relay.cross_job.requests == 1
        answers = await asyncio.gather(*(relay.log(job, "two") for job in jobs))
    assert grew(before, publishes(shared_relay.url)) == {CROSS: 2, SINGLE: 0}
    for job, answer in zip(jobs, answers, strict=True):
        events = history(shared_relay.url, job)
        assert [e["data"]["message"] for e in events] == ["one", "two"]
        assert events[1]["id"] == answer.ids[0]


async def test_async_trackers_keep_each_jobs_order_and_coalescing(
    shared_relay: RunningRelay,
) -> None:
    jobs = [job_id() for _ in range(10)]

    async def work(relay: AsyncRelay, job: str) -> None:
        async with relay.track(job, stages=["read", "write"]) as tracker:
            await tracker.stage("read")
            for percent in range(1, 50):
                await tracker.progress(percent)  # coalesced: one per 1/progress_rate s
            await tracker.log("half")
            await tracker.stage("write")
            await tracker.content("text")

    before = publishes(shared_relay.url)
    async with AsyncRelay(shared_relay.url, progress_rate=1) as relay:
        await asyncio.gather(*(work(relay, job) for job in jobs))
    counted = grew(before, publishes(shared_relay.url))
    assert counted[SINGLE] == 0
    for job in jobs:
        events = history(shared_relay.url, job)
        names = [e["event"] for e in events]
        assert names[-1] == "complete"
        assert names.index("log") < len(names) - 1
        # The stage milestones and at most a few coalesced progresses, never all 49.
        assert len([n for n in names if n == "progress"]) < 10
        percents = [e["data"].get("percent") for e in events if e["event"] == "progress"]
        assert [p for p in percents if p is not None] == sorted(
            p for p in percents if p is not None
        )
        assert names.index("content") > names.index("log")
    # Far fewer requests than the jobs' publishes: each round carried several jobs.
    assert counted[CROSS] < sum(len(history(shared_relay.url, job)) for job in jobs)


async def test_async_a_finished_job_raises_and_the_others_are_published(
    shared_relay: RunningRelay,
) -> None:
    done, fine = job_id(), job_id()
    async with AsyncRelay(shared_relay.url) as relay:
        await relay.complete(done)
        results = await asyncio.gather(
            relay.log(done, "late"), relay.log(fine, "on time"), return_exceptions=True
        )
    assert isinstance(results[0], JobFinished)
    assert [e["data"]["message"] for e in history(shared_relay.url, fine)] == ["on time"]


async def test_async_cancel_requested_is_read_per_job(shared_relay: RunningRelay) -> None:
    asked, other = job_id(), job_id()
    async with AsyncRelay(shared_relay.url) as relay:
        await asyncio.gather(relay.log(asked, "start"), relay.log(other, "start"))
        await relay.cancel(asked)
        await asyncio.gather(relay.log(asked, "again"), relay.log(other, "again"))
        assert relay.cross_job.requests == 2
        assert relay.cancel_requested(asked) and not relay.cancel_requested(other)


async def test_async_an_old_relay_gets_one_request_per_job(
    proxy: Proxy, shared_relay: RunningRelay
) -> None:
    jobs = [job_id() for _ in range(3)]
    proxy.answer_next(unavailable_response("0", "404 Not Found", "not_found"), CROSS.encode())
    before = publishes(shared_relay.url)
    async with AsyncRelay(proxy.url) as relay:
        await asyncio.gather(*(relay.log(job, "one") for job in jobs))
        await asyncio.gather(*(relay.log(job, "two") for job in jobs))
        assert relay.cross_job.supported is False
    assert proxy.answered == 1
    assert grew(before, publishes(shared_relay.url)) == {CROSS: 0, SINGLE: 6}
    for job in jobs:
        assert [e["data"]["message"] for e in history(shared_relay.url, job)] == ["one", "two"]


async def test_async_a_lost_cross_job_response_is_retried_without_duplicates(
    proxy: Proxy, shared_relay: RunningRelay
) -> None:
    jobs = [job_id() for _ in range(3)]
    async with AsyncRelay(proxy.url) as relay:
        proxy.lose_next_response(b"lost once")
        await asyncio.gather(*(relay.log(job, "lost once") for job in jobs))
    assert proxy.lost == 1
    for job in jobs:
        assert [e["data"]["message"] for e in history(shared_relay.url, job)] == ["lost once"]


async def test_async_window_zero_sends_one_request_per_job(shared_relay: RunningRelay) -> None:
    jobs = [job_id() for _ in range(3)]
    before = publishes(shared_relay.url)
    async with AsyncRelay(shared_relay.url, batch_window=0) as relay:
        await asyncio.gather(*(relay.log(job, "one") for job in jobs))
    assert grew(before, publishes(shared_relay.url)) == {CROSS: 0, SINGLE: 3}


def test_sync_threads_of_many_jobs_share_requests(shared_relay: RunningRelay) -> None:
    jobs = [job_id() for _ in range(8)]
    before = publishes(shared_relay.url)
    start = threading.Barrier(len(jobs))
    with Relay(shared_relay.url, batch_window=0.05) as relay:

        def work(job: str) -> None:
            start.wait()
            for n in range(5):
                relay.log(job, f"m{n}")
            relay.complete(job)

        threads = [threading.Thread(target=work, args=(job,)) for job in jobs]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    counted = grew(before, publishes(shared_relay.url))
    assert counted[SINGLE] == 0
    assert counted[CROSS] == relay.cross_job.requests
    assert counted[CROSS] < 6 * len(jobs)  # some requests carried several jobs
    for job in jobs:
        events = history(shared_relay.url, job)
        assert [e["data"].get("message") for e in events] == [*(f"m{n}" for n in range(5)), None]


def test_sync_held_progress_of_many_jobs_is_flushed_together(shared_relay: RunningRelay) -> None:
    jobs = [job_id() for _ in range(10)]
    with Relay(shared_relay.url, progress_rate=0.01) as relay:
        for job in jobs:
            relay.progress(job, 1)
            relay.progress(job, 2)  # held
        before = relay.cross_job.requests
        relay.flush()
        assert relay.cross_job.requests == before + 1
    for job in jobs:
        assert [e["data"]["percent"] for e in history(shared_relay.url, job)] == [1, 2]


def test_sync_an_old_relay_gets_one_request_per_job(
    proxy: Proxy, shared_relay: RunningRelay
) -> None:
    job = job_id()
    proxy.answer_next(unavailable_response("0", "405 Method Not Allowed", "x"), CROSS.encode())
    with Relay(proxy.url) as relay:
        relay.log(job, "one")
        relay.log(job, "two")
        assert relay.cross_job.supported is False
    assert proxy.answered == 1
    assert [e["data"]["message"] for e in history(shared_relay.url, job)] == ["one", "two"]


async def test_async_a_job_refused_with_a_retried_status_is_sent_alone(
    own_relay: Callable[..., RunningRelay],
) -> None:
    running = own_relay(PROGRESS_RELAY_JOBS_MAX_JOBS="1")
    first, second = job_id(), job_id()
    before = publishes(running.url)
    async with AsyncRelay(running.url, retry_budget=0.3) as relay:
        results = await asyncio.gather(
            relay.log(first, "fits"), relay.log(second, "no room"), return_exceptions=True
        )
    assert not isinstance(results[0], BaseException)
    assert isinstance(results[1], RelayUnavailable)
    assert results[1].code == "too_many_jobs"
    counted = grew(before, publishes(running.url))
    # One cross-job request, then the refused job on its own route, retried in its budget.
    assert counted[CROSS] == 1 and counted[SINGLE] >= 1
    assert [e["data"]["message"] for e in history(running.url, first)] == ["fits"]


def test_sync_a_bad_event_fails_only_its_job(shared_relay: RunningRelay) -> None:
    good, bad = job_id(), job_id()
    start = threading.Barrier(2)
    outcome: dict[str, BaseException | None] = {}
    before = publishes(shared_relay.url)
    with Relay(shared_relay.url, batch_window=0.05) as relay:

        def publish(job: str, data: dict[str, str]) -> None:
            start.wait()
            try:
                relay.publish(job, "log", data)
                outcome[job] = None
            except BaseException as error:
                outcome[job] = error

        threads = [
            threading.Thread(target=publish, args=(good, {"message": "x"})),
            threading.Thread(target=publish, args=(bad, {"text": "no message"})),
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert outcome[good] is None
    assert isinstance(outcome[bad], BadRequest)
    # The request of both was refused whole (422), then each job went on its own route.
    assert grew(before, publishes(shared_relay.url)) == {CROSS: 1, SINGLE: 2}
    assert [e["data"]["message"] for e in history(shared_relay.url, good)] == ["x"]
