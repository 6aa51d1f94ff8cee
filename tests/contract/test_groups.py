"""Groups: a parent created with its children (or a child with its parent), the aggregate in
the parent's snapshot and events, its end, cancel as one, the group stream, bad input. On both
brokers."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from progress_relay.http.keys import REAPER
from tests.support.app import MakeClient, publish, stream_opener

SHORT = 0.2


async def _create(client: Any, body: dict[str, Any], status: int = 201) -> dict[str, Any]:
    response = await client.post("/v1/jobs", json=body)
    assert response.status == status, await response.text()
    found: dict[str, Any] = await response.json()
    return found


async def _snapshot(client: Any, job_id: str) -> dict[str, Any]:
    response = await client.get(f"/v1/jobs/{job_id}")
    assert response.status == 200, await response.text()
    found: dict[str, Any] = await response.json()
    return found


async def _batch(client: Any, job_id: str, count: int, **extra: Any) -> dict[str, Any]:
    children = [{"id": f"{job_id}-{i}", **extra} for i in range(count)]
    return await _create(client, {"id": job_id, "children": children})


async def test_a_parent_created_with_children_links_them_in_order(client) -> None:
    created = await _create(client, {"id": "b", "children": [{"id": "b1"}, {"weight": 3}, {}]})
    links = created["children"]
    assert links[0]["id"] == "b1"
    assert all(link["stream_url"] == f"/v1/jobs/{link['id']}/stream" for link in links)
    parent = await _snapshot(client, "b")
    assert parent["parent"] is None
    assert parent["status"] == "pending"
    ids = [link["id"] for link in links]
    assert parent["group"] == {
        "children": ids,
        "counts": {"pending": 3, "running": 0, "completed": 0, "failed": 0, "cancelled": 0},
        "total": 3,
        "failed": [],
    }
    child = await _snapshot(client, ids[1])
    assert (child["parent"], child["weight"]) == ("b", 3)
    assert "group" not in child


async def test_the_parent_aggregates_weighted_percent_and_counts(client) -> None:
    await _create(client, {"id": "w", "children": [{"id": "w1", "weight": 3}, {"id": "w2"}]})
    await publish(client, "w1", "progress", {"percent": 50})
    parent = await _snapshot(client, "w")
    assert parent["status"] == "running"
    assert parent["percent"] == 37.5  # (50 * 3 + 0 * 1) / 4
    assert parent["group"]["counts"]["running"] == 1
    assert parent["message"] == "0 of 2 done"
    await publish(client, "w2", "complete", {})
    parent = await _snapshot(client, "w")
    assert parent["percent"] == 62.5
    assert parent["message"] == "1 of 2 done"
    assert parent["group"]["counts"]["completed"] == 1


async def test_the_parent_completes_when_every_child_has(client) -> None:
    await _batch(client, "c", 2)
    async with stream_opener(client)("/v1/jobs/c/stream?replay=none") as (_, reader):
        await publish(client, "c-0", "complete", {})
        await publish(client, "c-1", "complete", {})
        frames = await reader.until_end()  # it ends after the parent's terminal event
        assert [f.event for f in frames] == ["progress", "progress", "complete"]
        assert frames[1].json["group"]["counts"]["completed"] == 2
        assert frames[1].json["message"] == "2 of 2 done"
        assert frames[2].json == {"result": {"children": 2}}
    parent = await _snapshot(client, "c")
    assert (parent["status"], parent["percent"]) == ("completed", 100)


async def test_a_failed_child_fails_the_parent_with_its_id(client) -> None:
    await _batch(client, "f", 3)
    await publish(client, "f-0", "complete", {})
    await publish(client, "f-1", "failed", {"message": "bad file"})
    await publish(client, "f-2", "cancelled", {})
    parent = await _snapshot(client, "f")
    assert parent["status"] == "failed"
    assert parent["error"]["code"] == "child_failed"
    assert parent["error"]["details"] == {"failed": ["f-1"]}
    assert parent["group"]["failed"] == ["f-1"]


async def test_a_cancelled_child_without_failures_cancels_the_parent(client) -> None:
    await _batch(client, "x", 2)
    await publish(client, "x-0", "complete", {})
    await publish(client, "x-1", "cancelled", {})
    assert (await _snapshot(client, "x"))["status"] == "cancelled"


async def test_a_publisher_may_end_the_parent_first(client) -> None:
    await _batch(client, "e", 2)
    await publish(client, "e-0", "progress", {"percent": 10})
    await publish(client, "e", "complete", {"message": "good enough"})
    await publish(client, "e-0", "complete", {})  # the children go on; the parent stays ended
    parent = await _snapshot(client, "e")
    assert (parent["status"], parent["message"]) == ("completed", "good enough")
    assert parent["group"]["counts"]["completed"] == 1


async def test_a_child_created_with_its_parent_joins_the_group(client) -> None:
    await _create(client, {"id": "p"})
    await _create(client, {"id": "p1", "parent": "p", "weight": 2})
    await _create(client, {"id": "p1", "parent": "p"}, status=200)  # idempotent
    assert (await _snapshot(client, "p"))["group"]["children"] == ["p1"]


async def test_cancel_on_the_parent_reaches_every_unfinished_child(client) -> None:
    await _batch(client, "k", 3)
    await publish(client, "k-0", "complete", {})
    response = await client.post("/v1/jobs/k/cancel")
    assert response.status == 202, await response.text()
    assert (await _snapshot(client, "k"))["cancel_requested"] is True
    assert (await _snapshot(client, "k-0"))["cancel_requested"] is False  # finished
    for child in ("k-1", "k-2"):
        response = await client.post(
            f"/v1/jobs/{child}/events", json={"event": "progress", "data": {"percent": 5}}
        )
        assert (await response.json())["cancel_requested"] is True


async def test_deleting_the_parent_deletes_its_children(client) -> None:
    await _batch(client, "d", 2)
    response = await client.delete("/v1/jobs/d")
    assert response.status == 204
    for job_id in ("d", "d-0", "d-1"):
        assert (await client.get(f"/v1/jobs/{job_id}")).status == 404


async def test_the_group_stream_wraps_every_frame_and_ends_with_the_parent(client) -> None:
    await _batch(client, "s", 2)
    async with stream_opener(client)("/v1/jobs/s/stream?children=true&replay=none") as (_, reader):
        await publish(client, "s-0", "progress", {"percent": 50})
        await publish(client, "s-0", "complete", {})
        await publish(client, "s-1", "complete", {})
        frames = await reader.until_end()  # ends after the parent's terminal event
    jobs = [(frame.json["job"], frame.event) for frame in frames]
    assert (
        jobs
        == [
            ("s-0", "progress"),
            ("s", "progress"),
            ("s-0", "complete"),
            ("s", "progress"),
            ("s-1", "complete"),
            ("s", "progress"),
            ("s", "complete"),
        ][: len(jobs)]
    )
    assert jobs[-1] == ("s", "complete")
    ids = [frame.id for frame in frames]
    assert ids == sorted(ids, key=lambda i: int(i.rsplit("-", 1)[1]))


async def test_a_group_stream_resumed_midway_gets_exactly_the_rest(client) -> None:
    await _batch(client, "r", 3)
    await publish(client, "r-0", "complete", {})
    async with stream_opener(client)("/v1/jobs/r/stream?children=true") as (_, reader):
        first = await reader.events(2)  # r-0's complete, then r's progress
    await publish(client, "r-1", "complete", {})
    await publish(client, "r-2", "complete", {})
    headers = {"Last-Event-ID": first[-1].id}
    async with stream_opener(client)("/v1/jobs/r/stream?children=true", headers=headers) as (
        _,
        reader,
    ):
        rest = await reader.until_end()
    seen = [(f.json["job"], f.event) for f in [*first, *rest]]
    assert seen == [
        ("r-0", "complete"),
        ("r", "progress"),
        ("r-1", "complete"),
        ("r", "progress"),
        ("r-2", "complete"),
        ("r", "progress"),
        ("r", "complete"),
    ]
    assert len({f.id for f in [*first, *rest]}) == len(seen)  # nothing twice


async def test_a_hundred_child_group(client) -> None:
    await _batch(client, "h", 100)
    await asyncio.gather(*(publish(client, f"h-{i}", "complete", {}) for i in range(100)))
    parent = await _snapshot(client, "h")
    assert (parent["status"], parent["percent"]) == ("completed", 100)
    assert parent["group"]["counts"]["completed"] == 100


async def test_bad_group_input_is_refused_and_changes_nothing(make_client: MakeClient) -> None:
    client = await make_client(limits={"max_children": 3})
    response = await client.post("/v1/jobs", json={"id": "u", "parent": "nobody"})
    assert (response.status, (await response.json())["error"]["code"]) == (404, "job_not_found")
    assert (await client.get("/v1/jobs/u")).status == 404
    response = await client.post("/v1/jobs", json={"children": [{}, {}, {}, {}]})
    assert (response.status, (await response.json())["error"]["code"]) == (
        413,
        "too_many_children",
    )
    await _batch(client, "g", 3)
    response = await client.post("/v1/jobs", json={"id": "g4", "parent": "g"})
    assert (await response.json())["error"]["code"] == "too_many_children"
    response = await client.post("/v1/jobs", json={"id": "deep", "parent": "g-0"})
    assert (response.status, (await response.json())["error"]["code"]) == (422, "group_too_deep")
    assert (await client.get("/v1/jobs/deep")).status == 404
    await _create(client, {"id": "done"})
    await publish(client, "done", "complete", {})
    response = await client.post("/v1/jobs", json={"id": "late", "parent": "done"})
    assert (response.status, (await response.json())["error"]["code"]) == (409, "job_finished")
    # A job's parent is set once: joining a group later (which could close a cycle) is refused.
    response = await client.post("/v1/jobs", json={"id": "g", "parent": "done"})
    assert response.status == 409
    await _create(client, {"id": "lone"})
    await _create(client, {"id": "q"})
    response = await client.post("/v1/jobs", json={"id": "lone", "parent": "q"})
    assert (response.status, (await response.json())["error"]["code"]) == (409, "group_conflict")
    response = await client.post("/v1/jobs", json={"id": "q", "parent": "q"})
    assert (await response.json())["error"]["code"] == "group_conflict"
    response = await client.post("/v1/jobs", json={"id": "z", "children": [{"weight": 0}]})
    assert (response.status, (await response.json())["error"]["code"]) == (422, "invalid_body")
    assert "group" not in await _snapshot(client, "q")


async def test_two_instances_on_one_redis_agree_on_the_aggregate(
    make_client: MakeClient, broker: dict[str, Any]
) -> None:
    """Children's events through both instances at once (Redis: two relays; memory: one):
    every instance reads the same parent, and the parent ended once."""
    instances = 1 if broker["url"] == "memory://" else 2
    clients = [await make_client() for _ in range(instances)]
    await _batch(clients[0], "two", 20)
    async with stream_opener(clients[-1])("/v1/jobs/two/stream") as (_, reader):
        await asyncio.gather(
            *(
                publish(clients[i % instances], f"two-{i}", "progress", {"percent": 50})
                for i in range(20)
            )
        )
        await asyncio.gather(
            *(publish(clients[i % instances], f"two-{i}", "complete", {}) for i in range(20))
        )
        frames = await reader.until_end()
    assert [f.event for f in frames].count("complete") == 1
    assert frames[-1].event == "complete"
    assert frames[-2].json["group"]["counts"]["completed"] == 20
    parents = [await _snapshot(client, "two") for client in clients]
    for parent in parents:
        assert (parent["status"], parent["percent"]) == ("completed", 100)
        assert parent["group"] == parents[0]["group"]
        assert parent["group"]["counts"]["completed"] == 20


async def test_a_cancelled_group_ends_cancelled_as_one(client) -> None:
    await _batch(client, "cx", 3)
    await publish(client, "cx-0", "progress", {"percent": 30})
    assert (await client.post("/v1/jobs/cx/cancel")).status == 202
    for i in range(3):  # each worker learns it and stops
        await publish(client, f"cx-{i}", "cancelled", {})
    parent = await _snapshot(client, "cx")
    assert (parent["status"], parent["cancel_requested"]) == ("cancelled", True)
    assert parent["group"]["counts"]["cancelled"] == 3


@pytest.mark.memory_only  # Redis expires each key itself; the memory broker's reaper evicts
async def test_the_reaper_evicts_a_group_as_one(make_client: MakeClient) -> None:
    client = await make_client(
        jobs={"finished_ttl": SHORT, "idle_ttl": 3600.0}, reaper={"interval": 3600.0}
    )
    reaper = client.app[REAPER]
    await _batch(client, "ev", 2)
    await publish(client, "ev-0", "complete", {})
    await publish(client, "ev-1", "progress", {"percent": 10})
    await asyncio.sleep(SHORT * 1.5)
    await reaper.sweep()
    assert (await client.get("/v1/jobs/ev-0")).status == 200  # lives as long as its parent
    async with stream_opener(client)("/v1/jobs/ev-1/stream?replay=none") as (_, reader):
        await publish(client, "ev-1", "complete", {})
        await reader.until_end()
    await asyncio.sleep(SHORT * 1.5)
    await reaper.sweep()
    for job_id in ("ev", "ev-0", "ev-1"):
        assert (await client.get(f"/v1/jobs/{job_id}")).status == 404


@pytest.mark.memory_only
async def test_an_evicted_parent_ends_its_childrens_streams(make_client: MakeClient) -> None:
    client = await make_client(jobs={"pending_ttl": SHORT}, reaper={"interval": 3600.0})
    await _batch(client, "gone", 2)
    async with stream_opener(client)("/v1/jobs/gone-1/stream") as (_, reader):
        await asyncio.sleep(SHORT * 1.5)
        await client.app[REAPER].sweep()
        [failed] = await reader.until_end()
    assert (failed.event, failed.json["code"]) == ("failed", "job_not_found")
    assert (await client.get("/v1/jobs/gone-0")).status == 404


async def test_a_group_stream_of_an_unknown_job_is_404(client) -> None:
    response = await client.get("/v1/jobs/nope/stream?children=true")
    assert (response.status, (await response.json())["error"]["code"]) == (404, "job_not_found")
    response = await client.get("/v1/jobs/nope/stream?children=maybe")
    assert response.status == 400


async def test_a_group_stream_reset_is_one_frame_with_every_child(client) -> None:
    await _batch(client, "gr", 2)
    await publish(client, "gr-0", "progress", {"percent": 40})
    await publish(client, "gr-0", "content", {"text": "hello"})
    async with stream_opener(client)("/v1/jobs/gr/stream?children=true&replay=snapshot") as (
        _,
        reader,
    ):
        [reset] = await reader.events(1)
        assert reset.event == "reset"
        body = reset.json
        assert body["job"] == "gr"
        assert body["data"]["id"] == "gr"
        assert body["data"]["group"]["counts"]["running"] == 1
        assert [child["id"] for child in body["children"]] == ["gr-0", "gr-1"]
        assert body["children"][0]["percent"] == 40
        assert "content" not in body["children"][0]  # the child's own stream has its text
        live = await publish(client, "gr-1", "complete", {})
        [frame] = await reader.events(1)
        assert (frame.id, frame.json["job"]) == (live, "gr-1")
    # Its id is a position: resuming from it is exact.
    async with stream_opener(client)(
        "/v1/jobs/gr/stream?children=true", headers={"Last-Event-ID": reset.id}
    ) as (_, reader):
        frames = await reader.events(2)
    assert [(f.json["job"], f.event) for f in frames] == [("gr-1", "complete"), ("gr", "progress")]
    # An id of another life of the relay: the group's reset again, one frame.
    async with stream_opener(client)(
        "/v1/jobs/gr/stream?children=true", headers={"Last-Event-ID": "other-5"}
    ) as (_, reader):
        [again] = await reader.events(1)
    assert again.event == "reset"
    assert again.json["data"]["group"]["counts"]["completed"] == 1


async def test_a_child_finished_early_lives_as_long_as_its_parent(make_client: MakeClient) -> None:
    """On both brokers: the memory broker's reaper leaves it, Redis's keys take the parent's
    expiry; so the parent never counts a finished child as gone."""
    client = await make_client(
        jobs={"finished_ttl": 0.5, "idle_ttl": 3600.0}, reaper={"interval": 3600.0}
    )
    await _batch(client, "early", 2)
    await publish(client, "early-0", "complete", {})
    await publish(client, "early-1", "progress", {"percent": 10})
    await asyncio.sleep(0.8)
    await client.app[REAPER].sweep()
    assert (await _snapshot(client, "early-0"))["status"] == "completed"
    await publish(client, "early-1", "complete", {})
    parent = await _snapshot(client, "early")
    assert (parent["status"], parent["group"]["counts"]["completed"]) == ("completed", 2)


async def test_a_cross_job_batch_to_children_regroups_their_parent(client) -> None:
    await _batch(client, "xb", 2)
    body = {
        "events": [
            {"job": "xb-0", "event": "complete"},
            {"job": "xb-1", "event": "progress", "data": {"percent": 50}},
        ]
    }
    response = await client.post("/v1/events", json=body)
    assert response.status == 200, await response.text()
    parent = await _snapshot(client, "xb")
    assert (parent["percent"], parent["group"]["counts"]["completed"]) == (75, 1)
