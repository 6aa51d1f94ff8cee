"""Listening and accepting: an aiohttp site whose connections are guarded (ops/connections.py)
and whose accept loop survives running out of file descriptors.

asyncio's own accept loop reports each failed ``accept()`` to the loop's exception handler with
a traceback, goes on trying up to the listen backlog's count in the same turn (4,096 here) and
schedules a retry for each failure: with no descriptor left it spins, writing thousands of
tracebacks a second. This one stops at the first failure, says so once (ops/fds.py:
``AcceptErrors``), and tries again ``RETRY_DELAY`` later; meanwhile new connections wait in the
kernel's listen backlog and open ones go on. Accepted sockets become asyncio transports through
``loop.connect_accepted_socket``, exactly as asyncio's own server makes them.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import socket
from collections.abc import Callable

from aiohttp import web
from aiohttp.web_runner import BaseRunner

from progress_relay.ops.connections import Connections, Guard
from progress_relay.ops.fds import AcceptErrors

log = logging.getLogger(__name__)

# What accept() fails with when the process or the system is out of descriptors or memory.
OUT_OF_RESOURCES = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
# After accepting failed for want of resources, the pause before trying again: one failing
# system call each time, so it can be short, and a freed descriptor is taken up at once.
RETRY_DELAY = 0.1


class Site(web.BaseSite):
    """A TCP site on ``host`` (every address it resolves to; "" for every interface) and
    ``port``."""

    __slots__ = ("_connections", "_errors", "_host", "_port", "_sockets")

    def __init__(
        self,
        runner: BaseRunner,
        connections: Connections,
        host: str,
        port: int,
        *,
        backlog: int,
        errors: AcceptErrors,
    ) -> None:
        super().__init__(runner, backlog=backlog)
        self._connections = connections
        self._errors = errors
        self._host = host
        self._port = port
        self._sockets: list[socket.socket] = []

    @property
    def name(self) -> str:
        return f"http://{self._host}:{self._port}"

    async def start(self) -> None:
        """Bind and listen (OSError when an address cannot be bound), then accept."""
        await super().start()
        server = self._runner.server
        if server is None:
            raise RuntimeError("call runner.setup() before starting a site")
        loop = asyncio.get_running_loop()
        infos = await loop.getaddrinfo(
            self._host or None,
            self._port,
            type=socket.SOCK_STREAM,
            flags=socket.AI_PASSIVE,
        )
        try:
            for family, kind, proto, _, address in dict.fromkeys(infos):
                sock = socket.socket(family, kind, proto)
                self._sockets.append(sock)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if family == socket.AF_INET6:
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                sock.bind(address)
                sock.listen(self._backlog)
                sock.setblocking(False)
        except OSError:
            self._close()
            raise
        factory = self._connections.factory(server)
        for sock in self._sockets:
            loop.add_reader(sock.fileno(), self._accept, loop, sock, factory)

    async def stop(self) -> None:
        self._close()
        await super().stop()

    def _close(self) -> None:
        loop = asyncio.get_running_loop()
        for sock in self._sockets:
            with contextlib.suppress(ValueError, OSError):
                loop.remove_reader(sock.fileno())
            sock.close()
        self._sockets.clear()

    def _accept(
        self, loop: asyncio.AbstractEventLoop, sock: socket.socket, factory: Callable[[], Guard]
    ) -> None:
        for _ in range(self._backlog):
            try:
                conn, _ = sock.accept()
            except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                return
            except OSError as exc:
                if exc.errno not in OUT_OF_RESOURCES:
                    log.warning("accepting a connection failed: %s", exc)
                    return
                self._errors.failed(exc)
                loop.remove_reader(sock.fileno())
                loop.call_later(RETRY_DELAY, self._resume, loop, sock, factory)
                return
            self._errors.accepted()
            conn.setblocking(False)
            loop.create_task(_serve(loop, conn, factory))

    def _resume(
        self, loop: asyncio.AbstractEventLoop, sock: socket.socket, factory: Callable[[], Guard]
    ) -> None:
        if sock in self._sockets:  # not stopped meanwhile
            loop.add_reader(sock.fileno(), self._accept, loop, sock, factory)


async def _serve(
    loop: asyncio.AbstractEventLoop, conn: socket.socket, factory: Callable[[], Guard]
) -> None:
    try:
        await loop.connect_accepted_socket(factory, conn)
    except OSError as exc:
        log.info("dropped a connection as it was accepted: %s", exc)
        conn.close()
