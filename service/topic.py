"""One job's local subscribers in this process, and the fan-out of its events to them."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

from service.events import Event
from service.subscriber import Subscriber


class Topic:
    __slots__ = ("created", "job_id", "seen_event", "subscribers", "watching")

    def __init__(self, job_id: str) -> None:
        self.job_id = job_id
        self.subscribers: set[Subscriber] = set()
        self.created = time.monotonic()
        # whether an event of the job has reached this topic; a topic that waited past the
        # pending TTL without one ends its streams with `failed` / `job_not_found`
        self.seen_event = False
        # the broker's watch of the job; subscribers start reading history once it is done
        self.watching: asyncio.Future[None] | None = None

    def restart(self) -> None:
        """The broker lost the job's history: wait for its events again as if new."""
        self.created = time.monotonic()
        self.seen_event = False

    def publish(self, events: Sequence[Event]) -> None:
        """Hand the same frames to every subscriber; costs each subscriber a list append."""
        self.seen_event = True
        for subscriber in self.subscribers:
            subscriber.push(events)
