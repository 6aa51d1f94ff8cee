"""CORS: listed origins with credentials, "*" without, preflight for publish and cancel."""

from __future__ import annotations

import pytest

from tests.support.app import MakeClient

pytestmark = pytest.mark.memory_only

APP = "https://app.example.com"
CORS = {"origins": [APP], "max_age": 120}


def preflight(origin: str, method: str, headers: str) -> dict[str, str]:
    return {
        "Origin": origin,
        "Access-Control-Request-Method": method,
        "Access-Control-Request-Headers": headers,
    }


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/v1/jobs/job-1/events"),
        ("POST", "/v1/jobs/job-1/cancel"),
        ("DELETE", "/v1/jobs/job-1"),
    ],
)
async def test_preflight_of_a_listed_origin(
    make_client: MakeClient, method: str, path: str
) -> None:
    client = await make_client(cors=CORS)
    response = await client.options(
        path, headers=preflight(APP, method, "content-type,authorization")
    )
    assert response.status == 204
    assert response.headers["Access-Control-Allow-Origin"] == APP
    assert response.headers["Access-Control-Allow-Credentials"] == "true"
    assert method in response.headers["Access-Control-Allow-Methods"]
    allowed = response.headers["Access-Control-Allow-Headers"].lower()
    assert {"authorization", "content-type", "last-event-id"} <= {
        h.strip() for h in allowed.split(",")
    }
    assert response.headers["Access-Control-Max-Age"] == "120"
    assert "Origin" in response.headers["Vary"]


async def test_preflight_of_an_unlisted_origin_is_refused(make_client: MakeClient) -> None:
    client = await make_client(cors=CORS)
    response = await client.options(
        "/v1/jobs/job-1/events", headers=preflight("https://evil.example", "POST", "content-type")
    )
    assert response.status == 403
    assert "Access-Control-Allow-Origin" not in response.headers
    body = await response.json()
    assert (
        body["error"]["code"] == "origin_not_allowed" and "evil.example" in body["error"]["message"]
    )


async def test_origins_match_exactly(make_client: MakeClient) -> None:
    client = await make_client(cors=CORS)
    for near in (APP + "/", "http://app.example.com", APP + ".evil.example", APP.upper()):
        response = await client.get("/healthz", headers={"Origin": near})
        assert "Access-Control-Allow-Origin" not in response.headers, near


async def test_actual_responses_carry_the_headers_streams_included(make_client: MakeClient) -> None:
    client = await make_client(cors=CORS)
    published = await client.post(
        "/v1/jobs/job-1/events", json={"event": "log"}, headers={"Origin": APP}
    )
    assert published.headers["Access-Control-Allow-Origin"] == APP
    assert published.headers["Access-Control-Expose-Headers"] == "Retry-After, X-Request-Id"
    stream = await client.get(
        "/v1/jobs/job-1/stream", headers={"Origin": APP, "Last-Event-ID": "0-0"}
    )
    assert stream.status == 200
    assert stream.headers["Access-Control-Allow-Origin"] == APP
    assert stream.headers["Access-Control-Allow-Credentials"] == "true"
    stream.close()
    error = await client.get("/v1/jobs/BAD%20ID", headers={"Origin": APP})
    assert error.status == 400
    assert error.headers["Access-Control-Allow-Origin"] == APP  # scripts can read the error


async def test_wildcard_admits_any_origin_without_credentials(make_client: MakeClient) -> None:
    client = await make_client(cors={"origins": [APP, "*"]})
    other = await client.get("/healthz", headers={"Origin": "https://other.example"})
    assert other.headers["Access-Control-Allow-Origin"] == "*"
    assert "Access-Control-Allow-Credentials" not in other.headers
    listed = await client.get("/healthz", headers={"Origin": APP})
    assert listed.headers["Access-Control-Allow-Origin"] == APP
    assert listed.headers["Access-Control-Allow-Credentials"] == "true"


async def test_no_origins_configured_means_no_cors(make_client: MakeClient) -> None:
    client = await make_client()
    response = await client.options(
        "/v1/jobs/job-1/events", headers=preflight(APP, "POST", "content-type")
    )
    assert response.status == 403
    plain = await client.get("/healthz", headers={"Origin": APP})
    assert "Access-Control-Allow-Origin" not in plain.headers


async def test_options_without_preflight_headers_and_unknown_paths(make_client: MakeClient) -> None:
    client = await make_client(cors=CORS)
    assert (await client.get("/nope")).status == 404
    assert (await client.options("/v1/jobs/job-1/events")).status == 405
