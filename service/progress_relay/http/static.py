"""The browser client, served by the relay itself: ``/static/progress-relay.js``."""

from __future__ import annotations

import hashlib
from importlib import resources

from aiohttp import web

from progress_relay.http.openapi_operation import Operation

routes = web.RouteTableDef()

_CLIENT = resources.files("progress_relay").joinpath("static/progress-relay.js").read_bytes()
_ETAG = '"' + hashlib.sha256(_CLIENT).hexdigest()[:20] + '"'


@routes.get("/static/progress-relay.js")
@Operation(
    "browserClient",
    "The browser client, an ES module (see the README)",
    "public",
    responses={
        200: ("The module", ("text/javascript", {"type": "string"})),
        304: ("Not modified (If-None-Match)", None),
    },
)
async def client(request: web.Request) -> web.Response:
    # Revalidated on every load (the ETag makes that a 304), so a new relay's client is used
    # as soon as it is deployed.
    headers = {"ETag": _ETAG, "Cache-Control": "no-cache"}
    if request.headers.get("If-None-Match") == _ETAG:
        return web.Response(status=304, headers=headers)
    return web.Response(
        body=_CLIENT, content_type="text/javascript", charset="utf-8", headers=headers
    )
