"""File descriptors: the relay's own limit, and what happens when they run out.

Every connection is a file descriptor, and a common soft limit is 1,024, while the hard limit
(what an unprivileged process may raise itself to) is usually far higher: at start-up the relay
raises its soft limit to the hard one and logs both.

When they run out anyway, accepting pauses for a tenth of a second at a time (ops/listener.py) and
``AcceptErrors`` says so in one line, not one traceback per failed ``accept()``.
"""

from __future__ import annotations

import logging
import resource
import time
from collections.abc import Callable
from typing import NamedTuple

log = logging.getLogger("progress_relay")


class Limits(NamedTuple):
    before: int  # the soft limit the process started with
    soft: int  # the soft limit now
    hard: int

    def __str__(self) -> str:
        raised = f"raised from {_count(self.before)}" if self.soft != self.before else "unchanged"
        return f"open-file limit: soft {_count(self.soft)} ({raised}), hard {_count(self.hard)}"


def raise_limit() -> Limits:
    """Raise the soft RLIMIT_NOFILE to the hard limit (the caller logs the outcome once the
    relay listens: a relay that cannot start says only why)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    now = soft
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            now = hard
        except (ValueError, OSError) as exc:  # an infinite hard limit is more than Linux allows
            log.warning("could not raise the open-file limit from %d to %s: %s", soft, hard, exc)
    return Limits(soft, now, hard)


def _count(limit: int) -> str:
    return "unlimited" if limit == resource.RLIM_INFINITY else str(limit)


class AcceptErrors:
    """Reports accepts that failed for want of descriptors (ops/listener.py): one warning line
    when accepting fails, at most one more per ``interval`` (with the count), and one line when
    a connection is accepted again."""

    def __init__(self, interval: float = 10.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._interval = interval
        self._clock = clock
        self._failing = False
        self._next_line = 0.0
        self._since_line = 0
        self.failed_total = 0  # accepts that failed for want of descriptors or memory, in all

    def failed(self, exc: OSError) -> None:
        self.failed_total += 1
        self._since_line += 1
        self._failing = True
        now = self._clock()
        if now < self._next_line:
            return
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        log.warning(
            "cannot accept new connections: %s (open-file limit %s); they wait in the listen "
            "backlog, and accepting is tried again every 0.1 s%s",
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
            self._since_line = 0
            log.info("accepting connections again (%d failed accepts in all)", self.failed_total)
