"""Real headless Chromium (Debian's /usr/bin/chromium) through Playwright, for the browser
tests: how to launch it and how to wait on a page."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from playwright.sync_api import Browser, Page, sync_playwright

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
