"""Credentials: publisher bearer tokens and subscriber JWTs, on every endpoint."""

from __future__ import annotations

import time
from typing import Any

import httpx
import jwt
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from progress_relay.config import AuthSettings
from progress_relay.http.auth import Credentials
from progress_relay.ops.access_log import redact
from tests.support.app import MakeClient
from tests.support.process import start_relay

pytestmark = pytest.mark.memory_only  # credentials are checked before any broker is asked

SECRET = "s" * 32 + "-subscriber-key"
PUBLISHER = "pub-token-current"
ROTATED = "pub-token-previous"
AUTH = {
    "publish_tokens": [PUBLISHER, ROTATED],
    "subscribe": "token",
    "jwt_secret": SECRET,
}


def subscriber_token(jobs: list[str] | str, *, ttl: int = 60, secret: str = SECRET) -> str:
    now = int(time.time())
    return jwt.encode({"jobs": jobs, "iat": now, "exp": now + ttl}, secret, algorithm="HS256")


# The five credentials of the matrix, as Authorization headers (or none).
def credential(kind: str, job: str) -> dict[str, str]:
    token = {
        "none": None,
        "wrong": "not-a-token",
        "forged": subscriber_token([job], secret="x" * 40),
        "expired": subscriber_token([job], ttl=-10),
        "other_job": subscriber_token(["someone-else"]),
        "valid": subscriber_token([job]),
        "publisher": PUBLISHER,
        "rotated": ROTATED,
    }[kind]
    return {} if token is None else {"Authorization": f"Bearer {token}"}


# (method, path, body): the job under test is "job-1", created and published before each request.
PUBLISHER_ENDPOINTS = [
    ("POST", "/v1/jobs", {"id": "job-1"}),
    ("POST", "/v1/jobs/job-1/events", {"event": "progress", "data": {"percent": 1}}),
    ("DELETE", "/v1/jobs/job-1", None),
]
SUBSCRIBER_ENDPOINTS = [
    ("GET", "/v1/jobs/job-1", None),
    ("GET", "/v1/jobs/job-1/events", None),
    ("GET", "/v1/jobs/job-1/stream?replay=snapshot", None),
    ("GET", "/v1/stream?job=job-1&replay=snapshot", None),
    ("POST", "/v1/jobs/job-1/cancel", None),
]

PUBLISHER_EXPECTED = {
    "none": 401,
    "wrong": 401,
    "forged": 401,
    "expired": 401,
    "other_job": 401,
    "valid": 401,  # a subscriber token does not let anyone publish
    "publisher": "ok",
    "rotated": "ok",
}
SUBSCRIBER_EXPECTED = {
    "none": 401,
    "wrong": 401,
    "forged": 401,
    "expired": 401,
    "other_job": 403,
    "valid": "ok",
    "publisher": "ok",  # the backend may read what it publishes
    "rotated": "ok",
}


async def _relay(make_client: MakeClient) -> TestClient[Any, web.Application]:
    client = await make_client(auth=AUTH)
    headers = {"Authorization": f"Bearer {PUBLISHER}"}
    await client.post("/v1/jobs", json={"id": "job-1"}, headers=headers)
    response = await client.post(
        "/v1/jobs/job-1/events", json={"event": "progress", "data": {}}, headers=headers
    )
    assert response.status == 200
    return client


async def _request(
    client: TestClient[Any, web.Application],
    method: str,
    path: str,
    body: Any,
    headers: dict[str, str],
) -> tuple[int, Any]:
    response = await client.request(method, path, json=body, headers=headers)
    try:
        if response.status >= 400:
            assert response.content_type == "application/json"
            return response.status, await response.json()
        return response.status, None
    finally:
        response.close()


