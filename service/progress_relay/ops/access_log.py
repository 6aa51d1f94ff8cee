"""The access log, without credentials: a subscriber token in a URL is replaced by ``***``, and
no header that carries one (Authorization, Cookie) is ever read here."""

from __future__ import annotations

import logging
import re
import time as time_mod
from typing import Any
from urllib.parse import unquote_plus

from aiohttp.abc import AbstractAccessLogger
from aiohttp.web_request import BaseRequest
from aiohttp.web_response import StreamResponse

from progress_relay.http.observe import REQUEST_ID, ROUTE

# Query parameters that carry a credential (`?token=`: EventSource cannot send headers), in the
# request line and in a Referer that may carry the page's own URL.
_CREDENTIALS = frozenset({"token", "access_token"})
# `;` separates parameters for some parsers: a value after one is cut off as after `&`.
_SEPARATORS = re.compile(r"([&;])")
# Decodings of a name tried: enough for `tok%2565n`, a name encoded twice.
_DECODINGS = 3


def redact(text: str) -> str:
    """``text`` (a path with its query, or a URL) with the value of every query parameter
    whose name, decoded as a server would (percent-escapes, ``+``, any case), is a credential's
    replaced by ``***``."""
    head, mark, query = text.partition("?")
    if not mark:
        return text
    parts = _SEPARATORS.split(query)
    for at in range(0, len(parts), 2):
        name, equals, _ = parts[at].partition("=")
        if equals and _is_credential(name):
            parts[at] = f"{name}=***"
    return f"{head}?{''.join(parts)}"


def _is_credential(name: str) -> bool:
    for _ in range(_DECODINGS):
        decoded = unquote_plus(name)
        if decoded == name:
            break
        name = decoded
    return name.strip().lower() in _CREDENTIALS


class RedactingAccessLogger(AbstractAccessLogger):
    """One line per request: in text mode aiohttp's default line,
    ``%a %t "%r" %s %b "%{Referer}i" "%{User-Agent}i"``, then the request id; in JSON mode the
    same line as ``message`` and the request's fields beside it (``AccessLine.fields``). Built
    directly: aiohttp's generic formatter cost a publish about a tenth of its time."""

    @property
    def enabled(self) -> bool:
        return self.logger.isEnabledFor(logging.INFO)

    def log(self, request: BaseRequest, response: StreamResponse, time: float) -> None:
        self.logger.info(AccessLine(request, response, time))


class AccessLine:
    """The values of one request's line, read when it is logged and formatted only by the
    formatter that writes it (logging's ``str(msg)``, or ops/logs.py's ``fields()``)."""

    __slots__ = (
        "_client",
        "_method",
        "_path",
        "_referer",
        "_request_id",
        "_route",
        "_seconds",
        "_size",
        "_status",
        "_user_agent",
        "_version",
    )

    def __init__(self, request: BaseRequest, response: StreamResponse, seconds: float) -> None:
        headers = request.headers
        path = request.path_qs
        referer = headers.get("Referer")
        self._client = request.remote
        self._method = request.method
        self._path = redact(path) if "?" in path else path
        self._referer = redact(referer) if referer is not None and "?" in referer else referer
        self._user_agent = headers.get("User-Agent")
        self._version = request.version
        self._status = response.status
        self._size = _size(response)
        self._seconds = seconds
        self._request_id = request.get(REQUEST_ID)
        # Set by http/observe.py; a request aiohttp could not parse never got that far.
        self._route = request.get(ROUTE)

    def __str__(self) -> str:
        version = self._version
        return '%s %s "%s %s HTTP/%d.%d" %d %d "%s" "%s" %s' % (  # noqa: UP031 (the cheapest)
            self._client or "-",
            _started(self._seconds),
            self._method,
            self._path,
            version.major,
            version.minor,
            self._status,
            self._size,
            self._referer or "-",
            self._user_agent or "-",
            self._request_id or "-",
        )

    def fields(self) -> dict[str, Any]:
        return {
            "method": self._method,
            "route": self._route,
            "path": self._path,
            "status": self._status,
            "duration_ms": round(self._seconds * 1000, 3),
            "bytes": self._size,
            "client": self._client,
            "request_id": self._request_id,
            "user_agent": self._user_agent,
            "referer": self._referer,
        }


def _size(response: StreamResponse) -> int:
    """Bytes of the body sent. A stream cut by its client never reached write_eof, where aiohttp
    sets body_length; its writer has the count (core/subscriber.py's Socket keeps it true)."""
    if response.body_length or not response.prepared:
        return response.body_length
    writer = response._payload_writer
    return 0 if writer is None else writer.output_size


class _StartTimes:
    """When a request started, ``[10/Oct/2000:13:55:36 +0000]``, formatted once a second."""

    def __init__(self) -> None:
        self._second = -1
        self._text = ""

    def __call__(self, took: float) -> str:
        second = int(time_mod.time() - took)
        if second != self._second:
            self._second = second
            self._text = time_mod.strftime("[%d/%b/%Y:%H:%M:%S %z]", time_mod.localtime(second))
        return self._text


_started = _StartTimes()
