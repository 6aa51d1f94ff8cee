"""Requests in progress, so that a drain can wait for them (publishes above all) to finish; the
relay's middleware (http/middleware.py) tells of each as it starts and ends."""

from __future__ import annotations

import asyncio


class InFlight:
    def __init__(self) -> None:
        self.count = 0
        self._idle = asyncio.Event()
        self._idle.set()

    def enter(self) -> None:
        self.count += 1
        self._idle.clear()

    def leave(self) -> None:
        self.count -= 1
        if not self.count:
            self._idle.set()

    async def idle(self) -> None:
        """Returns once no request is in progress."""
        await self._idle.wait()
