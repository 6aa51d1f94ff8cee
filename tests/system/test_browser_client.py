"""progress-relay.js in a real headless Chromium (Debian's), against the real relay process."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, Page

from progress_relay.config import AuthSettings
from progress_relay.http.auth import Credentials
from tests.support.browser import open_page, publish, shadow, wait_for
from tests.support.process import Relay, start_relay
from tests.support.redis_server import RedisServer


@pytest.fixture
def relay() -> Iterator[Relay]:
    relay = start_relay(env={"PROGRESS_RELAY_STREAM_HEARTBEAT": "1"})
    yield relay
    relay.close()


def test_a_job_runs_to_completion_and_a_failed_one_keeps_its_message(
    browser: Browser, relay: Relay
) -> None:
    base = relay.base_url
    publish(base, "ok", "progress", {"percent": 0, "stage": "queued"})
    page = open_page(browser, relay, ["ok", "bad"])
    wait_for(page, "window.relay.connection === 'open'")
    ids = [
        publish(base, "ok", "progress", {"percent": p, "stage": "working", "message": f"{p} %"})
        for p in (25, 50, 75)
    ]
    ids.append(publish(base, "ok", "log", {"message": "almost", "level": "success"}))
    ids.append(publish(base, "ok", "complete", {"message": "done"}))
    publish(base, "bad", "failed", {"message": "the disk is full", "code": "disk"})
    state = wait_for(page, "window.seen.ok.state?.status === 'completed' && window.seen.ok.state")
    assert state["percent"] == 100
    assert state["logs"][-1]["message"] == "almost"
    events = page.evaluate("window.seen.ok.events")
    # Every event once, in order (the first one came with the stream's history or a reset).
    applied = [event_id for name, event_id in events if name != "reset"]
    assert applied[-len(ids) :] == ids
    assert len(applied) == len(set(applied))
    failed = wait_for(page, "window.seen.bad.state?.status === 'failed' && window.seen.bad.state")
    assert failed["error"]["message"] == "the disk is full"
    # Every job has ended: the client closes its stream and does not come back.
    wait_for(page, "window.relay.connection === 'closed'")
    time.sleep(0.5)
    assert httpx.get(f"{base}/healthz").json()["streams"] == 0
    page.close()


def test_one_stream_for_all_jobs_of_a_page(browser: Browser, relay: Relay) -> None:
    page = open_page(browser, relay, ["a", "b", "c"])
    wait_for(page, "window.relay.connection === 'open'")
    for job in ("a", "b", "c"):
        publish(relay.base_url, job, "progress", {"percent": 10})
    wait_for(page, "['a','b','c'].every((j) => window.seen[j].state?.percent === 10)")
    assert httpx.get(f"{relay.base_url}/healthz").json()["streams"] == 1
    page.close()


def test_a_relay_restart_on_redis_leaves_no_gap_and_no_duplicate(
    browser: Browser, redis_server: RedisServer
) -> None:
    """The relay stops mid-job and a new one starts on the same port and Redis: the page
    reconnects with its last id, and its log list has every line once, in order."""
    env = {
        "PROGRESS_RELAY_BROKER_URL": redis_server.url,
        "PROGRESS_RELAY_BROKER_KEY_PREFIX": f"browser{time.monotonic_ns()}:",
        "PROGRESS_RELAY_STREAM_HEARTBEAT": "1",
    }
    first = start_relay(env=env)
    port = int(first.base_url.rsplit(":", 1)[1])
    messages = [f"line {n}" for n in range(10)]
    try:
        page = open_page(browser, first, ["long"])
        for message in messages[:5]:
            publish(first.base_url, "long", "log", {"message": message})
        wait_for(page, "window.seen.long.state?.logs.length === 5")
    finally:
        first.stop()
    second = start_relay(env=env, port=port)
    try:
        for message in messages[5:]:
            publish(second.base_url, "long", "log", {"message": message})
        publish(second.base_url, "long", "complete")
        state = wait_for(
            page, "window.seen.long.state?.status === 'completed' && window.seen.long.state", 30
        )
        assert [entry["message"] for entry in state["logs"]] == messages
        assert "reconnecting" in page.evaluate("window.connections")
        page.close()
    finally:
        second.close()


TABS = 8


def _applied(page: Page, job: str) -> list[str]:
    events = page.evaluate(f"window.seen[{job!r}].events")
    return [event_id for name, event_id in events if name != "reset"]


def test_eight_tabs_share_one_stream_and_survive_the_leader_closing(
    browser: Browser, relay: Relay
) -> None:
    """8 tabs of one origin, 3 jobs each (6 jobs in all): the relay sees one stream; every tab
    gets every event of its jobs once, in order, also after the leader tab closes mid-job."""
    base = relay.base_url
    context = browser.new_context()
    jobs = [f"job-{n}" for n in range(6)]
    watched = {tab: [jobs[(tab + k) % 6] for k in range(3)] for tab in range(TABS)}
    for job in jobs:
        publish(base, job, "progress", {"percent": 1})
    pages = [open_page(context, relay, watched[tab]) for tab in range(TABS)]
    for page in pages:
        wait_for(page, "window.relay.connection === 'open'")
    published: dict[str, list[str]] = {job: [] for job in jobs}
    for n in range(5):
        for job in jobs:
            published[job].append(publish(base, job, "log", {"message": f"{job} {n}"}))
    for tab, page in enumerate(pages):
        wait_for(page, f"{watched[tab]}.every((j) => window.seen[j].state?.logs.length === 5)")
    assert httpx.get(f"{base}/healthz").json()["streams"] == 1
    leaders = [tab for tab, page in enumerate(pages) if page.evaluate("window.relay.leader")]
    assert len(leaders) == 1

    pages[leaders[0]].close()  # mid-job: another tab takes the stream over
    rest = [page for tab, page in enumerate(pages) if tab != leaders[0]]
    for n in range(5, 10):
        for job in jobs:
            published[job].append(publish(base, job, "log", {"message": f"{job} {n}"}))
    for job in jobs:
        published[job].append(publish(base, job, "complete"))
    for tab, page in enumerate(pages):
        if tab == leaders[0]:
            continue
        wait_for(
            page,
            f"{watched[tab]}.every((j) => window.seen[j].state?.status === 'completed')",
            timeout=20,
        )
        for job in watched[tab]:
            applied = _applied(page, job)
            assert applied[-len(published[job]) :] == published[job], (tab, job)
            assert len(applied) == len(set(applied)), (tab, job)
            logs = page.evaluate(f"window.seen[{job!r}].state.logs.map((l) => l.message)")
            assert logs == [f"{job} {n}" for n in range(10)], (tab, job)
    assert sum(page.evaluate("window.relay.leader") for page in rest) == 1
    context.close()


ELEMENT_PAGE = """async ({ job }) => {
  await import("/static/progress-relay.js");
  document.body.innerHTML = "";
  const element = document.createElement("job-progress");
  element.setAttribute("job", job);
  document.body.append(element);
}"""


def open_element_page(browser: Browser, relay: Relay, job: str) -> Page:
    page = browser.new_page()
    page.goto(f"{relay.base_url}/healthz")
    page.evaluate(ELEMENT_PAGE, {"job": job})
    return page


def test_the_element_shows_progress_and_job_text_only_as_text(
    browser: Browser, relay: Relay
) -> None:
    base = relay.base_url
    page = open_element_page(browser, relay, "el")
    evil = '<img src=x onerror="window.pwned=1">'
    publish(base, "el", "progress", {"percent": 40, "stage": "indexing", "message": evil})
    publish(base, "el", "log", {"message": f"log {evil}", "level": "warning"})
    page.wait_for_function(
        "document.querySelector('job-progress').getAttribute('status') === 'running'"
        " && document.querySelector('job-progress').shadowRoot.querySelectorAll('li').length"
    )
    bar = shadow(page, ".bar")
    assert (bar["role"], bar["now"]) == ("progressbar", "40")
    assert shadow(page, ".message")["text"] == evil
    assert "<img" not in shadow(page, ".message")["html"]  # escaped: &lt;img
    assert shadow(page, "li")["text"] == f"log {evil}"
    assert (
        page.evaluate("document.querySelector('job-progress').shadowRoot.querySelector('img')")
        is None
    )
    assert page.evaluate("window.pwned") is None
    publish(base, "el", "failed", {"message": f"broke: {evil}"})
    page.wait_for_function(
        "document.querySelector('job-progress').getAttribute('status') === 'failed'"
    )
    error = shadow(page, ".error")
    assert not error["hidden"] and error["text"] == f"broke: {evil}"
    assert shadow(page, "button")["hidden"]
    page.close()


def test_the_element_shows_the_relays_eta_and_none_after_complete(
    browser: Browser, relay: Relay
) -> None:
    base = relay.base_url
    page = open_element_page(browser, relay, "eta-el")
    state = "document.querySelector('job-progress').watch.state"

    def shown_after(data: dict[str, Any]) -> tuple[Any, str]:
        event_id = publish(base, "eta-el", "progress", data)
        page.wait_for_function(f"{state}.last_event_id === {event_id!r}")
        return page.evaluate(f"{state}.eta_seconds"), shadow(page, ".eta")["text"]

    assert shown_after({"percent": 10, "eta_seconds": 150}) == (150, "about 3 min left")
    shown_after({"percent": 0.001})  # a new phase (percent went down): the relay starts over
    shown_after({"percent": 0.002})
    # Tiny steps: the relay's estimate is large however fast the requests are.
    eta, text = shown_after({"percent": 0.003})
    snapshot = httpx.get(f"{base}/v1/jobs/eta-el").json()
    assert snapshot["eta_seconds"] is not None and snapshot["eta_seconds"] > 60
    assert eta == snapshot["eta_seconds"]
    assert text == f"about {math.floor(eta / 60 + 0.5)} min left"  # Math.round
    publish(base, "eta-el", "complete")
    page.wait_for_function(
        "document.querySelector('job-progress').getAttribute('status') === 'completed'"
    )
    assert page.evaluate(f"{state}.eta_seconds") is None
    assert shadow(page, ".eta")["text"] == ""
    page.close()


def test_cancel_button_reaches_the_worker_and_the_page_shows_cancelled(
    browser: Browser, relay: Relay
) -> None:
    base = relay.base_url
    publish(base, "c1", "progress", {"percent": 10})
    page = open_element_page(browser, relay, "c1")
    page.wait_for_function(
        "document.querySelector('job-progress').getAttribute('status') === 'running'"
    )
    page.evaluate(
        "document.querySelector('job-progress').shadowRoot.querySelector('button').click()"
    )
    # The worker: its next publish tells it a viewer asked to cancel, and it ends the job.
    deadline = time.monotonic() + 10
    while True:
        response = httpx.post(
            f"{base}/v1/jobs/c1/events", json={"event": "progress", "data": {"percent": 20}}
        )
        if response.json()["cancel_requested"]:
            break
        assert time.monotonic() < deadline, "the cancel request never reached the worker"
        time.sleep(0.1)
    publish(base, "c1", "cancelled", {"message": "stopped by a viewer"})
    page.wait_for_function(
        "document.querySelector('job-progress').getAttribute('status') === 'cancelled'"
    )
    assert shadow(page, ".status")["text"] == "cancelled"
    page.close()


def test_navigating_away_and_back_shows_the_current_state_at_once(
    browser: Browser, relay: Relay
) -> None:
    base = relay.base_url
    page = open_element_page(browser, relay, "nav")
    publish(base, "nav", "progress", {"percent": 30, "stage": "one"})
    page.wait_for_function(
        "document.querySelector('job-progress').getAttribute('status') === 'running'"
    )
    page.goto(f"{base}/readyz")  # away: the stream closes with the page
    publish(base, "nav", "progress", {"percent": 70, "stage": "two"})
    publish(base, "nav", "log", {"message": "while away"})
    page.goto(f"{base}/healthz")
    page.evaluate(ELEMENT_PAGE, {"job": "nav"})
    page.wait_for_function(
        "document.querySelector('job-progress').shadowRoot.querySelector('.bar')"
        ".getAttribute('aria-valuenow') === '70'"
    )
    assert shadow(page, ".stage")["text"] == "two"
    assert shadow(page, "li")["text"] == "while away"
    page.close()


def test_a_503_is_retried_after_its_retry_after_where_eventsource_would_give_up(
    browser: Browser,
) -> None:
    relay = start_relay(
        env={"PROGRESS_RELAY_LIMITS_MAX_STREAMS": "1", "PROGRESS_RELAY_STREAM_RETRY_MS": "1000"}
    )
    try:
        with httpx.stream("GET", f"{relay.base_url}/v1/jobs/occupant/stream") as occupant:
            assert occupant.status_code == 200
            page = open_page(browser, relay, ["wanted"])
            wait_for(page, "window.connections.includes('reconnecting')")
        # The occupant has gone: the retry (after Retry-After: 1) gets the stream.
        wait_for(page, "window.relay.connection === 'open'")
        publish(relay.base_url, "wanted", "log", {"message": "through"})
        state = wait_for(
            page, "window.seen.wanted.state?.logs.length === 1 && window.seen.wanted.state"
        )
        assert state["logs"][0]["message"] == "through"
        page.close()
    finally:
        relay.close()


def test_a_stall_warning_comes_and_goes_with_the_heartbeats(browser: Browser) -> None:
    relay = start_relay(env={"PROGRESS_RELAY_STREAM_HEARTBEAT": "1.5"})
    try:
        page = open_page(browser, relay, ["quiet"], stallAfter=600)
        page.evaluate(
            "window.stalls = []; window.relay.on('stall', (s) => window.stalls.push(s)); 0"
        )
        # No event and no heartbeat for 0.6 s: a warning; the next heartbeat ends it.
        wait_for(page, "window.stalls.length >= 2", timeout=10)
        assert page.evaluate("window.stalls.slice(0, 2)") == [True, False]
        page.close()
    finally:
        relay.close()


def test_without_sharing_each_tab_has_its_own_stream(browser: Browser, relay: Relay) -> None:
    context = browser.new_context()
    pages = [open_page(context, relay, ["own"], shared=False) for _ in range(2)]
    for page in pages:
        wait_for(page, "window.relay.connection === 'open'")
    assert httpx.get(f"{relay.base_url}/healthz").json()["streams"] == 2
    publish(relay.base_url, "own", "progress", {"percent": 50})
    for page in pages:
        wait_for(page, "window.seen.own.state?.percent === 50")
    context.close()


def test_a_leader_that_freezes_hands_the_stream_over(browser: Browser, relay: Relay) -> None:
    """The page lifecycle's `freeze` event (dispatched here: headless Chromium does not freeze
    pages on request) makes the leader hand the stream over; the other tab resumes without a
    gap, and after `resume` the first tab follows again, as a follower."""
    context = browser.new_context()
    pages = [open_page(context, relay, ["frozen"]) for _ in range(2)]
    for page in pages:
        wait_for(page, "window.relay.connection === 'open'")
    leader = next(page for page in pages if page.evaluate("window.relay.leader"))
    other = next(page for page in pages if page is not leader)
    first = publish(relay.base_url, "frozen", "log", {"message": "before"})
    wait_for(other, "window.seen.frozen.state?.logs.length === 1")
    leader.evaluate("dispatchEvent(new Event('freeze')); 0")
    wait_for(other, "window.relay.leader === true && window.relay.connection === 'open'")
    assert leader.evaluate("window.relay.leader") is False
    second = publish(relay.base_url, "frozen", "log", {"message": "after"})
    state = wait_for(
        other, "window.seen.frozen.state?.logs.length === 2 && window.seen.frozen.state"
    )
    assert [entry["id"] for entry in state["logs"]] == [first, second]
    leader.evaluate("dispatchEvent(new Event('resume')); 0")
    third = publish(relay.base_url, "frozen", "log", {"message": "back"})
    state = wait_for(
        leader, "window.seen.frozen.state?.logs.length === 3 && window.seen.frozen.state"
    )
    assert [entry["id"] for entry in state["logs"]] == [first, second, third]
    assert httpx.get(f"{relay.base_url}/healthz").json()["streams"] == 1
    context.close()


TOKEN_ELEMENTS_PAGE = """async ({ elements }) => {
  await import("/static/progress-relay.js");
  document.body.innerHTML = "";
  for (const [job, token] of elements) {
    const element = document.createElement("job-progress");
    element.setAttribute("job", job);
    element.setAttribute("token", token);
    document.body.append(element);
  }
}"""


def test_elements_with_tokens_of_their_own_each_get_their_job(browser: Browser) -> None:
    """Tokens granting different jobs cannot share one stream: the page gets one stream per
    token (here: one job with its own token, two jobs under one token), and every job ends."""
    secret = "s" * 40
    relay = start_relay(
        env={
            "PROGRESS_RELAY_AUTH_SUBSCRIBE": "token",
            "PROGRESS_RELAY_AUTH_JWT_SECRET": secret,
            "PROGRESS_RELAY_STREAM_HEARTBEAT": "1",
        }
    )
    try:
        credentials = Credentials(AuthSettings(subscribe="token", jwt_secret=secret))
        own = credentials.mint(["solo"])
        pair = credentials.mint(["left", "right"])
        page = browser.new_page()
        page.goto(f"{relay.base_url}/healthz")
        elements = [["solo", own], ["left", pair], ["right", pair]]
        page.evaluate(TOKEN_ELEMENTS_PAGE, {"elements": elements})
        for job in ("solo", "left", "right"):
            publish(relay.base_url, job, "progress", {"percent": 40, "stage": job})
        for index in range(3):
            wait_for(
                page,
                f"document.querySelectorAll('job-progress')[{index}]"
                ".shadowRoot.textContent.includes('40')",
            )
        assert httpx.get(f"{relay.base_url}/healthz").json()["streams"] == 2
        for job in ("solo", "left", "right"):
            publish(relay.base_url, job, "complete", {"message": f"{job} done"})
        for index, job in enumerate(("solo", "left", "right")):
            text = wait_for(
                page,
                f"(() => {{ const t = document.querySelectorAll('job-progress')[{index}]"
                f".shadowRoot.textContent; return t.includes('{job} done') && t; }})()",
            )
            assert "forbidden" not in text.lower()
        page.close()
    finally:
        relay.close()
