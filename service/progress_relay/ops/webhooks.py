"""Webhook delivery: takes deliveries from the broker's outbox (brokers/outbox.py), POSTs each to
its receiver signed as wire/webhooks.py says, and retries what fails (a status other than 2xx, a
timeout, a connection error) with exponential backoff and jitter until ``webhooks.retry_for``
after its event was published; then it is counted as failed and logged. At least once: a
receiver deduplicates by `Webhook-Id`, which is the event's id on every attempt."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

import aiohttp

from progress_relay.brokers.outbox import Outbox, Taken
from progress_relay.config import WebhookSettings
from progress_relay.wire import webhooks as wire

log = logging.getLogger(__name__)


@dataclass
class WebhookCounts:
    delivered: int = 0
    retried: int = 0  # attempts after the first
    failed: int = 0  # given up after retry_for


def _no_timer(seconds: float) -> None:
    return None


def backoff(attempt: int, first: float, most: float) -> float:
    """The wait before attempt ``attempt + 1`` (``attempt`` >= 1): doubling from ``first``, at
    most ``most``, with "equal jitter" (between half and all of it) so that receivers coming back
    are not hit by every relay at once."""
    delay: float = min(most, first * 2.0 ** min(attempt - 1, 62))
    return delay / 2 + random.uniform(0, delay / 2)


class Webhooks:
    def __init__(self, settings: WebhookSettings, outbox: Outbox) -> None:
        self.settings = settings
        self.outbox = outbox
        self.counts = WebhookCounts()
        # Seconds from an event's publish to its delivery (set by ops/metrics to its histogram).
        self.latency_timer: Callable[[float], None] = _no_timer
        self._session: aiohttp.ClientSession | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._working: dict[str, Taken] = {}
        self._free = asyncio.Semaphore(settings.concurrency)
        self._fetcher: asyncio.Task[None] | None = None
        self._renewer: asyncio.Task[None] | None = None

    async def start(self) -> None:
        # No cookies kept between receivers; redirects are not followed (see _attempt).
        self._session = aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar())
        await self.outbox.start()
        loop = asyncio.get_running_loop()
        self._fetcher = loop.create_task(self._fetch())
        self._renewer = loop.create_task(self._renew())

    async def close(self) -> None:
        """Stop taking deliveries; those under way get one attempt's time to finish, the rest
        stay in the outbox (Redis: another instance, or this one restarted, takes them over)."""
        for task in (self._fetcher, self._renewer):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self._tasks:
            _, pending = await asyncio.wait(self._tasks, timeout=self.settings.timeout)
            if pending:
                log.warning("%d webhook deliveries unfinished at shutdown", len(pending))
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        await self.outbox.close()
        if self._session is not None:
            await self._session.close()

    async def _fetch(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._free.acquire()
            free = 1
            while not self._free.locked():  # every free slot, in one take
                await self._free.acquire()
                free += 1
            try:
                taken = await self.outbox.take(free)
            except Exception as exc:  # the broker went away: try again shortly
                log.warning("webhook outbox unavailable: %s", exc)
                taken = []
                await asyncio.sleep(1.0)
            for _ in range(free - len(taken)):
                self._free.release()
            for item in taken:
                self._working[item.token] = item
                task = loop.create_task(self._run(item))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    async def _renew(self) -> None:
        while True:
            await asyncio.sleep(self.settings.claim_after / 3)
            if self._working:
                try:
                    await self.outbox.renew(list(self._working))
                except Exception as exc:
                    log.warning("renewing webhook deliveries failed: %s", exc)

    async def _run(self, taken: Taken) -> None:
        try:
            if await self.deliver(taken):
                self.counts.delivered += 1
                self.latency_timer(max(0.0, time.time() - taken.published))
            else:
                self.counts.failed += 1
                log.warning(
                    "webhook delivery of event %s (job %s) failed for %.0f s; given up",
                    taken.delivery.id,
                    taken.delivery.job,
                    self.settings.retry_for,
                )
            await self.outbox.done(taken)
        except Exception:
            log.exception("webhook delivery of event %s", taken.delivery.id)
        finally:
            self._working.pop(taken.token, None)
            self._free.release()

    async def deliver(self, taken: Taken) -> bool:
        """Attempts until one succeeds (True) or ``retry_for`` after the publish has passed."""
        settings = self.settings
        delivery = taken.delivery
        url = delivery.url or settings.url
        if not url:
            return False
        payload = wire.body(delivery)
        deadline = taken.published + settings.retry_for
        attempt = 1
        while True:
            why = await self._attempt(url, delivery.id, payload)
            if why is None:
                return True
            wait = backoff(attempt, settings.retry_delay, settings.max_delay)
            if time.time() + wait > deadline:
                return False
            log.info("webhook %s to %s: %s; again in %.1f s", delivery.id, url, why, wait)
            await asyncio.sleep(wait)
            attempt += 1
            self.counts.retried += 1

    async def _attempt(self, url: str, msg_id: str, payload: bytes) -> str | None:
        """None when the receiver took it (2xx), else what went wrong. A redirect is a failure:
        following it could lead to a destination the operator did not allow."""
        if self._session is None:
            raise RuntimeError("Webhooks.start() must run before a delivery")
        headers = wire.headers(self.settings.secret, msg_id, int(time.time()), payload)
        timeout = aiohttp.ClientTimeout(total=self.settings.timeout)
        try:
            async with self._session.post(
                url, data=payload, headers=headers, timeout=timeout, allow_redirects=False
            ) as response:
                if 200 <= response.status < 300:
                    return None
                return f"status {response.status}"
        except TimeoutError:
            return f"no answer within {self.settings.timeout:g} s"
        except aiohttp.ClientError as exc:
            return f"{type(exc).__name__}: {exc}"
