"""One job's local subscribers in this process, and the fan-out of its events to them."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

from service.events import Event
from service.subscriber import Subscriber


class Topic:
    __slots__ = ("created", "job_id", "status", "subscribers", "watching")

    def __init__(self, job_id: str) -> None:
        self.job_id = job_id
        self.subscribers: set[Subscriber] = set()
        self.created = time.monotonic()
        # "running" once the job is known to have had events. When the job is gone from the
        # broker, its streams are told `job_expired` if it had, else `job_not_found` once they
        # have waited the pending TTL.
        self.status: str | None = None
        # the broker's watch of the job; subscribers start reading history once it is done
        self.watching: asyncio.Future[None] | None = None

    def restart(self) -> None:
        """The broker lost the job's history: wait for its events again as if new."""
        self.created = time.monotonic()
        self.status = None

    def publish(self, events: Sequence[Event]) -> None:
        """Hand the same frames to every subscriber; costs each subscriber a list append."""
        self.status = "running"
        for subscriber in self.subscribers:
            subscriber.push(events)
