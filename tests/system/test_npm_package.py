"""The npm package (service/npm): `npm pack`'s tarball, its types under `tsc`, and its React
hook and Svelte store in real Chromium, each in a page bundled from the tarball with esbuild
and served from an origin of its own, against a real relay process."""

from __future__ import annotations

import json
import shutil
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from playwright.sync_api import Browser, BrowserContext, Page

from tests.support.browser import wait_for
from tests.support.npm import PACKAGE_DIR, ROOT, TSC, Package, bundle, run, serve_directory
from tests.support.process import Relay, start_relay

SERVED = ROOT / "service" / "progress_relay" / "static" / "progress-relay.js"
PAGES = Path(__file__).with_name("npm_pages")
FRAMEWORKS = ["react", "svelte"]
ENTRIES = {"react": PAGES / "react.jsx", "svelte": PAGES / "svelte.js"}


def test_the_tarball_holds_the_modules_their_types_and_the_manifest(npm_package: Package) -> None:
    modules = ["element", "index", "job-source", "progress-relay", "react", "svelte"]
    typed = ["element", "index", "react", "svelte"]
    assert npm_package.files == sorted(
        [f"dist/{name}.js" for name in modules]
        + [f"dist/{name}.d.ts" for name in typed]
        + ["README.md", "package.json"]
    )
    # The package's client is the module the relay serves, byte for byte.
    assert (npm_package.unpacked / "dist" / "progress-relay.js").read_bytes() == SERVED.read_bytes()
    manifest = npm_package.manifest
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert (manifest["name"], manifest["version"], manifest["type"]) == (
        "@progress-relay/client",
        version,
        "module",
    )
    assert "dependencies" not in manifest
    assert manifest["peerDependenciesMeta"] == {"react": {"optional": True}}
    assert set(manifest["exports"]) == {".", "./react", "./svelte", "./element", "./package.json"}
    for target in manifest["exports"].values():
        for path in [target] if isinstance(target, str) else target.values():
            assert (npm_package.unpacked / path).is_file(), path


def test_the_types_accept_the_typed_usage_and_reject_its_misuses(
    npm_package: Package, tmp_path: Path
) -> None:
    """test/usage.ts against the unpacked tarball: every call typed, and each misuse marked
    `@ts-expect-error` rejected (an unused one fails tsc, so `any` types could not pass)."""
    modules = tmp_path / "node_modules"
    (modules / "@progress-relay").mkdir(parents=True)
    (modules / "@progress-relay" / "client").symlink_to(npm_package.unpacked)
    (modules / "svelte").symlink_to(PACKAGE_DIR / "node_modules" / "svelte")
    (tmp_path / "package.json").write_text(json.dumps({"type": "module"}))
    for name in ("usage.ts", "tsconfig.json"):
        shutil.copy(PACKAGE_DIR / "test" / name, tmp_path / name)
    run(str(TSC), "--noEmit", "-p", str(tmp_path), cwd=tmp_path)

    (tmp_path / "usage.ts").write_text(
        'import { useJob } from "@progress-relay/client/react";\n'
        'export const percent: string = useJob("x").state.percent;\n'
    )
    with pytest.raises(AssertionError, match="TS2322"):
        run(str(TSC), "--noEmit", "-p", str(tmp_path), cwd=tmp_path)


def test_the_hook_renders_on_a_server_without_connecting(
    npm_package: Package, tmp_path: Path
) -> None:
    """renderToString in node, the package installed from the tarball: the initial state, and
    no fetch (the script records every call of fetch)."""
    modules = tmp_path / "node_modules"
    shutil.copytree(npm_package.unpacked, modules / "@progress-relay" / "client")
    for name in ("react", "react-dom"):
        (modules / name).symlink_to(PACKAGE_DIR / "node_modules" / name)
    shutil.copy(PAGES / "ssr.mjs", tmp_path)
    rendered = json.loads(run("node", "ssr.mjs", cwd=tmp_path))
    assert rendered == {
        "html": "<div><p>a pending null closed</p><p>null closed</p></div>",
        "fetched": [],
    }


# -- in the browser ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pages(npm_package: Package, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Both test pages bundled from the tarball (React in development mode: StrictMode mounts
    every component twice), served from their own origin."""
    directory = tmp_path_factory.mktemp("npm-pages")
    for framework, entry in ENTRIES.items():
        bundle(npm_package, entry, directory / f"{framework}.bundle.js", development=True)
        shutil.copy(PAGES / f"{framework}.html", directory)
    with serve_directory(directory) as url:
        yield url


@pytest.fixture
def context(browser: Browser) -> Iterator[BrowserContext]:
    """The tabs of one test: pages of one context share the relay's stream."""
    context = browser.new_context()
    yield context
    context.close()


def relay_for(pages: str, **env: str) -> Relay:
    return start_relay(
        env={"PROGRESS_RELAY_CORS_ORIGINS": pages, "PROGRESS_RELAY_STREAM_HEARTBEAT": "1", **env}
    )


@pytest.fixture
def relay(pages: str) -> Iterator[Relay]:
    relay = relay_for(pages)
    yield relay
    relay.close()


