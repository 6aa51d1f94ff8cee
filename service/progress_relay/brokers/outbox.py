"""The outbox: webhook deliveries waiting for their receiver, filled by the broker in the same
step as the publish that made them, bounded (past ``webhooks.outbox_size`` the oldest are dropped
and counted), and emptied by ops/webhooks.py. The memory broker's is a queue in this process;
Redis's (brokers/redis_outbox.py) a stream read by a consumer group, so that exactly one
instance delivers each event and one that dies has its deliveries taken over."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from typing import NamedTuple, Protocol

from progress_relay.wire.webhooks import Delivery


class Taken(NamedTuple):
    """A delivery this instance now works on; ``token`` tells the outbox which when it is done,
    ``published`` is when its event was published (wall clock, seconds)."""

    token: str
    delivery: Delivery
    published: float


class Outbox(Protocol):
    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def take(self, most: int) -> list[Taken]:
        """Up to ``most`` deliveries (at least one; waits a bounded time, then may give none)."""
        ...

    async def done(self, taken: Taken) -> None:
        """Delivered, or given up: it leaves the outbox."""

    async def renew(self, tokens: list[str]) -> None:
        """These are still being worked on (Redis: not to be taken over)."""

    async def dropped(self) -> int:
        """Deliveries dropped, the oldest first, to stay within the bound."""
        ...


class MemoryOutbox:
    def __init__(self, size: int) -> None:
        self._waiting: deque[Taken] = deque()
        self._size = size
        self._arrived = asyncio.Event()
        self._dropped = 0
        self._taken = 0

    def put(self, delivery: Delivery) -> None:
        """Never blocks: the publish that calls it must not wait."""
        if len(self._waiting) >= self._size:
            self._waiting.popleft()
            self._dropped += 1
        self._taken += 1
        self._waiting.append(Taken(str(self._taken), delivery, time.time()))
        self._arrived.set()

    def __len__(self) -> int:
        return len(self._waiting)

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def take(self, most: int) -> list[Taken]:
        if not self._waiting:
            self._arrived.clear()
            try:
                async with asyncio.timeout(1.0):
                    await self._arrived.wait()
            except TimeoutError:
                return []
        waiting = self._waiting
        return [waiting.popleft() for _ in range(min(most, len(waiting)))]

    async def done(self, taken: Taken) -> None:
        return None

    async def renew(self, tokens: list[str]) -> None:
        return None

    async def dropped(self) -> int:
        return self._dropped
