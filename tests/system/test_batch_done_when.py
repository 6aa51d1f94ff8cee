"""Issue 19's "Done when", end to end and real everywhere: a 20-file batch is started, followed
in Chromium as one `<job-progress group>` bar with its parts, cancelled as one from the page (or
completed), and its end delivered once to a webhook receiver, signed as docs/api.md says; on one
relay with the memory broker, and on two relay processes sharing one redis-server (the batch made
through one, the page served by the other, the workers publishing through both)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, Page

from tests.support.app import parse_metrics
from tests.support.process import Relay, start_relay
from tests.support.redis_server import RedisServer
from tests.support.webhook_receiver import Received, Receiver, receiver
from tests.system.test_browser_group import ELEMENT, SHOW, SHOWN, STATE

FILES = 20
# A Standard Webhooks secret: the key is the bytes after `whsec_`, base64-decoded (docs/api.md).
KEY = b"batch-done-when-key"
SECRET = "whsec_" + base64.b64encode(KEY).decode()
WAIT = 30.0  # seconds, the bound of every wait of this module
TERMINAL = ("complete", "failed", "cancelled")
DONE_FIRST = 5  # files that complete before the cancel


def verified(secret: bytes, headers: Any, body: bytes) -> bool:
    """docs/api.md's verification, as a receiver copies it."""
    signed = f"{headers['Webhook-Id']}.{headers['Webhook-Timestamp']}.".encode() + body
    expected = base64.b64encode(hmac.new(secret, signed, hashlib.sha256).digest()).decode()
    fresh = abs(time.time() - int(headers["Webhook-Timestamp"])) < 300  # refuse replays
    return fresh and any(
        hmac.compare_digest(s[3:], expected) for s in headers["Webhook-Signature"].split()
    )


