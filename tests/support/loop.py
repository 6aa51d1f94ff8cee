"""An event loop whose clock stands still until a test moves it, and a memory ``Socket`` with a
stream handler that drains a subscriber the way http/streams.py does, for the unit tests of the
core. On this loop every flush takes no time, so ``Flusher`` never delays the next one: what
is flushed at the end of a turn has been flushed after one ``turn()``."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

from progress_relay.core.subscriber import Subscriber


class FrozenClockLoop(asyncio.SelectorEventLoop):
    def __init__(self) -> None:
        super().__init__()
        self.now = 1000.0

    def time(self) -> float:
        return self.now


def on_frozen_clock(
    test: Callable[[FrozenClockLoop], Coroutine[Any, Any, None]],
) -> Callable[[], None]:
    """``@on_frozen_clock async def test_x(loop)``: the test runs on a loop of its own."""

    def run() -> None:
        loop = FrozenClockLoop()
        try:
            loop.run_until_complete(test(loop))
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    run.__name__ = test.__name__
    run.__qualname__ = test.__qualname__
    run.__doc__ = test.__doc__
    run.__module__ = test.__module__
    return run


async def turn(count: int = 1) -> None:
    """Let the loop finish this turn (and ``count - 1`` more)."""
    for _ in range(count):
        await asyncio.sleep(0)


class MemorySocket:
    """A ``Socket`` (core/subscriber.py) that keeps what is written to it, in order; it pushes
    back, or holds unsent bytes, when the test says so."""

    def __init__(self, *, framed: bool = True) -> None:
        self.framed = framed
        self.writes: list[tuple[str, bytes]] = []  # ("write" | "framed" | "beat", bytes)
        self.pushing = False
        self.unsent = 0
        self.aborts = 0
        self.asked = 0  # calls of buffered(): each is a system call on a real socket

    def write(self, piece: bytes) -> None:
        self.writes.append(("write", piece))

    def write_framed(self, data: bytes) -> None:
        self.writes.append(("framed", data))

    def beat(self, comment: bytes) -> None:
        self.writes.append(("beat", comment))

    def pushing_back(self) -> bool:
        return self.pushing

    def buffered(self) -> int:
        self.asked += 1
        return self.unsent

    def written(self) -> int:
        return sum(len(data) for _, data in self.writes)

    def abort(self) -> None:
        self.aborts += 1


class Handler:
    """The stream handler's part, without HTTP: connect the socket, take the first chunk (the
    one that goes out with the response's head), go live, then take every chunk it is woken
    with (``chunks``, ``b""`` included: woken with nothing queued) until the stream is over;
    after a chunk, while the socket pushes back, it is blocked (``writing``) until ``release``."""

    def __init__(self, subscriber: Subscriber, socket: MemorySocket) -> None:
        self.subscriber = subscriber
        self.socket = socket
        self.first: bytes | None = None
        self.chunks: list[bytes] = []  # what the handler took itself, after the first
        self.task: asyncio.Task[None] | None = None
        self._drained = asyncio.Event()
        subscriber.connect(socket)

    async def start(self) -> None:
        """After the subscriber's ``start``: the first chunk out, live, and asleep on the next."""
        self.first = await self.subscriber.next_chunk()
        self.subscriber.go_live()
        self.task = asyncio.get_running_loop().create_task(self._drain())
        await turn()

    async def _drain(self) -> None:
        subscriber = self.subscriber
        try:
            while (chunk := await subscriber.next_chunk()) is not None:
                self.chunks.append(chunk)
                if self.socket.pushing:
                    # blocked until the socket drains (``release``), as the real handler is
                    subscriber.writing = True
                    self._drained = asyncio.Event()
                    try:
                        await self._drained.wait()
                    finally:
                        subscriber.writing = False
        finally:
            subscriber.disconnect()

    def release(self) -> None:
        """The socket has drained: the handler blocked on it goes on."""
        self.socket.pushing = False
        self._drained.set()

    @property
    def ended(self) -> bool:
        return self.task is not None and self.task.done()
