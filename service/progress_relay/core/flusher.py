"""Writes what topics and idle streams have pending, once per turn of the event loop.

Waking each stream's handler task for every publish costs a future, a task step and a trip
through the response's write path per subscriber per event. Instead, a topic hands out all the
events published during one turn of the loop at its end, framed once as one HTTP chunk and
written as the same bytes to each of its idle streams (``Topic.flush``), and a stream that had
frames queued writes them all in one write (``Subscriber.flush``); the handlers sleep on. A
handler is woken only when its stream ends or its socket pushes back.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Protocol

log = logging.getLogger(__name__)


def chunked(data: bytes) -> bytes:
    """``data`` as one chunk of an HTTP/1.1 chunked body (never empty: that would end it)."""
    return b"%x\r\n%s\r\n" % (len(data), data)


class Flushable(Protocol):
    def flush(self) -> None: ...


# The longest a flush waits for the one before it to be paid off (see Flusher).
MAX_DELAY = 0.005


class Flusher:
    """Flushes at the end of the loop's turn, but never sooner after the last flush than that
    flush took (at most ``MAX_DELAY``): when writing to many sockets is what keeps the loop
    busy, the publishes that arrive meanwhile go out together, one write per stream instead of
    one per publish, and reading publishes gets at least half the time. Idle, a flush is
    immediate."""

    __slots__ = ("_next_at", "_pending", "_scheduled")

    def __init__(self) -> None:
        self._pending: list[Flushable] = []
        self._scheduled = False
        self._next_at = 0.0  # loop time before which the next flush does not start

    def add(self, stream: Flushable) -> None:
        """Flush ``stream`` soon (the caller adds it once)."""
        self._pending.append(stream)
        if not self._scheduled:
            self._scheduled = True
            loop = asyncio.get_running_loop()
            wait = self._next_at - loop.time()
            if wait > 0:
                loop.call_later(wait, self._run)
            else:
                loop.call_soon(self._run)

    def _run(self) -> None:
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            # A flush may add more (a topic hands events to streams that queue them): same turn.
            while self._pending:
                pending, self._pending = self._pending, []
                for stream in pending:
                    try:
                        stream.flush()
                    except Exception:
                        log.exception("flushing %r failed", stream)
        finally:
            self._scheduled = False
            now = loop.time()
            self._next_at = now + min(now - started, MAX_DELAY)
