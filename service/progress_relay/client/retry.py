"""When to try a request again, and how long to wait first (sans-IO: no sockets, no sleeping).

Connection errors, timeouts and the answers 502, 503, 504 and 429 are retried: every request
the SDK sends is safe to repeat (each event carries its idempotency key; job ids are chosen
before the first attempt). ``Retry-After`` is honoured; otherwise the wait is an exponential
backoff with jitter (drawn from the upper half of the doubled delay). The attempts stop when
the next wait would go past ``budget`` seconds after the first attempt.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

RETRIED_STATUSES = frozenset({429, 502, 503, 504})


@dataclass(frozen=True)
class RetryPolicy:
    """``budget``: seconds a call may keep retrying in all; ``first_delay`` doubles per attempt
    up to ``max_delay``; each wait is drawn uniformly from [delay/2, delay] (jitter), so many
    workers that lost the same relay do not come back at the same instant."""

    budget: float = 30.0
    first_delay: float = 0.1
    max_delay: float = 5.0
    jitter: random.Random = field(default_factory=random.Random, compare=False, repr=False)

    def start(self, now: float) -> Attempts:
        return Attempts(self, now)


class Attempts:
    """The attempts of one call: ``next_delay`` says how long to wait before the next attempt,
    or None when the budget is spent."""

    def __init__(self, policy: RetryPolicy, started: float) -> None:
        self.policy = policy
        self.started = started
        self.count = 0

    def next_delay(self, now: float, retry_after: float | None = None) -> float | None:
        self.count += 1
        if retry_after is not None:
            delay = max(0.0, retry_after)
        else:
            ceiling = min(self.policy.max_delay, self.policy.first_delay * 2 ** (self.count - 1))
            delay = self.policy.jitter.uniform(ceiling / 2, ceiling)
        if now + delay - self.started > self.policy.budget:
            return None
        return delay

    def elapsed(self, now: float) -> float:
        return now - self.started

    def reset(self, now: float) -> None:
        """Progress was made (a stream delivered an event): the budget starts again."""
        self.started = now
        self.count = 0


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header (the relay sends seconds; an HTTP date is ignored)."""
    if not value:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        return None
    return seconds if seconds >= 0 else None
