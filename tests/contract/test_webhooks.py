"""Webhooks on both brokers, against a real receiver: signed deliveries, retries with the same
Webhook-Id, which events go, the allowed destinations, and the outbox's bound."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from tests.support.app import MakeClient, error_of, parse_metrics, publish, publish_many
from tests.support.webhook_receiver import Receiver, receiver, verify

SECRET = "whsec-test-secret"


def hooks(rx: Receiver, **more: Any) -> dict[str, Any]:
    # Fast retries, so that a test sees several attempts within a second or two.
    settings = {
        "secret": SECRET,
        "allowed": [rx.origin],
        "timeout": 0.5,
        "retry_delay": 0.05,
        "max_delay": 0.2,
        "claim_after": 1.0,
    }
    settings.update(more)
    return settings


async def create(client: Any, job_id: str, webhook: Any) -> Any:
    return await client.post("/v1/jobs", json={"id": job_id, "webhook": webhook})


async def metrics(client: Any) -> dict[str, float]:
    response = await client.get("/metrics")
    return parse_metrics(await response.text())


async def test_a_failing_then_hanging_receiver_gets_the_event_once_it_answers(
    make_client: MakeClient,
) -> None:
    async with receiver(["fail", "hang", "redirect", "ok"]) as rx:
        client = await make_client(webhooks=hooks(rx))
        response = await create(client, "w1", rx.url)
        assert response.status == 201, await response.text()
        await publish(client, "w1", "progress", {"percent": 50, "stage": "working"})
        done = await publish(client, "w1", "complete", {"result": {"n": 1}})
        attempts = await rx.wait_for(4)  # a redirect is not followed: it failed too
        await asyncio.sleep(0.3)  # nothing more comes: the fourth attempt was taken
        assert len(rx.received) == 4
        assert {a.headers["Webhook-Id"] for a in attempts} == {done}
        for attempt in attempts:
            assert verify(SECRET, attempt), attempt.headers
            assert attempt.headers["Content-Type"] == "application/json"
            assert abs(int(attempt.headers["Webhook-Timestamp"]) - time.time()) < 60
        body = attempts[3].json
        assert body["id"] == done
        assert body["job"] == "w1"
        assert body["event"] == "complete"
        assert body["data"] == {"result": {"n": 1}}
        assert body["snapshot"]["status"] == "completed"
        assert body["snapshot"]["stage"] == "working"
        assert "content" not in body["snapshot"]
        assert not verify("another-secret", attempts[3])
        counted = await metrics(client)
        assert counted["progress_relay_webhooks_delivered_total"] == 1
        assert counted["progress_relay_webhooks_retried_total"] == 3
        job = await (await client.get("/v1/jobs/w1")).text()
        assert rx.origin not in job  # the receiver is not shown to readers
        assert counted["progress_relay_webhooks_failed_total"] == 0
        assert counted["progress_relay_webhook_latency_seconds_count"] == 1


async def test_a_receiver_that_never_takes_it_fails_after_retry_for(
    make_client: MakeClient,
) -> None:
    async with receiver(["fail"] * 1000) as rx:
        client = await make_client(webhooks=hooks(rx, retry_for=0.5))
        await create(client, "w2", {"url": rx.url})
        await publish(client, "w2", "failed", {"message": "no"})
        await rx.wait_for(2)
        for _ in range(100):
            if (await metrics(client))["progress_relay_webhooks_failed_total"] == 1:
                break
            await asyncio.sleep(0.05)
        counted = await metrics(client)
        assert counted["progress_relay_webhooks_failed_total"] == 1
        assert counted["progress_relay_webhooks_delivered_total"] == 0
        seen = len(rx.received)
        await asyncio.sleep(0.4)
        assert len(rx.received) == seen  # given up: no more attempts


@pytest.mark.parametrize(
    ("events", "expected"),
    [
        ("terminal", ["complete"]),
        ("stages", ["progress:a", "progress:b", "complete"]),
        ("all", ["progress:a", "log", "progress:a", "progress:b", "complete"]),
    ],
)
async def test_the_events_a_receiver_asked_for(
    make_client: MakeClient, events: str, expected: list[str]
) -> None:
    async with receiver() as rx:
        client = await make_client(webhooks=hooks(rx))
        await create(client, "w3", {"url": rx.url, "events": events})
        await publish_many(
            client,
            "w3",
            [
                ("progress", {"percent": 10, "stage": "a"}),
                ("log", {"message": "hello"}),
                ("progress", {"percent": 20, "stage": "a"}),
            ],
        )
        await publish(client, "w3", "progress", {"percent": 30, "stage": "b"})
        await publish(client, "w3", "complete", {})
        got = await rx.wait_for(len(expected))
        await asyncio.sleep(0.2)
        assert len(rx.received) == len(expected)
        names = []
        for item in sorted(got, key=lambda r: int(r.json["id"].rsplit("-", 1)[1])):
            body = item.json
            stage = body["data"].get("stage")
            names.append(
                f"{body['event']}:{stage}" if body["event"] == "progress" else body["event"]
            )
        assert names == expected


async def test_the_configured_url_receives_every_job_and_default_events(
    make_client: MakeClient,
) -> None:
    async with receiver() as rx:
        client = await make_client(webhooks=hooks(rx, url=rx.url, events="stages"))
        await publish(client, "implicit", "progress", {"stage": "one"})
        await publish(client, "implicit", "cancelled", {})
        got = await rx.wait_for(2)
        assert sorted(r.json["event"] for r in got) == ["cancelled", "progress"]
        assert all(r.json["job"] == "implicit" for r in got)


@pytest.mark.parametrize(
    ("webhook", "why"),
    [
        ("file:///etc/passwd", "http or https"),
        ("ftp://127.0.0.1/x", "http or https"),
        ("http://localhost:{port}/hook", "not in webhooks.allowed"),
        ("http://127.0.0.1:1/hook", "not in webhooks.allowed"),
        ("https://127.0.0.1:{port}/hook", "not in webhooks.allowed"),
        ("http://user:pw@127.0.0.1:{port}/hook", "credentials"),
        ("http://127.0.0.1:{port}/hook\r\nX: y", "control characters"),
        ("http:///nohost", "no host"),
        ("not a url", "control characters"),
        ({"url": "gopher://127.0.0.1:{port}/"}, "http or https"),
    ],
)
async def test_a_webhook_the_operator_did_not_allow_is_refused_and_nothing_is_sent(
    make_client: MakeClient, webhook: Any, why: str
) -> None:
    async with receiver() as rx:
        client = await make_client(webhooks=hooks(rx))
        port = rx.origin.rsplit(":", 1)[1]
        if isinstance(webhook, dict):
            webhook = {"url": webhook["url"].format(port=port)}
        else:
            webhook = webhook.format(port=port)
        message = await error_of(await create(client, "bad", webhook), 422, "webhook_not_allowed")
        assert why in message
        missing = await client.get("/v1/jobs/bad")
        assert missing.status == 404  # nothing created
        await publish(client, "bad", "complete", {})
        await asyncio.sleep(0.3)
        assert rx.received == []


async def test_webhook_bodies_out_of_shape_are_refused(make_client: MakeClient) -> None:
    async with receiver() as rx:
        client = await make_client(webhooks=hooks(rx))
        huge = rx.url + "?" + "a" * 5000
        for webhook in (huge, {"url": rx.url, "events": "x"}, {"url": rx.url, "extra": 1}, 12):
            await error_of(await create(client, "b", webhook), 422, "invalid_body")


async def test_no_webhook_is_accepted_without_the_settings(make_client: MakeClient) -> None:
    client = await make_client()
    message = await error_of(
        await create(client, "n1", "https://hooks.example.com/x"), 422, "webhook_not_allowed"
    )
    assert "webhooks.secret" in message


async def test_past_the_outbox_bound_the_oldest_deliveries_are_dropped_and_counted(
    make_client: MakeClient,
) -> None:
    async with receiver(["hang"]) as rx:
        client = await make_client(
            webhooks=hooks(rx, outbox_size=2, concurrency=1, timeout=5.0, claim_after=10.0)
        )
        for n in range(1, 6):
            await create(client, f"d{n}", rx.url)
        first = await publish(client, "d1", "complete", {})
        await rx.wait_for(1)  # d1 is under way, holding the one delivery slot
        ids = [await publish(client, f"d{n}", "complete", {}) for n in range(2, 6)]
        assert (await metrics(client))["progress_relay_webhooks_dropped_total"] == 2
        rx.release()
        got = await rx.wait_for(3)
        await asyncio.sleep(0.3)
        assert len(rx.received) == 3
        assert [r.headers["Webhook-Id"] for r in got] == [first, ids[2], ids[3]]  # d4, d5 kept


def documented_check() -> Any:
    """The verification example of docs/api.md, as a user would paste it."""
    text = (Path(__file__).resolve().parents[2] / "docs" / "api.md").read_text()
    section = text[text.index("## Webhooks") :]
    code = section[section.index("```python") + len("```python") :]
    code = code[: code.index("```")]
    assert len(code.strip().splitlines()) <= 6  # the import and five lines
    scope: dict[str, Any] = {}
    exec(code, scope)
    return scope["verified"]


@pytest.mark.memory_only
async def test_the_documented_check_verifies_a_real_delivery(make_client: MakeClient) -> None:
    verified = documented_check()
    async with receiver() as rx:
        client = await make_client(webhooks=hooks(rx))
        await create(client, "doc", rx.url)
        await publish(client, "doc", "complete", {})
        [got] = await rx.wait_for(1)
        assert verified(SECRET.encode(), got.headers, got.body)
        assert not verified(b"wrong", got.headers, got.body)
        assert not verified(SECRET.encode(), got.headers, got.body + b" ")


async def test_a_cross_job_publish_reaches_each_jobs_receiver(make_client: MakeClient) -> None:
    async with receiver() as rx:
        client = await make_client(webhooks=hooks(rx, url=rx.url))
        events = [{"job": f"x{n}", "event": "complete", "data": {"n": n}} for n in range(5)]
        response = await client.post("/v1/events", json={"events": events})
        assert response.status == 200, await response.text()
        got = await rx.wait_for(5)
        await asyncio.sleep(0.2)
        assert len(rx.received) == 5
        assert sorted((r.json["job"], r.json["data"]["n"]) for r in got) == [
            (f"x{n}", n) for n in range(5)
        ]
