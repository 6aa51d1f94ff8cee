"""The inspection page at ``/admin`` (``admin.enabled``): static HTML, CSS and JavaScript that
call the relay's own API with the publisher token typed into the page. Nothing here reads a job:
the page holds no rights of its own, so serving it needs none."""

from __future__ import annotations

import hashlib
from importlib import resources

from aiohttp import web

from progress_relay.http.openapi_operation import Operation

routes = web.RouteTableDef()

_FILES = resources.files("progress_relay").joinpath("static")


class _Asset:
    def __init__(self, name: str, content_type: str) -> None:
        self.body = _FILES.joinpath(name).read_bytes()
        self.content_type = content_type
        self.etag = '"' + hashlib.sha256(self.body).hexdigest()[:20] + '"'


_PAGE = _Asset("admin.html", "text/html")
_SCRIPT = _Asset("admin.js", "text/javascript")
_STYLE = _Asset("admin.css", "text/css")
# Defence in depth for a page that shows what publishers sent: no inline script or style, no
# other origin, no framing (the buttons delete jobs), no referrer carrying the page's address.
_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; "
    "connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


def _serve(request: web.Request, asset: _Asset) -> web.Response:
    headers = {**_HEADERS, "ETag": asset.etag}
    if request.headers.get("If-None-Match") == asset.etag:
        return web.Response(status=304, headers=headers)
    return web.Response(
        body=asset.body, content_type=asset.content_type, charset="utf-8", headers=headers
    )


_CACHED = {304: ("Not modified (If-None-Match)", None)}


@routes.get("/admin")
@Operation(
    "adminPage",
    "The inspection page (admin.enabled); it asks for the publisher token and calls the API",
    "public",
    responses={200: ("The page", ("text/html", {"type": "string"})), **_CACHED},
)
async def page(request: web.Request) -> web.Response:
    return _serve(request, _PAGE)


@routes.get("/admin/admin.js")
@Operation(
    "adminScript",
    "The inspection page's script, an ES module",
    "public",
    responses={200: ("The module", ("text/javascript", {"type": "string"})), **_CACHED},
)
async def script(request: web.Request) -> web.Response:
    return _serve(request, _SCRIPT)


@routes.get("/admin/admin.css")
@Operation(
    "adminStyle",
    "The inspection page's style sheet",
    "public",
    responses={200: ("The style sheet", ("text/css", {"type": "string"})), **_CACHED},
)
async def style(request: web.Request) -> web.Response:
    return _serve(request, _STYLE)
