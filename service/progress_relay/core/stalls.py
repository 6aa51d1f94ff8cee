"""The stall watch: one task per process that drops streams whose client stopped reading.

A client that stops reading is noticed by the stream's handler only when its socket pushes back,
and with the kernel's send buffer in between (megabytes on Linux) that may never happen: a
stopped process, or one that reads nothing, would hold its stream and a few megabytes for as long
as the job runs. Every fraction of ``stream.write_timeout`` this looks at each open stream
(``Subscriber.watch``): past ``stream.queue_bytes`` waiting, the kernel's queue included, or
bytes waiting without any acknowledged for the write timeout, the stream is dropped and its
client resumes by its last id when it reads again.

Only streams that may have something waiting are looked at: those written to since the last
look (their socket reports each write: ``written``) and those whose last look found bytes not
acknowledged yet. An idle stream costs the watch nothing: its heartbeats are not reported
(``Socket.beat``), since a few bytes an interval never fill a client's buffers; a peer that
vanished from under an idle stream leaves its heartbeats unacknowledged, and the kernel ends the
connection at ``kernel_timeout`` (a stream that has bytes waiting stays watched anyway).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from progress_relay.core.hub import Hub
from progress_relay.core.subscriber import Subscriber

log = logging.getLogger(__name__)

# The longest between two looks: a stuck stream outlasts its write timeout by two at most.
_LONGEST_INTERVAL = 1.0
# Looks the kernel's TCP_USER_TIMEOUT waits beyond the write timeout (see kernel_timeout).
_KERNEL_LOOKS = 3


def interval(write_timeout: float) -> float:
    """Seconds between two looks at every stream."""
    return min(_LONGEST_INTERVAL, write_timeout / 4)


def kernel_timeout(write_timeout: float) -> float:
    """The socket's TCP_USER_TIMEOUT for a write timeout. Linux (5.11 and later) also ends a
    connection whose peer kept a zero window that long, which is what a stopped client does:
    set a little later than the watch's last look, it leaves the watch to drop (and count) a
    stuck stream, and stays the bound for a peer that vanished."""
    return write_timeout + _KERNEL_LOOKS * interval(write_timeout)


class StallWatch:
    def __init__(self, hub: Hub, write_timeout: float) -> None:
        self._hub = hub
        self._timeout = write_timeout
        self.interval = interval(write_timeout)
        self._task: asyncio.Task[None] | None = None
        # Streams to look at next: written to since the last look, or waiting for acks then.
        self._suspects: set[Subscriber] = set()
        self._looked = -1.0  # loop time of the last look (-1: none yet)

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

    def written(self, subscriber: Subscriber) -> None:
        """``subscriber``'s socket was written to (or it went live): look at it next time."""
        self._suspects.add(subscriber)

    @property
    def suspects(self) -> int:
        return len(self._suspects)

    def look(self, now: float) -> int:
        """Look once at every stream that may have something waiting; how many were dropped."""
        dropped = 0
        suspects, self._suspects = self._suspects, set()
        clean_since = self._looked if self._looked >= 0 else None
        self._looked = now
        for subscriber in suspects:
            if subscriber.watch(now, self._timeout, clean_since):
                dropped += 1
            elif subscriber.live and subscriber.unacknowledged:
                self._suspects.add(subscriber)
        if dropped:
            log.info(
                "dropped %d streams whose clients read nothing for %ss or fell %d bytes behind",
                dropped,
                self._timeout,
                self._hub.settings.stream.queue_bytes,
            )
        return dropped
