"""Every request gets an id (``X-Request-Id``) and is counted once answered (ops/metrics.py).

The id is the client's ``X-Request-Id`` when it is sane: 1-128 characters of
``A-Z a-z 0-9 . _ : -``. Anything else is replaced, never echoed: a header value the relay sends
back must not let a client inject header lines or markup into logs and dashboards. The id goes
back on every response (errors, 404s and streams included), is ``request[REQUEST_ID]`` for
handlers, and is on the request's log lines (ops/logs.py).
"""

from __future__ import annotations

import itertools
import secrets
import string
import time
from contextvars import Token

from aiohttp import web

from progress_relay.ops import logs
from progress_relay.ops.metrics import Metrics

REQUEST_ID = web.RequestKey("request_id", str)
# The request's route template, for its log line (absent: it matched no route).
ROUTE = web.RequestKey("route", str)
HEADER = "X-Request-Id"

_ALLOWED = string.ascii_letters + string.digits + "._:-"
_LONGEST = 128
# The response whose head went out, for a request cancelled afterwards (a stream's client left).
_SENT = web.RequestKey("sent", web.StreamResponse)
# Status of a request whose client left before it was answered (nginx's convention).
CLIENT_CLOSED = 499

# Made ids: this process's random prefix and a counter, unique across instances and restarts
# without a call to the OS's random source per request.
_prefix = secrets.token_hex(6)
_serial = itertools.count(1)


def _sane(given: str) -> bool:
    # strip() leaves nothing iff every character is allowed: no regex per request.
    return 0 < len(given) <= _LONGEST and not given.strip(_ALLOWED)


def new_id() -> str:
    return f"{_prefix}-{next(_serial):x}"


class Observe:
    """What the relay's middleware (http/middleware.py) tells of each request: ``begin`` as it
    comes, ``end`` once it is answered (or ``cancelled``), and ``on_prepare`` (from the
    ``on_response_prepare`` signal: a stream's head goes out inside its handler)."""

    def __init__(self, metrics: Metrics) -> None:
        self._answered = metrics.answered

    def begin(self, request: web.Request) -> Token[str | None]:
        """Names ``request`` (its id and route); the token to ``end`` it with."""
        given = request.headers.get(HEADER)
        current = given if given is not None and _sane(given) else new_id()
        request[REQUEST_ID] = current
        resource = request.match_info.route.resource
        if resource is not None:
            request[ROUTE] = resource.canonical
        return logs.request_id.set(current)

    def cancelled(self, request: web.Request, started: float) -> tuple[int, bool]:
        """The status and whether it streamed of a request whose client went away
        (handler_cancellation): the end of most streams."""
        sent = request.get(_SENT)
        if sent is None:
            return CLIENT_CLOSED, False
        # aiohttp writes no access line for a cancelled handler; this is the line.
        access = request.protocol.access_logger
        if access is not None and access.enabled:
            access.log(request, sent, time.perf_counter() - started)
        return sent.status, True

    def end(
        self,
        request: web.Request,
        token: Token[str | None],
        started: float,
        status: int,
        *,
        streamed: bool,
    ) -> None:
        logs.request_id.reset(token)
        self._answered(
            request.method,
            request.get(ROUTE),
            status,
            time.perf_counter() - started,
            stream=streamed,
        )

    def on_prepare(self, request: web.Request, response: web.StreamResponse) -> None:
        current = request.get(REQUEST_ID)
        response.headers[HEADER] = current if current is not None else new_id()
        request[_SENT] = response
