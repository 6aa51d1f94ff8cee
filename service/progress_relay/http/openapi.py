"""``GET /v1/openapi.json``: the OpenAPI 3.1 document of this relay, encoded once."""

from __future__ import annotations

import msgspec
from aiohttp import web

from progress_relay.http.keys import OPENAPI
from progress_relay.http.openapi_document import build_document
from progress_relay.http.openapi_operation import Operation

routes = web.RouteTableDef()


def encode_document(app: web.Application) -> bytes:
    return msgspec.json.encode(build_document(app))


@routes.get("/v1/openapi.json")
@Operation(
    "openapi",
    "This document",
    "public",
    responses={200: ("OpenAPI 3.1", ("application/json", {"type": "object"}))},
)
async def openapi_document(request: web.Request) -> web.Response:
    return web.Response(body=request.app[OPENAPI], content_type="application/json")
