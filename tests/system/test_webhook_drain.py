"""A relay stopping with a webhook delivery under way: the delivery gets its attempt's time, the
relay exits cleanly and says what it left unfinished."""

from __future__ import annotations

import asyncio
import signal

import httpx

from tests.support.process import start_relay
from tests.support.webhook_receiver import receiver


async def test_sigterm_with_a_delivery_under_way_exits_cleanly() -> None:
    async with receiver(["hang"]) as rx:
        env = {
            "PROGRESS_RELAY_WEBHOOKS_SECRET": "s",
            "PROGRESS_RELAY_WEBHOOKS_ALLOWED": rx.origin,
            "PROGRESS_RELAY_WEBHOOKS_URL": rx.url,
            "PROGRESS_RELAY_WEBHOOKS_TIMEOUT": "1",
        }
        relay = await asyncio.to_thread(start_relay, env=env)
        try:
            async with httpx.AsyncClient(timeout=10) as http:
                answer = await http.post(
                    f"{relay.base_url}/v1/jobs/j/events", json={"event": "complete", "data": {}}
                )
                assert answer.status_code == 200
            await rx.wait_for(1)
            code, _, log = await asyncio.to_thread(relay.stop, signal.SIGTERM, 10.0)
            assert code == 0, log
            assert "Traceback" not in log, log
            assert "1 webhook deliveries unfinished at shutdown" in log, log
        finally:
            relay.close()
