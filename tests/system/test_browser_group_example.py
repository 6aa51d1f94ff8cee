"""examples/batch_upload end to end: the backend as its own process between a real relay and
real Chromium, which uploads files from the example's page and follows the batch as one
`<job-progress group>`."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
from playwright.sync_api import Browser, Page

from tests.support.browser import wait_for
from tests.support.process import Relay, free_port, start_relay
from tests.system.test_examples import start_backend

ELEMENT = "document.querySelector('job-progress')"
STATE = f"{ELEMENT}.watch.state"


@contextmanager
def batch_upload(delay: float) -> Iterator[tuple[Relay, Relay]]:
    port = free_port()
    relay = start_relay(env={"PROGRESS_RELAY_CORS_ORIGINS": f"http://127.0.0.1:{port}"})
    try:
        app = start_backend("examples.batch_upload", relay.base_url, port, "--delay", str(delay))
        try:
            yield relay, app
        finally:
            app.close()
    finally:
        relay.close()


def upload(browser: Browser, app: Relay, names: list[str]) -> Page:
    page = browser.new_page()
    page.goto(f"{app.base_url}/")
    files: list[Any] = [
        {"name": name, "mimeType": "text/plain", "buffer": f"content of {name}".encode()}
        for name in names
    ]
    page.set_input_files("input[name=files]", files)
    page.click("button[type=submit]")
    wait_for(page, f"{ELEMENT}?.watch")
    return page


def parts(page: Page) -> list[tuple[str, str]]:
    """Each part's name and status as the element shows them."""
    result: list[list[str]] = page.evaluate(
        f"[...{ELEMENT}.shadowRoot.querySelectorAll('li.part')]"
        ".map((li) => [li.querySelector('.name').textContent,"
        " li.querySelector('.status').textContent])"
    )
    return [(name, status) for name, status in result]


def test_a_batch_uploaded_from_the_page_runs_as_one_group_and_names_its_failed_file(
    browser: Browser,
) -> None:
    with batch_upload(delay=0.05) as (relay, app):
        page = upload(browser, app, ["a.txt", "b.txt", "fail-c.txt"])
        wait_for(page, f"{STATE}.status === 'failed'", 30)
        assert parts(page) == [
            ("a.txt", "completed"),
            ("b.txt", "completed"),
            ("fail-c.txt", "failed"),
        ]
        state = page.evaluate(STATE)
        parent = httpx.get(f"{relay.base_url}/v1/jobs/{state['id']}").json()
        assert parent["group"]["failed"] == [state["children"][2]["id"]]
        assert state["error"]["code"] == "child_failed"
        assert state["children"][2]["error"]["message"] == "fail-c.txt is damaged"
        assert [child["result"] for child in state["children"][:2]] == [
            {"name": "a.txt", "bytes": len(b"content of a.txt")},
            {"name": "b.txt", "bytes": len(b"content of b.txt")},
        ]
        page.close()


def test_cancel_on_the_page_stops_every_file_of_the_batch(browser: Browser) -> None:
    # More files than the backend's four workers: some are still pending at the cancel.
    names = [f"photo-{n}.jpg" for n in range(6)]
    with batch_upload(delay=0.5) as (relay, app):
        page = upload(browser, app, names)
        wait_for(page, f"{STATE}.children.some((c) => c.status === 'running')", 15)
        page.evaluate(f"{ELEMENT}.shadowRoot.querySelector('button').click()")
        wait_for(page, f"{STATE}.status === 'cancelled'", 30)
        assert {status for _, status in parts(page)} == {"cancelled"}
        parent_id = page.evaluate(f"{STATE}.id")
        assert httpx.get(f"{relay.base_url}/v1/jobs/{parent_id}").json()["status"] == "cancelled"
        # The page reloaded shows the batch again, from the relay's state.
        page.reload()
        wait_for(page, f"{STATE}.status === 'cancelled' && {STATE}.children.length === 6")
        assert [name for name, _ in parts(page)] == names
        page.close()
