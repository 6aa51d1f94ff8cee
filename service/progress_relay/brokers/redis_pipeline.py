"""Redis calls of one turn of the event loop, sent together.

Each publish is one script run, and sending each on a connection of its own costs a pool
checkout, a write and a read per call on the relay and a read and a write per call in Redis:
under load, more than the script itself. The calls made during one turn of the loop are sent
instead as one write on one connection, and their replies read in order (Redis answers the
commands of a connection in the order they came; each script still runs atomically on its
own). Nothing waits for a batch to fill: a lone call goes out at the end of its turn. Batches
do not wait for each other: each takes a connection of the pool.

A caller that stops waiting (its ``broker.timeout``) leaves the batch going. A reply that is an
error fails its own call only; a lost connection fails every call of its batch with the same
``ConnectionError`` (RedisCalls decides which of them may run again).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from redis.asyncio import ConnectionPool
from redis.exceptions import ResponseError

Command = Sequence[Any]


class Pipeline:
    __slots__ = ("_batches", "_pool", "_scheduled", "_waiting", "sent")

    def __init__(self, pool: ConnectionPool) -> None:
        self._pool = pool
        self._waiting: list[tuple[Command, asyncio.Future[Any]]] = []
        self._scheduled = False
        self._batches: set[asyncio.Task[None]] = set()
        self.sent = 0  # batches written (a batch holds one call or more)

    def call(self, *command: Any) -> asyncio.Future[Any]:
        """Send ``command`` (``"EVALSHA", sha, ...``) with the others of this turn; its reply."""
        loop = asyncio.get_running_loop()
        reply: asyncio.Future[Any] = loop.create_future()
        self._waiting.append((command, reply))
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._send)
        return reply

    def _send(self) -> None:
        self._scheduled = False
        batch, self._waiting = self._waiting, []
        task = asyncio.create_task(self._run(batch))
        self._batches.add(task)
        task.add_done_callback(self._batches.discard)

    async def _run(self, batch: list[tuple[Command, asyncio.Future[Any]]]) -> None:
        try:
            connection = await self._pool.get_connection()  # type: ignore[no-untyped-call]
        except Exception as exc:
            _fail(batch, exc)
            return
        try:
            await connection.send_packed_command(b"".join(pack(command) for command, _ in batch))
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
        except BaseException as exc:
            # The connection's state is unknown (a reply half read): it is not used again.
            await connection.disconnect(nowait=True)
            _fail(batch, exc if isinstance(exc, Exception) else ConnectionError("cancelled"))
            if not isinstance(exc, Exception):
                raise
        finally:
            await self._pool.release(connection)

    async def close(self) -> None:
        """Wait for the batches under way (their callers are answered either way)."""
        if self._batches:
            await asyncio.gather(*self._batches, return_exceptions=True)


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


def _fail(batch: list[tuple[Command, asyncio.Future[Any]]], exc: Exception) -> None:
    for _, reply in batch:
        if not reply.done():
            reply.set_exception(exc)
