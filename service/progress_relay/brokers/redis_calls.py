"""Every call the Redis broker makes: its time bound, what its failures mean for the client, and
the one retry after a lost connection.

- A call that takes longer than ``broker.timeout`` or finds Redis unreachable is
  ``503 broker_unavailable`` (with ``Retry-After``); one refused because Redis is past its
  ``maxmemory`` is ``503 memory_full``. No client message carries Redis's own words: what Redis
  said is logged instead.
- A call whose connection turns out to be lost (Redis restarted, a proxy closed it) is made once
  more on a fresh connection before anything is answered, when running it twice changes nothing
  a client could see: every read, creating a job (the script finds it made), a cancel request
  (the second finds it requested), a delete, the open-stream counts, and a publish whose every
  event has an idempotency key (the script returns the first run's ids). A publish with an
  event without a key is not run again: Redis may have run it before the connection broke, and
  a second run would publish it twice; it gets ``503 broker_unavailable``. Timeouts are not
  retried either: a slow Redis would only be waited for twice.
- Before the retry, every idle pooled connection is closed: they were opened before the same
  restart, and each would fail once more. (The pool also checks a connection for a close by
  Redis before it hands it out, so after a restart a call normally never meets a dead one.)
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

from redis.asyncio import ConnectionPool
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import OutOfMemoryError, RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from progress_relay.brokers.budget import memory_full
from progress_relay.wire.errors import BrokerUnavailable, RelayError

log = logging.getLogger(__name__)

T = TypeVar("T")

_LOST = (RedisConnectionError, ConnectionError)


class RedisCalls:
    def __init__(self, pool: ConnectionPool, timeout: float) -> None:
        self._pool = pool
        self._timeout = timeout
        self.retried = 0  # calls made again after a lost connection

    async def run(
        self, work: Callable[[], Awaitable[T]], *, repeatable: bool = True, timed: bool = True
    ) -> T:
        """``work()`` within the time bound, made once more after a lost connection when
        ``repeatable`` (see the module's rules). ``timed=False``: ``work`` keeps the bound
        itself (the pipeline's batches do: brokers/redis_pipeline.py), no second timer."""
        try:
            return await self._bounded(work, timed)
        except _LOST as exc:
            if not repeatable:
                raise _unavailable(exc) from None
            log.info("a Redis connection was lost (%s); retrying on a fresh one", exc)
        self.retried += 1
        try:
            await self._pool.disconnect(inuse_connections=False)
        except (RedisError, OSError) as exc:  # pragma: no cover - closing sockets rarely fails
            log.debug("closing idle Redis connections failed: %s", exc)
        try:
            return await self._bounded(work, timed)
        except _LOST as exc:
            raise _unavailable(exc) from None

    async def _bounded(self, work: Callable[[], Awaitable[T]], timed: bool) -> T:
        try:
            if not timed:
                return await work()
            async with asyncio.timeout(self._timeout):
                return await work()
        except OutOfMemoryError as exc:
            log.warning("Redis refused a write: it is past its maxmemory (%s)", exc)
            raise memory_full("this request") from None
        except _LOST:
            raise
        except (RedisError, OSError, TimeoutError) as exc:
            raise _unavailable(exc) from None


def refused(exc: Exception) -> RelayError:
    """What one command's error within a pipeline means for the client, as ``run`` maps the
    error of a whole call."""
    if isinstance(exc, OutOfMemoryError):
        log.warning("Redis refused a write: it is past its maxmemory (%s)", exc)
        return memory_full("this request")
    return _unavailable(exc)


def _unavailable(exc: BaseException) -> BrokerUnavailable:
    """What the client is told: which of three things happened, never Redis's own words."""
    if isinstance(exc, (TimeoutError, RedisTimeoutError)):
        log.debug("Redis did not answer in time: %r", exc)
        return BrokerUnavailable("Redis did not answer within broker.timeout; retry")
    if isinstance(exc, (*_LOST, OSError)):
        log.debug("Redis is unreachable: %r", exc)
        return BrokerUnavailable("the relay cannot reach Redis; retry")
    log.warning("Redis refused a call: %s", exc)
    return BrokerUnavailable("Redis refused the request; retry")
