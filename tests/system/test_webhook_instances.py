"""Webhooks with two relay processes on one Redis: each event is delivered by exactly one
instance, and a delivery that an instance had under way when it was killed is taken over and
delivered by the other."""

from __future__ import annotations

import asyncio
import uuid

import httpx

from tests.support.app import parse_metrics
from tests.support.process import Relay, start_relay
from tests.support.redis_server import RedisServer
from tests.support.webhook_receiver import Receiver, receiver, verify

SECRET = "whsec-instances"


def environment(redis: RedisServer, rx: Receiver, prefix: str) -> dict[str, str]:
    return {
        "PROGRESS_RELAY_BROKER_URL": redis.url,
        "PROGRESS_RELAY_BROKER_KEY_PREFIX": prefix,
        "PROGRESS_RELAY_WEBHOOKS_SECRET": SECRET,
        "PROGRESS_RELAY_WEBHOOKS_ALLOWED": rx.origin,
        "PROGRESS_RELAY_WEBHOOKS_TIMEOUT": "1",
        "PROGRESS_RELAY_WEBHOOKS_CLAIM_AFTER": "2",
        "PROGRESS_RELAY_WEBHOOKS_RETRY_DELAY": "0.1",
    }


async def delivered(http: httpx.AsyncClient, relay: Relay) -> float:
    metrics = parse_metrics((await http.get(f"{relay.base_url}/metrics")).text)
    return metrics["progress_relay_webhooks_delivered_total"]


async def test_each_event_is_delivered_by_exactly_one_of_two_instances(
    redis_server: RedisServer,
) -> None:
    async with receiver() as rx:
        env = environment(redis_server, rx, f"w{uuid.uuid4().hex[:10]}:")
        a, b = await asyncio.gather(
            asyncio.to_thread(start_relay, env=env), asyncio.to_thread(start_relay, env=env)
        )
        try:
            async with httpx.AsyncClient(timeout=10) as http:
                ids = []
                for n in range(30):
                    relay = (a, b)[n % 2]
                    job = f"j{n}"
                    made = await http.post(
                        f"{relay.base_url}/v1/jobs", json={"id": job, "webhook": rx.url}
                    )
                    assert made.status_code == 201, made.text
                    other = (b, a)[n % 2]  # published on the other instance than it was made
                    answer = await http.post(
                        f"{other.base_url}/v1/jobs/{job}/events",
                        json={"event": "complete", "data": {"n": n}},
                    )
                    ids.append(answer.json()["ids"][0])
                got = await rx.wait_for(30)
                await asyncio.sleep(1.0)
                assert len(rx.received) == 30
                assert sorted(r.headers["Webhook-Id"] for r in got) == sorted(ids)
                assert all(verify(SECRET, r) for r in got)
                assert await delivered(http, a) + await delivered(http, b) == 30
        finally:
            a.close()
            b.close()


async def test_a_delivery_under_way_on_a_killed_instance_is_delivered_by_the_other(
    redis_server: RedisServer,
) -> None:
    async with receiver(["hang"]) as rx:
        env = environment(redis_server, rx, f"w{uuid.uuid4().hex[:10]}:")
        # a's attempt outlasts the test: only b can deliver it, by taking it over.
        a = await asyncio.to_thread(
            start_relay, env={**env, "PROGRESS_RELAY_WEBHOOKS_TIMEOUT": "60"}
        )
        b: Relay | None = None
        try:
            async with httpx.AsyncClient(timeout=10) as http:
                await http.post(f"{a.base_url}/v1/jobs", json={"id": "k", "webhook": rx.url})
                answer = await http.post(
                    f"{a.base_url}/v1/jobs/k/events", json={"event": "complete", "data": {}}
                )
                event_id = answer.json()["ids"][0]
                [first] = await rx.wait_for(1)  # a has it under way; the receiver holds it
                assert first.headers["Webhook-Id"] == event_id
                b = await asyncio.to_thread(start_relay, env=env)
                a.process.kill()  # mid-delivery: no answer was ever read
                a.process.wait(timeout=5)
                got = await rx.wait_for(2, timeout=30)
                assert got[1].headers["Webhook-Id"] == event_id
                assert got[1].json["event"] == "complete"
                assert verify(SECRET, got[1])
                await asyncio.sleep(1.0)
                assert len(rx.received) == 2
                assert await delivered(http, b) == 1
        finally:
            a.close()
            if b is not None:
                b.close()
