"""Writes what topics and idle streams have pending, once per turn of the event loop.

Waking each stream's handler task for every publish costs a future, a task step and a trip
through the response's write path per subscriber per event. Instead, a subscriber whose handler is
idle and whose socket takes everything is written to here: all its frames published during one
turn of the loop go out in one write, and its handler sleeps on. The handler is woken only when
the stream ends or the socket pushes back (see ``Subscriber.flush``).
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


class Flusher:
    __slots__ = ("_pending", "_scheduled")

    def __init__(self) -> None:
        self._pending: list[Flushable] = []
        self._scheduled = False

    def add(self, stream: Flushable) -> None:
        """Flush ``stream`` at the end of this turn of the loop (the caller adds it once)."""
        self._pending.append(stream)
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._run)

    def _run(self) -> None:
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
