"""GET /v1/jobs: every job with its snapshot, newest first, paged by cursor, filtered by status,
behind publisher credentials; on both brokers."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from progress_relay.http.app import create_app
from tests.support.app import MakeClient, error_of, make_settings, publish

PUBLISHER = {"publish_tokens": ["pub-secret-token-1"]}


async def page(client: Any, query: str = "", **kwargs: Any) -> dict[str, Any]:
    response = await client.get(f"/v1/jobs{query}", **kwargs)
    assert response.status == 200, await response.text()
    body: dict[str, Any] = await response.json()
    assert set(body) == {"jobs", "next_cursor"}
    return body


async def every_page(client: Any, query: str) -> tuple[list[str], int]:
    """Follow next_cursor to the end: the ids in order and how many pages it took."""
    ids: list[str] = []
    pages = 0
    cursor = None
    while True:
        suffix = f"&cursor={cursor}" if cursor else ""
        body = await page(client, f"{query}{suffix}")
        pages += 1
        ids += [job["id"] for job in body["jobs"]]
        cursor = body["next_cursor"]
        if cursor is None:
            return ids, pages


async def make_jobs(client: Any, names: list[str]) -> None:
    for name in names:
        response = await client.post("/v1/jobs", json={"id": name})
        assert response.status == 201, await response.text()


async def test_lists_jobs_newest_first_with_their_snapshots(client) -> None:
    await make_jobs(client, ["first", "second"])
    await publish(client, "second", "progress", {"percent": 40, "stage": "upload"})
    await publish(client, "by-publish", "log", {"message": "made by publishing"})
    body = await page(client)
    assert [job["id"] for job in body["jobs"]] == ["by-publish", "second", "first"]
    assert body["next_cursor"] is None
    second = body["jobs"][1]
    assert (second["status"], second["percent"], second["stage"]) == ("running", 40, "upload")
    assert body["jobs"][0]["logs"][0]["message"] == "made by publishing"
    assert body["jobs"][2]["status"] == "pending"


async def test_pages_cover_every_job_once_in_order(client) -> None:
    names = [f"job{i:02d}" for i in range(7)]
    await make_jobs(client, names)
    first = await page(client, "?limit=3")
    assert [job["id"] for job in first["jobs"]] == ["job06", "job05", "job04"]
    assert isinstance(first["next_cursor"], str)
    ids, pages = await every_page(client, "?limit=3")
    assert ids == names[::-1]
    assert pages == 3


async def test_a_page_that_ends_exactly_at_the_limit_says_there_is_no_more(client) -> None:
    await make_jobs(client, ["a", "b"])
    body = await page(client, "?limit=2")
    assert len(body["jobs"]) == 2 and body["next_cursor"] is None


async def test_filters_by_status_repeated_or_comma_separated(client) -> None:
    await make_jobs(client, ["waiting"])
    await publish(client, "busy", "progress", {"percent": 1})
    await publish(client, "done", "complete", {})
    await publish(client, "broken", "failed", {"message": "no"})
    assert (await every_page(client, "?status=running"))[0] == ["busy"]
    finished = (await every_page(client, "?status=completed,failed"))[0]
    assert finished == ["broken", "done"]
    assert (await every_page(client, "?status=pending&status=completed"))[0] == ["done", "waiting"]
    assert (await every_page(client, "?status=cancelled"))[0] == []


async def test_deleted_and_expired_jobs_are_not_listed(make_client: MakeClient) -> None:
    client = await make_client(jobs={"pending_ttl": 0.3}, reaper={"interval": 0.1})
    await make_jobs(client, ["keep-me", "delete-me", "expire-me"])
    await publish(client, "keep-me", "progress", {"percent": 5})
    assert (await client.delete("/v1/jobs/delete-me")).status == 204
    await asyncio.sleep(0.8)
    ids, _ = await every_page(client, "?limit=1")
    assert ids == ["keep-me"]


@pytest.mark.parametrize(
    ("query", "named"),
    [
        ("?status=done", "`status`"),
        ("?status=running,nope", "nope"),
        ("?limit=0", "`limit`"),
        ("?limit=1001", "`limit`"),
        ("?limit=x", "`limit`"),
        ("?cursor=abc", "`cursor`"),
        ("?cursor=-1", "`cursor`"),
    ],
)
async def test_bad_parameters_are_400_naming_them(client, query: str, named: str) -> None:
    response = await client.get(f"/v1/jobs{query}")
    assert named in await error_of(response, 400, "invalid_parameter")


async def test_needs_publisher_credentials_when_configured(make_client: MakeClient) -> None:
    client = await make_client(auth=PUBLISHER)
    headers = {"Authorization": "Bearer pub-secret-token-1"}
    assert (await client.post("/v1/jobs", json={"id": "x"}, headers=headers)).status == 201
    await error_of(await client.get("/v1/jobs"), 401, "unauthorized")
    wrong = {"Authorization": "Bearer not-the-token"}
    await error_of(await client.get("/v1/jobs", headers=wrong), 401, "unauthorized")
    body = await page(client, headers=headers)
    assert [job["id"] for job in body["jobs"]] == ["x"]


async def test_redis_bounds_the_work_of_one_page(
    aiohttp_client: Any, redis_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When few jobs match, a Redis page stops after reading a bounded number of jobs and hands
    on a cursor; following it still finds every match, in order."""
    monkeypatch.setattr("progress_relay.brokers.redis._LIST_SCAN", 3)
    broker = {"url": redis_server.url, "key_prefix": "list-scan:"}
    client = await aiohttp_client(create_app(make_settings(broker=broker)))
    await publish(client, "old-done", "complete", {})
    await make_jobs(client, [f"pending{i}" for i in range(8)])
    await publish(client, "new-done", "complete", {})
    first = await page(client, "?status=completed&limit=5")
    assert [job["id"] for job in first["jobs"]] == ["new-done"]
    assert first["next_cursor"] is not None
    ids, pages = await every_page(client, "?status=completed&limit=5")
    assert ids == ["new-done", "old-done"]
    assert pages > 1
