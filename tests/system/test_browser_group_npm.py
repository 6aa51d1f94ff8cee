"""The npm package's group views in real Chromium: `useJobGroup` (React) and `jobGroupStore`
(Svelte) on the test pages of tests/system/npm_pages, bundled from the package's tarball and
served from an origin of their own, against a real relay process."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from playwright.sync_api import Browser, Page

from tests.support.browser import publish_batch, wait_for
from tests.support.npm import Package, bundle, serve_directory
from tests.support.process import Relay, start_relay

PAGES = Path(__file__).with_name("npm_pages")
ENTRIES = {"react": PAGES / "react.jsx", "svelte": PAGES / "svelte.js"}


@pytest.fixture(scope="module")
def pages(npm_package: Package, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Both test pages bundled from the tarball (React in development mode: StrictMode mounts
    every component twice), served from their own origin."""
    directory = tmp_path_factory.mktemp("npm-group-pages")
    for framework, entry in ENTRIES.items():
        bundle(npm_package, entry, directory / f"{framework}.bundle.js", development=True)
        shutil.copy(PAGES / f"{framework}.html", directory)
    with serve_directory(directory) as url:
        yield url


@pytest.fixture
def relay(pages: str) -> Iterator[Relay]:
    relay = start_relay(
        env={"PROGRESS_RELAY_CORS_ORIGINS": pages, "PROGRESS_RELAY_STREAM_HEARTBEAT": "1"}
    )
    yield relay
    relay.close()


def open_group(browser: Browser, pages: str, framework: str, relay: Relay, group: str) -> Page:
    page = browser.new_page()
    page.goto(f"{pages}/{framework}.html?{urlencode({'relay': relay.base_url, 'groups': group})}")
    wait_for(page, f"window.groupViews[{group!r}]")
    return page


def group_view(page: Page, group: str) -> dict[str, Any]:
    """What the group's component last committed: {state, connection}."""
    result: dict[str, Any] = page.evaluate(
        f"JSON.parse(JSON.stringify(window.groupViews[{group!r}]))"
    )
    return result


def wait_group(page: Page, group: str, condition: str, timeout: float = 10) -> dict[str, Any]:
    """The group's state once ``condition`` (an expression of ``state``) holds for it."""
    wait_for(
        page, f"((state) => state && ({condition}))(window.groupViews[{group!r}]?.state)", timeout
    )
    state: dict[str, Any] = group_view(page, group)["state"]
    return state


def shown_parts(page: Page, group: str) -> list[list[Any]]:
    """Each part's row as the page shows it: job id, status, bar value."""
    result: list[list[Any]] = page.evaluate(
        "(group) => [...document.querySelectorAll(`section[data-group='${group}'] li`)]"
        ".map((li) => [li.dataset.job, li.dataset.status, li.querySelector('progress').value])",
        group,
    )
    return result


@pytest.mark.parametrize("framework", ["react", "svelte"])
def test_the_group_view_holds_the_parent_with_each_child_and_cancels_as_one(
    browser: Browser, pages: str, relay: Relay, framework: str
) -> None:
    children = [{"id": f"{framework}-part-{n}", "meta": {"name": f"f{n}"}} for n in range(3)]
    ids = [child["id"] for child in children]
    created = httpx.post(
        f"{relay.base_url}/v1/jobs", json={"id": f"{framework}-batch", "children": children}
    )
    assert created.status_code == 201, created.text
    group = f"{framework}-batch"
    page = open_group(browser, pages, framework, relay, group)
    state = wait_group(page, group, "state.children.length === 3")
    assert [child["id"] for child in state["children"]] == ids
    assert state["group"]["children"] == ids

    publish_batch(relay.base_url, ids[0], [("complete", {})])
    publish_batch(relay.base_url, ids[1], [("progress", {"percent": 40, "message": "going"})])
    state = wait_group(
        page, group, "state.group.counts.completed === 1 && state.children[1].percent === 40"
    )
    parent = httpx.get(f"{relay.base_url}/v1/jobs/{group}").json()
    wait_group(page, group, f"state.percent === {parent['percent']}")
    assert state["status"] == "running"
    assert [c["status"] for c in state["children"]] == ["completed", "running", "pending"]
    assert state["children"][1]["message"] == "going"
    wait_for(page, f"document.querySelectorAll(`section[data-group='{group}'] li`).length === 3")
    wait_for(page, f"document.querySelector(`li[data-job='{ids[1]}'] progress`).value === 40")
    assert shown_parts(page, group) == [
        [ids[0], "completed", 100],
        [ids[1], "running", 40],
        [ids[2], "pending", 0],
    ]
    # The value handed out is frozen, children included.
    assert page.evaluate(
        f"Object.isFrozen(window.groupViews[{group!r}].state.children[0])"
        f" && Object.isFrozen(window.groupViews[{group!r}].state.children)"
    )

    # Cancel from the component: every unfinished child is asked to stop.
    page.click(f"section[data-group='{group}'] button")
    wait_group(page, group, "state.children.filter((c) => c.cancel_requested).length === 2")
    for child in ids[1:]:
        publish_batch(relay.base_url, child, [("cancelled", {})])
    state = wait_group(page, group, "state.status === 'cancelled'")
    assert [c["status"] for c in state["children"]] == ["completed", "cancelled", "cancelled"]
    wait_for(page, f"window.groupViews[{group!r}].connection === 'closed'")
    page.close()
