"""One pub/sub connection to Redis: ordered (un)subscribes, health pings, reconnect with backoff.

Contract with the Redis broker:

- ``subscribe`` returns once Redis has confirmed the subscription, so a history read made after it
  overlaps the live messages instead of leaving a gap.
- When the connection is lost, nothing is retried in a tight loop: the channel reconnects with
  exponential backoff and jitter, subscribes again to every wanted channel, and then calls
  ``on_reconnect`` while holding back live messages; they are delivered after it returns. The
  broker catches every local topic up from history there, so no message lost during the outage
  goes unnoticed.
- A connection that stops answering pings is treated as lost (a silent network failure must not
  leave a subscribed-looking but dead connection behind a green health check).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
from collections.abc import Awaitable, Callable
from typing import Any

from redis.asyncio import ConnectionPool
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import RedisError

from progress_relay.wire.errors import BrokerUnavailable

log = logging.getLogger(__name__)

OnMessage = Callable[[bytes, bytes], None]
OnReconnect = Callable[[], Awaitable[None]]

_LOST = (RedisError, OSError, asyncio.TimeoutError, ConnectionError)


class Channel:
    def __init__(
        self,
        pool: ConnectionPool,
        on_message: OnMessage,
        on_reconnect: OnReconnect,
        *,
        confirm_timeout: float,
        ping_interval: float = 2.0,
        max_backoff: float = 5.0,
    ) -> None:
        self._confirm_timeout = confirm_timeout
        self._pool = pool
        self._on_message = on_message
        self._on_reconnect = on_reconnect
        self._ping_interval = ping_interval
        self._max_backoff = max_backoff
        self._wanted: set[bytes] = set()
        self._waiting: dict[bytes, list[asyncio.Future[None]]] = {}
        self._connection: AbstractConnection | None = None
        self._held: list[tuple[bytes, bytes]] | None = None
        self._ready = asyncio.Event()
        self._writes: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._pongs = 0
        self._min_backoff = 0.05
        self._established = False
        self.connected_once = asyncio.Event()

    @property
    def wanted(self) -> frozenset[bytes]:
        return frozenset(self._wanted)

    @property
    def ready(self) -> bool:
        return self._ready.is_set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="redis-pubsub")

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def subscribe(self, channel: bytes) -> None:
        self._wanted.add(channel)
        if not self._ready.is_set():
            raise BrokerUnavailable("the relay has lost its connection to Redis")
        future = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(channel, []).append(future)
        self._writes.put_nowait(("SUBSCRIBE", channel))
        try:
            await asyncio.wait_for(asyncio.shield(future), self._confirm_timeout)
        except TimeoutError:
            raise BrokerUnavailable("Redis did not confirm a subscription in time") from None

    def unsubscribe(self, channel: bytes) -> None:
        self._wanted.discard(channel)
        if self._ready.is_set():
            self._writes.put_nowait(("UNSUBSCRIBE", channel))

    async def _run(self) -> None:
        backoff = self._min_backoff
        while True:
            self._established = False
            try:
                await self._session()
            except _LOST as exc:
                log.warning("Redis pub/sub connection lost (%s); reconnecting", exc)
            else:
                log.warning("Redis pub/sub connection closed; reconnecting")
            finally:
                self._lost()
            if self._established:
                backoff = self._min_backoff
            await asyncio.sleep(backoff * (0.5 + random.random()))
            backoff = min(backoff * 2, self._max_backoff)

    async def _session(self) -> None:
        connection: AbstractConnection = self._pool.make_connection()  # type: ignore[no-untyped-call]
        self._connection = connection
        await connection.connect()  # type: ignore[no-untyped-call]
        self._held = []
        self._writes = asyncio.Queue()
        reader = asyncio.create_task(self._read(connection))
        writer = asyncio.create_task(self._write(connection))
        pinger = asyncio.create_task(self._ping(connection))
        tasks = {reader, writer, pinger}
        try:
            channels = sorted(self._wanted)
            futures = [self._expect(channel) for channel in channels]
            if channels:
                await connection.send_command("SUBSCRIBE", *channels)
            await _first(tasks, asyncio.gather(*futures))
            self._established = True
            if self.connected_once.is_set():
                log.info("Redis pub/sub reconnected; catching %d topics up", len(channels))
                await _first(tasks, self._on_reconnect())
            # Ready only once caught up: until then the broker does not judge jobs gone.
            self._ready.set()
            self.connected_once.set()
            self._release()
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                task.result()
        finally:
            for task in tasks:
                task.cancel()
            # Bounded: a task of the client library that swallows its cancellation must not
            # keep a reconnect (or shutdown) waiting forever.
            await asyncio.wait(tasks, timeout=1.0)
            with contextlib.suppress(Exception):
                await connection.disconnect(nowait=True)

    def _expect(self, channel: bytes) -> asyncio.Future[None]:
        future = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(channel, []).append(future)
        return future

    def _release(self) -> None:
        held, self._held = self._held, None
        for channel, data in held or ():
            self._on_message(channel, data)

    def _lost(self) -> None:
        self._ready.clear()
        self._connection = None
        self._held = None
        waiting, self._waiting = self._waiting, {}
        for futures in waiting.values():
            for future in futures:
                if not future.done():
                    future.set_exception(BrokerUnavailable("lost the connection to Redis"))

    async def _read(self, connection: AbstractConnection) -> None:
        while True:
            reply: Any = await connection.read_response(timeout=math.inf)
            if isinstance(reply, list) and reply:
                kind = reply[0]
                if kind == b"message":
                    if self._held is not None:
                        self._held.append((reply[1], reply[2]))
                    else:
                        self._on_message(reply[1], reply[2])
                elif kind == b"subscribe":
                    futures = self._waiting.get(reply[1])
                    if futures:
                        future = futures.pop(0)
                        if not future.done():
                            future.set_result(None)
                elif kind == b"pong":
                    self._pongs += 1
            elif reply in (b"PONG", "PONG"):
                self._pongs += 1

    async def _write(self, connection: AbstractConnection) -> None:
        while True:
            command, channel = await self._writes.get()
            await connection.send_command(command, channel)

    async def _ping(self, connection: AbstractConnection) -> None:
        while True:
            seen = self._pongs
            await connection.send_command("PING")
            await asyncio.sleep(self._ping_interval)
            if self._pongs == seen:
                raise ConnectionError(f"no answer to PING within {self._ping_interval} s")


async def _first(tasks: set[asyncio.Task[None]], work: Awaitable[Any]) -> Any:
    """Await ``work``, unless one of the connection's tasks ends (fails) first."""
    job = asyncio.ensure_future(work)
    done, _ = await asyncio.wait({job, *tasks}, return_when=asyncio.FIRST_COMPLETED)
    if job in done:
        return job.result()
    job.cancel()
    for task in done:
        task.result()
    raise ConnectionError("the pub/sub connection ended")
