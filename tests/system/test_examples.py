"""The examples (examples/), end to end: each backend runs as its own process between a real
relay and real Chromium, which opens its page, starts a job and watches it (the FastAPI
backend's React page bundled from the npm package's tarball); the worker script runs as a
subprocess and its job's history is read back from the relay."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from itertools import groupby
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, Page

from examples.fastapi_app.app import DOCUMENTS, TICKERS, answer_to
from examples.shared import STAGES, TRANSCRIPT, UPLOAD_PARTS, summary
from tests.support.browser import shadow, wait_for
from tests.support.npm import Package, bundle
from tests.support.process import Relay, free_port, start_relay

ROOT = Path(__file__).resolve().parents[2]
BACKENDS = ["aiohttp_app", "flask_app"]
PUBLISH_TOKEN = "example-publisher-token"
# The relay with credentials on: backends need the publisher token, pages the subscriber token
# that POST /v1/jobs minted for their job.
SECURED = {
    "PROGRESS_RELAY_AUTH_PUBLISH_TOKENS": PUBLISH_TOKEN,
    "PROGRESS_RELAY_AUTH_SUBSCRIBE": "token",
    "PROGRESS_RELAY_AUTH_JWT_SECRET": secrets.token_hex(32),
}
AS_PUBLISHER = {"Authorization": f"Bearer {PUBLISH_TOKEN}"}

# Installed before the page starts a job: records every event each new <job-progress> gets,
# from the first one on (the element's stream opens only after the observer has run).
RECORD = """() => {
  window.seen = [];
  new MutationObserver((records) => {
    for (const record of records) for (const node of record.addedNodes) {
      if (node.localName !== "job-progress") continue;
      for (const name of ["progress", "log", "content", "complete", "failed", "cancel_requested",
                          "cancelled", "reset"]) {
        node.watch.on(name, (data) => window.seen.push([name, data]));
      }
    }
  }).observe(document.getElementById("jobs"), { childList: true });
}"""
ELEMENT = "document.querySelector('job-progress')"


def start_backend(module: str, relay_url: str, port: int, *args: str) -> Relay:
    """``python -m examples.<module>`` on ``port``, once its page answers. (``Relay`` is any
    server process whose stderr is kept.)"""
    process = subprocess.Popen(
        [sys.executable, "-m", module, "--relay", relay_url, "--port", str(port), *args],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    backend = Relay(process, f"http://127.0.0.1:{port}")
    deadline = time.monotonic() + 15
    while True:
        if process.poll() is not None:
            raise AssertionError(f"{module} exited at start: {backend.wait()}")
        try:
            if httpx.get(f"{backend.base_url}/", timeout=1).status_code == 200:
                return backend
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            backend.close()
            raise AssertionError(f"{module} did not answer within 15 s: {backend.log}")
        time.sleep(0.05)


@contextmanager
def deployment(
    backend: str, *args: str, secured: bool, delay: float
) -> Iterator[tuple[Relay, Relay]]:
    """A relay, and the example ``backend`` publishing to it; the relay lets the backend's page
    (another origin: another port) call it."""
    port = free_port()
    env = {
        "PROGRESS_RELAY_CORS_ORIGINS": f"http://127.0.0.1:{port}",
        **(SECURED if secured else {}),
    }
    relay = start_relay(env=env)
    try:
        options = ["--delay", str(delay), *(["--token", PUBLISH_TOKEN] if secured else [])]
        app = start_backend(f"examples.{backend}", relay.base_url, port, *options, *args)
        try:
            yield relay, app
        finally:
            app.close()
    finally:
        relay.close()


def start_job_from_the_page(browser: Browser, app: Relay, file_name: str) -> Page:
    page = browser.new_page()
    page.goto(f"{app.base_url}/")
    page.evaluate(RECORD)
    page.fill("input[name=file]", file_name)
    page.click("button[type=submit]")
    return page


def snapshot(relay: Relay, job_id: str) -> dict[str, Any]:
    response = httpx.get(f"{relay.base_url}/v1/jobs/{job_id}", headers=AS_PUBLISHER)
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


@pytest.mark.parametrize("secured", [False, True], ids=["open", "secured"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_a_job_started_from_the_page_runs_through_its_stages_to_completion(
    browser: Browser, backend: str, secured: bool
) -> None:
    # --progress-rate 0: every progress is sent (by default the SDK sends at most 10 a second
    # per job, the newest), so the page must see each one.
    with deployment(backend, "--progress-rate", "0", secured=secured, delay=0.02) as (relay, app):
        page = start_job_from_the_page(browser, app, "standup.mp3")
        wait_for(page, f"{ELEMENT}?.getAttribute('status') === 'completed'")
        seen: list[tuple[str, Any]] = page.evaluate("window.seen")

        progress = [data for name, data in seen if name == "progress"]
        assert [data["stage"] for data in progress] == (
            ["upload"] * (1 + UPLOAD_PARTS) + ["transcribe"] * (1 + len(TRANSCRIPT)) + ["summarize"]
        )
        assert_stages(seen, STAGES)
        for index, stage in enumerate(STAGES):  # entering a stage puts the job at its start
            first = next(data for data in progress if data["stage"] == stage)
            assert first["percent"] == pytest.approx(100 * index / len(STAGES), abs=0.01)
        logs = [data["message"] for name, data in seen if name == "log"]
        assert logs == ["uploaded standup.mp3", f"transcribed {len(TRANSCRIPT)} segments"]
        text = "".join(data["text"] for name, data in seen if name == "content")
        assert text == "".join(line + "\n" for line in TRANSCRIPT)
        assert seen[-1][0] == "complete"
        assert seen[-1][1]["result"] == summary(TRANSCRIPT)
        assert "reset" not in [name for name, _ in seen]

        # What a person sees: the full bar, the log list, the transcript and the summary.
        assert shadow(page, ".bar")["now"] == "100"
        assert (
            page.evaluate(
                f"[...{ELEMENT}.shadowRoot.querySelectorAll('li')].map((li) => li.textContent)"
            )
            == logs
        )
        assert shadow(page, ".content")["text"] == text
        result = summary(TRANSCRIPT)
        assert (
            page.text_content(".result")
            == f"Summary: {result['summary']} ({result['words']} words)"
        )

        job_id = page.get_attribute("job-progress", "job")
        assert job_id
        assert (page.get_attribute("job-progress", "token") is not None) == secured
        state = snapshot(relay, job_id)
        assert (state["status"], state["meta"]) == ("completed", {"file": "standup.mp3"})
        page.close()


@pytest.mark.parametrize("backend", BACKENDS)
def test_cancel_on_the_page_stops_the_backends_worker(browser: Browser, backend: str) -> None:
    # Steps of 1 s: the job would take 11 s, far longer than the cancel needs to arrive.
    with deployment(backend, secured=True, delay=1.0) as (relay, app):
        page = start_job_from_the_page(browser, app, "long-meeting.mp3")
        wait_for(page, f"{ELEMENT}?.getAttribute('status') === 'running'")
        page.evaluate(f"{ELEMENT}.shadowRoot.querySelector('button').click()")
        wait_for(page, f"{ELEMENT}.getAttribute('status') === 'cancelled'", timeout=15)
        names = [name for name, _ in page.evaluate("window.seen")]
        assert "cancel_requested" in names and names[-1] == "cancelled"
        job_id = page.get_attribute("job-progress", "job")
        assert job_id
        state = snapshot(relay, job_id)
        assert (state["status"], state["cancel_requested"], state["result"]) == (
            "cancelled",
            True,
            None,
        )
        assert shadow(page, "button")["hidden"]
        deadline = time.monotonic() + 10
        while f"job {job_id} cancelled by a viewer" not in app.log:
            assert time.monotonic() < deadline, app.log
            time.sleep(0.05)
        page.close()


def assert_stages(events: list[tuple[str, Any]], stages: list[str]) -> None:
    """The progress events went through ``stages`` in order from the first, each within its
    share of 100 %, the percent never going back. (With coalescing, which progress events were
    sent depends on timing: a short stage may have none; so only the order is checked.)"""
    progress = [data for name, data in events if name == "progress"]
    seen = [stage for stage, _ in groupby(data["stage"] for data in progress)]
    assert seen[0] == stages[0]
    assert seen == sorted(seen, key=stages.index) and len(set(seen)) == len(seen)
    percents = [data["percent"] for data in progress]
    assert percents == sorted(percents)
    share = 100 / len(stages)
    for data in progress:
        start = share * stages.index(data["stage"])
        assert start - 0.01 <= data["percent"] <= start + share + 0.01, data


def test_stopping_the_aiohttp_backend_ends_its_running_jobs_as_cancelled() -> None:
    with deployment("aiohttp_app", secured=False, delay=1.0) as (relay, app):
        started = httpx.post(f"{app.base_url}/start", json={"file": "a.mp3"})
        assert started.status_code == 200, started.text
        job_id = started.json()["job_id"]
        deadline = time.monotonic() + 10
        while snapshot(relay, job_id)["status"] != "running":
            assert time.monotonic() < deadline, app.log
            time.sleep(0.05)
        code, _, log = app.stop(signal.SIGTERM, timeout=15)
        assert code == 0, log
        state = snapshot(relay, job_id)
        assert (state["status"], state["message"]) == ("cancelled", "the worker was cancelled")


def run_worker(relay: Relay, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "examples/worker.py", "--relay", relay.base_url, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def history(relay: Relay, job_id: str) -> list[tuple[str, Any]]:
    response = httpx.get(f"{relay.base_url}/v1/jobs/{job_id}/events", params={"limit": 1000})
    assert response.status_code == 200, response.text
    body = response.json()
    assert not body["has_more"] and not body["truncated"]
    return [(event["event"], event["data"]) for event in body["events"]]


REPORT = {"file": "report.pdf", "pages": 12}
WORKER_LOGS = [
    "fetched sales.csv (1204 rows)",
    "fetched returns.csv (87 rows)",
    "fetched regions.json (12 rows)",
    "analysis done",
    "wrote report.pdf (12 pages)",
]


def test_the_worker_script_publishes_each_stage_with_its_logs_in_order(
    broker: dict[str, Any],
) -> None:
    env = {"PROGRESS_RELAY_BROKER_URL": broker["url"]}
    if "key_prefix" in broker:
        env["PROGRESS_RELAY_BROKER_KEY_PREFIX"] = broker["key_prefix"]
    relay = start_relay(env=env)
    try:
        done = run_worker(relay, "--job", "report-7", "--delay", "0", "--progress-rate", "0")
        assert done.returncode == 0, done.stderr
        assert done.stdout.splitlines() == [
            "job report-7",
            f"stream {relay.base_url}/v1/jobs/report-7/stream",
            "completed",
        ]
        events = history(relay, "report-7")
        # Every event; a progress as its stage and percent (rounded), a log as its message.
        steps = [
            (name, data["stage"], round(data["percent"]))
            if name == "progress"
            else (name, data.get("message"))
            for name, data in events
        ]
        assert steps == [
            ("progress", "fetch", 0),
            ("log", "fetched sales.csv (1204 rows)"),
            ("progress", "fetch", 11),
            ("log", "fetched returns.csv (87 rows)"),
            ("progress", "fetch", 22),
            ("log", "fetched regions.json (12 rows)"),
            ("progress", "fetch", 33),
            ("progress", "analyse", 33),
            ("progress", "analyse", 42),
            ("progress", "analyse", 50),
            ("progress", "analyse", 58),
            ("progress", "analyse", 67),
            ("log", "analysis done"),
            ("progress", "render", 67),
            ("log", "wrote report.pdf (12 pages)"),
            ("complete", None),
        ]
        assert events[-1] == ("complete", {"result": REPORT})
        assert snapshot(relay, "report-7")["status"] == "completed"
    finally:
        relay.close()


def test_the_worker_script_as_it_runs_by_default_coalesces_progress_only() -> None:
    relay = start_relay()
    try:
        done = run_worker(relay, "--job", "report-8", "--delay", "0")
        assert done.returncode == 0, done.stderr
        events = history(relay, "report-8")
        assert [data["message"] for name, data in events if name == "log"] == WORKER_LOGS
        assert_stages(events, ["fetch", "analyse", "render"])
        assert events[-1] == ("complete", {"result": REPORT})
    finally:
        relay.close()


def test_the_worker_script_fails_its_job_on_an_error_and_stops_on_a_cancel() -> None:
    relay = start_relay()
    try:
        failed = run_worker(relay, "--job", "broken", "--delay", "0", "--fail")
        assert failed.returncode == 1
        assert "the renderer ran out of memory" in failed.stderr
        state = snapshot(relay, "broken")
        assert state["status"] == "failed"
        assert "the renderer ran out of memory" in state["error"]["message"]

        worker = subprocess.Popen(
            [sys.executable, "examples/worker.py", "--relay", relay.base_url, "--delay", "1"],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            assert worker.stdout is not None
            job_id = worker.stdout.readline().removeprefix("job ").strip()
            assert job_id
            cancel = httpx.post(f"{relay.base_url}/v1/jobs/{job_id}/cancel")
            assert cancel.status_code == 202, cancel.text
            assert worker.wait(timeout=30) == 2
        finally:
            if worker.poll() is None:
                worker.kill()
            worker.communicate()
        assert snapshot(relay, job_id)["status"] == "cancelled"
    finally:
        relay.close()


# -- the FastAPI backend and its React page ---------------------------------------------------


@pytest.fixture(scope="module")
def react_page(npm_package: Package, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """examples/react_page bundled with React and the npm package's tarball, as `make npm`
    bundles it from the repository."""
    bundle_file = tmp_path_factory.mktemp("react-page") / "app.js"
    bundle(npm_package, ROOT / "examples" / "react_page" / "main.jsx", bundle_file)
    return bundle_file


QUESTION = "Which holdings gained most last quarter?"


BUBBLE = ".bubble.assistant"


def ask_on_the_page(browser: Browser, app: Relay, requests: list[str]) -> Page:
    """The chat page with QUESTION asked; every request it makes goes to ``requests``."""
    page = browser.new_page()
    page.on("request", lambda request: requests.append(f"{request.method} {request.url}"))
    page.goto(f"{app.base_url}/")
    page.fill("input[name=question]", QUESTION)
    page.click("button[type=submit]")
    return page


@pytest.mark.parametrize("secured", [False, True], ids=["open", "secured"])
def test_a_question_asked_on_the_react_page_shows_each_step_and_the_answer(
    browser: Browser, react_page: Path, secured: bool
) -> None:
    with deployment("fastapi_app", "--bundle", str(react_page), secured=secured, delay=0.02) as (
        relay,
        app,
    ):
        requests: list[str] = []
        page = ask_on_the_page(browser, app, requests)
        wait_for(page, f"document.querySelector('{BUBBLE}')?.dataset.status === 'completed'")
        job_id = page.get_attribute(BUBBLE, "data-job")
        assert job_id and len(job_id) == 36  # the page's crypto.randomUUID()

        # The page made the id, had the job created, opened its stream, and then asked.
        create = requests.index(f"POST {app.base_url}/api/jobs")
        stream = next(n for n, r in enumerate(requests) if "/v1/stream?job=" + job_id in r)
        ask = requests.index(f"POST {app.base_url}/api/ask")
        assert create < stream < ask

        logs = page.evaluate(
            f"[...document.querySelectorAll('{BUBBLE} .logs li')].map("
            "(li) => [li.className, li.textContent])"
        )
        assert logs == [
            ["info", f"•Processing question: {QUESTION}"],
            ["info", "•Cache miss: proceeding"],
            ["success", f"✓Found {len(DOCUMENTS)} documents"],
            ["info", f"•Query expanded: {', '.join(TICKERS)}, last quarter"],
            ["warning", f"⚠No price data for {TICKERS[-1]}"],
            ["success", "✓Analysis complete"],
        ]
        answer = answer_to(QUESTION)
        assert page.text_content(f"{BUBBLE} .answer") == answer
        wait_for(page, f"document.querySelector('{BUBBLE} .sources')")
        assert page.text_content(f"{BUBBLE} .sources") == f"{len(DOCUMENTS)} sources"
        # After the end no step line, bar or cancel button is left.
        assert page.query_selector(f"{BUBBLE} .step") is None
        assert page.query_selector(f"{BUBBLE} button") is None

        state = snapshot(relay, job_id)
        assert (state["status"], state["step"], state["total_steps"]) == ("completed", 5, 5)
        assert state["result"] == {"answer": answer, "sources": len(DOCUMENTS)}
        assert state["meta"] == {"question": QUESTION}
        page.close()


def test_cancel_in_the_react_page_ends_the_fastapi_job_as_cancelled(
    browser: Browser, react_page: Path
) -> None:
    with deployment("fastapi_app", "--bundle", str(react_page), secured=True, delay=1.0) as (
        relay,
        app,
    ):
        page = ask_on_the_page(browser, app, [])
        wait_for(page, f"document.querySelector('{BUBBLE}')?.dataset.status === 'running'")
        page.click(f"{BUBBLE} button")
        wait_for(
            page, f"document.querySelector('{BUBBLE}').dataset.status === 'cancelled'", timeout=15
        )
        assert page.text_content(f"{BUBBLE} .cancelled") == "Cancelled"
        job_id = page.get_attribute(BUBBLE, "data-job")
        assert job_id
        assert snapshot(relay, job_id)["status"] == "cancelled"
        deadline = time.monotonic() + 10
        while f"job {job_id} cancelled by a viewer" not in app.log:
            assert time.monotonic() < deadline, app.log
            time.sleep(0.05)
        page.close()
