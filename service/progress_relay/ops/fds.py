"""File descriptors: the relay's own limit, and what happens when they run out.

Every connection is a file descriptor, and a common soft limit is 1,024, while the hard limit
(what an unprivileged process may raise itself to) is usually far higher: at start-up the relay
raises its soft limit to the hard one and logs both.

When they run out anyway, asyncio's accept loop reports each failed ``accept()`` to the loop's
exception handler with a traceback, up to the listen backlog's count per turn of the loop, and
tries again a second later: thousands of tracebacks a second. ``AcceptErrors`` is that handler:
one warning line when accepting fails, at most one more per ``interval`` (with the count), and
one line when a connection is accepted again. Meanwhile new connections wait in the kernel's
listen backlog and are taken within a second once descriptors are free; open ones go on.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import resource
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger("progress_relay")

_OUT_OF_RESOURCES = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


def raise_limit() -> tuple[int, int, int]:
    """Raise the soft RLIMIT_NOFILE to the hard limit; (soft before, soft now, hard), logged."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    now = soft
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            now = hard
        except (ValueError, OSError) as exc:  # an infinite hard limit is more than Linux allows
            log.warning("could not raise the open-file limit from %d to %s: %s", soft, hard, exc)
    log.info(
        "open-file limit: soft %s (%s), hard %s",
        _count(now),
        "raised from " + _count(soft) if now != soft else "unchanged",
        _count(hard),
    )
    return soft, now, hard


def _count(limit: int) -> str:
    return "unlimited" if limit == resource.RLIM_INFINITY else str(limit)


class AcceptErrors:
    """The event loop's exception handler: failed accepts as above, everything else as
    asyncio's default handler does it."""

    def __init__(self, interval: float = 10.0, clock: Callable[[], float] = time.monotonic):
        self._interval = interval
        self._clock = clock
        self._failing = False
        self._next_line = 0.0
        self._since_line = 0
        self.failed = 0  # accepts that failed for want of descriptors or memory, in all

    def __call__(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        if not (
            isinstance(exc, OSError) and exc.errno in _OUT_OF_RESOURCES and "socket" in context
        ):
            loop.default_exception_handler(context)
            return
        self.failed += 1
        self._since_line += 1
        self._failing = True
        now = self._clock()
        if now < self._next_line:
            return
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        log.warning(
            "cannot accept new connections: %s (open-file limit %s); they wait in the listen "
            "backlog and are retried every second%s",
            exc.strerror,
            _count(soft),
            "" if self._since_line == 1 else f" ({self._since_line} failed since the last line)",
        )
        self._since_line = 0
        self._next_line = now + self._interval

    def accepted(self) -> None:
        """A connection was accepted: if accepting had failed, say that it is over."""
        if self._failing:
            self._failing = False
            self._next_line = 0.0
            log.info("accepting connections again (%d failed accepts in all)", self.failed)
