"""Time and size bounds of every connection, below aiohttp's handling of requests.

aiohttp closes a connection that sits idle between requests after its keep-alive timeout
(``server.keepalive_timeout``, given to it as a handler argument), but nothing bounds the time a
request's head takes to arrive, so a client that dribbles its headers holds its connection as
long as it likes; an over-long request line gets a text/plain 400; and a response whose client
reads nothing blocks its handler for good. Each connection's protocol is wrapped in a ``Guard``:

- a request's head must arrive within ``server.header_timeout`` of its first byte (for the first
  request, of the connection's start): else 408 if part of it came, and the connection closes;
- a request line longer than ``line_limit`` is answered 414, a head longer than ``head_limit``
  431, both JSON, before aiohttp's parser sees the excess;
- a connection whose write stays blocked (the transport paused writing) past
  ``stream.write_timeout`` and a second is cut: a stream's handler drops its own stream at the
  write timeout, this bounds every other response.

What a connection is doing comes from its bytes (the end of a head), from the relay's middleware
(http/middleware.py: a request is being handled; it was, and its body was read) and, for
pipelined requests, from aiohttp's queue of requests it has read and not handled yet
(``RequestHandler._messages``, as http/streams.py relies on aiohttp 3's internals, hence
aiohttp < 4). Served by ops/listener.py's ``Site``; an app served some other way (aiohttp's
test server) keeps aiohttp's own bounds only.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from http import HTTPStatus
from typing import Any

import msgspec
from aiohttp import web
from aiohttp.streams import StreamReader
from aiohttp.web_protocol import RequestHandler

from progress_relay.config import LimitSettings, Settings
from progress_relay.wire.bodies import ErrorBody, ErrorDetail
from progress_relay.wire.errors import HeadersTooLarge, RelayError, RequestTimeout, UriTooLong

log = logging.getLogger(__name__)

_encode = msgspec.json.Encoder().encode

# A request line of a stream of every job it may follow: each job id as `&job=` and up to 128
# characters, three bytes each when percent-encoded (":" as %3A), and its share of a subscriber
# token that names them all in `?token=` (base64 of `"id",`); plus aiohttp's own default for the
# rest (method, path, last id, replay, the token's header and signature, version).
_PER_JOB = len("&job=") + 3 * 128 + (4 * (128 + 3)) // 3 + 1
_REST_OF_LINE = 8190
# How long a refused connection reads on (and drops) what its client still sends, so that the
# answer reaches it before the connection closes instead of being lost to a reset.
_LINGER = 1.0
# aiohttp's own default for reading on after an answer (see handler_args).
_LINGERING_TIME = 10.0
# Past the write timeout, before a connection whose write is blocked is cut (see above).
_WRITE_GRACE = 1.0


def line_limit(limits: LimitSettings) -> int:
    """The longest request line read: it fits ``limits.max_stream_jobs`` ids of the longest."""
    return _REST_OF_LINE + limits.max_stream_jobs * _PER_JOB


def head_limit(limits: LimitSettings) -> int:
    """The longest request head read: the line, and as much again for the headers (a token in a
    cookie or in Authorization, and whatever else a browser sends)."""
    return 2 * line_limit(limits)


def handler_args(settings: Settings) -> dict[str, Any]:
    """aiohttp's own bounds, set from the settings (web.Application(handler_args=...)): they
    apply however the app is served. Its limits sit just above the Guard's, which answers
    first, in JSON."""
    limit = line_limit(settings.limits)
    return {
        "keepalive_timeout": settings.server.keepalive_timeout,
        "max_line_size": limit + 2,
        "max_field_size": limit,
        # A request answered before its body was read (a 401, a 408): aiohttp reads on and
        # drops the rest so the client gets the answer, for no longer than a body may take.
        "lingering_time": min(_LINGERING_TIME, settings.server.body_timeout),
    }


def _answer(error: RelayError) -> bytes:
    """The whole response to ``error``, as http/errors.py would make it, closing."""
    body = _encode(ErrorBody(ErrorDetail(error.code, str(error))))
    head = (
        f"HTTP/1.1 {error.status} {HTTPStatus(error.status).phrase}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    )
    return head.encode() + body


class Connections:
    """The guards of a server's connections; ``request_started`` tells each about its
    requests."""

    def __init__(self, settings: Settings) -> None:
        self.header_timeout = settings.server.header_timeout
        self.write_timeout = settings.stream.write_timeout + _WRITE_GRACE
        self.line_limit = line_limit(settings.limits)
        self.head_limit = head_limit(settings.limits)
        self._guards: dict[RequestHandler, Guard] = {}

    @property
    def open(self) -> int:
        return len(self._guards)

    def factory(self, server: Callable[[], RequestHandler]) -> Callable[[], Guard]:
        """The protocol factory of a listening socket: aiohttp's ``server``, guarded."""

        def make() -> Guard:
            return Guard(self, server())

        return make

    def added(self, guard: Guard) -> None:
        self._guards[guard.inner] = guard

    def removed(self, guard: Guard) -> None:
        self._guards.pop(guard.inner, None)

    def request_started(self, request: web.Request) -> Guard | None:
        """Tells ``request``'s connection that it is being handled; the guard to tell
        (``request_ended``) once it was (None: a connection served some other way)."""
        guard = self._guards.get(request.protocol)
        if guard is not None:
            guard.request_started()
        return guard