@pytest.mark.parametrize("kind", list(PUBLISHER_EXPECTED))
@pytest.mark.parametrize(("method", "path", "body"), PUBLISHER_ENDPOINTS)
async def test_publisher_endpoints(
    make_client: MakeClient, method: str, path: str, body: Any, kind: str
) -> None:
    client = await _relay(make_client)
    status, error = await _request(client, method, path, body, credential(kind, "job-1"))
    expected = PUBLISHER_EXPECTED[kind]
    if expected == "ok":
        assert status < 300, error
    else:
        assert status == expected
        assert error["error"]["code"] == "unauthorized"
        # Nothing changed: the job is still there, with only the event published at setup.
        snapshot = await client.get(
            "/v1/jobs/job-1", headers={"Authorization": f"Bearer {PUBLISHER}"}
        )
        assert snapshot.status == 200
        assert (await snapshot.json())["last_event_id"].endswith("-1")


@pytest.mark.parametrize("kind", list(SUBSCRIBER_EXPECTED))
@pytest.mark.parametrize(("method", "path", "body"), SUBSCRIBER_ENDPOINTS)
async def test_subscriber_endpoints(
    make_client: MakeClient, method: str, path: str, body: Any, kind: str
) -> None:
    client = await _relay(make_client)
    status, error = await _request(client, method, path, body, credential(kind, "job-1"))
    expected = SUBSCRIBER_EXPECTED[kind]
    if expected == "ok":
        assert status < 300, error
    else:
        assert status == expected, error
        assert error["error"]["code"] == ("forbidden" if expected == 403 else "unauthorized")
        assert "job-1" in error["error"]["message"] or expected == 401


async def test_the_missing_credential_is_named_with_www_authenticate(
    make_client: MakeClient,
) -> None:
    client = await _relay(make_client)
    response = await client.post("/v1/jobs/job-1/events", json={"event": "log"})
    assert response.status == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert "publisher token" in (await response.json())["error"]["message"]
    response = await client.get("/v1/jobs/job-1/stream")
    assert response.status == 401
    assert "subscriber token" in (await response.json())["error"]["message"]


async def test_expired_token_is_named_as_expired(make_client: MakeClient) -> None:
    client = await _relay(make_client)
    response = await client.get(f"/v1/jobs/job-1?token={subscriber_token(['job-1'], ttl=-5)}")
    assert response.status == 401
    assert "expired" in (await response.json())["error"]["message"]


@pytest.mark.parametrize("where", ["query", "header", "cookie"])
async def test_subscriber_token_is_read_from_query_header_and_cookie(
    make_client: MakeClient, where: str
) -> None:
    client = await _relay(make_client)
    token = subscriber_token(["job-1"])
    path, headers = "/v1/jobs/job-1", {}
    if where == "query":
        path += f"?token={token}"
    elif where == "header":
        headers["Authorization"] = f"Bearer {token}"
    else:
        headers["Cookie"] = f"progress_relay_token={token}"
    response = await client.get(path, headers=headers)
    assert response.status == 200


async def test_cookie_name_is_configurable(make_client: MakeClient) -> None:
    client = await make_client(auth={**AUTH, "cookie_name": "relay"})
    await client.post(
        "/v1/jobs", json={"id": "job-1"}, headers={"Authorization": f"Bearer {PUBLISHER}"}
    )
    token = subscriber_token(["job-1"])
    ok = await client.get("/v1/jobs/job-1", headers={"Cookie": f"relay={token}"})
    refused = await client.get(
        "/v1/jobs/job-1", headers={"Cookie": f"progress_relay_token={token}"}
    )
    assert (ok.status, refused.status) == (200, 401)


async def test_multi_job_stream_needs_every_job_granted(make_client: MakeClient) -> None:
    client = await _relay(make_client)
    both = subscriber_token(["job-1", "job-2"])
    one = subscriber_token(["job-1"])
    wildcard = subscriber_token("*")
    path = "/v1/stream?job=job-1&job=job-2&replay=snapshot"
    refused = await client.get(f"{path}&token={one}")
    assert refused.status == 403
    assert "job-2" in (await refused.json())["error"]["message"]
    for token in (both, wildcard):
        response = await client.get(f"{path}&token={token}")
        assert response.status == 200
        response.close()


