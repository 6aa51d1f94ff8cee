"""Secure by default: open publishing stays on loopback unless a setting says otherwise; with
subscriber tokens on, listing, deleting and cancelling need a credential; a page of another
origin changes nothing, and cannot send a JSON body without a preflight; credentials are
checked before anything else on every route, and bytes that are not text are not a credential;
no credential reaches a log line, however it was spelled.
"""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import time
from typing import Any

import httpx
import jwt
import pytest
from aiohttp.test_utils import TestClient

from progress_relay.config import ConfigError
from progress_relay.http.app import create_app
from progress_relay.http.openapi_operation import OPERATIONS
from progress_relay.ops.access_log import redact
from tests.support.app import MakeClient, error_of, make_settings
from tests.support.process import ENTRY_POINT, free_port, start_relay

pytestmark = pytest.mark.memory_only  # none of this asks the broker anything first

SECRET = "k" * 40
PUBLISHER = "publisher-secret-token"
APP = "https://app.example"
EVIL = "https://evil.example"


def subscriber_token(jobs: list[str] | str) -> str:
    now = int(time.time())
    return jwt.encode({"jobs": jobs, "iat": now, "exp": now + 60}, SECRET, algorithm="HS256")


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# -- open publishing beyond loopback ----------------------------------------------------------


