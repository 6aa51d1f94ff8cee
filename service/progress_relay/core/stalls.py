"""The stall watch: one task per process that drops streams whose client stopped reading.

A client that stops reading is noticed by the stream's handler only when its socket pushes back,
and with the kernel's send buffer in between (megabytes on Linux) that may never happen: a
stopped process, or one that reads nothing, would hold its stream and a few megabytes for as long
as the job runs. Every fraction of ``stream.write_timeout`` this looks at each open stream
(``Subscriber.watch``): past ``stream.queue_bytes`` waiting, the kernel's queue included, or
bytes waiting without any acknowledged for the write timeout, the stream is dropped and its
client resumes by its last id when it reads again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from progress_relay.core.hub import Hub

log = logging.getLogger(__name__)

# The longest between two looks: what a stuck stream may outlast its write timeout by, at most.
_LONGEST_INTERVAL = 1.0


class StallWatch:
    def __init__(self, hub: Hub, write_timeout: float) -> None:
        self._hub = hub
        self._timeout = write_timeout
        self.interval = min(_LONGEST_INTERVAL, write_timeout / 4)
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is not None:
            raise RuntimeError("the stall watch is already running")
        self._task = asyncio.create_task(self._run(), name="stall-watch")

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.interval)
            try:
                self.look(loop.time())
            except Exception:
                log.exception("the stall watch failed; looking again at the next interval")

    def look(self, now: float) -> int:
        """Look at every open stream once; how many were dropped."""
        dropped = 0
        for subscriber in self._hub.open_streams():
            if subscriber.watch(now, self._timeout):
                dropped += 1
        if dropped:
            log.info(
                "dropped %d streams whose clients read nothing for %ss or fell %d bytes behind",
                dropped,
                self._timeout,
                self._hub.settings.stream.queue_bytes,
            )
        return dropped