async def test_create_returns_a_subscribe_token_for_the_job(make_client: MakeClient) -> None:
    client = await make_client(auth=AUTH)
    response = await client.post(
        "/v1/jobs", json={"id": "job-7"}, headers={"Authorization": f"Bearer {PUBLISHER}"}
    )
    body = await response.json()
    claims = jwt.decode(body["subscribe_token"], SECRET, algorithms=["HS256"])
    assert claims["jobs"] == ["job-7"]
    assert 3500 < claims["exp"] - time.time() <= 3600
    own = await client.get(f"/v1/jobs/job-7?token={body['subscribe_token']}")
    other = await client.get(f"/v1/jobs/job-1?token={body['subscribe_token']}")
    assert (own.status, other.status) == (200, 403)


async def test_open_relay_needs_no_credentials_and_mints_nothing(client: Any) -> None:
    response = await client.post("/v1/jobs", json={"id": "job-1"})
    assert response.status == 201
    assert "subscribe_token" not in await response.json()
    assert (await client.get("/v1/jobs/job-1")).status == 200


def test_a_token_without_exp_or_jobs_is_refused() -> None:
    credentials = Credentials(AuthSettings(subscribe="token", jwt_secret=SECRET))
    no_exp = jwt.encode({"jobs": "*"}, SECRET, algorithm="HS256")
    no_jobs = jwt.encode({"exp": int(time.time()) + 60}, SECRET, algorithm="HS256")
    none_alg = jwt.encode({"jobs": "*", "exp": int(time.time()) + 60}, "", algorithm="none")
    assert jwt.decode(credentials.mint("*"), SECRET, algorithms=["HS256"])["jobs"] == "*"
    for token in (no_exp, no_jobs, none_alg):
        with pytest.raises(Exception) as caught:
            credentials.check_subscriber_token(token, ["job-1"])
        assert getattr(caught.value, "status", None) == 401


def test_redact_hides_tokens_in_urls() -> None:
    line = '127.0.0.1 "GET /v1/stream?job=a&token=eyJ.abc.def&x=1 HTTP/1.1" "http://p/?access_token=zz"'
    redacted = redact(line)
    assert "eyJ.abc.def" not in redacted and "zz" not in redacted
    assert "token=***&x=1" in redacted and "access_token=***" in redacted


def test_tokens_never_reach_the_log() -> None:
    """The real process, its access log at INFO: no token appears, however it was sent."""
    relay = start_relay(
        env={
            "PROGRESS_RELAY_AUTH_PUBLISH_TOKENS": f"{PUBLISHER},{ROTATED}",
            "PROGRESS_RELAY_AUTH_SUBSCRIBE": "token",
            "PROGRESS_RELAY_AUTH_JWT_SECRET": SECRET,
        }
    )
    base = relay.base_url
    try:
        pub = {"Authorization": f"Bearer {PUBLISHER}"}
        created = httpx.post(f"{base}/v1/jobs", json={"id": "job-1"}, headers=pub)
        minted = created.json()["subscribe_token"]
        httpx.post(f"{base}/v1/jobs/job-1/events", json={"event": "log"}, headers=pub)
        expired = subscriber_token(["job-1"], ttl=-5)
        statuses = [
            httpx.get(f"{base}/v1/jobs/job-1?token={minted}").status_code,
            httpx.get(f"{base}/v1/jobs/job-1?access_token={minted}&token={expired}").status_code,
            httpx.get(
                f"{base}/v1/jobs/job-1", headers={"Authorization": f"Bearer {minted}"}
            ).status_code,
            httpx.get(
                f"{base}/v1/jobs/job-1", cookies={"progress_relay_token": minted}
            ).status_code,
            httpx.post(
                f"{base}/v1/jobs/job-1/events", headers={"Authorization": "Bearer guess"}
            ).status_code,
            httpx.get(
                f"{base}/v1/jobs/job-1", headers={"Referer": f"{base}/?token={minted}"}
            ).status_code,
        ]
        assert statuses == [200, 401, 200, 200, 401, 401]
    finally:
        code, _, log = relay.stop()
    assert code == 0
    assert "GET /v1/jobs/job-1?token=*** " in log  # the access log did run
    for secret in (minted, expired, PUBLISHER, ROTATED, SECRET, "guess"):
        assert secret not in log
