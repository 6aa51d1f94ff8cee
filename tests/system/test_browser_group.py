"""`<job-progress group>` and `relay.watchGroup` in real Chromium against the real relay
process: a group shown as one bar with its parts, expanded, cancelled as one from the page, and
a 100-child group whose page reloads in the middle."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, Page

from tests.support.browser import publish_batch, wait_for
from tests.support.process import Relay, start_relay
from tests.support.redis_server import RedisServer

ELEMENT = "document.querySelector('job-progress')"
STATE = f"{ELEMENT}.watch.state"

# Loads the client into a page of the relay's origin and shows the group `job` in a
# <job-progress group>; records the group's connection states in window.connections.
SHOW = """async (job) => {
  await import("/static/progress-relay.js");
  const element = document.createElement("job-progress");
  element.setAttribute("group", "");
  element.setAttribute("job", job);
  element.setAttribute("label", "batch");
  document.body.append(element);
  window.connections = [element.watch.connection];
  element.watch.on("connection", (state) => window.connections.push(state));
}"""

# What a person sees: the group's bar, status and message, the summary of its parts, and each
# part's name, bar, status and message, in the list's order.
SHOWN = """() => {
  const root = document.querySelector("job-progress").shadowRoot;
  const parts = root.querySelector(".parts");
  return {
    status: root.querySelector(".status").textContent,
    bar: root.querySelector(".bar").getAttribute("aria-valuenow"),
    message: root.querySelector(".message").textContent,
    summary: parts.querySelector("summary").textContent.replace(/\\s+/g, " ").trim(),
    hidden: parts.hidden,
    open: parts.open,
    button: root.querySelector("button").hidden,
    parts: [...parts.querySelectorAll("li.part")].map((li) => ({
      job: li.dataset.job,
      name: li.querySelector(".name").textContent,
      bar: li.querySelector(".bar").getAttribute("aria-valuenow"),
      status: li.querySelector(".status").textContent,
      message: li.querySelector(".message").textContent,
    })),
  };
}"""


@pytest.fixture
def relay() -> Iterator[Relay]:
    relay = start_relay(env={"PROGRESS_RELAY_STREAM_HEARTBEAT": "1"})
    yield relay
    relay.close()


def create_group(relay: Relay, parent: str, count: int) -> list[str]:
    """The parent and ``count`` children (``{parent}.{n}``, ``meta.name`` ``file-{n}.txt``)."""
    children = [{"id": f"{parent}.{n}", "meta": {"name": f"file-{n}.txt"}} for n in range(count)]
    response = httpx.post(
        f"{relay.base_url}/v1/jobs", json={"id": parent, "children": children}, timeout=30
    )
    assert response.status_code == 201, response.text
    assert [child["id"] for child in response.json()["children"]] == [c["id"] for c in children]
    return [child["id"] for child in children]


def snapshot(relay: Relay, job: str) -> dict[str, Any]:
    response = httpx.get(f"{relay.base_url}/v1/jobs/{job}")
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def show(browser: Browser, relay: Relay, job: str) -> Page:
    page = browser.new_page()
    page.goto(f"{relay.base_url}/healthz")
    page.evaluate(SHOW, job)
    return page


def shown(page: Page) -> dict[str, Any]:
    result: dict[str, Any] = page.evaluate(SHOWN)
    return result


def test_a_group_is_one_bar_with_its_parts_listed_and_expandable(
    browser: Browser, relay: Relay
) -> None:
    children = create_group(relay, "batch", 3)
    page = show(browser, relay, "batch")
    wait_for(page, f"{STATE}.children.length === 3")
    first = shown(page)
    # Listed, in the group's order, folded until the reader opens them.
    assert (first["hidden"], first["open"]) == (False, False)
    assert [part["name"] for part in first["parts"]] == ["file-0.txt", "file-1.txt", "file-2.txt"]
    assert {part["status"] for part in first["parts"]} == {"pending"}
    assert first["summary"] == "Parts: 0 of 3 done"

    publish_batch(relay.base_url, children[0], [("progress", {"percent": 50, "message": "half"})])
    publish_batch(relay.base_url, children[1], [("complete", {"message": "stored"})])
    publish_batch(relay.base_url, children[2], [("progress", {"percent": 20, "message": "one"})])
    wait_for(page, f"{STATE}.children.map((c) => c.status).join() === 'running,completed,running'")
    wait_for(page, f"{STATE}.group.counts.completed === 1")
    page.evaluate(f"{ELEMENT}.shadowRoot.querySelector('.parts summary').click()")
    relayed = snapshot(relay, "batch")
    expected_bar = str(round(relayed["percent"]))
    wait_for(page, f"{ELEMENT}.shadowRoot.querySelector('.bar').ariaValueNow === {expected_bar!r}")
    now = shown(page)
    assert now["open"] is True
    assert now["status"] == "running"
    assert now["bar"] == expected_bar == str(round((50 + 100 + 20) / 3))
    assert now["summary"] == "Parts: 1 of 3 done"
    assert [(p["bar"], p["status"], p["message"]) for p in now["parts"]] == [
        ("50", "running", "half"),
        ("100", "completed", "stored"),
        ("20", "running", "one"),
    ]

    publish_batch(relay.base_url, children[0], [("complete", {})])
    publish_batch(relay.base_url, children[2], [("failed", {"message": "damaged file"})])
    wait_for(page, f"{STATE}.status === 'failed'")
    end = shown(page)
    assert end["status"] == "failed"
    assert end["summary"] == "Parts: 3 of 3 done"
    assert end["parts"][2] == {
        "job": children[2],
        "name": "file-2.txt",
        "bar": "20",
        "status": "failed",
        "message": "damaged file",
    }
    assert end["button"] is True  # nothing left to cancel
    state = page.evaluate(STATE)
    assert state["error"]["code"] == "child_failed"
    assert state["group"]["failed"] == [children[2]]
    # The group's stream ends with the parent's terminal event, and is not reopened.
    wait_for(page, "window.connections.at(-1) === 'closed'")
    assert httpx.get(f"{relay.base_url}/healthz").json()["streams"] == 0
    page.close()


def test_cancel_on_the_page_cancels_the_group_as_one(browser: Browser, relay: Relay) -> None:
    children = create_group(relay, "to-stop", 3)
    for child in children:
        publish_batch(relay.base_url, child, [("progress", {"percent": 10})])
    publish_batch(relay.base_url, children[0], [("complete", {})])
    page = show(browser, relay, "to-stop")
    wait_for(page, f"{STATE}.group.counts.completed === 1")
    page.evaluate(f"{ELEMENT}.shadowRoot.querySelector('button').click()")
    # Every unfinished child's worker learns it (the finished one is left alone) ...
    wait_for(page, f"{STATE}.children.filter((c) => c.cancel_requested).length === 2")
    assert [snapshot(relay, child)["cancel_requested"] for child in children] == [
        False,
        True,
        True,
    ]
    assert shown(page)["parts"][1]["status"] == "cancelling"
    # ... and each ends its part as cancelled: the group ends cancelled.
    for child in children[1:]:
        publish_batch(relay.base_url, child, [("cancelled", {"message": "stopped"})])
    wait_for(page, f"{STATE}.status === 'cancelled'")
    end = shown(page)
    assert end["status"] == "cancelled"
    assert [part["status"] for part in end["parts"]] == ["completed", "cancelled", "cancelled"]
    assert snapshot(relay, "to-stop")["status"] == "cancelled"
    page.close()


CHILDREN = 100
ROUNDS = 4


def publish_round(relay: Relay, children: list[str], round_: int) -> None:
    """Round ``round_`` of 1..ROUNDS for every child: its progress and a log line; at the last
    round, every seventh child fails and the others complete."""
    for n, child in enumerate(children):
        events: list[tuple[str, Any]] = [
            ("progress", {"percent": round_ * 20 + n % 5, "message": f"round {round_}"}),
            ("log", {"message": f"{child} round {round_}"}),
        ]
        if round_ == ROUNDS:
            events.append(
                ("failed", {"message": f"{child} broke"}) if n % 7 == 0 else ("complete", {})
            )
        publish_batch(relay.base_url, child, events)


def the_relays_group(relay: Relay, children: list[str]) -> dict[str, Any]:
    """The group as the relay has it, in the fields a part and the bar show."""
    parent = snapshot(relay, "big")
    return {
        "status": parent["status"],
        "percent": parent["percent"],
        "counts": parent["group"]["counts"],
        "children": [
            {
                key: snapshot(relay, child)[key]
                for key in ("id", "status", "percent", "message", "last_event_id")
            }
            for child in children
        ],
    }


def the_pages_group(page: Page) -> dict[str, Any]:
    result: dict[str, Any] = page.evaluate(
        f"""(() => {{ const s = {STATE}; return {{
          status: s.status, percent: s.percent, counts: s.group.counts,
          children: s.children.map((c) => ({{ id: c.id, status: c.status, percent: c.percent,
            message: c.message, last_event_id: c.last_event_id }})) }}; }})()"""
    )
    return result


# 800 publishes, each redrawing a 100-part list in Chromium: ~50 s on a quiet 2-CPU machine, so
# more than the suite's 120 s under CI's two workers.
@pytest.mark.timeout(360)
def test_a_100_child_group_is_exact_after_the_page_reloads_in_the_middle(
    browser: Browser, relay: Relay
) -> None:
    children = create_group(relay, "big", CHILDREN)
    page = show(browser, relay, "big")
    wait_for(page, f"{STATE}.children.length === {CHILDREN}")
    publish_round(relay, children, 1)
    publish_round(relay, children, 2)
    wait_for(page, f"{STATE}.children.every((c) => c.message === 'round 2')", 30)
    assert the_pages_group(page) == the_relays_group(relay, children)

    # Reloaded mid-batch, while round 3 is being published: the new page starts from the
    # group as the relay has it and follows the rest.
    publish_round(relay, children[:50], 3)
    page.reload()
    page.evaluate(SHOW, "big")
    publish_round(relay, children[50:], 3)
    publish_round(relay, children, ROUNDS)
    wait_for(page, f"{STATE}.status === 'failed'", 30)
    wait_for(page, f"{STATE}.children.every((c) => c.status !== 'running')", 30)
    relayed = the_relays_group(relay, children)
    assert the_pages_group(page) == relayed
    assert relayed["counts"] == {
        "pending": 0,
        "running": 0,
        "completed": CHILDREN - len(range(0, CHILDREN, 7)),
        "failed": len(range(0, CHILDREN, 7)),
        "cancelled": 0,
    }
    # And every part on the page shows it.
    parts = shown(page)["parts"]
    assert [part["job"] for part in parts] == children
    assert [part["status"] for part in parts] == [c["status"] for c in relayed["children"]]
    assert [part["bar"] for part in parts] == [
        "100" if c["status"] == "completed" else str(round(c["percent"]))
        for c in relayed["children"]
    ]
    page.close()


def test_a_group_followed_across_a_relay_restart_on_redis_misses_nothing(
    browser: Browser, redis_server: RedisServer
) -> None:
    """The relay stops mid-batch and a new one starts on the same port and Redis: the page
    reopens the group's stream with its last id and gets what it missed once each."""
    env = {
        "PROGRESS_RELAY_BROKER_URL": redis_server.url,
        "PROGRESS_RELAY_BROKER_KEY_PREFIX": f"group{time.monotonic_ns()}:",
        "PROGRESS_RELAY_STREAM_HEARTBEAT": "1",
    }
    first = start_relay(env=env)
    port = int(first.base_url.rsplit(":", 1)[1])
    try:
        children = create_group(first, "cut", 2)
        page = show(browser, first, "cut")
        wait_for(page, f"window.connections.at(-1) === 'open' && {STATE}.children.length === 2")
        page.evaluate(
            f"""() => {{ window.logs = []; {ELEMENT}.watch.child({children[0]!r})
              .on("log", (data) => window.logs.push(data.message)); }}"""
        )
        publish_batch(first.base_url, children[0], [("log", {"message": "before"})])
        wait_for(page, "window.logs.length === 1")
    finally:
        first.stop()
    second = start_relay(env=env, port=port)
    try:
        for n in range(3):
            publish_batch(second.base_url, children[0], [("log", {"message": f"after {n}"})])
        publish_batch(second.base_url, children[0], [("complete", {})])
        publish_batch(second.base_url, children[1], [("complete", {})])
        wait_for(page, f"{STATE}.status === 'completed'", 30)
        assert page.evaluate("window.logs") == ["before", "after 0", "after 1", "after 2"]
        assert "reconnecting" in page.evaluate("window.connections")
        assert [part["status"] for part in shown(page)["parts"]] == ["completed", "completed"]
        page.close()
    finally:
        second.close()
