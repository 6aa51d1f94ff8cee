"""Creating jobs and asking to cancel are rate-limited like publishes: a flood from one client
is 429 with Retry-After, and changes nothing."""

from __future__ import annotations

from tests.support.app import MakeClient, error_of, publish


async def test_creating_jobs_past_the_rate_is_429(make_client: MakeClient) -> None:
    client = await make_client(limits={"create_rate": 0.01, "create_burst": 3})
    for n in range(3):
        assert (await client.post("/v1/jobs", json={"id": f"c{n}"})).status == 201
    response = await client.post("/v1/jobs", json={"id": "c3"})
    message = await error_of(response, 429, "rate_limited")
    assert "limits.create_rate" in message
    assert int(response.headers["Retry-After"]) >= 1
    assert (await client.get("/v1/jobs/c3")).status == 404
    # Publishing has a bucket of its own.
    await publish(client, "c3", "progress", {"percent": 1})


async def test_cancel_requests_past_the_rate_are_429(make_client: MakeClient) -> None:
    client = await make_client(limits={"cancel_rate": 0.01, "cancel_burst": 2})
    for n in range(3):
        await publish(client, f"k{n}", "progress", {"percent": 1})
    for n in range(2):
        assert (await client.post(f"/v1/jobs/k{n}/cancel")).status == 202
    response = await client.post("/v1/jobs/k2/cancel")
    message = await error_of(response, 429, "rate_limited")
    assert "limits.cancel_rate" in message
    assert int(response.headers["Retry-After"]) >= 1
    snapshot = await (await client.get("/v1/jobs/k2")).json()
    assert snapshot["cancel_requested"] is False
