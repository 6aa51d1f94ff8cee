"""One state however it was reached, for the browser client in real Chromium: random sequences
of every kind of event are published to a real relay; the state progress-relay.js builds from
the live events equals the state a new watch loads from the relay's snapshot (the relay keeps
one event of history here, so a watch that starts after the events gets a `reset`)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from playwright.sync_api import Browser, Page

from tests.support.browser import wait_for
from tests.support.process import Relay, start_relay
from tests.support.properties import PROPERTY
from tests.support.redis_server import RedisServer

# The state's documented fields (docs/browser.md, "The job's state"); a `reset` also brings the
# snapshot's own (created_at, updated_at, subscribers, meta), which live events do not carry.
FIELDS = (
    "status",
    "percent",
    "stage",
    "message",
    "step",
    "total_steps",
    "eta_seconds",
    "result",
    "redirect_url",
    "error",
    "cancel_requested",
    "logs",
    "content",
    "content_truncated",
    "last_event_id",
)

# A relay for one page: `name` watches `job` on a stream of its own.
WATCH = """async ({ name, job }) => {
  const { ProgressRelay } = await import("/static/progress-relay.js");
  window.relays = window.relays || {};
  window.relays[name] = new ProgressRelay({ shared: false });
  window.relays[name].watch(job);
}"""

AT = """([name, job, last]) =>
  window.relays[name].watch(job).state.last_event_id === last"""

STATE = """([name, job]) => {
  const state = JSON.parse(JSON.stringify(window.relays[name].watch(job).state));
  window.relays[name].close();
  return state;
}"""

text = st.text(st.characters(exclude_categories=("Cs",)), max_size=8)
json_value = st.recursive(
    st.none() | st.booleans() | st.integers(-1000, 1000) | text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(text, inner, max_size=3),
    max_leaves=5,
)
percent = st.integers(0, 100) | st.floats(0, 100, allow_nan=False)
progress = st.fixed_dictionaries(
    {},
    optional={
        "percent": percent,
        "stage": text,
        "message": text,
        "step": st.integers(0, 20),
        "total_steps": st.integers(0, 20),
        "eta_seconds": st.none() | st.floats(0, 1e4, allow_nan=False),
        "extra": json_value,
    },
)
log = st.fixed_dictionaries(
    {"message": text},
    optional={"level": st.sampled_from(["debug", "info", "success", "warning", "error"])},
)
TAKEN = {"progress", "log", "content", "complete", "failed", "cancelled", "reset", "error"}
custom_name = st.from_regex(r"[A-Za-z][A-Za-z0-9_.-]{0,10}", fullmatch=True).filter(
    lambda name: name not in TAKEN and name != "cancel_requested"
)
# One step: an event to publish, or ("cancel", None): a viewer asks to cancel.
step = st.one_of(
    st.tuples(st.just("progress"), progress),
    st.tuples(st.just("log"), log),
    st.tuples(st.just("content"), st.fixed_dictionaries({"text": text})),
    st.tuples(custom_name, json_value),
    st.tuples(st.just("cancel"), st.none()),
)
terminal = st.one_of(
    st.tuples(
        st.just("complete"),
        st.fixed_dictionaries(
            {}, optional={"result": json_value, "message": text, "redirect_url": text}
        ),
    ),
    st.tuples(
        st.just("failed"),
        st.fixed_dictionaries({"message": text}, optional={"code": text, "details": json_value}),
    ),
    st.tuples(st.just("cancelled"), st.fixed_dictionaries({}, optional={"message": text})),
)
# At most 15 steps: fewer log entries than the snapshot's tail of 20, so it has them all.
sequences = st.tuples(st.lists(step, max_size=15), st.none() | terminal)


@pytest.fixture(scope="module", params=["memory", "redis"])
def relay(request: pytest.FixtureRequest) -> Iterator[Relay]:
    env = {"PROGRESS_RELAY_JOBS_RING_EVENTS": "1"}
    if request.param == "redis":
        server: RedisServer = request.getfixturevalue("redis_server")
        env["PROGRESS_RELAY_BROKER_URL"] = server.url
        env["PROGRESS_RELAY_BROKER_KEY_PREFIX"] = f"state{uuid.uuid4().hex[:8]}:"
    relay = start_relay(env=env)
    yield relay
    relay.close()


@pytest.fixture(scope="module")
def page(browser: Browser, relay: Relay) -> Iterator[Page]:
    page = browser.new_page()
    page.goto(f"{relay.base_url}/healthz")
    yield page
    page.close()


def run(base: str, job: str, steps: list[tuple[str, Any]], end: tuple[str, Any] | None) -> None:
    """Publish ``steps`` and ``end``: each run of events between two cancels as one batch."""
    batch: list[dict[str, Any]] = []

    def flush() -> None:
        if batch:
            response = httpx.post(f"{base}/v1/jobs/{job}/events", json={"events": batch})
            assert response.status_code == 200, response.text
            batch.clear()

    for name, data in [*steps, *([end] if end else [])]:
        if name == "cancel":
            flush()
            response = httpx.post(f"{base}/v1/jobs/{job}/cancel")
            assert response.status_code in (200, 202), response.text
        else:
            batch.append({"event": name, "data": data})
    flush()


def comparable(state: dict[str, Any]) -> dict[str, Any]:
    """The documented fields; a log entry's `at` is the relay's time in a snapshot and the
    tab's when it got the event live, so it is left out."""
    found = {field: state.get(field) for field in FIELDS}
    found["logs"] = [{k: v for k, v in entry.items() if k != "at"} for entry in state["logs"]]
    return found


@settings(PROPERTY, max_examples=30)
@given(sequence=sequences)
def test_the_state_from_live_events_is_the_state_from_the_snapshot(
    page: Page, relay: Relay, sequence: tuple[list[tuple[str, Any]], tuple[str, Any] | None]
) -> None:
    base = relay.base_url
    steps, end = sequence
    job = f"state-{uuid.uuid4().hex[:12]}"
    assert httpx.post(f"{base}/v1/jobs", json={"id": job}).status_code == 201
    page.evaluate(WATCH, {"name": "live", "job": job})
    wait_for(page, "window.relays.live.connection === 'open'")
    run(base, job, steps, end)
    snapshot = httpx.get(f"{base}/v1/jobs/{job}").json()
    last = snapshot["last_event_id"]
    page.wait_for_function(AT, arg=["live", job, last], timeout=10_000)
    page.evaluate(WATCH, {"name": "reloaded", "job": job})
    page.wait_for_function(AT, arg=["reloaded", job, last], timeout=10_000)
    live = comparable(page.evaluate(STATE, ["live", job]))
    reloaded = comparable(page.evaluate(STATE, ["reloaded", job]))
    assert live == reloaded
