"""The demo page (demo.enabled) in real Chromium against a real relay process: its flows in
every tab, its icon, following a job by its id, each job's id and elapsed time, and what the
element shows once a job has ended."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Page

from tests.support.browser import publish
from tests.support.process import Relay, start_relay


@pytest.fixture
def demo() -> Iterator[Relay]:
    relay = start_relay(
        env={"PROGRESS_RELAY_DEMO_ENABLED": "true", "PROGRESS_RELAY_DEMO_SPEED": "0.5"}
    )
    yield relay
    relay.close()


ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"

# What each <job-progress> of the page shows, by its label.
SHOWN = """() => Object.fromEntries([...document.querySelectorAll('job-progress')].map((e) => {
  const part = (s) => e.shadowRoot.querySelector(s).textContent;
  return [e.getAttribute('label'), { status: e.getAttribute('status'), stage: part('.stage'),
    message: part('.message'), error: part('.error') }];
}))"""


def test_the_demo_runs_its_flows_in_every_tab(browser: Browser, demo: Relay) -> None:
    """The demo page: four flows started from one tab are followed by a second tab too; once
    ended, none shows its last stage, the failing one shows its message once (as the error), a
    cancelled one ends as cancelled. Screenshots of the demo in progress and finished go to
    test-artifacts/."""
    ARTIFACTS.mkdir(exist_ok=True)
    context = browser.new_context(viewport={"width": 900, "height": 1100})
    try:
        first, second = context.new_page(), context.new_page()
        for page in (first, second):
            page.goto(f"{demo.base_url}/")
        for kind in ("transcription", "rag", "answer", "failing"):
            first.click(f"button[data-kind={kind}]")
        count = "document.querySelectorAll('job-progress').length === 4"
        for page in (first, second):
            page.wait_for_function(count, timeout=10_000)
        first.wait_for_function(
            "document.querySelector('job-progress[label=answer]').watch.state.content"
        )
        first.screenshot(path=ARTIFACTS / "demo-in-progress.png")
        finished = (
            "[...document.querySelectorAll('job-progress')].every("
            "(e) => ['completed', 'failed'].includes(e.getAttribute('status')))"
        )
        for page in (first, second):
            page.wait_for_function(finished, timeout=30_000)
        first.screenshot(path=ARTIFACTS / "demo-finished.png")
        for page in (first, second):
            assert page.evaluate(SHOWN) == {
                "transcription": {
                    "status": "completed",
                    "stage": "",
                    "message": "Transcript ready",
                    "error": "",
                },
                "rag": {
                    "status": "completed",
                    "stage": "",
                    "message": "Answered with 2 sources",
                    "error": "",
                },
                "answer": {"status": "completed", "stage": "", "message": "Done", "error": ""},
                "failing": {
                    "status": "failed",
                    "stage": "",
                    "message": "",
                    "error": "Rendering failed: the render farm is unavailable",
                },
            }
        assert httpx.get(f"{demo.base_url}/healthz").json()["streams"] <= 1

        # Cancel: the demo worker sees cancel_requested on its next publish and stops.
        first.click("button[data-kind=transcription]")
        first.wait_for_function("document.querySelectorAll('job-progress').length === 5")
        newest = "document.querySelector('job-progress')"
        first.wait_for_function(f"{newest}.getAttribute('status') === 'running'")
        first.evaluate(f"{newest}.shadowRoot.querySelector('button').click()")
        for page in (first, second):
            page.wait_for_function(
                f"{newest}.getAttribute('status') === 'cancelled'", timeout=10_000
            )
    finally:
        context.close()


def troubles(page: Page) -> list[str]:
    """Collects what a page reports as going wrong: console errors and failed responses."""
    found: list[str] = []
    page.on("console", lambda m: found.append(f"console: {m.text}") if m.type == "error" else 0)
    page.on("pageerror", lambda error: found.append(f"error: {error}"))
    page.on(
        "response",
        lambda r: found.append(f"{r.status} {r.url}") if r.status >= 400 else None,
    )
    return found


def test_the_demo_has_an_icon_and_nothing_goes_wrong_on_it(browser: Browser, demo: Relay) -> None:
    """Chromium asks for the page's icon (Playwright does not report that request: the relay's
    access log shows it) and gets it; nothing else fails on the page while a job runs."""
    page = browser.new_page()
    found = troubles(page)
    page.goto(f"{demo.base_url}/")
    assert page.get_attribute("link[rel=icon]", "href") == "/favicon.ico"
    page.click("button[data-kind=answer]")
    page.wait_for_function(
        "document.querySelector('job-progress')?.getAttribute('status') === 'completed'",
        timeout=20_000,
    )
    assert found == []
    page.close()
    asked = re.findall(r'"GET /favicon.ico HTTP/1.1" (\d+)', demo.log)
    assert asked and set(asked) == {"200"}, asked
    icon = httpx.get(f"{demo.base_url}/favicon.ico")
    assert icon.headers["content-type"] == "image/x-icon"
    assert icon.content[:4] == b"\0\0\1\0"  # an ICO file


def when(page: Page, job: str) -> str:
    """The line above a job: its id and how long it has run."""
    text: str = page.evaluate(
        "(job) => document.querySelector(`job-progress[job='${job}']`)"
        ".parentElement.querySelector('.when').textContent",
        job,
    )
    return text


def test_a_job_published_with_curl_is_followed_by_its_id(browser: Browser, demo: Relay) -> None:
    """A job id typed into the field is followed like the demo's own (and still after a
    reload); a bad id is refused, naming the rule. Each job shows its id and its elapsed time,
    running and then final; log levels are written as well as coloured."""
    base = demo.base_url
    publish(base, "curl-7", "progress", {"percent": 40, "stage": "crunching"})
    publish(base, "curl-7", "log", {"message": "disk nearly full", "level": "warning"})
    page = browser.new_page()
    found = troubles(page)
    page.goto(f"{base}/")
    page.fill("#follow input", "not a job id!")
    page.click("#follow button")
    assert "1-128 letters" in page.text_content("#follow-error")
    assert page.evaluate("document.querySelectorAll('job-progress').length") == 0

    page.fill("#follow input", "curl-7")
    page.press("#follow input", "Enter")
    element = "document.querySelector('job-progress[job=curl-7]')"
    page.wait_for_function(
        f"{element}?.shadowRoot.querySelector('.bar').getAttribute('aria-valuenow') === '40'"
    )
    assert page.text_content("#follow-error") == ""
    assert page.evaluate(f"{element}.shadowRoot.querySelector('.stage').textContent") == "crunching"
    level = page.evaluate(
        f"getComputedStyle({element}.shadowRoot.querySelector('li'), '::before').content"
    )
    assert level == '"warning"'
    page.wait_for_function(
        "document.querySelector('job-progress[job=curl-7]').parentElement"
        ".querySelector('.when').textContent.includes('running for')"
    )
    assert re.fullmatch(r"curl-7 · running for \d+:\d\d", when(page, "curl-7"))

    publish(base, "curl-7", "complete", {"message": "crunched"})
    page.wait_for_function(f"{element}.getAttribute('status') === 'completed'")
    page.wait_for_function(
        "document.querySelector('job-progress[job=curl-7]').parentElement"
        ".querySelector('.when').textContent.includes('took')"
    )
    assert re.fullmatch(r"curl-7 · took 0:0\d", when(page, "curl-7"))
    assert page.evaluate(f"{element}.shadowRoot.querySelector('.stage').textContent") == ""

    page.reload()
    page.wait_for_function(f"{element}?.getAttribute('status') === 'completed'")
    assert found == []
    page.close()
