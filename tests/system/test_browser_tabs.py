"""Tabs that share one stream (progress-relay.js in real Chromium, against a real relay): a tab
that starts watching a job late, during a burst, across a change of the leader tab, or after the
job has ended, reaches the same state as a tab that watched it all along; nothing is missed and
nothing is applied twice (docs/browser.md, "How tabs share one stream")."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, Page

from tests.support.browser import (
    WATCH,
    open_page,
    publish,
    publish_batch,
    wait_for,
    watch_more,
)
from tests.support.process import Relay, start_relay


@pytest.fixture
def relay() -> Iterator[Relay]:
    relay = start_relay(env={"PROGRESS_RELAY_STREAM_HEARTBEAT": "1"})
    yield relay
    relay.close()


def state_of(page: Page, job: str) -> dict[str, Any]:
    """The job's state in the page, without the times its log entries were received (each tab
    stamps them when it gets them)."""
    state: dict[str, Any] = page.evaluate(f"window.seen[{job!r}].state")
    assert state is not None, f"no state of {job} yet"
    state["logs"] = [{k: v for k, v in entry.items() if k != "at"} for entry in state["logs"]]
    return state


def applied_twice(page: Page, job: str) -> list[str]:
    """Ids of events the page applied more than once."""
    events = page.evaluate(f"window.seen[{job!r}].events")
    ids = [event_id for name, event_id in events if name != "reset"]
    return sorted({event_id for event_id in ids if ids.count(event_id) > 1})


def at_event(page: Page, job: str, event_id: str, timeout: float = 20) -> None:
    wait_for(page, f"window.seen[{job!r}].state?.last_event_id === {event_id!r}", timeout)


def leader_of(pages: list[Page]) -> Page:
    leaders = [page for page in pages if page.evaluate("window.relay.leader")]
    assert len(leaders) == 1
    return leaders[0]


def test_a_late_tab_gets_the_state_as_it_stands_then_every_event(
    browser: Browser, relay: Relay
) -> None:
    """Tab A follows the job; L1, "Hello ", 30 % happen; tab B then watches it too; then L2 and
    "world". Both tabs end with 30 %, [L1, L2] and "Hello world", each event applied once, over
    one stream."""
    base = relay.base_url
    context = browser.new_context()
    first = open_page(context, relay, ["late"])
    wait_for(first, "window.relay.connection === 'open'")
    publish(base, "late", "log", {"message": "L1"})
    publish(base, "late", "content", {"text": "Hello "})
    publish(base, "late", "progress", {"percent": 30})
    wait_for(first, "window.seen.late.state?.percent === 30")

    second = open_page(context, relay, ["late"])
    assert leader_of([first, second]) is first
    # The state as it stands reaches B before any new event does.
    wait_for(second, "window.seen.late.state?.percent === 30")
    assert state_of(second, "late") == state_of(first, "late")

    publish(base, "late", "log", {"message": "L2"})
    last = publish(base, "late", "content", {"text": "world"})
    for page in (first, second):
        at_event(page, "late", last)
    state = state_of(second, "late")
    assert state == state_of(first, "late")
    assert (state["percent"], state["content"]) == (30, "Hello world")
    assert [entry["message"] for entry in state["logs"]] == ["L1", "L2"]
    assert applied_twice(second, "late") == []
    assert httpx.get(f"{base}/healthz").json()["streams"] == 1
    context.close()


def burst(base: str, job: str, count: int, started: threading.Event) -> threading.Thread:
    """A thread publishing ``count`` events of every kind to ``job`` in batches of 5, setting
    ``started`` after the first fifth."""

    def events(n: int) -> tuple[str, Any]:
        if n % 3 == 0:
            return "log", {
                "message": f"line {n}",
                "level": ("info", "warning", "success")[n % 9 // 3],
            }
        if n % 3 == 1:
            return "content", {"text": f"w{n} "}
        return "progress", {"percent": 100 * n // count, "stage": f"stage {n // 100}"}

    def run() -> None:
        for start in range(0, count, 5):
            publish_batch(base, job, [events(n) for n in range(start, start + 5)])
            if start >= count // 5:
                started.set()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def expected_after(count: int) -> tuple[list[str], str]:
    """The log lines a state keeps of ``burst``'s events (the last 20, as the relay's snapshot
    does) and their text."""
    logs = [f"line {n}" for n in range(count) if n % 3 == 0][-20:]
    content = "".join(f"w{n} " for n in range(count) if n % 3 == 1)
    return logs, content


def test_a_tab_that_joins_during_a_burst_misses_nothing(browser: Browser, relay: Relay) -> None:
    base = relay.base_url
    context = browser.new_context()
    first = open_page(context, relay, ["burst"])
    wait_for(first, "window.relay.connection === 'open'")
    started = threading.Event()
    thread = burst(base, "burst", 500, started)
    assert started.wait(30)
    second = open_page(context, relay, ["burst"])
    thread.join(60)
    last = publish(base, "burst", "complete", {"message": "done"})
    for page in (first, second):
        at_event(page, "burst", last)
    state = state_of(second, "burst")
    assert state == state_of(first, "burst")
    logs, content = expected_after(500)
    assert [entry["message"] for entry in state["logs"]] == logs
    assert state["content"] == content
    assert state["status"] == "completed"
    assert applied_twice(second, "burst") == []
    context.close()


def test_a_tab_that_joins_as_the_leader_closes_gets_the_whole_job(
    browser: Browser, relay: Relay
) -> None:
    """Events flow; tab B starts watching the job and the leader tab closes at that moment: the
    tab that takes the stream over and B end with every event once, and the same state."""
    base = relay.base_url
    context = browser.new_context()
    first = open_page(context, relay, ["handover"])
    wait_for(first, "window.relay.connection === 'open'")
    stays = open_page(context, relay, ["handover"])
    wait_for(stays, "window.relay.connection === 'open'")
    assert leader_of([first, stays]) is first
    started = threading.Event()
    thread = burst(base, "handover", 300, started)
    assert started.wait(30)
    second = open_page(context, relay, ["handover"])
    first.close()
    thread.join(60)
    last = publish(base, "handover", "complete", {"message": "done"})
    for page in (stays, second):
        at_event(page, "handover", last)
    leader_of([stays, second])
    logs, content = expected_after(300)
    for page in (stays, second):
        state = state_of(page, "handover")
        assert [entry["message"] for entry in state["logs"]] == logs
        assert state["content"] == content
        assert applied_twice(page, "handover") == []
    assert state_of(second, "handover") == state_of(stays, "handover")
    context.close()


def test_a_tab_that_joins_after_the_leader_closed_mid_stream_gets_the_whole_job(
    browser: Browser, relay: Relay
) -> None:
    """The leader tab closes while events flow; another tab takes the stream over; then tab B
    watches the job, and a tab that already watched another job adds it: all end alike."""
    base = relay.base_url
    context = browser.new_context()
    first = open_page(context, relay, ["moved"])
    wait_for(first, "window.relay.connection === 'open'")
    stays = open_page(context, relay, ["moved"])
    elsewhere = open_page(context, relay, ["unrelated"])
    for page in (stays, elsewhere):
        wait_for(page, "window.relay.connection === 'open'")
    started = threading.Event()
    thread = burst(base, "moved", 300, started)
    assert started.wait(30)
    first.close()
    deadline = time.monotonic() + 10
    while not any(page.evaluate("window.relay.leader") for page in (stays, elsewhere)):
        assert time.monotonic() < deadline, "no tab took the stream over"
        time.sleep(0.05)
    second = open_page(context, relay, ["moved"])
    watch_more(elsewhere, ["moved"])
    thread.join(60)
    last = publish(base, "moved", "complete", {"message": "done"})
    pages = (stays, second, elsewhere)
    for page in pages:
        at_event(page, "moved", last)
    logs, content = expected_after(300)
    reference = state_of(stays, "moved")
    assert [entry["message"] for entry in reference["logs"]] == logs
    assert reference["content"] == content
    for page in pages:
        assert state_of(page, "moved") == reference
        assert applied_twice(page, "moved") == []
    context.close()


def test_a_finished_job_opened_beside_a_running_one_shows_all_of_it(
    browser: Browser, relay: Relay
) -> None:
    """Tab A holds the stream for a running job; tabs B and then C open a job that has ended
    (for C the stream has gone past its end and sends nothing of it): both show its whole
    answer, logs and end; when the running job ends the shared stream closes."""
    base = relay.base_url
    context = browser.new_context()
    first = open_page(context, relay, ["running"])
    wait_for(first, "window.relay.connection === 'open'")
    publish(base, "running", "progress", {"percent": 5})
    publish(base, "short", "log", {"message": "thinking", "level": "debug"})
    publish(base, "short", "content", {"text": "Hello "})
    publish(base, "short", "content", {"text": "world"})
    publish(base, "short", "complete", {"message": "Answered", "result": {"tokens": 2}})

    second = open_page(context, relay, ["short"])
    assert leader_of([first, second]) is first
    finished = "window.seen.short.state?.status === 'completed' && window.seen.short.state"
    state = wait_for(second, finished)
    assert state["content"] == "Hello world"
    assert [(entry["level"], entry["message"]) for entry in state["logs"]] == [
        ("debug", "thinking")
    ]
    assert (state["result"], state["message"], state["percent"]) == ({"tokens": 2}, "Answered", 100)
    publish(base, "running", "progress", {"percent": 50})
    wait_for(first, "window.seen.running.state?.percent === 50")
    third = open_page(context, relay, ["short"])
    wait_for(third, finished)
    assert state_of(third, "short") == state_of(second, "short")

    publish(base, "running", "complete")
    wait_for(first, "window.relay.connection === 'closed'")
    deadline = time.monotonic() + 10
    while httpx.get(f"{base}/healthz").json()["streams"]:
        assert time.monotonic() < deadline, "the stream stayed open after every job ended"
        time.sleep(0.05)
    context.close()


def test_a_reload_in_the_middle_of_a_long_answer_shows_all_of_its_text(
    browser: Browser, relay: Relay
) -> None:
    """5,000 `content` events, far more than the relay's history of 1,000: a tab reloaded in
    the middle and a tab opened at the end both show the whole text."""
    base = relay.base_url
    words = [f"token{n} " for n in range(5000)]
    context = browser.new_context()
    page = open_page(context, relay, ["answer"])
    wait_for(page, "window.relay.connection === 'open'")
    for start in range(0, 2500, 500):
        publish_batch(
            base, "answer", [("content", {"text": w}) for w in words[start : start + 500]]
        )
    wait_for(page, "window.seen.answer.state?.content.length > 0")
    page.reload()
    page.evaluate(WATCH, {"jobs": ["answer"], "options": {}})
    for start in range(2500, 5000, 500):
        publish_batch(
            base, "answer", [("content", {"text": w}) for w in words[start : start + 500]]
        )
    last = publish(base, "answer", "complete", {"message": "done"})
    at_event(page, "answer", last)
    late = open_page(context, relay, ["answer"])
    at_event(late, "answer", last)
    for tab in (page, late):
        state = state_of(tab, "answer")
        assert state["content"] == "".join(words)
        assert state["content_truncated"] is False
    context.close()