def test_serving_open_publishing_beyond_loopback_refuses_to_start_naming_the_setting() -> None:
    port = free_port()
    completed = subprocess.run(
        [str(ENTRY_POINT), "serve", "--host", "0.0.0.0", "--port", str(port)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert completed.returncode == 2
    lines = completed.stderr.strip().splitlines()
    assert len(lines) == 1, completed.stderr
    assert "auth.allow_open_publishing" in lines[0] and "auth.publish_tokens" in lines[0]
    with pytest.raises(httpx.TransportError):
        httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)  # it never listened


@pytest.mark.parametrize("host", ["0.0.0.0", "", "::", "10.1.2.3", "relay.example.com"])
def test_open_publishing_is_refused_on_any_address_but_loopback(host: str) -> None:
    from progress_relay.config import check_exposure, is_loopback

    assert not is_loopback(host)
    with pytest.raises(ConfigError, match=r"auth\.allow_open_publishing"):
        check_exposure(make_settings(server={"host": host}))
    check_exposure(make_settings(server={"host": host}, auth={"allow_open_publishing": True}))
    check_exposure(make_settings(server={"host": host}, auth={"publish_tokens": [PUBLISHER]}))


@pytest.mark.parametrize("host", ["127.0.0.1", "127.8.9.10", "::1", "[::1]", "localhost"])
def test_loopback_may_publish_openly(host: str) -> None:
    from progress_relay.config import check_exposure, is_loopback

    assert is_loopback(host)
    check_exposure(make_settings(server={"host": host}))


# -- subscriber tokens on, publishing open: listing, deleting, cancelling --------------------

TOKEN_MODE = {"subscribe": "token", "jwt_secret": SECRET}


async def token_mode_relay(make_client: MakeClient, **sections: Any) -> TestClient[Any, Any]:
    client = await make_client(auth=TOKEN_MODE, **sections)
    response = await client.post("/v1/jobs/job-1/events", json={"event": "progress", "data": {}})
    assert response.status == 200
    return client


async def still_there(client: TestClient[Any, Any]) -> dict[str, Any]:
    response = await client.get("/v1/jobs/job-1", headers=bearer(subscriber_token("*")))
    assert response.status == 200
    snapshot: dict[str, Any] = await response.json()
    return snapshot


async def test_listing_needs_a_token_for_every_job(make_client: MakeClient) -> None:
    client = await token_mode_relay(make_client)
    await error_of(await client.get("/v1/jobs"), 401, "unauthorized")
    viewer = bearer(subscriber_token(["job-1"]))
    message = await error_of(await client.get("/v1/jobs", headers=viewer), 403, "forbidden")
    assert '"*"' in message
    listed = await client.get("/v1/jobs", headers=bearer(subscriber_token("*")))
    assert listed.status == 200
    assert [job["id"] for job in (await listed.json())["jobs"]] == ["job-1"]


async def test_deleting_needs_a_token_for_every_job_and_a_refusal_deletes_nothing(
    make_client: MakeClient,
) -> None:
    client = await token_mode_relay(make_client)
    await error_of(await client.delete("/v1/jobs/job-1"), 401, "unauthorized")
    viewer = bearer(subscriber_token(["job-1"]))
    await error_of(await client.delete("/v1/jobs/job-1", headers=viewer), 403, "forbidden")
    await still_there(client)
    deleted = await client.delete("/v1/jobs/job-1", headers=bearer(subscriber_token("*")))
    assert deleted.status == 204


async def test_cancelling_needs_the_jobs_token(make_client: MakeClient) -> None:
    client = await token_mode_relay(make_client)
    await error_of(await client.post("/v1/jobs/job-1/cancel"), 401, "unauthorized")
    assert (await still_there(client))["cancel_requested"] is False
    other = bearer(subscriber_token(["job-2"]))
    await error_of(await client.post("/v1/jobs/job-1/cancel", headers=other), 403, "forbidden")
    viewer = bearer(subscriber_token(["job-1"]))
    assert (await client.post("/v1/jobs/job-1/cancel", headers=viewer)).status == 202


async def test_with_publisher_tokens_listing_and_deleting_need_one(
    make_client: MakeClient,
) -> None:
    client = await make_client(auth={**TOKEN_MODE, "publish_tokens": [PUBLISHER]})
    everything = bearer(subscriber_token("*"))
    await error_of(await client.get("/v1/jobs", headers=everything), 401, "unauthorized")
    assert (await client.get("/v1/jobs", headers=bearer(PUBLISHER))).status == 200


# -- pages of other origins -------------------------------------------------------------------


async def test_a_change_from_another_origin_is_403_and_changes_nothing(
    make_client: MakeClient,
) -> None:
    client = await make_client(cors={"origins": [APP, "*"]})
    await client.post("/v1/jobs/job-1/events", json={"event": "progress", "data": {}})
    foreign = {"Origin": EVIL}
    attempts = [
        client.post("/v1/jobs/job-1/events", json={"event": "complete"}, headers=foreign),
        client.post("/v1/jobs/job-2/events", json={"event": "progress"}, headers=foreign),
        client.post("/v1/jobs", json={"id": "job-3"}, headers=foreign),
        client.post("/v1/jobs/job-1/cancel", headers=foreign),
        client.delete("/v1/jobs/job-1", headers=foreign),
        # a form's POST, with the cookie a browser would add
        client.post(
            "/v1/jobs/job-1/cancel",
            data="x=1",
            headers={**foreign, "Content-Type": "application/x-www-form-urlencoded"},
            cookies={"progress_relay_token": "anything"},
        ),
    ]
    for attempt in attempts:
        message = await error_of(await attempt, 403, "origin_not_allowed")
        assert EVIL in message and "cors.origins" in message
    snapshot = await (await client.get("/v1/jobs/job-1")).json()
    assert snapshot["status"] == "running" and snapshot["cancel_requested"] is False
    for job in ("job-2", "job-3"):
        assert (await client.get(f"/v1/jobs/{job}")).status == 404
    # Reads from any origin are what "*" is for.
    assert (await client.get("/v1/jobs/job-1", headers=foreign)).status == 200


async def test_listed_and_own_origins_may_change_jobs(make_client: MakeClient) -> None:
    client = await make_client(cors={"origins": [APP]})
    own = f"http://{client.host}:{client.port}"
    for origin in (APP, own):
        response = await client.post(
            "/v1/jobs/job-1/events", json={"event": "progress"}, headers={"Origin": origin}
        )
        assert response.status == 200, await response.text()
    near_misses = (APP + ":8443", APP.replace("https", "http") + ".evil", "null")
    for origin in near_misses:
        response = await client.post(
            "/v1/jobs/job-1/events", json={"event": "progress"}, headers={"Origin": origin}
        )
        await error_of(response, 403, "origin_not_allowed")


async def test_a_json_body_must_say_so(make_client: MakeClient) -> None:
    client = await make_client()
    body = json.dumps({"event": "log", "data": {"message": "x"}})
    for content_type in ("text/plain", "application/x-www-form-urlencoded", None):
        headers = {} if content_type is None else {"Content-Type": content_type}
        for path in ("/v1/jobs/job-1/events", "/v1/jobs"):
            response = await client.post(path, data=body.encode(), headers=headers)
            message = await error_of(response, 415, "unsupported_media_type")
            assert "application/json" in message
    assert (await client.get("/v1/jobs/job-1")).status == 404  # nothing was published
    charset = {"Content-Type": "application/json; charset=utf-8"}
    response = await client.post("/v1/jobs/job-1/events", data=body, headers=charset)
    assert response.status == 200
    assert (await client.post("/v1/jobs")).status == 201  # no body, nothing to type


# -- credentials first ------------------------------------------------------------------------


def guarded_routes() -> list[tuple[str, str]]:
    """(method, path) of every route that needs a credential, with a bad job id in it."""
    app = create_app(make_settings())
    routes = []
    for route in app.router.routes():
        operation = OPERATIONS.get(route.handler)
        if operation is None or operation.access == "public" or route.method == "HEAD":
            continue
        assert route.resource is not None
        path = route.resource.canonical.replace("{job_id}", "not%20a%20job%20id!")
        routes.append((route.method, path))
    return routes


@pytest.mark.parametrize(("method", "path"), guarded_routes())
async def test_credentials_are_checked_before_anything_else_on_every_route(
    make_client: MakeClient, method: str, path: str
) -> None:
    client = await make_client(auth={**TOKEN_MODE, "publish_tokens": [PUBLISHER]})
    query = "?limit=many&after=zz&job=bad!id&status=nope&cursor=x&replay=sometimes"
    response = await client.request(
        method,
        path + query,
        data=b"{not json",
        headers={"Content-Type": "text/plain", "Origin": EVIL},
    )
    await error_of(response, 401, "unauthorized")


async def raw_request(client: TestClient[Any, Any], head: bytes) -> tuple[int, dict[str, Any]]:
    reader, writer = await asyncio.open_connection(client.host, client.port)
    writer.write(head + b"Host: relay\r\nConnection: close\r\n\r\n")
    response = await reader.read()
    writer.close()
    status_line, _, rest = response.partition(b"\r\n")
    return int(status_line.split()[1]), json.loads(rest.partition(b"\r\n\r\n")[2])


@pytest.mark.parametrize(
    "head",
    [
        b"GET /v1/jobs/job-1 HTTP/1.1\r\nAuthorization: Bearer \xff\xfe\r\n",
        b"GET /v1/jobs HTTP/1.1\r\nAuthorization: Bearer \xc3\x28\r\n",
        b"POST /v1/jobs/job-1/events HTTP/1.1\r\nAuthorization: Bearer caf\xe9\r\n",
        b"GET /v1/jobs/job-1 HTTP/1.1\r\nCookie: progress_relay_token=\xff\r\n",
        b"GET /v1/jobs/job-1/stream?token=%ff%fe HTTP/1.1\r\n",
    ],
)
async def test_a_credential_that_is_not_utf8_is_401(make_client: MakeClient, head: bytes) -> None:
    client = await make_client(auth={**TOKEN_MODE, "publish_tokens": [PUBLISHER]})
    status, body = await raw_request(client, head)
    assert status == 401
    assert body["error"]["code"] == "unauthorized"


# -- credentials never logged -----------------------------------------------------------------

HIDDEN = "hidden-credential-value"
SPELLINGS = [
    f"?token={HIDDEN}",
    f"?TOKEN={HIDDEN}",
    f"?tok%65n={HIDDEN}",
    f"?%74%6F%6B%65%6E={HIDDEN}",
    f"?tok%2565n={HIDDEN}",
    f"?replay=none;token={HIDDEN}",
    f"?a=1&access%5Ftoken={HIDDEN}",
    f"?token+={HIDDEN}",
]


@pytest.mark.parametrize("spelling", SPELLINGS)
def test_redact_finds_the_credential_however_it_is_spelled(spelling: str) -> None:
    assert HIDDEN not in redact(f"/v1/jobs/job-1/stream{spelling}")
    assert HIDDEN not in redact(f"https://app.example/page{spelling}")


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_no_credential_reaches_the_log_in_any_encoding(log_format: str) -> None:
    relay = start_relay(
        "--log-level",
        "DEBUG",
        env={
            "PROGRESS_RELAY_AUTH_PUBLISH_TOKENS": PUBLISHER,
            "PROGRESS_RELAY_AUTH_SUBSCRIBE": "token",
            "PROGRESS_RELAY_AUTH_JWT_SECRET": SECRET,
            "PROGRESS_RELAY_LOG_FORMAT": log_format,
        },
    )
    base = relay.base_url
    try:
        for spelling in SPELLINGS:
            httpx.get(f"{base}/v1/jobs/job-1{spelling}")
            httpx.get(f"{base}/healthz", headers={"Referer": f"{base}/page{spelling}"})
        httpx.get(f"{base}/v1/jobs", headers=bearer(PUBLISHER))
        httpx.get(f"{base}/v1/jobs/job-1", cookies={"progress_relay_token": HIDDEN})
        host, port = base.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port))) as sock:
            # aiohttp cannot parse it: its error quotes the line, the credential with it
            sock.sendall(
                f"GET /healthz HTTP/1.1\r\nAuthorization: Bearer {HIDDEN}\x01\r\n\r\n".encode()
            )
            sock.recv(65536)
    finally:
        _, _, log = relay.stop()
    assert "aiohttp.access" in log or '"logger":"aiohttp.access"' in log
    assert "could not be parsed (BadHttpMessage)" in log  # the DEBUG line, without the bytes
    for secret in (HIDDEN, PUBLISHER):
        assert secret not in log
    assert "Traceback" not in log


@pytest.mark.parametrize(
    ("origin", "host", "same"),
    [
        ("http://127.0.0.1:8080", "127.0.0.1:8080", True),
        ("https://relay.example", "relay.example", True),
        ("https://relay.example", "relay.example:443", True),
        ("http://Relay.Example", "relay.example:80", True),
        ("http://[::1]:8080", "[::1]:8080", True),
        ("https://relay.example", "relay.example:8443", False),
        ("http://127.0.0.1:8081", "127.0.0.1:8080", False),
        ("https://relay.example.evil", "relay.example", False),
        ("null", "relay.example", False),
        ("file://", "relay.example", False),
        ("https://relay.example/path", "relay.example", False),
    ],
)
def test_the_relays_own_origin_is_the_host_and_port_it_was_sent_to(
    origin: str, host: str, same: bool
) -> None:
    from progress_relay.http.cors import same_origin

    assert same_origin(origin, host) is same
