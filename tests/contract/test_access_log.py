"""The access log: one line per request; in JSON mode one object with the request's fields."""

from __future__ import annotations

import re
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from progress_relay.http.app import create_app
from progress_relay.ops.access_log import RedactingAccessLogger
from tests.support.app import make_settings
from tests.support.logs import captured
from tests.support.sse_client import SSEReader

pytestmark = pytest.mark.memory_only  # the log does not depend on the broker

FIELDS = {
    "time", "level", "logger", "message", "method", "route", "path", "status", "duration_ms",
    "bytes", "client", "request_id", "user_agent", "referer",
}  # fmt: skip
PUBLISHER = "pub-secret-value"
LOG = {"event": "log", "data": {"message": "x"}}


@pytest.fixture
async def relay(aiohttp_client: Any) -> TestClient[Any, web.Application]:
    """A relay served with the access logger of `progress-relay serve`."""
    server = TestServer(create_app(make_settings(auth={"publish_tokens": [PUBLISHER]})))
    # As ops/server.py runs it (the test server's runner already cancels handlers).
    await server.start_server(access_log_class=RedactingAccessLogger)
    client: TestClient[Any, web.Application] = await aiohttp_client(server)
    return client


AUTH = {"Authorization": f"Bearer {PUBLISHER}"}


async def test_json_lines_carry_the_request_fields(relay: TestClient[Any, web.Application]) -> None:
    with captured() as log:
        body = {"event": "progress", "data": {"percent": 5}}
        published = await relay.post(
            "/v1/jobs/job-7/events?x=1", json=body, headers={**AUTH, "User-Agent": "worker/1"}
        )
        assert published.status == 200
        missing = await relay.get("/no/such/thing/job-7", headers={"X-Request-Id": "req-404"})
        assert missing.status == 404
        stream = await relay.get("/v1/jobs/job-7/stream", headers={"Referer": "http://app/p"})
        reader = SSEReader(stream)
        await reader.events(1)
        await relay.post("/v1/jobs/job-7/events", json={"event": "complete"}, headers=AUTH)
        await reader.until_end()
        await log.wait_for(4)
    lines = {line["request_id"]: line for line in log.json()}
    assert len(lines) == 4  # each request its own id
    for line in lines.values():
        assert set(line) == FIELDS, line
        assert line["logger"] == "aiohttp.access" and line["level"] == "INFO"
        assert line["client"] == "127.0.0.1"
        assert isinstance(line["duration_ms"], float) and line["duration_ms"] >= 0
        assert re.fullmatch(r"[A-Za-z0-9._:-]{1,128}", line["request_id"]), line

    post = lines[published.headers["X-Request-Id"]]
    assert post["route"] == "/v1/jobs/{job_id}/events"
    assert post["path"] == "/v1/jobs/job-7/events?x=1"
    assert post["user_agent"] == "worker/1"
    assert post["referer"] is None
    assert post["bytes"] > int(published.headers["Content-Length"])  # head included, as %b
    assert "POST /v1/jobs/job-7/events?x=1 HTTP/1.1" in post["message"]  # the familiar line

    not_found = lines["req-404"]
    assert not_found["route"] is None  # never the raw path: the field stays low-cardinality
    assert not_found["path"] == "/no/such/thing/job-7"
    assert missing.headers["X-Request-Id"] == "req-404"

    streamed = lines[stream.headers["X-Request-Id"]]
    assert streamed["route"] == "/v1/jobs/{job_id}/stream"
    assert streamed["referer"] == "http://app/p"
    assert streamed["bytes"] > 0


async def test_a_stream_the_client_closes_is_logged_too(
    relay: TestClient[Any, web.Application],
) -> None:
    """aiohttp writes no access line for a handler cancelled because its client went away; the
    relay does, since that is how most streams end."""
    with captured() as log:
        stream = await relay.get("/v1/jobs/job-8/stream", headers={"X-Request-Id": "tab-1"})
        assert stream.status == 200
        retry = await SSEReader(stream).next()
        assert retry is not None and retry.retry is not None
        stream.close()
        await log.wait_for(1)
    [line] = log.json()
    assert line["route"] == "/v1/jobs/{job_id}/stream" and line["status"] == 200
    assert line["request_id"] == "tab-1"
    assert line["bytes"] > 0  # the retry frame


async def test_credentials_never_reach_a_line_in_either_format(
    relay: TestClient[Any, web.Application],
) -> None:
    token = "eyJhbGciOiJIUzI1NiJ9.secret-subscriber.token"
    with captured() as log:
        await relay.post("/v1/jobs/job-9/events", json=LOG, headers=AUTH)
        await relay.post("/v1/jobs/job-9/events", json=LOG, headers={"Authorization": "Bearer x1"})
        await relay.get(f"/v1/jobs/job-9?token={token}&n=2")
        await relay.get(
            f"/v1/jobs/job-9?access_token={token}", headers={"Referer": f"http://a/?token={token}"}
        )
        await log.wait_for(4)
    text, json_lines = log.text(), log.json()
    assert len(text) == len(json_lines) == 4
    everything = "\n".join(text) + "\n" + repr(json_lines)
    for secret in (token, PUBLISHER, "x1", "Bearer"):
        assert secret not in everything
    paths = [line["path"] for line in json_lines]
    assert "/v1/jobs/job-9?token=***&n=2" in paths and "/v1/jobs/job-9?access_token=***" in paths
    assert "http://a/?token=***" in [line["referer"] for line in json_lines]


async def test_text_lines_keep_their_format_and_end_with_the_request_id(
    relay: TestClient[Any, web.Application],
) -> None:
    with captured() as log:
        await relay.get("/healthz?token=abc", headers={"X-Request-Id": "abc:123", "Referer": "r"})
        await log.wait_for(1)
    [line] = log.text()
    pattern = (
        r"\S+ \S+ INFO aiohttp\.access: 127\.0\.0\.1 \[\d\d/\w{3}/\d{4}:\d\d:\d\d:\d\d [+-]\d{4}\] "
        r'"GET /healthz\?token=\*\*\* HTTP/1\.1" 200 \d+ "r" "[^"]+" abc:123'
    )
    assert re.fullmatch(pattern, line), line
