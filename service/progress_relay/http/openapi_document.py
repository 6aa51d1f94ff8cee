"""The OpenAPI 3.1 document of the v1 API, built from the routes the app registered and the
``@Operation`` beside each handler; error codes and their meanings from the error classes.

``docs/api.md`` is the contract in prose; this is the same contract for machines. A route
without an ``@Operation`` is left out (the demo's pages), and
``tests/contract/test_openapi.py`` checks that only those are. Limits and credentials come
from the relay's settings, so the document describes the relay that serves it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from http import HTTPStatus

from aiohttp import web
from msgspec import Struct

from progress_relay import __version__
from progress_relay.config import Settings
from progress_relay.http.cors import CHANGING
from progress_relay.http.keys import SETTINGS
from progress_relay.http.openapi_operation import (
    OPERATIONS,
    Access,
    Body,
    Operation,
    Schema,
    ref,
)
from progress_relay.http.openapi_schemas import component_schemas
from progress_relay.wire.bodies import ErrorBody
from progress_relay.wire.errors import (
    CONNECTION_ERRORS,
    Forbidden,
    MethodNotAllowed,
    NoSuchEndpoint,
    OriginNotAllowed,
    RelayError,
    RequestTimeout,
    Unauthorized,
    UnsupportedMediaType,
)

_HEADERS: dict[str, Schema] = {
    "Retry-After": {
        "description": "seconds to wait before trying again",
        "schema": {"type": "string", "pattern": "^[0-9]+$"},
    },
    "WWW-Authenticate": {
        "description": "when the credential is missing, or a publisher token is wrong",
        "schema": {"type": "string"},
    },
    "Allow": {"schema": {"type": "string"}},
}
_PATH_PARAMETERS = {"job_id": "JobIdPath"}
# The errors of each side's credentials, raised by progress_relay.http.auth.
_ACCESS_ERRORS: dict[Access, tuple[type[RelayError], ...]] = {
    "publisher": (Unauthorized,),
    "subscriber": (Unauthorized, Forbidden),
    "operator": (Unauthorized, Forbidden),
    "public": (),
}
# Of a route that changes something (http/cors.py), and of one that takes a body (http/access.py).
_CHANGING_ERRORS = (OriginNotAllowed,)
_BODY_ERRORS = (UnsupportedMediaType, RequestTimeout)


def _error(status: int, classes: Sequence[type[RelayError]]) -> Schema:
    """The response of ``status`` whose ``code`` is one of the classes'."""
    lines = "\n".join(f"- `{cls.code}`: {cls.description}" for cls in classes)
    schema = {
        "allOf": [
            ref(ErrorBody.__name__),
            {
                "properties": {
                    "error": {"properties": {"code": {"enum": [c.code for c in classes]}}}
                }
            },
        ]
    }
    response: Schema = {
        "description": f"{HTTPStatus(status).phrase}\n\n{lines}",
        "content": _json(schema),
    }
    # A header is required when every error of the response comes with it.
    sent = [dict(cls.documented_headers) for cls in classes]
    headers = {
        name: {**_HEADERS[name], "required": all(each.get(name, False) for each in sent)}
        for each in sent
        for name in each
    }
    if headers:
        response["headers"] = headers
    return response


def _json(schema: Schema) -> dict[str, Schema]:
    return {"application/json": {"schema": schema}}


def _content(body: Body, structs: dict[type[Struct], None]) -> dict[str, Schema]:
    if isinstance(body, tuple):
        media_type, schema = body
        return {media_type: {"schema": schema}}
    structs[body] = None
    return _json(ref(body.__name__))


class _Builder:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        # Ordered, so that the document's bytes are the same on every run.
        self.requests: dict[type[Struct], None] = {}
        self.responses: dict[type[Struct], None] = {ErrorBody: None}
        self.security = _security(settings)

    def operation(self, op: Operation, method: str) -> Schema:
        out: Schema = {"operationId": op.id, "summary": op.summary}
        if op.description:
            out["description"] = op.description
        out["security"] = self.security[op.access]
        if op.parameters:
            out["parameters"] = [
                p if isinstance(p, dict) else p(self.settings) for p in op.parameters
            ]
        if op.request is not None:
            out["requestBody"] = {
                "required": op.request_required,
                "content": _content(op.request, self.requests),
            }
        responses: dict[str, Schema] = {}
        for status, (description, body) in op.responses.items():
            responses[str(status)] = {"description": description}
            if body is not None:
                responses[str(status)]["content"] = _content(body, self.responses)
        by_status: dict[int, list[type[RelayError]]] = {}
        errors = [*_ACCESS_ERRORS[op.access]]
        if method in CHANGING:
            errors.extend(_CHANGING_ERRORS)
        if op.request is not None:
            errors.extend(_BODY_ERRORS)
        for cls in dict.fromkeys((*errors, *op.errors)):
            by_status.setdefault(cls.status, []).append(cls)
        for status, classes in sorted(by_status.items()):
            responses[str(status)] = _error(status, classes)
        out["responses"] = responses
        return out


