"""The OpenAPI document: valid OpenAPI 3.1, served as built, and equal to the routes and error
codes of the app, so an endpoint or a code added without documenting it fails here."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from aiohttp import web

from progress_relay.config import Settings
from progress_relay.http.app import create_app
from progress_relay.http.errors import _HTTP_CODES
from progress_relay.http.openapi_document import build_document as build_app_document
from progress_relay.wire import errors
from progress_relay.wire.errors import ERROR_CODES
from tests.conftest import make_settings

pytestmark = pytest.mark.memory_only  # the document does not depend on the broker

HTTP_METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}
AUTH = {"publish_tokens": ["p"], "subscribe": "token", "jwt_secret": "k" * 32}


def build_document(settings: Settings) -> dict[str, Any]:
    """The document of the app these settings make."""
    return build_app_document(create_app(settings))


def documented_operations(document: dict[str, Any]) -> set[tuple[str, str]]:
    return {
        (method.upper(), path)
        for path, item in document["paths"].items()
        for method in item
        if method in HTTP_METHODS
    }


def routed_operations(app: web.Application) -> set[tuple[str, str]]:
    """Every (method, path template) the app answers, except the HEAD aiohttp adds to GET."""
    return {
        (route.method, route.resource.canonical)
        for route in app.router.routes()
        if route.resource is not None and route.method not in {"HEAD", "OPTIONS", "*"}
    }


def walk(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from walk(value)


def resolve(document: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), ref
    node: Any = document
    for part in ref[2:].split("/"):
        node = node[part]
    return node


@pytest.mark.parametrize("auth", [{}, AUTH], ids=["open", "credentials"])
def test_the_document_is_valid_openapi_3_1(auth: dict[str, Any]) -> None:
    document = build_document(make_settings(auth=auth))
    assert document["openapi"].startswith("3.1.")
    schemathesis.openapi.from_dict(document).validate()  # the OpenAPI 3.1 meta-schema


def test_the_validation_above_can_fail() -> None:
    document = build_document(make_settings())
    document["paths"]["/healthz"]["get"]["responses"]["200"] = {"content": {}}  # no description
    with pytest.raises(Exception, match="description"):
        schemathesis.openapi.from_dict(document).validate()


def test_every_reference_resolves() -> None:
    document = build_document(make_settings())
    refs = [node["$ref"] for node in walk(document) if isinstance(node.get("$ref"), str)]
    assert refs
    for ref in refs:
        assert resolve(document, ref) is not None


def test_every_route_is_documented_and_every_documented_operation_is_routed() -> None:
    settings = make_settings()
    app = create_app(settings)
    routed = routed_operations(app)
    documented = documented_operations(build_document(settings))
    assert routed - documented == set(), "routes missing from the OpenAPI document"
    assert documented - routed == set(), "documented operations the app does not route"
    assert ("GET", "/v1/openapi.json") in routed


def test_a_route_added_without_documenting_it_is_noticed() -> None:
    settings = make_settings()
    app = create_app(settings)

    async def extra(request: web.Request) -> web.Response:
        return web.Response()

    app.router.add_get("/v1/undocumented", extra)
    missing = routed_operations(app) - documented_operations(build_app_document(app))
    assert missing == {("GET", "/v1/undocumented")}


def test_path_parameters_are_declared() -> None:
    document = build_document(make_settings())
    for path, item in document["paths"].items():
        templated = set(re.findall(r"{(\w+)}", path))
        for method, operation in item.items():
            if method not in HTTP_METHODS:
                continue
            parameters = [
                resolve(document, p["$ref"]) if "$ref" in p else p
                for p in [*item.get("parameters", []), *operation.get("parameters", [])]
            ]
            declared = {p["name"] for p in parameters if p["in"] == "path"}
            assert declared == templated, f"{method.upper()} {path}"


def relay_error_codes() -> set[str]:
    """Every ``code`` the relay can put on the wire."""
    classes: list[type[errors.RelayError]] = [errors.RelayError]
    codes = set(_HTTP_CODES.values())
    while classes:
        cls = classes.pop()
        classes.extend(cls.__subclasses__())
        codes.add(cls.code)
    return codes - {"bad_request"}  # the base class's code, never raised itself


def test_every_error_code_of_the_relay_is_documented() -> None:
    document = build_document(make_settings())
    documented = {
        code
        for node in walk(document)
        if isinstance(node.get("code"), dict) and "enum" in node["code"]
        for code in node["code"]["enum"]
    }
    assert documented == relay_error_codes()
    assert set(ERROR_CODES) == relay_error_codes()


def test_security_follows_the_settings() -> None:
    def security(auth: dict[str, Any], path: str, method: str) -> list[dict[str, Any]]:
        document = build_document(make_settings(auth=auth))
        operation: dict[str, Any] = document["paths"][path][method]
        return operation["security"]

    assert {} in security({}, "/v1/jobs/{job_id}/events", "post")
    assert {} in security({}, "/v1/jobs/{job_id}/stream", "get")
    assert {} not in security(AUTH, "/v1/jobs/{job_id}/events", "post")
    assert {} not in security(AUTH, "/v1/jobs/{job_id}/stream", "get")
    assert {"subscriberTokenQuery": []} in security(AUTH, "/v1/stream", "get")
    assert security(AUTH, "/healthz", "get") == []


async def test_the_document_is_served(aiohttp_client: Any) -> None:
    settings = make_settings(limits={"max_batch_events": 7})
    client = await aiohttp_client(create_app(settings))
    response = await client.get("/v1/openapi.json")
    assert response.status == 200
    assert response.content_type == "application/json"
    served = await response.json()
    assert served == build_document(settings)
    batch = served["components"]["schemas"]["EventBatchIn"]["properties"]["events"]
    assert batch["maxItems"] == 7


def test_every_error_class_describes_itself() -> None:
    """What the document says of a code is the class's own description, not its base's."""
    for cls in errors.error_classes():
        assert "description" in vars(cls), cls.__name__
        assert "code" in vars(cls), cls.__name__
    assert ERROR_CODES["method_not_allowed"] == errors.MethodNotAllowed.description
