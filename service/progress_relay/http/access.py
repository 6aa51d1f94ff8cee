"""What every request passes before its handler runs (asked by http/middleware.py), in this
order:

1. its credentials, as the route's ``@Operation(access=...)`` says (http/auth.py): nothing about
   a request is looked at, not even whether its job id is valid, before they are;
2. a POST or DELETE from a page of another origin is refused (http/cors.py: ``refuse_foreign``);
3. a route that takes a JSON body gets one only as ``Content-Type: application/json`` (415
   otherwise: a browser cannot send that cross-site without a preflight), read in full within
   ``server.body_timeout`` (408, and the connection is closed).

Handlers find the publisher's identity (for its rate limit) in ``request[PUBLISHER]``.
"""

from __future__ import annotations

import asyncio

from aiohttp import web

from progress_relay.http.auth import Credentials
from progress_relay.http.cors import Cors
from progress_relay.http.openapi_operation import OPERATIONS
from progress_relay.wire.errors import RequestTimeout, UnsupportedMediaType

PUBLISHER = web.RequestKey("publisher", str)
_JSON = "application/json"


class Access:
    def __init__(self, credentials: Credentials, cors: Cors, body_timeout: float) -> None:
        self._credentials = credentials
        self._cors = cors
        self._body_timeout = body_timeout

    async def check(self, request: web.Request) -> None:
        """Raises the RelayError of the first rule ``request`` breaks; its body is read after."""
        operation = OPERATIONS.get(request.match_info.handler)
        access = "public" if operation is None else operation.access
        credentials = self._credentials
        if access == "publisher":
            request[PUBLISHER] = credentials.require_publisher(request)
        elif access == "subscriber":
            credentials.require_subscriber(request, _job_ids(request))
        elif access == "operator":
            credentials.require_operator(request)
        self._cors.refuse_foreign(request)
        if operation is not None and operation.request is not None and request.body_exists:
            await self._read_json_body(request)

    async def _read_json_body(self, request: web.Request) -> None:
        if request.content_type != _JSON:
            given = request.headers.get("Content-Type")
            raise UnsupportedMediaType(
                "send the body as Content-Type: application/json"
                + (f", not {given!r}" if given else " (no Content-Type was given)")
            )
        if request.content.is_eof():
            # All of it came with the head (a small body, the common publish): no timer.
            await request.read()
            return
        timeout = self._body_timeout
        try:
            async with asyncio.timeout(timeout):
                await request.read()  # kept by aiohttp: the handler's read() returns it
        except TimeoutError:
            raise RequestTimeout(
                f"the request body did not arrive within {timeout:g} s (server.body_timeout)"
            ) from None


def _job_ids(request: web.Request) -> list[str]:
    """The jobs a subscriber route reads: its path's, or a multi-job stream's ``job``s (not
    checked yet: a credential is asked for first)."""
    job_id = request.match_info.get("job_id")
    return [job_id] if job_id is not None else request.query.getall("job", [])