def open_tab(context: BrowserContext, pages: str, framework: str, relay: Relay, job: str) -> Page:
    page = context.new_page()
    page.goto(f"{pages}/{framework}.html?{urlencode({'relay': relay.base_url, 'jobs': job})}")
    wait_for(page, f"window.views[{job!r}]")
    return page


def view(page: Page, job: str) -> dict[str, Any]:
    """What the job's component last committed: {state, connection}."""
    result: dict[str, Any] = page.evaluate(f"JSON.parse(JSON.stringify(window.views[{job!r}]))")
    return result


def wait_state(page: Page, job: str, condition: str, timeout: float = 10) -> dict[str, Any]:
    """The job's state once ``condition`` (an expression of ``state``) holds for it."""
    wait_for(page, f"((state) => state && ({condition}))(window.views[{job!r}]?.state)", timeout)
    state: dict[str, Any] = view(page, job)["state"]
    return state


def publish(relay: Relay, job: str, event: str, data: dict[str, Any] | None = None) -> str:
    response = httpx.post(
        f"{relay.base_url}/v1/jobs/{job}/events", json={"event": event, "data": data or {}}
    )
    assert response.status_code == 200, response.text
    event_id: str = response.json()["ids"][0]
    return event_id


def shown(page: Page, job: str) -> dict[str, Any]:
    """What a person sees of the job: its section's status, bar, log lines and text."""
    result: dict[str, Any] = page.evaluate(
        "(job) => { const s = document.querySelector(`section[data-job='${job}']`);"
        " return { status: s.dataset.status, bar: s.querySelector('progress').value,"
        " logs: [...s.querySelectorAll('li')].map((li) => [li.dataset.level, li.textContent]),"
        " content: s.querySelector('.content').textContent }; }",
        job,
    )
    return result


def without_times(state: dict[str, Any]) -> dict[str, Any]:
    """The state less each log entry's `at`: a live log is stamped by the page that applied
    it, a log from a snapshot by the relay, so tabs that reached one state differently differ
    there only."""
    return {**state, "logs": [{k: v for k, v in e.items() if k != "at"} for e in state["logs"]]}