class Guard(asyncio.Protocol):
    """aiohttp's protocol for one connection, with the bounds above."""

    def __init__(self, connections: Connections, inner: RequestHandler) -> None:
        self._connections = connections
        self.inner = inner
        self._transport: asyncio.Transport | None = None
        self._head_timer: asyncio.TimerHandle | None = None
        self._write_timer: asyncio.TimerHandle | None = None
        self._refused = False
        # What is known of the request head being read (``_in_head``), for its bounds.
        self._in_head = True
        self._line = 0  # bytes of its request line so far; -1 once the line has ended
        self._head = 0  # bytes of the head so far
        self._tail = b""  # its last 3 bytes, to find the blank line across reads
        # The body of a request that was answered before it was read: aiohttp reads and drops
        # the rest of it; the next head starts once it has all come.
        self._unread: StreamReader | None = None

    # -- asyncio.Protocol ----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]
        self._connections.added(self)
        self.inner.connection_made(transport)
        self._arm_head_timer()

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        if self._in_head:
            if self._head_timer is None:
                self._arm_head_timer()
            if not self._read_head(data):
                return
        self.inner.data_received(data)
        unread = self._unread
        if unread is not None and unread.is_eof():
            self._unread = None
            self._expect_head()

    def eof_received(self) -> bool | None:
        self.inner.eof_received()
        return None  # close the transport (aiohttp's own answer to a half-close)

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timers()
        self._connections.removed(self)
        self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self.inner.pause_writing()
        if self._write_timer is None:
            loop = asyncio.get_running_loop()
            self._write_timer = loop.call_later(
                self._connections.write_timeout, self._write_blocked
            )

    def resume_writing(self) -> None:
        if self._write_timer is not None:
            self._write_timer.cancel()
            self._write_timer = None
        self.inner.resume_writing()

    # -- told by the middleware (http/middleware.py) ------------------------------------------

    def request_started(self) -> None:
        self._in_head = False
        self._cancel_head_timer()

    def request_ended(self, body: StreamReader) -> None:
        if getattr(self.inner, "_messages", None):
            # Pipelined: aiohttp already holds the next request, whose head has come (and
            # what follows may be its body); it tells us when it starts and ends in turn.
            return
        if body.is_eof():
            self._expect_head()
        else:
            self._unread = body

    # -- the bounds ----------------------------------------------------------------------------

    def _expect_head(self) -> None:
        self._in_head = True
        self._line = 0
        self._head = 0
        self._tail = b""

    def _read_head(self, data: bytes) -> bool:
        """Counts ``data`` into the head; False when that refused the request."""
        connections = self._connections
        if self._line >= 0:
            end = data.find(b"\n")
            self._line += len(data) if end < 0 else end
            if self._line > connections.line_limit:
                self._refuse(
                    UriTooLong(
                        f"the request line is longer than {connections.line_limit} bytes: "
                        "a stream follows at most limits.max_stream_jobs jobs"
                    )
                )
                return False
            if end >= 0:
                self._line = -1
        seen = self._tail + data
        blank = seen.find(b"\r\n\r\n")
        # Of this read, what belongs to the head: up to its blank line, or all of it.
        self._head += len(data) if blank < 0 else blank + 4 - len(self._tail)
        if self._head > connections.head_limit:
            self._refuse(
                HeadersTooLarge(f"the request's head is longer than {connections.head_limit} bytes")
            )
            return False
        if blank >= 0:
            self._in_head = False  # the rest is the body, or a request that comes after
            self._cancel_head_timer()
        else:
            self._tail = seen[-3:]
        return True

    def _arm_head_timer(self) -> None:
        loop = asyncio.get_running_loop()
        self._head_timer = loop.call_later(self._connections.header_timeout, self._head_late)

    def _head_late(self) -> None:
        self._head_timer = None
        if not self._in_head or self._refused:
            return
        if self._head or self._line:
            timeout = self._connections.header_timeout
            self._refuse(
                RequestTimeout(
                    f"the request's head did not arrive within {timeout:g} s "
                    "(server.header_timeout)"
                )
            )
        elif self._transport is not None:
            self._transport.close()  # nothing of a request came: nothing to answer

    def _write_blocked(self) -> None:
        self._write_timer = None
        if self._transport is not None:
            log.info(
                "cut a connection whose client read nothing for %.0f s",
                self._connections.write_timeout,
            )
            self._transport.abort()

    def _refuse(self, error: RelayError) -> None:
        """Answer the request in JSON and close, reading on (and dropping) a little."""
        self._refused = True
        self._cancel_head_timer()
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        transport.write(_answer(error))
        if transport.can_write_eof():
            transport.write_eof()
        asyncio.get_running_loop().call_later(_LINGER, transport.close)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _cancel_timers(self) -> None:
        self._cancel_head_timer()
        if self._write_timer is not None:
            self._write_timer.cancel()
            self._write_timer = None
