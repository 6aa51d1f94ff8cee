"""The synchronous SDK (progress_relay.client.Relay) against real relay processes, both brokers."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from progress_relay.client import (
    BadRequest,
    Cancelled,
    JobFinished,
    JobNotFound,
    JobState,
    Relay,
    RelayUnavailable,
    Unauthorized,
)
from tests.support.client_support import (
    Proxy,
    RunningRelay,
    eventually,
    free_port,
    history,
    job_id,
    launch,
    own_relay,
    shared_relay,
    snapshot,
    unavailable_response,
)

__all__ = ["own_relay", "shared_relay"]  # fixtures


@pytest.fixture
def relay(shared_relay: RunningRelay) -> Iterator[Relay]:
    with Relay(shared_relay.url, retry_budget=10) as client:
        yield client


@pytest.fixture
def proxy(shared_relay: RunningRelay) -> Iterator[Proxy]:
    proxy = Proxy(shared_relay.port)
    yield proxy
    proxy.close()


def names(events: list[dict[str, Any]]) -> list[str]:
    return [event["event"] for event in events]


def test_create_job_gives_absolute_urls_and_is_idempotent(
    relay: Relay, shared_relay: RunningRelay
) -> None:
    job = relay.create_job("report-" + job_id(), ttl=120, meta={"user": "u1"})
    assert job.stream_url == f"{shared_relay.url}/v1/jobs/{job.id}/stream"
    assert job.status_url == f"{shared_relay.url}/v1/jobs/{job.id}"
    assert job.subscribe_token is None
    assert relay.snapshot(job.id)["meta"] == {"user": "u1"}
    assert relay.create_job(job.id).id == job.id
    chosen = relay.create_job()
    assert len(chosen.id) == 32
    assert relay.snapshot(chosen.id)["status"] == "pending"


def test_every_publish_method_reaches_the_job(relay: Relay, shared_relay: RunningRelay) -> None:
    job = job_id()
    first = relay.progress(job, 40, stage="searching", message="Searching", step=1, total_steps=3)
    assert first is not None and len(first.ids) == 1 and first.cancel_requested is False
    relay.log(job, "found 12 documents", level="success")
    relay.content(job, "The report ")
    relay.publish(job, "stats.tokens", {"count": 512})
    both = relay.batch(job, [("log", {"message": "a"}), ("content", {"text": "b"})])
    assert len(both.ids) == 2
    assert relay.history(job, after=both.ids[0])["events"] == [
        {"id": both.ids[1], "event": "content", "data": {"text": "b"}}
    ]
    done = relay.complete(job, {"pages": 12}, message="Report ready", redirect_url="/r/42")
    events = history(shared_relay.url, job)
    assert [(e["event"], e["data"]) for e in events] == [
        (
            "progress",
            {"percent": 40, "stage": "searching", "message": "Searching", "step": 1,
             "total_steps": 3},
        ),
        ("log", {"message": "found 12 documents", "level": "success"}),
        ("content", {"text": "The report "}),
        ("stats.tokens", {"count": 512}),
        ("log", {"message": "a"}),
        ("content", {"text": "b"}),
        ("complete", {"result": {"pages": 12}, "message": "Report ready", "redirect_url": "/r/42"}),
    ]  # fmt: skip
    assert events[-1]["id"] == done.ids[0]
    state = relay.snapshot(job)
    assert (state["status"], state["result"], state["redirect_url"]) == (
        "completed",
        {"pages": 12},
        "/r/42",
    )
    with pytest.raises(JobFinished) as finished:
        relay.log(job, "too late")
    with pytest.raises(JobFinished):
        relay.cancel(job)
    assert (finished.value.status, finished.value.code) == (409, "job_finished")
    assert "already completed" in finished.value.message


def test_fail_and_cancelled_end_the_job(relay: Relay) -> None:
    failing, stopping = job_id(), job_id()
    relay.fail(failing, "model timed out", code="timeout", details={"after": 30})
    assert relay.snapshot(failing)["error"] == {
        "message": "model timed out",
        "code": "timeout",
        "details": {"after": 30},
    }
    relay.cancelled(stopping, "stopped by user")
    state = relay.snapshot(stopping)
    assert (state["status"], state["message"]) == ("cancelled", "stopped by user")


def test_relay_errors_are_typed_and_not_retried(relay: Relay, proxy: Proxy) -> None:
    with pytest.raises(JobNotFound) as missing:
        relay.snapshot(job_id())
    assert (missing.value.status, missing.value.code) == (404, "job_not_found")
    with pytest.raises(BadRequest) as bad_id:
        relay.log("-bad", "x")
    assert bad_id.value.code == "invalid_job_id"
    with pytest.raises(BadRequest) as bad_event:
        relay.publish(job_id(), "reset", {})
    assert (bad_event.value.status, bad_event.value.code) == (422, "invalid_event")
    job = job_id()
    relay.log(job, "x")
    relay.delete(job)
    with pytest.raises(JobNotFound):
        relay.delete(job)
    # A 4xx is answered once: no retry.
    with Relay(proxy.url) as through_proxy, pytest.raises(JobNotFound):
        through_proxy.snapshot(job)
    assert len(proxy.requests) == 1


def test_a_relay_that_is_down_raises_relay_unavailable_after_the_budget() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with Relay(url, retry_budget=0.5) as relay, pytest.raises(RelayUnavailable) as down:
        relay.log(job_id(), "x")
    message = str(down.value)
    assert "gave up after" in message and "Connection refused" in message
    assert down.value.status == 0


def test_publisher_token(own_relay: Callable[..., RunningRelay]) -> None:
    running = own_relay(
        PROGRESS_RELAY_AUTH_PUBLISH_TOKENS="pub-secret",
        PROGRESS_RELAY_AUTH_JWT_SECRET="s" * 40,
    )
    with Relay(running.url) as anonymous, pytest.raises(Unauthorized) as refused:
        anonymous.log(job_id(), "x")
    assert refused.value.code == "unauthorized"
    with Relay(running.url, token="pub-secret") as relay:
        job = relay.create_job()
        assert job.subscribe_token  # minted because auth.jwt_secret is set
        relay.log(job.id, "x")
        assert relay.snapshot(job.id)["logs"][0]["message"] == "x"


@pytest.mark.parametrize(
    ("status", "code"),
    [("503 Service Unavailable", "broker_unavailable"), ("429 Too Many Requests", "rate_limited")],
)
@pytest.mark.parametrize("window", [0, 0.005], ids=["single-job", "cross-job"])
def test_503_and_429_are_retried_after_retry_after(
    relay: Relay, proxy: Proxy, status: str, code: str, window: float
) -> None:
    job = job_id()
    route = f"/v1/jobs/{job}/events" if window == 0 else "/v1/events"
    proxy.answer_next(unavailable_response("0.3", status, code), route.encode())
    with Relay(proxy.url, batch_window=window) as through_proxy:
        started = time.monotonic()
        published = through_proxy.log(job, "after a 503")
        waited = time.monotonic() - started
    assert proxy.answered == 1
    assert waited >= 0.3  # Retry-After was honoured (a lower bound, not a speed claim)
    assert relay.history(job)["events"] == [
        {
            "id": published.ids[0],
            "event": "log",
            "data": {"message": "after a 503", "level": "info"},
        }
    ]


def test_a_lost_response_is_retried_without_a_duplicate(
    relay: Relay, proxy: Proxy, shared_relay: RunningRelay
) -> None:
    job = job_id()
    with Relay(proxy.url) as through_proxy:
        through_proxy.log(job, "before")
        proxy.lose_next_response(b"lost once")
        published = through_proxy.log(job, "lost once")
        proxy.lose_next_response(b'"complete"')
        done = through_proxy.complete(job, {"ok": True})
    assert proxy.lost == 2
    events = history(shared_relay.url, job)
    assert [(e["event"], e["data"].get("message")) for e in events] == [
        ("log", "before"),
        ("log", "lost once"),
        ("complete", None),
    ]
    assert events[1]["id"] == published.ids[0]
    assert events[2]["id"] == done.ids[0]


def test_track_success_publishes_stages_and_complete(
    relay: Relay, shared_relay: RunningRelay
) -> None:
    job = job_id()
    with relay.track(job, stages=["upload", "transcribe", "summarize"]) as tracker:
        tracker.stage("upload", message="Uploading")
        relay.flush(job)
        tracker.stage("transcribe", message="Transcribing")
        relay.flush(job)
        tracker.progress(0.5, message="half of this stage")
        relay.flush(job)
        tracker.log("chunk 3 done")
        tracker.content("Hello")
        tracker.stage("summarize")
        tracker.result = {"url": "https://example.com/t/1"}
    events = history(shared_relay.url, job)
    progress = [e["data"] for e in events if e["event"] == "progress"]
    assert [(p["stage"], p["percent"], p["step"], p["total_steps"]) for p in progress] == [
        ("upload", 0, 1, 3),
        ("transcribe", 33.33, 2, 3),
        ("transcribe", 50, 2, 3),
        ("summarize", 66.67, 3, 3),
    ]
    assert names(events) == ["progress"] * 3 + ["log", "content", "progress", "complete"]
    assert events[-1]["data"] == {"result": {"url": "https://example.com/t/1"}}
    assert relay.snapshot(job)["status"] == "completed"


def test_track_with_explicit_end_percentages(relay: Relay, shared_relay: RunningRelay) -> None:
    job = job_id()
    with relay.track(job, stages={"parsing": 10, "searching": 45, "finalizing": 100}) as t:
        t.stage("searching")
        relay.flush(job)
        t.progress(0.5)
        relay.flush(job)
        t.stage("finalizing")
        relay.flush(job)
        t.progress(2.0)  # clamped to the stage's end
    percents = [e["data"]["percent"] for e in history(shared_relay.url, job)[:-1]]
    assert percents == [10, 27.5, 45, 100]


def test_track_failure_publishes_failed_and_reraises(relay: Relay) -> None:
    job = job_id()
    tracker = relay.track(job, stages=["upload", "transcribe"])
    with pytest.raises(ValueError, match="bad audio"), tracker:
        tracker.stage("upload")
        raise ValueError("bad audio")
    state = relay.snapshot(job)
    assert state["status"] == "failed"
    assert state["error"] == {"message": "bad audio", "code": "ValueError", "details": None}


def test_track_cancel_requested_by_a_viewer(relay: Relay, shared_relay: RunningRelay) -> None:
    job = job_id()
    reached: list[str] = []
    with relay.track(job, stages=["a", "b"]) as tracker:
        tracker.stage("a")
        cancel = httpx.post(f"{shared_relay.url}/v1/jobs/{job}/cancel")
        assert cancel.status_code == 202
        tracker.log("still working")  # its answer says cancel_requested: true
        assert relay.cancel_requested(job)
        reached.append("after the first call")
        tracker.log("never published")
        reached.append("never")
    assert reached == ["after the first call"]
    assert tracker.cancelled
    events = history(shared_relay.url, job)
    assert names(events) == ["progress", "cancel_requested", "log", "cancelled"]
    assert relay.snapshot(job)["status"] == "cancelled"


def test_cancelled_raised_by_hand_ends_the_job_as_cancelled(relay: Relay) -> None:
    job = job_id()
    with relay.track(job) as tracker:
        tracker.progress(0.1)
        raise Cancelled(job, "user went away")
    state = relay.snapshot(job)
    assert (state["status"], state["message"]) == ("cancelled", "user went away")


def test_coalescing_bounds_progress_and_keeps_every_log(shared_relay: RunningRelay) -> None:
    job = job_id()
    rate = 10
    with Relay(shared_relay.url, progress_rate=rate) as relay:
        started = time.monotonic()
        for i in range(1000):
            relay.progress(job, i / 10, message=f"item {i}")
            relay.log(job, f"log {i}")
        elapsed = time.monotonic() - started
    events = history(shared_relay.url, job)
    progress = [e["data"] for e in events if e["event"] == "progress"]
    logs = [e["data"]["message"] for e in events if e["event"] == "log"]
    assert logs == [f"log {i}" for i in range(1000)]
    # At most one per interval, plus the first and the flush on close.
    assert 2 <= len(progress) <= rate * elapsed + 2
    # The relay adds its ETA (the snapshot's) to each progress; the rest is what was sent.
    assert progress[-1].get("eta_seconds") == snapshot(shared_relay.url, job)["eta_seconds"]
    sent = {k: v for k, v in progress[-1].items() if k != "eta_seconds"}
    assert sent == {"percent": 99.9, "message": "item 999"}


def test_a_failed_background_flush_is_raised_by_the_next_call(relay: Relay, proxy: Proxy) -> None:
    job = job_id()
    with Relay(proxy.url, progress_rate=5) as worker:
        worker.progress(job, 1)
        assert worker.progress(job, 2) is None  # held for 0.2 s
        relay.complete(job)  # someone else ends the job meanwhile
        deadline = time.monotonic() + 10
        while True:
            assert time.monotonic() < deadline, "the flush's failure never surfaced"
            try:
                assert worker.progress(job, 3) is None  # held: no request of its own
            except JobFinished:
                break
            time.sleep(0.01)
    # The error came from the background flush: two requests in all (the first progress and
    # the flush of the held one); the calls that followed sent nothing themselves.
    assert len(proxy.requests) == 2


def test_a_held_progress_is_sent_without_a_further_call(relay: Relay) -> None:
    job = job_id()
    relay.progress(job, 1)
    assert relay.progress(job, 2) is None  # held
    assert relay.progress(job, 3) is None  # replaces it
    eventually(lambda: relay.snapshot(job)["percent"] == 3)


def test_held_progress_goes_before_the_terminal_event(
    relay: Relay, shared_relay: RunningRelay
) -> None:
    job = job_id()
    relay.progress(job, 10)
    relay.progress(job, 90)
    relay.complete(job)
    assert [(e["event"], e["data"].get("percent")) for e in history(shared_relay.url, job)] == [
        ("progress", 10),
        ("progress", 90),
        ("complete", None),
    ]


def test_subscribe_and_wait(relay: Relay) -> None:
    job = job_id()
    relay.log(job, "one")

    def work() -> None:
        with Relay(relay.url) as worker:
            worker.progress(job, 50)
            worker.complete(job, {"n": 1})

    thread = threading.Thread(target=work)
    seen = []
    for event in relay.subscribe(job):
        seen.append((event.event, event.job))
        if event.event == "log":
            thread.start()
    thread.join()
    assert seen == [("log", job), ("progress", job), ("complete", job)]
    final = relay.wait(job)
    assert (final["status"], final["result"]) == ("completed", {"n": 1})


def test_subscribe_into_a_job_state_keeps_the_text_across_a_reset(
    own_relay: Callable[..., RunningRelay],
) -> None:
    running = own_relay(PROGRESS_RELAY_JOBS_RING_EVENTS="3")
    job = job_id()
    with Relay(running.url, progress_rate=0) as relay:
        first = relay.content(job, "Once ")
        for word in ("upon ", "a ", "time"):
            relay.content(job, word)
        relay.log(job, "halfway", "success")
        state = JobState(job)
        for event in relay.subscribe(job, last_event_id=first.ids[0]):
            state.apply(event)  # first a reset (3 events retained), then live
            if event.event == "reset":
                relay.content(job, ".")
                relay.complete(job, {"words": 4})
        assert (state.content, state.status, state.result) == ("Once upon a time.", "completed",
                                                               {"words": 4})  # fmt: skip
        assert state == JobState.from_snapshot(relay.snapshot(job))
        assert [line.message for line in state.logs] == ["halfway"]


def test_subscribe_resumes_across_a_network_drop(relay: Relay, proxy: Proxy) -> None:
    job = job_id()
    relay.log(job, "0")
    received: list[str] = []
    with Relay(proxy.url) as reader:
        for event in reader.subscribe(job):
            received.append(event.id or "")
            if len(received) == 1:
                relay.log(job, "1")
            if len(received) == 2:
                proxy.cut()
                relay.log(job, "2")
                relay.complete(job)
    ids = [e["id"] for e in relay.history(job)["events"]]
    assert received == ids
    assert len(proxy.requests) >= 2  # it did reconnect


def test_a_silent_stream_is_reopened_after_the_read_timeout(relay: Relay, proxy: Proxy) -> None:
    job = job_id()
    relay.log(job, "0")
    received: list[str] = []
    with Relay(proxy.url, stream_read_timeout=3) as reader:
        for event in reader.subscribe(job):
            received.append(event.id or "")
            if len(received) == 1:
                proxy.freeze()
                relay.log(job, "1")
                relay.complete(job)
    assert received == [e["id"] for e in relay.history(job)["events"]]
    assert len(proxy.requests) == 2


def test_one_relay_serves_many_threads(relay: Relay, shared_relay: RunningRelay) -> None:
    jobs = [job_id() for _ in range(4)]
    with Relay(shared_relay.url, progress_rate=20) as shared:

        def work(job: str) -> None:
            for i in range(101):
                shared.progress(job, i)
                if i % 10 == 0:
                    shared.log(job, f"{i}")
            shared.complete(job)

        threads = [threading.Thread(target=work, args=(job,)) for job in jobs]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    for job in jobs:
        events = history(shared_relay.url, job)
        assert [e["data"]["message"] for e in events if e["event"] == "log"] == [
            str(i) for i in range(0, 101, 10)
        ]
        progress = [e["data"]["percent"] for e in events if e["event"] == "progress"]
        assert progress == sorted(progress) and progress[-1] == 100
        assert events[-1]["event"] == "complete"


def test_jobs_lists_every_job_across_pages(relay: Relay) -> None:
    mine = {job_id() for _ in range(3)}
    for job in mine:
        relay.log(job, "x")
    listed = [job["id"] for job in relay.jobs(page_size=1)]
    assert mine <= set(listed)
    assert len(listed) == len(set(listed))
    running = {job["id"] for job in relay.jobs(status="running")}
    assert mine <= running
    finished = next(iter(mine))
    relay.complete(finished)
    assert finished in {job["id"] for job in relay.jobs(status=["completed", "failed"])}
    assert finished not in {job["id"] for job in relay.jobs(status="running")}


@pytest.mark.parametrize("broker", ["redis"])
def test_publishing_goes_on_across_a_relay_restart_without_duplicates(
    broker: str, redis_server: Any
) -> None:
    running = launch(broker, redis_server)
    job = job_id()
    count = 200
    try:
        with Relay(running.url, retry_budget=30) as relay:
            for i in range(count):
                relay.log(job, f"log {i}")
                if i in (60, 140):
                    # kill -9 while the next publishes may be in flight, then the same port again
                    killer = threading.Timer(0.005, running.restart)
                    killer.start()
            killer.join()
            relay.complete(job)
        messages = [e["data"].get("message") for e in history(running.url, job)]
        assert messages == [f"log {i}" for i in range(count)] + [None]
    finally:
        running.close()


def test_fast_stages_each_arrive_before_their_logs(
    relay: Relay, shared_relay: RunningRelay
) -> None:
    """Stages shorter than the coalescing interval are all published, each before the logs
    published in it; progress within a stage is still coalesced."""
    job = job_id()
    stages = ["fetch", "parse", "render", "upload"]
    with relay.track(job, stages=stages) as tracker:
        for name in stages:
            tracker.stage(name)
            for step in range(20):
                tracker.progress(step / 20)
            tracker.log(f"{name} done")
    events = history(shared_relay.url, job)
    seen = [(e["event"], e["data"].get("stage") or e["data"].get("message")) for e in events]
    published_stages = [s for n, s in seen if n == "progress"]
    assert list(dict.fromkeys(published_stages)) == stages
    for name in stages:
        first_progress = seen.index(("progress", name))
        assert first_progress < seen.index(("log", f"{name} done")), seen
    assert len([n for n, _ in seen if n == "progress"]) < 4 * 20
