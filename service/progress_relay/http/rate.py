"""Rate limits: one token bucket per publisher (publishes, creates) or client (cancels).

A bucket holds up to ``burst`` requests and refills at ``rate`` per second; a request takes one
or is refused with the seconds until one is back. Buckets that have refilled completely carry
no information, so they are forgotten when the table grows: memory stays bounded by the number
of publishers active within ``burst / rate`` seconds.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from progress_relay.wire.errors import RateLimited

_PRUNE_AT = 10_000


class RateLimiter:
    __slots__ = ("_buckets", "_burst", "_clock", "_rate")

    def __init__(
        self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._rate = rate
        self._burst = float(burst)
        self._clock = clock
        # key -> (tokens left, when they were counted)
        self._buckets: dict[str, tuple[float, float]] = {}

    def take(self, key: str) -> int:
        """Take one request from ``key``'s bucket: 0 when allowed, else whole seconds to wait."""
        now = self._clock()
        tokens, counted = self._buckets.get(key, (self._burst, now))
        tokens = min(self._burst, tokens + (now - counted) * self._rate)
        if tokens < 1.0:
            self._buckets[key] = (tokens, now)
            return max(1, math.ceil((1.0 - tokens) / self._rate))
        if key not in self._buckets and len(self._buckets) >= _PRUNE_AT:
            self._prune(now)
        self._buckets[key] = (tokens - 1.0, now)
        return 0

    def _prune(self, now: float) -> None:
        full = [
            key
            for key, (tokens, counted) in self._buckets.items()
            if tokens + (now - counted) * self._rate >= self._burst
        ]
        for key in full:
            del self._buckets[key]


def require(limiter: RateLimiter, key: str, setting: str) -> None:
    """429 ``rate_limited`` with ``Retry-After`` when ``key`` (who asks: "publisher token 0",
    "address 10.0.0.7") has used its share of ``limits.<setting>``."""
    wait = limiter.take(key)
    if wait:
        raise RateLimited(
            f"more than limits.{setting} requests per second from this {key.split()[0]}",
            headers={"Retry-After": str(wait)},
        )