def test_the_relay_serves_the_client_the_package_holds(npm_package: Package, relay: Relay) -> None:
    served = httpx.get(f"{relay.base_url}/static/progress-relay.js")
    assert served.status_code == 200
    assert served.headers["Content-Type"].startswith("text/javascript")
    assert served.content == (npm_package.unpacked / "dist" / "progress-relay.js").read_bytes()


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_a_job_is_followed_to_its_end_with_the_relays_exact_state(
    context: BrowserContext, pages: str, relay: Relay, framework: str
) -> None:
    publish(relay, "q1", "progress", {"percent": 10, "stage": "upload", "message": "Uploading"})
    page = open_tab(context, pages, framework, relay, "q1")
    wait_state(page, "q1", "state.percent === 10")
    ids = [
        publish(relay, "q1", "log", {"message": "uploaded a.mp3", "level": "success"}),
        publish(relay, "q1", "content", {"text": "Hello "}),
        publish(relay, "q1", "progress", {"percent": 60, "stage": "transcribe", "step": 2,
                                          "total_steps": 3, "message": "Transcribing"}),
        publish(relay, "q1", "content", {"text": "world"}),
        publish(relay, "q1", "log", {"message": "disk almost full", "level": "warning"}),
        publish(relay, "q1", "complete", {"result": {"words": 2}, "message": "Done",
                                          "redirect_url": "/t/1"}),
    ]  # fmt: skip
    state = wait_state(page, "q1", "state.status === 'completed'")
    log_ids = [ids[0], ids[4]]
    assert without_times(state) == {
        "id": "q1",
        "status": "completed",
        "percent": 100,
        "stage": "transcribe",
        "message": "Done",
        "step": 2,
        "total_steps": 3,
        "eta_seconds": None,
        "result": {"words": 2},
        "redirect_url": "/t/1",
        "error": None,
        "cancel_requested": False,
        "logs": [
            {"id": log_ids[0], "level": "success", "message": "uploaded a.mp3"},
            {"id": log_ids[1], "level": "warning", "message": "disk almost full"},
        ],
        "content": "Hello world",
        "content_truncated": False,
        "last_event_id": ids[-1],
    }
    # The relay's snapshot agrees on every field both have.
    snapshot = httpx.get(f"{relay.base_url}/v1/jobs/q1").json()
    for key in state.keys() - {"logs", "content"}:
        if key in snapshot:
            assert state[key] == snapshot[key], key
    assert [(e["id"], e["message"]) for e in snapshot["logs"]] == [
        (e["id"], e["message"]) for e in state["logs"]
    ]
    assert shown(page, "q1") == {
        "status": "completed",
        "bar": 100,
        "logs": [["success", "uploaded a.mp3"], ["warning", "disk almost full"]],
        "content": "Hello world",
    }
    # Every job of the page has ended: the stream closes and stays closed.
    wait_for(page, "window.views.q1.connection === 'closed'")
    assert page.evaluate("window.relay.connection") == "closed"


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_a_late_tab_gets_the_state_so_far_and_then_every_event(
    context: BrowserContext, pages: str, relay: Relay, framework: str
) -> None:
    """Tab A watches; the job logs L1, streams "Hello ", reaches 30 %; tab B opens the same
    job; then L2 and "world": both tabs end with the same, whole state."""
    first = open_tab(context, pages, framework, relay, "late")
    wait_for(first, "window.views.late.connection === 'open'")
    publish(relay, "late", "log", {"message": "L1"})
    publish(relay, "late", "content", {"text": "Hello "})
    publish(relay, "late", "progress", {"percent": 30})
    wait_state(first, "late", "state.percent === 30")
    second = open_tab(context, pages, framework, relay, "late")
    wait_state(second, "late", "state.percent === 30")
    publish(relay, "late", "log", {"message": "L2"})
    last = publish(relay, "late", "content", {"text": "world"})
    states = [
        without_times(wait_state(page, "late", f"state.last_event_id === {last!r}"))
        for page in (first, second)
    ]
    assert states[0] == states[1]
    assert (states[0]["percent"], [e["message"] for e in states[0]["logs"]]) == (30, ["L1", "L2"])
    assert states[0]["content"] == "Hello world"
    assert shown(second, "late")["content"] == "Hello world"
    assert sum(page.evaluate("window.relay.leader") for page in (first, second)) == 1
    assert httpx.get(f"{relay.base_url}/healthz").json()["streams"] == 1


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_a_reload_in_the_middle_of_an_answer_shows_the_whole_answer(
    context: BrowserContext, pages: str, framework: str
) -> None:
    """40 `content` events on a relay that keeps 10 events of history: the reloaded page gets
    a `reset`, which must carry the text so far, then the rest live."""
    relay = relay_for(pages, PROGRESS_RELAY_JOBS_RING_EVENTS="10")
    try:
        words = [f"w{n} " for n in range(60)]
        page = open_tab(context, pages, framework, relay, "answer")
        for word in words[:40]:
            publish(relay, "answer", "content", {"text": word})
        wait_state(page, "answer", f"state.content.length === {len(''.join(words[:40]))}")
        page.reload()
        wait_for(page, "window.views.answer")
        for word in words[40:]:
            publish(relay, "answer", "content", {"text": word})
        publish(relay, "answer", "complete")
        state = wait_state(page, "answer", "state.status === 'completed'")
        assert state["content"] == "".join(words)
        assert shown(page, "answer")["content"] == "".join(words)
    finally:
        relay.close()


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_the_other_tabs_go_on_when_the_leader_tab_closes_mid_stream(
    context: BrowserContext, pages: str, relay: Relay, framework: str
) -> None:
    tabs = [open_tab(context, pages, framework, relay, "lead") for _ in range(3)]
    for tab in tabs:
        wait_for(tab, "window.views.lead.connection === 'open'")
    lines = [f"line {n}" for n in range(12)]
    for line in lines[:6]:
        publish(relay, "lead", "log", {"message": line})
    for tab in tabs:
        wait_state(tab, "lead", "state.logs.length === 6")
    leaders = [tab for tab in tabs if tab.evaluate("window.relay.leader")]
    assert len(leaders) == 1
    leaders[0].close()
    rest = [tab for tab in tabs if tab is not leaders[0]]
    for line in lines[6:]:
        publish(relay, "lead", "log", {"message": line})
    publish(relay, "lead", "content", {"text": "all done"})
    publish(relay, "lead", "complete", {"result": 12})
    states = [wait_state(tab, "lead", "state.status === 'completed'", 20) for tab in rest]
    for state in states:
        assert [e["message"] for e in state["logs"]] == lines
        assert (state["content"], state["result"], state["percent"]) == ("all done", 12, 100)
    assert without_times(states[0]) == without_times(states[1])
    assert sum(tab.evaluate("window.relay.leader") for tab in rest) == 1


def streams(relay: Relay) -> int:
    count: int = httpx.get(f"{relay.base_url}/healthz").json()["streams"]
    return count


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_a_job_no_component_shows_any_more_is_no_longer_streamed(
    context: BrowserContext, pages: str, relay: Relay, framework: str
) -> None:
    page = open_tab(context, pages, framework, relay, "gone")
    publish(relay, "gone", "progress", {"percent": 10})
    wait_state(page, "gone", "state.percent === 10")
    assert streams(relay) == 1
    page.evaluate("window.setJobs([])")  # unmounted: the job is unwatched, the stream closes
    wait_for(page, "window.relay.connection === 'closed'")
    deadline = time.monotonic() + 10
    while streams(relay):
        assert time.monotonic() < deadline, "the stream stayed open"
        time.sleep(0.05)
    publish(relay, "gone", "log", {"message": "while nobody watched"})
    page.evaluate("window.views = {}; window.setJobs(['gone'])")  # shown again: watched again
    state = wait_state(page, "gone", "state.logs.length === 1")
    assert (state["percent"], state["logs"][0]["message"]) == (10, "while nobody watched")
    assert shown(page, "gone")["logs"] == [["info", "while nobody watched"]]
