"""The reaper: one task per process that evicts jobs whose lifetime is over."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from progress_relay.brokers.base import Broker, Expiring
from progress_relay.core.hub import Hub
from progress_relay.wire.errors import RelayError

log = logging.getLogger(__name__)

# What a subscriber of an evicted job is told, by the status the job had; finished jobs' streams
# have already had their terminal event.
_REASONS = {"pending": "job_not_found", "running": "job_expired"}


class Reaper:
    def __init__(self, broker: Broker, hub: Hub, interval: float) -> None:
        self._broker = broker
        self._expiring = broker if isinstance(broker, Expiring) else None
        self._hub = hub
        self._interval = interval
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is not None:
            raise RuntimeError("the reaper is already running")
        self._task = asyncio.create_task(self._run(), name="reaper")

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                await self.sweep()
            except RelayError as exc:
                log.warning("reaper sweep skipped (%s); retrying at the next interval", exc)
            except Exception:
                log.exception("reaper sweep failed; retrying at the next interval")

    async def sweep(self) -> int:
        """Evict every expired job; one failing eviction is logged and the others go on."""
        count = 0
        expired = [] if self._expiring is None else await self._expiring.expired()
        for job_id, status in expired:
            try:
                await self.evict(job_id, status)
            except Exception:
                log.exception("evicting job %s failed", job_id)
            else:
                count += 1
        await self._hub.sweep()
        return count

    async def evict(self, job_id: str, status: str) -> None:
        """Evict a job, and a parent's children with it: a group goes as one."""
        snapshot = await self._broker.delete(job_id)
        reason = _REASONS.get(status)
        await self._hub.end_job(job_id, reason)
        if snapshot is not None:
            await self._hub.drop_children(snapshot, reason)