class ThreadedReceiver:
    """tests/support/webhook_receiver's receiver on an event loop of its own thread, for these
    synchronous (Playwright) tests."""

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._context = receiver()
        self.rx: Receiver

    def __enter__(self) -> ThreadedReceiver:
        self._thread.start()
        self.rx = self._run(self._context.__aenter__())
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self._run(self._context.__aexit__(None, None, None))
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=WAIT)
            self._loop.close()

    def _run(self, coroutine: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(WAIT + 5)

    def wait_for(self, count: int) -> list[Received]:
        received: list[Received] = self._run(self.rx.wait_for(count, timeout=WAIT))
        return received

    def received(self) -> list[Received]:
        return list(self.rx.received)


@dataclass
class Deployment:
    """Where the batch is made (``a``) and where the page comes from (``b``); the same relay
    with the memory broker."""

    a: Relay
    b: Relay

    @property
    def relays(self) -> list[Relay]:
        return [self.a] if self.a is self.b else [self.a, self.b]

    def worker_relay(self, n: int) -> Relay:
        """The relay the worker of file ``n`` publishes through: both, in turn."""
        return (self.a, self.b)[n % 2]


@pytest.fixture
def hooks() -> Iterator[ThreadedReceiver]:
    with ThreadedReceiver() as hooks:
        yield hooks


@pytest.fixture(params=["memory", "redis"])
def deployment(request: pytest.FixtureRequest, hooks: ThreadedReceiver) -> Iterator[Deployment]:
    env = {
        "PROGRESS_RELAY_WEBHOOKS_SECRET": SECRET,
        "PROGRESS_RELAY_WEBHOOKS_ALLOWED": hooks.rx.origin,
        "PROGRESS_RELAY_STREAM_HEARTBEAT": "1",
    }
    if request.param == "memory":
        relay = start_relay(env=env)
        try:
            yield Deployment(relay, relay)
        finally:
            relay.close()
        return
    redis: RedisServer = request.getfixturevalue("redis_server")
    env["PROGRESS_RELAY_BROKER_URL"] = redis.url
    env["PROGRESS_RELAY_BROKER_KEY_PREFIX"] = f"done{uuid.uuid4().hex[:10]}:"
    a = start_relay(env=env)
    try:
        b = start_relay(env=env)
        try:
            yield Deployment(a, b)
        finally:
            b.close()
    finally:
        a.close()


def start_batch(deployment: Deployment, hooks: ThreadedReceiver) -> tuple[str, list[str]]:
    """The batch, through relay A: a parent with the webhook and its 20 files as children."""
    parent = f"batch-{uuid.uuid4().hex[:8]}"
    children = [{"id": f"{parent}.{n}", "meta": {"name": f"file-{n}.wav"}} for n in range(FILES)]
    body = {"id": parent, "children": children, "webhook": hooks.rx.url}
    made = httpx.post(f"{deployment.a.base_url}/v1/jobs", json=body, timeout=WAIT)
    assert made.status_code == 201, made.text
    assert [child["id"] for child in made.json()["children"]] == [c["id"] for c in children]
    return parent, [c["id"] for c in children]


def publish(relay: Relay, job: str, event: str, data: Any) -> dict[str, Any]:
    """A worker's publish; the relay's answer (``ids``, ``cancel_requested``)."""
    response = httpx.post(
        f"{relay.base_url}/v1/jobs/{job}/events",
        json={"event": event, "data": data},
        timeout=WAIT,
    )
    assert response.status_code == 200, (job, event, response.text)
    answer: dict[str, Any] = response.json()
    return answer


def workers(files: list[tuple[int, str]], work: Callable[[int, str], Any]) -> list[Any]:
    """``work(n, child)`` for each file, each in its own thread, all at once (as a batch's
    workers run: the last files may end at the same instant on both relays); their results."""
    with ThreadPoolExecutor(max_workers=len(files)) as pool:
        return list(pool.map(lambda file: work(*file), files))


def snapshot(relay: Relay, job: str) -> dict[str, Any]:
    response = httpx.get(f"{relay.base_url}/v1/jobs/{job}", timeout=WAIT)
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def history(relay: Relay, job: str) -> list[dict[str, Any]]:
    response = httpx.get(f"{relay.base_url}/v1/jobs/{job}/events?limit=1000", timeout=WAIT)
    assert response.status_code == 200, response.text
    events: list[dict[str, Any]] = response.json()["events"]
    return events


def show(browser: Browser, relay: Relay, parent: str) -> Page:
    """A page of relay B's origin showing the batch as `<job-progress group>`."""
    page = browser.new_page()
    page.goto(f"{relay.base_url}/healthz")
    page.evaluate(SHOW, parent)
    page.wait_for_function(f"{STATE}.children.length === {FILES}", timeout=WAIT * 1000)
    return page


def until(page: Page, expression: str) -> None:
    page.wait_for_function(expression, timeout=WAIT * 1000)


def shown(page: Page) -> dict[str, Any]:
    result: dict[str, Any] = page.evaluate(SHOWN)
    return result


def the_end(
    deployment: Deployment, hooks: ThreadedReceiver, parent: str, event: str
) -> dict[str, Any]:
    """The parent's terminal event, checked delivered once, signed, with the documented body;
    the delivery's body."""
    terminal = [e for e in history(deployment.a, parent) if e["event"] in TERMINAL]
    assert [e["event"] for e in terminal] == [event]  # the relay ended the parent once
    [end] = terminal
    [delivery] = hooks.wait_for(1)
    assert delivery.headers["Content-Type"] == "application/json"
    assert delivery.headers["Webhook-Id"] == end["id"]
    assert verified(KEY, delivery.headers, delivery.body), delivery.headers
    assert not verified(SECRET.encode(), delivery.headers, delivery.body)
    body: dict[str, Any] = delivery.json
    assert set(body) == {"id", "job", "event", "data", "snapshot"}
    assert (body["id"], body["job"], body["event"]) == (end["id"], parent, event)
    assert body["data"] == end["data"]
    relayed = snapshot(deployment.a, parent)
    assert body["snapshot"]["id"] == parent
    assert body["snapshot"]["status"] == relayed["status"]
    # The end is sent with the group as it ended (the snapshot "as the publish that carried the
    # event left it"): every child finished, as the relay has it now.
    counts = body["snapshot"]["group"]["counts"]
    assert (counts["pending"], counts["running"]) == (0, 0), body["snapshot"]
    assert body["snapshot"]["group"] == relayed["group"]
    assert body["snapshot"]["last_event_id"] == end["id"]
    assert body["snapshot"]["subscribers"] == 0
    assert "content" not in body["snapshot"]
    # Exactly once, across instances: whatever would deliver it again (a second instance, a
    # second end) would have done so within this settle; the relays count one delivery.
    time.sleep(1.0)
    assert len(hooks.received()) == 1, [r.json for r in hooks.received()]
    delivered = 0.0
    for relay in deployment.relays:
        metrics = parse_metrics(httpx.get(f"{relay.base_url}/metrics", timeout=WAIT).text)
        delivered += metrics["progress_relay_webhooks_delivered_total"]
    assert delivered == 1
    return body


def test_a_20_file_batch_is_followed_as_one_bar_cancelled_as_one_and_its_end_delivered_once(
    browser: Browser, deployment: Deployment, hooks: ThreadedReceiver
) -> None:
    parent, children = start_batch(deployment, hooks)
    page = show(browser, deployment.b, parent)
    first = shown(page)
    assert first["hidden"] is False
    assert first["summary"] == f"Parts: 0 of {FILES} done"
    assert [part["name"] for part in first["parts"]] == [f"file-{n}.wav" for n in range(FILES)]
    assert {part["status"] for part in first["parts"]} == {"pending"}

    # The workers, through both relays: every file under way, the first five done.
    def start(n: int, child: str) -> bool:
        relay = deployment.worker_relay(n)
        asked: bool = publish(relay, child, "progress", {"percent": 10 + n})["cancel_requested"]
        if n < DONE_FIRST:
            publish(relay, child, "complete", {"result": {"file": n}})
        return asked

    assert workers(list(enumerate(children)), start) == [False] * FILES
    until(page, f"{STATE}.group.counts.completed === {DONE_FIRST}")
    until(page, f"{STATE}.children.every((c) => c.status !== 'pending')")
    percent = (100 * DONE_FIRST + sum(10 + n for n in range(DONE_FIRST, FILES))) / FILES
    expected_bar = str(round(percent))
    assert snapshot(deployment.a, parent)["percent"] == round(percent, 1)
    until(page, f"{STATE}.percent === {round(percent, 1)}")
    running = shown(page)
    assert (running["status"], running["bar"]) == ("running", expected_bar)
    assert running["summary"] == f"Parts: {DONE_FIRST} of {FILES} done"
    assert running["button"] is False
    assert [(p["bar"], p["status"]) for p in running["parts"]] == [
        ("100", "completed") if n < DONE_FIRST else (str(10 + n), "running") for n in range(FILES)
    ]

    # The page's Cancel cancels the group: every unfinished file is asked, on both relays.
    page.evaluate(f"{ELEMENT}.shadowRoot.querySelector('button').click()")
    asked = FILES - DONE_FIRST
    until(page, f"{STATE}.children.filter((c) => c.cancel_requested).length === {asked}")
    for relay in deployment.relays:
        assert [snapshot(relay, child)["cancel_requested"] for child in children] == [
            n >= DONE_FIRST for n in range(FILES)
        ]
    assert {p["status"] for p in shown(page)["parts"][DONE_FIRST:]} == {"cancelling"}

    # Each worker learns it from its next publish, through whichever relay it uses, and stops.
    def stop(n: int, child: str) -> bool:
        relay = deployment.worker_relay(n)
        asked: bool = publish(relay, child, "progress", {"percent": 50})["cancel_requested"]
        if asked:
            publish(relay, child, "cancelled", {"message": f"file-{n}.wav stopped"})
        return asked

    unfinished = list(enumerate(children))[DONE_FIRST:]
    assert workers(unfinished, stop) == [True] * asked

    until(page, f"{STATE}.status === 'cancelled'")
    end = shown(page)
    assert end["status"] == "cancelled"
    assert end["button"] is True
    assert end["summary"] == f"Parts: {FILES} of {FILES} done"
    assert [p["status"] for p in end["parts"]] == ["completed"] * DONE_FIRST + ["cancelled"] * (
        FILES - DONE_FIRST
    )
    until(page, "window.connections.at(-1) === 'closed'")
    page.close()
    for relay in deployment.relays:
        assert snapshot(relay, parent)["status"] == "cancelled"

    body = the_end(deployment, hooks, parent, "cancelled")
    assert body["data"] == {"message": f"{FILES - DONE_FIRST} cancelled"}
    assert body["snapshot"]["group"]["counts"] == {
        "pending": 0,
        "running": 0,
        "completed": DONE_FIRST,
        "failed": 0,
        "cancelled": FILES - DONE_FIRST,
    }
    assert body["snapshot"]["group"]["children"] == children
    assert body["snapshot"]["cancel_requested"] is True


def test_a_20_file_batch_that_completes_is_delivered_complete_once(
    browser: Browser, deployment: Deployment, hooks: ThreadedReceiver
) -> None:
    parent, children = start_batch(deployment, hooks)
    page = show(browser, deployment.b, parent)
    files = list(enumerate(children))
    workers(
        files,
        lambda n, child: publish(
            deployment.worker_relay(n), child, "progress", {"percent": 50, "message": "half"}
        ),
    )
    until(page, f"{STATE}.percent === 50")
    half = shown(page)
    assert (half["status"], half["bar"]) == ("running", "50")
    assert {(p["bar"], p["status"], p["message"]) for p in half["parts"]} == {
        ("50", "running", "half")
    }
    # Each file ends through the other relay than its progress went through.
    answers = workers(
        files,
        lambda n, child: publish(
            deployment.worker_relay(n + 1), child, "complete", {"result": {"n": n}}
        ),
    )
    assert [answer["cancel_requested"] for answer in answers] == [False] * FILES

    until(page, f"{STATE}.status === 'completed'")
    end = shown(page)
    assert (end["status"], end["bar"], end["button"]) == ("completed", "100", True)
    assert end["summary"] == f"Parts: {FILES} of {FILES} done"
    assert {(p["bar"], p["status"]) for p in end["parts"]} == {("100", "completed")}
    assert page.evaluate(f"{STATE}.result") == {"children": FILES}
    until(page, "window.connections.at(-1) === 'closed'")
    page.close()

    body = the_end(deployment, hooks, parent, "complete")
    assert body["data"] == {"result": {"children": FILES}}
    assert body["snapshot"]["status"] == "completed"
    assert body["snapshot"]["percent"] == 100
    assert body["snapshot"]["group"]["counts"]["completed"] == FILES
