"""Redis calls of one turn of the event loop, sent together.

Each publish is one script run, and sending each on a connection of its own costs a pool
checkout, a write and a read per call on the relay and a read and a write per call in Redis:
under load, more than the script itself. The calls made during one turn of the loop are sent
instead as one write on one connection, and their replies read in order (Redis answers the
commands of a connection in the order they came; each script still runs atomically on its
own). Nothing waits for a batch to fill: a lone call goes out at the end of its turn.

The pipeline keeps its own few connections (``size``), outside the request pool: a checkout of
redis-py's pool (its lock, its condition, its bookkeeping) cost about as much as the batch's
write and read. A batch takes an idle one, or opens one while fewer than ``size`` are open;
when all are busy, calls wait and go with the next batch, as soon as one comes back (batches
grow under load instead of queueing). Its connections carry no socket timeout of their own:
the whole batch is bounded by one timer, ``timeout`` after its oldest call was made, instead of
a timer per write and per reply; so every call is answered, or failed with ``TimeoutError``,
within ``timeout`` of being made, waiting included (its caller needs no timer of its own).

A caller that stops waiting (its ``broker.timeout``) leaves the batch going. A reply that is an
error fails its own call only; a lost connection (or a batch past its timeout) fails every call
of its batch with the same error, and the idle connections are closed too (after a Redis restart
they are all gone; RedisCalls decides which calls may run again, on fresh connections). An idle
connection that Redis has closed, or that holds unread bytes, is opened again before use.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from redis.asyncio import ConnectionPool
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import ResponseError

Command = Sequence[Any]
# Connections a relay's pipeline opens at most, besides ``broker.pool_size``: Redis runs one
# command at a time, so more batches in flight would only wait there.
PIPELINE_CONNECTIONS = 4
Batch = list[tuple[Command, "asyncio.Future[Any]"]]


class Pipeline:
    __slots__ = (
        "_batches",
        "_idle",
        "_open",
        "_pool",
        "_scheduled",
        "_since",
        "_size",
        "_timeout",
        "_waiting",
        "sent",
    )

    def __init__(
        self, pool: ConnectionPool, *, size: int = PIPELINE_CONNECTIONS, timeout: float = 5.0
    ) -> None:
        # ``pool`` only makes the connections (its ``connection_kwargs``): none is checked out.
        self._pool = pool
        self._size = max(1, size)
        self._timeout = timeout
        self._idle: list[AbstractConnection] = []
        self._open = 0  # connections made and not closed: idle or carrying a batch
        self._waiting: Batch = []
        self._since = 0.0  # loop time of the oldest waiting call
        self._scheduled = False
        self._batches: set[asyncio.Task[None]] = set()
        self.sent = 0  # batches written (a batch holds one call or more)

    def call(self, *command: Any) -> asyncio.Future[Any]:
        """Send ``command`` (``"EVALSHA", sha, ...``) with the others of this turn; its reply."""
        loop = asyncio.get_running_loop()
        reply: asyncio.Future[Any] = loop.create_future()
        if not self._waiting:
            self._since = loop.time()
        self._waiting.append((command, reply))
        self._schedule()
        return reply

    def _schedule(self) -> None:
        """Send what waits at the end of this turn of the loop (once, however many calls)."""
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._send)

    def _send(self) -> None:
        self._scheduled = False
        if not self._waiting:
            return
        if self._idle:
            connection = self._idle.pop()
        elif self._open < self._size:
            connection = self._pool.make_connection()  # type: ignore[no-untyped-call]
            self._open += 1
        else:
            return  # every connection carries a batch: the next one back takes these calls
        batch, self._waiting = self._waiting, []
        task = asyncio.create_task(self._run(connection, batch, self._since + self._timeout))
        self._batches.add(task)
        task.add_done_callback(self._batches.discard)

    async def _run(self, connection: AbstractConnection, batch: Batch, deadline: float) -> None:
        kept = False
        try:
            async with asyncio.timeout_at(deadline):
                if connection.is_connected and await connection.can_read():
                    await connection.disconnect(nowait=True)  # closed by Redis, or dirty
                await connection.send_packed_command(
                    b"".join(pack(command) for command, _ in batch), check_health=False
                )
                self.sent += 1
                for _, reply in batch:
                    try:
                        answer = await connection.read_response()
                    except ResponseError as exc:  # read in full: the next reply follows
                        if not reply.done():
                            reply.set_exception(exc)
                        continue
                    if not reply.done():
                        reply.set_result(answer)
            kept = True
        except BaseException as exc:
            # The connection's state is unknown (a reply half read): it is not used again, and
            # neither are the idle ones (a lost connection is most often a lost Redis).
            _fail(batch, exc if isinstance(exc, Exception) else ConnectionError("cancelled"))
            idle, self._idle = self._idle, []  # taken before awaiting: others may come back
            await self._close(connection, *idle)
            if not isinstance(exc, Exception):
                raise
        finally:
            if kept:
                self._idle.append(connection)
            if self._waiting:
                self._schedule()

    async def _close(self, *connections: AbstractConnection) -> None:
        self._open -= len(connections)
        for connection in connections:
            await connection.disconnect(nowait=True)

    async def close(self) -> None:
        """Wait for the batches under way (their callers are answered either way), then close
        the connections."""
        if self._batches:
            await asyncio.gather(*self._batches, return_exceptions=True)
        _fail(self._waiting, ConnectionError("the broker is closing"))
        self._waiting = []
        idle, self._idle = self._idle, []
        await self._close(*idle)


def pack(command: Command) -> bytes:
    """``command`` in RESP, as redis-py's ``pack_command`` makes it for these arguments (bytes,
    str as UTF-8, int and float as their repr), in one pass and without its copies."""
    parts = [b"*%d\r\n" % len(command)]
    for arg in command:
        if isinstance(arg, str):
            arg = arg.encode()
        elif isinstance(arg, bool):
            raise TypeError("a bool is not a Redis argument; send an int or a str")
        elif isinstance(arg, int | float):
            arg = repr(arg).encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(arg), arg))
    return b"".join(parts)


def _fail(batch: Batch, exc: Exception) -> None:
    for _, reply in batch:
        if not reply.done():
            reply.set_exception(exc)
