"""The inspection page (/admin): off unless enabled; static; every API call it makes needs the
publisher token."""

from __future__ import annotations

from typing import Any

import pytest

from progress_relay.http.app import create_app
from progress_relay.http.openapi_document import build_document
from tests.support.app import error_of, make_settings

TOKEN = "publisher-token-for-admin"
BEARER = {"Authorization": f"Bearer {TOKEN}"}
# Publisher tokens, and subscriber tokens for every read: then each call needs a credential.
AUTH = {"publish_tokens": [TOKEN], "subscribe": "token", "jwt_secret": "s" * 32}
PAGE_FILES = ["/admin", "/admin/admin.js", "/admin/admin.css"]


@pytest.mark.parametrize("path", PAGE_FILES)
async def test_the_page_is_not_there_unless_enabled(make_client: Any, path: str) -> None:
    client = await make_client(auth=AUTH)
    await error_of(await client.get(path, headers=BEARER), 404, "not_found")


@pytest.mark.memory_only
def test_the_page_is_in_the_openapi_document_only_when_enabled() -> None:
    off = build_document(create_app(make_settings()))
    on = build_document(create_app(make_settings(admin={"enabled": True})))
    assert not [path for path in off["paths"] if path.startswith("/admin")]
    assert sorted(path for path in on["paths"] if path.startswith("/admin")) == sorted(PAGE_FILES)


async def test_the_page_is_served_static_with_a_strict_policy(make_client: Any) -> None:
    client = await make_client(auth=AUTH, admin={"enabled": True})
    types = {}
    for path in PAGE_FILES:
        response = await client.get(path)  # no credential: the page holds no data
        assert response.status == 200, path
        types[path] = response.content_type
        policy = response.headers["Content-Security-Policy"]
        assert "script-src 'self'" in policy and "frame-ancestors 'none'" in policy
        again = await client.get(path, headers={"If-None-Match": response.headers["ETag"]})
        assert again.status == 304
    assert types == {
        "/admin": "text/html",
        "/admin/admin.js": "text/javascript",
        "/admin/admin.css": "text/css",
    }
    script = await (await client.get("/admin/admin.js")).text()
    assert "innerHTML" not in script  # job data is written as text only
    assert "sessionStorage." not in script and "localStorage." not in script  # memory only


async def test_every_call_of_the_page_needs_the_publisher_token(make_client: Any) -> None:
    client = await make_client(auth=AUTH, admin={"enabled": True})
    response = await client.post("/v1/jobs/j1/events", json={"event": "progress"}, headers=BEARER)
    assert response.status == 200
    calls = [
        ("GET", "/v1/jobs?limit=50", 200),
        ("GET", "/v1/jobs/j1", 200),
        ("GET", "/v1/jobs/j1/events?limit=100", 200),
        ("GET", "/v1/stream?job=j1", 200),
        ("POST", "/v1/jobs/j1/cancel", 202),
        ("DELETE", "/v1/jobs/j1", 204),
    ]
    for method, path, _ in calls:
        refused = await client.request(method, path)
        await error_of(refused, 401, "unauthorized")
        wrong = await client.request(method, path, headers={"Authorization": "Bearer nope"})
        await error_of(wrong, 401, "unauthorized")
    for method, path, status in calls:
        response = await client.request(method, path, headers=BEARER)
        assert response.status == status, (method, path, await response.text())
        response.close()
