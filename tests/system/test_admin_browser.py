"""The inspection page (/admin) in a real headless Chromium, against a real relay process."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, Page, Request

from tests.support.browser import chromium, wait_for
from tests.support.process import Relay, start_relay

TOKEN = "admin-secret-token-4f1c"
XSS = "<img src=x onerror=window.pwned=1>"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as browser:
        yield browser


@pytest.fixture
def relay() -> Iterator[Relay]:
    relay = start_relay(
        env={
            "PROGRESS_RELAY_ADMIN_ENABLED": "true",
            "PROGRESS_RELAY_AUTH_PUBLISH_TOKENS": TOKEN,
            "PROGRESS_RELAY_STREAM_HEARTBEAT": "1",
        }
    )
    yield relay
    relay.close()


def publish(relay: Relay, job: str, event: str, data: dict[str, Any]) -> str:
    response = httpx.post(
        f"{relay.base_url}/v1/jobs/{job}/events",
        json={"event": event, "data": data},
        headers=AUTH,
    )
    assert response.status_code == 200, response.text
    event_id: str = response.json()["ids"][0]
    return event_id


def new_page(browser: Browser) -> Page:
    """A page without the relay's Content-Security-Policy: the test's wait_for expressions are
    evaluated strings, and without it an unescaped value would run its script here (the CSP
    is a second line of defence, checked on its own)."""
    return browser.new_page(bypass_csp=True)


def signed_in_page(browser: Browser, relay: Relay, urls: list[str]) -> Page:
    page = new_page(browser)

    def record(request: Request) -> None:
        urls.append(request.url)

    page.on("request", record)
    page.on("dialog", lambda dialog: dialog.accept())
    page.goto(f"{relay.base_url}/admin")
    page.wait_for_selector("#login:not([hidden])")
    assert page.is_hidden("#main")
    page.get_by_label("Publisher token").fill(TOKEN)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_selector("#main:not([hidden])")
    return page


def row_text(page: Page, job: str, column: str) -> str:
    text: str = page.eval_on_selector(
        f'#jobs tr[data-job="{job}"] td.{column}', "(cell) => cell.textContent"
    )
    return text


def test_the_page_lists_jobs_shows_one_live_and_cancels_and_deletes(
    browser: Browser, relay: Relay
) -> None:
    publish(relay, "older-job", "progress", {"percent": 10, "stage": "queued"})
    publish(relay, "job-a", "progress", {"percent": 40, "stage": "searching"})
    publish(relay, "job-a", "log", {"message": "found 12 documents"})
    urls: list[str] = []
    page = signed_in_page(browser, relay, urls)

    # The list: newest first, with status, percent, subscribers and age.
    wait_for(page, "document.querySelectorAll('#jobs tbody tr[data-job]').length === 2")
    order = page.eval_on_selector_all(
        "#jobs tbody tr[data-job]", "rows => rows.map(r => r.dataset.job)"
    )
    assert order == ["job-a", "older-job"]
    assert row_text(page, "job-a", "status") == "running"
    assert row_text(page, "job-a", "percent") == "40 %"
    assert row_text(page, "job-a", "subscribers") == "0"
    assert row_text(page, "job-a", "age").endswith(" s")

    # One job: snapshot, history, then live events as they are published.
    page.get_by_role("button", name="job-a", exact=True).click()
    wait_for(page, "document.querySelector('#live-state').textContent === '(stream open)'")
    assert "searching" in page.text_content("#snapshot")
    history = page.eval_on_selector_all(
        "#history tbody tr", "rows => rows.map(r => r.cells[1].textContent)"
    )
    assert history == ["progress", "log"]
    live_id = publish(relay, "job-a", "progress", {"percent": 70, "stage": "writing"})
    wait_for(page, f"document.querySelector('#live').textContent.includes('{live_id}')")
    wait_for(page, "document.querySelector('.summary-percent').textContent === '70 %'")
    # Its own stream counts: the list shows it within a poll.
    wait_for(
        page,
        "document.querySelector('#jobs tr[data-job=\"job-a\"] td.subscribers').textContent === '1'",
    )

    # Cancel: the job gets cancel_requested (and its subscribers the event).
    page.get_by_role("button", name="Cancel the job").click()
    wait_for(page, "document.querySelector('#action-result').textContent.includes('true')")
    snapshot = httpx.get(f"{relay.base_url}/v1/jobs/job-a", headers=AUTH).json()
    assert snapshot["cancel_requested"] is True
    wait_for(page, "document.querySelector('#live').textContent.includes('cancel_requested')")
    wait_for(
        page, "document.querySelector('.summary-status').textContent.includes('cancel requested')"
    )

    # Delete: the job is gone.
    page.get_by_role("button", name="Delete the job").click()
    wait_for(page, "!document.querySelector('#jobs tr[data-job=\"job-a\"]')")
    assert page.is_hidden("#detail")
    assert httpx.get(f"{relay.base_url}/v1/jobs/job-a", headers=AUTH).status_code == 404

    # A refused action shows the relay's JSON error.
    page.get_by_role("button", name="older-job", exact=True).click()
    httpx.delete(f"{relay.base_url}/v1/jobs/older-job", headers=AUTH)
    page.get_by_role("button", name="Cancel the job").click()
    wait_for(page, "document.querySelector('#message').textContent.includes('job_not_found')")
    assert not page.is_hidden("#message")

    assert any("/v1/stream" in url for url in urls)
    assert any("/v1/jobs/job-a/events" in url for url in urls)
    leaking = [url for url in urls if TOKEN in url or "token=" in url]
    assert leaking == [], "the token must never be in a URL"
    page.close()


def test_job_data_is_shown_as_text(browser: Browser, relay: Relay) -> None:
    created = httpx.post(
        f"{relay.base_url}/v1/jobs", json={"id": "evil", "meta": {"note": XSS}}, headers=AUTH
    )
    assert created.status_code == 201
    publish(relay, "evil", "progress", {"percent": 5, "stage": XSS, "message": XSS})
    urls: list[str] = []
    page = signed_in_page(browser, relay, urls)
    wait_for(page, "!!document.querySelector('#jobs tr[data-job=\"evil\"]')")
    assert row_text(page, "evil", "stage") == XSS
    page.get_by_role("button", name="evil", exact=True).click()
    wait_for(page, "document.querySelector('#live-state').textContent === '(stream open)'")
    publish(relay, "evil", "log", {"message": XSS})
    wait_for(page, "document.querySelector('#live').textContent.includes('log')")
    assert XSS in page.text_content("#snapshot")  # the meta, as text
    assert XSS in page.text_content(".summary-message")
    assert page.evaluate("document.querySelectorAll('img').length") == 0
    assert page.evaluate("window.pwned") is None
    page.close()


def test_a_wrong_token_is_refused_and_the_page_asks_again(browser: Browser, relay: Relay) -> None:
    page = new_page(browser)
    response = page.goto(f"{relay.base_url}/admin")
    assert response is not None
    assert "script-src 'self'" in response.headers["content-security-policy"]
    page.get_by_label("Publisher token").fill("not-the-token")
    page.get_by_role("button", name="Sign in").click()
    wait_for(page, "document.querySelector('#message').textContent.includes('401')")
    assert "the publisher token is not valid" in page.text_content("#message")
    assert page.is_hidden("#main")
    page.close()


def test_the_page_is_404_when_not_enabled(browser: Browser) -> None:
    relay = start_relay(env={"PROGRESS_RELAY_AUTH_PUBLISH_TOKENS": TOKEN})
    try:
        page = browser.new_page()
        response = page.goto(f"{relay.base_url}/admin")
        assert response is not None
        assert response.status == 404
        assert response.headers["content-type"].startswith("application/json")
        assert "not_found" in page.text_content("body")
        page.close()
    finally:
        relay.close()
