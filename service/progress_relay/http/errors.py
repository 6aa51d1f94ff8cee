"""Every error leaves the service as JSON: ``{"error": {"code": ..., "message": ...}}`` (the
relay's middleware, http/middleware.py, answers with these)."""

from __future__ import annotations

import logging

import msgspec
from aiohttp import web

from progress_relay.http.keys import HUB
from progress_relay.wire.bodies import ErrorBody, ErrorDetail
from progress_relay.wire.errors import AIOHTTP_ERRORS, BrokerUnavailable, RelayError

log = logging.getLogger(__name__)

_encode = msgspec.json.Encoder().encode

# aiohttp's own exceptions (no route, wrong method, body too large) get a code of their own.
_HTTP_CODES = {cls.status: cls.code for cls in AIOHTTP_ERRORS}


def error_response(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> web.Response:
    body = _encode(ErrorBody(ErrorDetail(code, message)))
    return web.Response(status=status, body=body, content_type="application/json", headers=headers)


def answer_relay_error(request: web.Request, exc: RelayError) -> web.Response:
    if isinstance(exc, BrokerUnavailable):
        request.app[HUB].counts.broker_errors += 1
    response = error_response(exc.status, exc.code, str(exc), exc.headers)
    if exc.closes:
        response.force_close()
    return response


def answer_http_error(request: web.Request, exc: web.HTTPException) -> web.Response:
    """aiohttp's error ``exc`` (a status >= 400) in JSON."""
    headers = {k: v for k, v in exc.headers.items() if k.lower() == "allow"}
    return error_response(
        exc.status, _HTTP_CODES.get(exc.status, "http_error"), _describe(request, exc), headers
    )


def _describe(request: web.Request, exc: web.HTTPException) -> str:
    if exc.status == 404:
        return f"no such endpoint: {request.method} {request.path}"
    if exc.status == 405:
        return f"{request.method} is not allowed on {request.path}"
    if exc.status == 413 and exc.text:
        return exc.text  # aiohttp names the limit and the size it saw
    return exc.reason
