"""Real headless Chromium (Debian's /usr/bin/chromium) through Playwright, for the browser
tests: how to launch it, how to load the client into a page of a relay and wait on it, and how
to publish to that relay."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
from playwright.sync_api import Browser, BrowserContext, Page, sync_playwright

from tests.support.process import Relay

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@contextmanager
def chromium() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def wait_for(page: Page, expression: str, timeout: float = 10) -> Any:
    """Wait until ``expression`` is truthy in the page; its value."""
    page.wait_for_function(expression, timeout=timeout * 1000)
    return page.evaluate(expression)


def shadow(page: Page, selector: str, element: str = "job-progress") -> Any:
    """What the first ``element``'s shadow root shows at ``selector``."""
    return page.evaluate(
        "([element, s]) => {"
        " const e = document.querySelector(element).shadowRoot.querySelector(s);"
        " return { text: e.textContent, html: e.innerHTML, hidden: e.hidden,"
        " now: e.getAttribute('aria-valuenow'), role: e.getAttribute('role') }; }",
        [element, selector],
    )


# Loads the client into a page of the relay's origin (once per page: called again, it watches
# more jobs with the same relay) and records what it sees per job: window.seen[job] = {events:
# [[name, last_event_id], ...], state: the state after the last change}.
WATCH = """async ({ jobs, options }) => {
  const { ProgressRelay } = await import("/static/progress-relay.js");
  if (!window.relay) {
    window.relay = new ProgressRelay(options || {});
    window.seen = {};
    window.connections = [];
    window.relay.on("connection", (state) => window.connections.push(state));
  }
  for (const id of jobs) {
    const job = window.relay.watch(id);
    window.seen[id] = { events: [] };
    for (const name of ["progress", "log", "content", "complete", "failed", "cancelled", "reset"]) {
      job.on(name, (data, job) => window.seen[id].events.push([name, job.state.last_event_id]));
    }
    job.on("state", (state) => { window.seen[id].state = JSON.parse(JSON.stringify(state)); });
  }
}"""


def open_page(
    owner: Browser | BrowserContext, relay: Relay, jobs: list[str], **options: Any
) -> Page:
    """A page of the relay's origin watching ``jobs``; pages of one context are tabs that share
    a stream."""
    page = owner.new_page()
    page.goto(f"{relay.base_url}/healthz")
    page.evaluate(WATCH, {"jobs": jobs, "options": options})
    return page


def watch_more(page: Page, jobs: list[str]) -> None:
    """The page of ``open_page`` starts watching ``jobs`` too."""
    page.evaluate(WATCH, {"jobs": jobs, "options": {}})


def publish(base: str, job: str, event: str, data: Any = None) -> str:
    """Publish one event; its id."""
    response = httpx.post(f"{base}/v1/jobs/{job}/events", json={"event": event, "data": data or {}})
    assert response.status_code == 200, response.text
    event_id: str = response.json()["ids"][0]
    return event_id


def publish_batch(base: str, job: str, events: list[tuple[str, Any]]) -> list[str]:
    """Publish ``events`` (name, data) as one batch; their ids."""
    body = {"events": [{"event": name, "data": data} for name, data in events]}
    response = httpx.post(f"{base}/v1/jobs/{job}/events", json=body, timeout=30)
    assert response.status_code == 200, response.text
    ids: list[str] = response.json()["ids"]
    return ids
