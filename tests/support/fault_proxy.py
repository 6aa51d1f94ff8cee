"""A TCP proxy in front of a real redis-server that breaks connections on demand: what a network
does to a command in flight, made deterministic.

``lose_reply()``: the next command (on a connection that is not a pub/sub one) reaches Redis and
runs, and its connection is cut before the reply gets back: the client cannot know that it ran.
``lose_request()``: the next command's connection is cut before Redis sees it.
"""

from __future__ import annotations

import asyncio
from typing import Literal

Fault = Literal["reply", "request"]


class FaultProxy:
    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self.cut = 0  # connections cut so far
        self._armed: list[Fault] = []
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        """Stop accepting, cut every connection, and wait for them to be closed."""
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    def lose_reply(self) -> None:
        self._armed.append("reply")

    def lose_request(self) -> None:
        self._armed.append("request")

    async def _accept(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.add(client_w)
        try:
            redis_r, redis_w = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            client_w.transport.abort()
            self._writers.discard(client_w)
            self._tasks.discard(task)
            return
        self._writers.add(redis_w)
        dropping = asyncio.Event()  # the reply now on its way is lost, then the connection
        pubsub = False

        async def upstream() -> None:
            nonlocal pubsub
            while chunk := await client_r.read(65536):
                pubsub = pubsub or b"SUBSCRIBE" in chunk.upper()
                fault = self._armed.pop(0) if self._armed and not pubsub else None
                if fault == "request":
                    self.cut += 1
                    return
                if fault == "reply":
                    dropping.set()
                redis_w.write(chunk)
                await redis_w.drain()

        async def downstream() -> None:
            while chunk := await redis_r.read(65536):
                if dropping.is_set():
                    self.cut += 1
                    return  # Redis has answered: the command ran; its reply goes nowhere
                client_w.write(chunk)
                await client_w.drain()

        pumps = [asyncio.create_task(upstream()), asyncio.create_task(downstream())]
        try:
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for pump in pumps:
                pump.cancel()
            await asyncio.gather(*pumps, return_exceptions=True)
            for writer in (client_w, redis_w):
                writer.transport.abort()
                self._writers.discard(writer)
            self._tasks.discard(task)
