"""CORS: which browser origins may call the relay, answered on every response and preflight.

Origins match exactly. A listed origin gets ``Access-Control-Allow-Credentials: true`` (cookies,
and the ``Authorization`` header of fetch); ``"*"`` in the list lets any other origin in without
credentials. Unlisted origins get no CORS headers, so the browser refuses the response.

CORS only stops a page reading an answer; a "simple" request (a form's POST, a fetch without
custom headers) reaches the relay without a preflight, with the user's cookies. So a request
that changes something (POST, DELETE) and carries an ``Origin`` is refused (403, nothing done)
unless that origin is listed exactly or is the relay's own (its demo and inspection pages):
``"*"`` lets any page read, never change (``refuse_foreign``, called by http/access.py).
"""

from __future__ import annotations

from aiohttp import web
from yarl import URL

from progress_relay.config import CorsSettings
from progress_relay.wire.errors import OriginNotAllowed

CHANGING = frozenset({"POST", "DELETE", "PUT", "PATCH"})
_DEFAULT_PORTS = {"http": 80, "https": 443}

_METHODS = "GET, POST, DELETE"
_REQUEST_HEADERS = "Authorization, Content-Type, Last-Event-ID"
# Readable by scripts: the relay's answers to limits, and the request's id (http/observe.py).
_EXPOSED = "Retry-After, X-Request-Id"


class Cors:
    def __init__(self, settings: CorsSettings) -> None:
        self._listed = frozenset(origin for origin in settings.origins if origin != "*")
        self._any = "*" in settings.origins
        self._max_age = str(settings.max_age)

    def headers_for(self, origin: str | None) -> dict[str, str]:
        if origin is None:
            return {}
        if origin in self._listed:
            return {
                "Access-Control-Allow-Origin": origin,
                "Access-Control-Allow-Credentials": "true",
                "Access-Control-Expose-Headers": _EXPOSED,
                "Vary": "Origin",
            }
        if self._any:
            return {"Access-Control-Allow-Origin": "*", "Access-Control-Expose-Headers": _EXPOSED}
        return {}

    def on_prepare(self, request: web.Request, response: web.StreamResponse) -> None:
        """Just before any response's headers go out, streams included (http/app.py's
        ``on_response_prepare``)."""
        for name, value in self.headers_for(request.headers.get("Origin")).items():
            if name == "Vary" and "Vary" in response.headers:
                value = f"{response.headers['Vary']}, {value}"
            response.headers[name] = value

    def preflight(self, request: web.Request) -> web.Response | None:
        """The answer to a browser's preflight (OPTIONS with Access-Control-Request-Method) for
        any path; None for other requests, which go on to their handler."""
        if request.method != "OPTIONS" or "Access-Control-Request-Method" not in request.headers:
            return None
        origin = request.headers.get("Origin")
        if not self.headers_for(origin):
            raise OriginNotAllowed(f"origin {origin!r} may not call this relay (cors.origins)")
        return web.Response(
            status=204,
            headers={
                "Access-Control-Allow-Methods": _METHODS,
                "Access-Control-Allow-Headers": _REQUEST_HEADERS,
                "Access-Control-Max-Age": self._max_age,
            },
        )

    def refuse_foreign(self, request: web.Request) -> None:
        """OriginNotAllowed for a request that changes something from a page of another,
        unlisted origin (see the module's docstring)."""
        if request.method not in CHANGING:
            return
        origin = request.headers.get("Origin")
        if origin is None or origin in self._listed or same_origin(origin, request.host):
            return
        raise OriginNotAllowed(
            f"a {request.method} from a page of origin {origin!r} is refused: the origin is "
            "not in cors.origins (a page may change jobs only from a listed origin)"
        )


def same_origin(origin: str, host: str) -> bool:
    """``origin`` (``scheme://host[:port]``) names the host and port the request was sent to
    (its ``Host``). The scheme is not compared: behind a proxy that ends TLS the relay cannot
    know the one the browser used."""
    try:
        url = URL(origin)
        sent_to = URL(f"//{host}")
    except ValueError:
        return False
    if url.host is None or url.scheme not in _DEFAULT_PORTS or url.path not in ("", "/"):
        return False
    port = url.explicit_port or _DEFAULT_PORTS[url.scheme]
    host_port = sent_to.explicit_port or _DEFAULT_PORTS[url.scheme]
    return url.host == (sent_to.host or "").lower() and port == host_port
