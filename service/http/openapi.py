"""``GET /v1/openapi.json``: the OpenAPI 3.1 document of this relay, encoded once."""

from __future__ import annotations

import msgspec
from aiohttp import web

from service.config import Settings
from service.http.openapi_document import build_document
from service.keys import OPENAPI

routes = web.RouteTableDef()


def encode_document(settings: Settings) -> bytes:
    return msgspec.json.encode(build_document(settings))


@routes.get("/v1/openapi.json")
async def openapi_document(request: web.Request) -> web.Response:
    return web.Response(body=request.app[OPENAPI], content_type="application/json")