def _paths(builder: _Builder, routes: Iterable[web.AbstractRoute]) -> dict[str, Schema]:
    paths: dict[str, Schema] = {}
    for route in routes:
        op = OPERATIONS.get(route.handler)
        if op is None or route.method == "HEAD" or route.resource is None:
            continue  # undocumented, or the HEAD aiohttp adds to a GET
        path = route.resource.canonical
        item = paths.setdefault(path, {})
        names = re.findall(r"{(\w+)}", path)
        if names:
            item["parameters"] = [
                {"$ref": f"#/components/parameters/{_PATH_PARAMETERS[name]}"} for name in names
            ]
        item[route.method.lower()] = builder.operation(op, route.method)
    return paths


def _security(settings: Settings) -> dict[Access, list[Schema]]:
    """The credentials of each side. ``{}`` in a list: no credential needed, as when the
    settings leave that side open."""
    auth = settings.auth
    publisher: list[Schema] = [{"publisherToken": []}]
    subscriber: list[Schema] = [
        {"subscriberToken": []},
        {"subscriberTokenQuery": []},
        {"subscriberTokenCookie": []},
        {"publisherToken": []},
    ]
    # Listing and deleting: the publisher token; with open publishing, a subscriber token for
    # every job when subscriber tokens are on, else nothing (http/auth.py).
    operator = list(publisher)
    if not auth.publish_tokens:
        publisher.insert(0, {})
        operator = subscriber[:3] if auth.subscribe == "token" else [{}]
    if auth.subscribe == "open":
        subscriber.insert(0, {})
    return {
        "publisher": publisher,
        "subscriber": subscriber,
        "operator": operator,
        "public": [],
    }


def _security_schemes(settings: Settings) -> dict[str, Schema]:
    return {
        "publisherToken": {
            "type": "http",
            "scheme": "bearer",
            "description": "one of auth.publish_tokens; also accepted wherever a subscriber "
            "token is",
        },
        "subscriberToken": {
            "type": "http",
            "scheme": "bearer",
            "bearerFormat": "JWT",
            "description": "an HS256 JWT whose `jobs` claim lists the jobs (or is `*`)",
        },
        "subscriberTokenQuery": {"type": "apiKey", "in": "query", "name": "token"},
        "subscriberTokenCookie": {
            "type": "apiKey",
            "in": "cookie",
            "name": settings.auth.cookie_name,
        },
    }


def build_document(app: web.Application) -> Schema:
    settings = app[SETTINGS]
    builder = _Builder(settings)
    paths = _paths(builder, app.router.routes())
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "progress-relay",
            "version": __version__,
            "summary": "Relays the progress of long-running jobs over Server-Sent Events",
            "description": "The prose contract is docs/api.md. Every error is "
            '`{"error": {"code": ..., "message": ...}}`; besides the responses listed per '
            "operation, any path answers `404 not_found` for a path that is not routed, "
            "`405 method_not_allowed` (with `Allow`) for a method it does not have, and "
            "`414 uri_too_long` or `431 headers_too_large` for a request line or head longer "
            "than the relay reads. HEAD is answered on every GET route but the two streams.",
        },
        "paths": paths,
        "components": {
            "schemas": component_schemas(settings, builder.requests, builder.responses),
            "parameters": {
                "JobIdPath": {
                    "name": "job_id",
                    "in": "path",
                    "required": True,
                    "schema": ref("JobId"),
                }
            },
            "securitySchemes": _security_schemes(settings),
            "responses": {
                "NotFound": _error(NoSuchEndpoint.status, [NoSuchEndpoint]),
                "MethodNotAllowed": _error(MethodNotAllowed.status, [MethodNotAllowed]),
                **{cls.__name__: _error(cls.status, [cls]) for cls in CONNECTION_ERRORS},
            },
        },
    }
