"""The load generator's publisher: keep-alive HTTP/1.1 connections with pipelining.

Requests are pre-built bytes written straight to the socket; responses are counted by status
and otherwise skipped (Content-Length or chunked bodies). Each connection keeps up to ``depth``
requests in flight, and a server answers pipelined requests of one connection in order, so
events sent to one job over one connection arrive in the order they were sent.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence

PAD = b"processing chunk of the input"


def payload(seq: int) -> bytes:
    """One event's JSON: its sequence in the job and its publish time (µs), then some text."""
    return b'{"s":%d,"t":%d,"m":"%s"}' % (seq, time.time_ns() // 1000, PAD)


class PublishTally:
    __slots__ = ("accepted", "errors", "latencies_us", "sent", "statuses")

    def __init__(self) -> None:
        self.sent = 0
        self.accepted = 0
        self.errors = 0
        self.statuses: dict[int, int] = {}
        self.latencies_us: list[int] = []  # request → response, when measured


class PipelinedConnection(asyncio.Protocol):
    def __init__(self, tally: PublishTally, depth: int) -> None:
        self.tally = tally
        self.depth = depth
        self.in_flight = 0
        self.transport: asyncio.Transport | None = None
        self._buffer = b""
        self._room = asyncio.Event()
        self._room.set()
        self._drained = asyncio.Event()
        self._drained.set()
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not a subclass

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)
        # Whatever was in flight will never be answered.
        self.tally.errors += self.in_flight
        self.in_flight = 0
        self._room.set()
        self._drained.set()

    async def wait_room(self) -> None:
        """Return once one more request fits in the pipeline."""
        while self.in_flight >= self.depth:
            self._room.clear()
            await self._room.wait()
            if self.closed.done():
                raise ConnectionResetError("publisher connection closed")

    def write(self, request: bytes) -> None:
        """Write one request now (the caller keeps the pipeline bounded)."""
        if self.transport is None or self.closed.done():
            raise ConnectionResetError("publisher connection closed")
        self.in_flight += 1
        self.tally.sent += 1
        self._drained.clear()
        self.transport.write(request)

    @property
    def has_room(self) -> bool:
        return self.in_flight < self.depth and not self.closed.done()

    async def drain(self) -> None:
        """Wait until every request sent has its response."""
        await self._drained.wait()

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer + data if self._buffer else data
        pos = 0
        tally = self.tally
        answered = 0
        while True:
            head_end = buffer.find(b"\r\n\r\n", pos)
            if head_end < 0:
                break
            head = buffer[pos:head_end]
            status = int(head[9:12])
            lower = head.lower()
            at = lower.find(b"content-length:")
            if at >= 0:
                line_end = lower.find(b"\r\n", at)
                length = int(lower[at + 15 : line_end if line_end > 0 else None])
                end = head_end + 4 + length
                if end > len(buffer):
                    break
            elif b"transfer-encoding: chunked" in lower:
                end = _chunked_end(buffer, head_end + 4)
                if end < 0:
                    break
            else:
                end = head_end + 4
            pos = end
            answered += 1
            tally.statuses[status] = tally.statuses.get(status, 0) + 1
            if 200 <= status < 300:
                tally.accepted += 1
            else:
                tally.errors += 1
        self._buffer = buffer[pos:] if pos < len(buffer) else b""
        if answered:
            self.in_flight -= answered
            self._room.set()
            if self.in_flight == 0:
                self._drained.set()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


def _chunked_end(buffer: bytes, pos: int) -> int:
    """Where a chunked body that starts at ``pos`` ends, or -1 if it is not all here."""
    while True:
        line = buffer.find(b"\r\n", pos)
        if line < 0:
            return -1
        size = int(buffer[pos:line].split(b";", 1)[0], 16)
        pos = line + 2 + size + 2
        if pos > len(buffer):
            return -1
        if size == 0:
            return pos


async def open_connections(
    host: str, port: int, count: int, tally: PublishTally, depth: int
) -> list[PipelinedConnection]:
    loop = asyncio.get_running_loop()
    connections = []
    for _ in range(count):
        _, protocol = await loop.create_connection(
            lambda: PipelinedConnection(tally, depth), host, port
        )
        connections.append(protocol)
    return connections


async def drain_all(connections: Sequence[PipelinedConnection]) -> None:
    await asyncio.gather(*(connection.drain() for connection in connections))


def close_all(connections: Sequence[PipelinedConnection]) -> None:
    for connection in connections:
        connection.close()


async def paced(
    connections: Sequence[PipelinedConnection],
    rate: float,
    total: int,
    connection_for: Callable[[int], int],
    request_for: Callable[[int], bytes],
    deadline: float,
) -> tuple[int, float]:
    """Send ``total`` requests at ``rate`` per second: the i-th on ``connection_for(i)``, built
    by ``request_for(i)`` right before it is written (it carries its send time). A request whose
    connection's pipeline is full waits, in order; publishing stops at ``deadline`` (loop time).
    Returns how many were sent and in how many seconds: the rate reached, not the one asked."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    sent = 0
    while sent < total:
        now = loop.time()
        if now > deadline:
            break
        due = min(total, int((now - start) * rate) + 1)
        while sent < due:
            connection = connections[connection_for(sent)]
            if not connection.has_room:
                await connection.wait_room()
                if loop.time() > deadline:
                    break
            connection.write(request_for(sent))
            sent += 1
        await asyncio.sleep(0.001)
    return sent, loop.time() - start
