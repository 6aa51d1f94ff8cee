"""`relay.watchGroup` in real Chromium against the real relay process: a child created after
the group's stream opened reaches the page live, by its own events on the same stream (issue
19), not by a reconnect or a snapshot."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from playwright.sync_api import Browser

from tests.support.browser import publish_batch, wait_for
from tests.support.process import Relay, start_relay

# Follows the group `job` on a page of the relay's origin; keeps the connection states and
# every child event the watch reports.
WATCH = """async (job) => {
  const { ProgressRelay } = await import("/static/progress-relay.js");
  const relay = new ProgressRelay({ shared: false });
  window.group = relay.watchGroup(job);
  window.connections = [window.group.connection];
  window.group.on("connection", (state) => window.connections.push(state));
  window.childEvents = [];
  window.group.on("child", (state) =>
    window.childEvents.push([state.id, state.status, state.message]));
}"""
CHILDREN = "window.group.state.children"


@pytest.fixture
def relay() -> Iterator[Relay]:
    relay = start_relay(env={"PROGRESS_RELAY_STREAM_HEARTBEAT": "1"})
    yield relay
    relay.close()


def test_a_child_added_to_a_watched_group_is_followed_live(browser: Browser, relay: Relay) -> None:
    base = relay.base_url
    created = httpx.post(f"{base}/v1/jobs", json={"id": "up", "children": [{"id": "up.0"}]})
    assert created.status_code == 201, created.text
    publish_batch(base, "up.0", [("progress", {"percent": 10})])
    page = browser.new_page()
    page.goto(f"{base}/healthz")
    page.evaluate(WATCH, "up")
    wait_for(page, "window.connections.at(-1) === 'open'")
    wait_for(page, f"{CHILDREN}.length === 1")

    joined = httpx.post(f"{base}/v1/jobs", json={"id": "up.1", "parent": "up"})
    assert joined.status_code == 201, joined.text
    publish_batch(base, "up.1", [("progress", {"percent": 60, "message": "late file"})])
    wait_for(page, f"{CHILDREN}.length === 2 && {CHILDREN}[1].message === 'late file'")
    assert page.evaluate(f"{CHILDREN}[1]")["percent"] == 60
    publish_batch(base, "up.1", [("complete", {})])
    publish_batch(base, "up.0", [("complete", {})])
    wait_for(page, "window.group.state.status === 'completed'")
    events = page.evaluate("window.childEvents")
    assert ["up.1", "running", "late file"] in events
    assert [status for job, status, _ in events if job == "up.1"].count("completed") == 1
    # One stream throughout: the new child came over it, not by reconnecting.
    connections = page.evaluate("window.connections")
    assert "reconnecting" not in connections
    assert connections.count("open") == 1
    page.close()
