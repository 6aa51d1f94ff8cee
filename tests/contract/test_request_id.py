"""X-Request-Id: taken from the client when sane, else made; on every response."""

from __future__ import annotations

import re
from typing import Any

import pytest

from tests.support.app import MakeClient, stream_opener

pytestmark = pytest.mark.memory_only  # the request id does not depend on the broker

SANE = re.compile(r"[A-Za-z0-9._:-]{1,128}")
APP = "https://app.example.com"
LOG = {"event": "log", "data": {"message": "x"}}


async def test_a_sane_id_is_echoed_on_success_error_and_stream(make_client: MakeClient) -> None:
    client = await make_client(auth={"publish_tokens": ["t0k"]})
    open_stream = stream_opener(client)
    given = "Req-1.a_b:c-" + "x" * 116  # 128 characters
    cases: list[Any] = [
        await client.post(
            "/v1/jobs/r1/events",
            json=LOG,
            headers={"X-Request-Id": given, "Authorization": "Bearer t0k"},
        ),
        await client.post("/v1/jobs/r1/events", json={}, headers={"X-Request-Id": given}),  # 401
        await client.get("/nowhere", headers={"X-Request-Id": given}),  # 404
        await client.delete("/healthz", headers={"X-Request-Id": given}),  # 405
        await client.get("/v1/jobs/r1/stream?last_event_id=0-0", headers={"X-Request-Id": given}),
    ]
    assert [r.status for r in cases] == [200, 401, 404, 405, 200]
    for response in cases:
        assert response.headers["X-Request-Id"] == given, response
        response.close()
    async with open_stream("/v1/jobs/gone/stream", headers={"X-Request-Id": given}) as (r, _):
        assert r.status in (200, 204)
        assert r.headers["X-Request-Id"] == given


async def test_a_missing_id_is_made_fresh_for_each_request(client: Any) -> None:
    ids = [(await client.get("/healthz")).headers["X-Request-Id"] for _ in range(3)]
    assert len(set(ids)) == 3
    for made in ids:
        assert SANE.fullmatch(made), made


@pytest.mark.parametrize(
    "given",
    ["", "has space", "x" * 129, "semi;colon", "é", "a/b", "<script>", "a,b"],
)
async def test_an_insane_id_is_replaced_never_echoed(client: Any, given: str) -> None:
    response = await client.get("/healthz", headers={"X-Request-Id": given})
    assert response.status == 200
    made = response.headers["X-Request-Id"]
    assert made != given and SANE.fullmatch(made), made


async def test_browsers_may_read_the_id(make_client: MakeClient) -> None:
    client = await make_client(cors={"origins": [APP]})
    response = await client.get("/healthz", headers={"Origin": APP})
    exposed = [h.strip() for h in response.headers["Access-Control-Expose-Headers"].split(",")]
    assert "X-Request-Id" in exposed
