"""The browser client, served by the relay itself: ``/static/progress-relay.js``; and the
relay's icon, ``/favicon.ico``, which browsers ask for on every page of it (demo, inspection)."""

from __future__ import annotations

import hashlib
from importlib import resources

from aiohttp import web

from progress_relay.http.openapi_operation import Operation

routes = web.RouteTableDef()

_CLIENT = resources.files("progress_relay").joinpath("static/progress-relay.js").read_bytes()
_ETAG = '"' + hashlib.sha256(_CLIENT).hexdigest()[:20] + '"'
_ICON = resources.files("progress_relay").joinpath("static/favicon.ico").read_bytes()


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


@routes.get("/favicon.ico")
@Operation(
    "favicon",
    "The relay's icon (browsers ask for it on the demo and inspection pages)",
    "public",
    responses={200: ("The icon", ("image/x-icon", {"type": "string", "format": "binary"}))},
)
async def favicon(request: web.Request) -> web.Response:
    return web.Response(
        body=_ICON, content_type="image/x-icon", headers={"Cache-Control": "max-age=86400"}
    )
