"""POST /v1/events on both brokers: events for many jobs in one request, each job's atomic and in
order; 207 with each job's outcome when some were refused; a bad body refused whole."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from progress_relay.wire.ids import parse_event_id
from tests.support.app import MakeClient, error_of, publish, stream_opener


def seqs(ids: list[str]) -> list[int]:
    return [p.seq for i in ids if (p := parse_event_id(i)) is not None]


def item(job: str, event: str, data: Any = None, key: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"job": job, "event": event}
    if data is not None:
        body["data"] = data
    if key is not None:
        body["key"] = key
    return body


async def test_events_of_several_jobs_are_published_in_order_per_job(client) -> None:
    events = [
        item("a", "progress", {"percent": 10}),
        item("b", "log", {"message": "b1"}),
        item("a", "log", {"message": "a2"}),
        item("c", "complete", {"result": 1}),
        item("b", "log", {"message": "b2"}),
    ]
    response = await client.post("/v1/events", json={"events": events})
    assert response.status == 200, await response.text()
    body = await response.json()
    assert [job["job"] for job in body["jobs"]] == ["a", "b", "c"]
    by_job = {job["job"]: job for job in body["jobs"]}
    assert all(set(job) == {"job", "ids", "cancel_requested"} for job in body["jobs"])
    assert [len(by_job[j]["ids"]) for j in "abc"] == [2, 2, 1]
    for job in "abc":
        history = await (await client.get(f"/v1/jobs/{job}/events")).json()
        assert [e["id"] for e in history["events"]] == by_job[job]["ids"]
    a_history = await (await client.get("/v1/jobs/a/events")).json()
    assert [e["event"] for e in a_history["events"]] == ["progress", "log"]
    assert seqs(by_job["a"]["ids"]) == sorted(seqs(by_job["a"]["ids"]))
    snapshot = await (await client.get("/v1/jobs/c")).json()
    assert snapshot["status"] == "completed"


async def test_subscribers_of_each_job_get_its_events(client) -> None:
    opener = stream_opener(client)
    async with opener("/v1/jobs/s1/stream") as (_, one), opener("/v1/jobs/s2/stream") as (_, two):
        events = [item("s1", "log", {"message": "x"}), item("s2", "log", {"message": "y"})]
        response = await client.post("/v1/events", json={"events": events})
        assert response.status == 200
        [frame1] = await one.events(1)
        [frame2] = await two.events(1)
    assert json.loads(frame1.data)["message"] == "x"
    assert json.loads(frame2.data)["message"] == "y"


async def test_a_retried_batch_is_published_once_with_its_first_ids(client) -> None:
    events = [
        item("r1", "log", {"message": "1"}, key="k1"),
        item("r2", "log", {"message": "2"}, key="k2"),
        item("r1", "log", {"message": "3"}, key="k3"),
    ]
    first = await (await client.post("/v1/events", json={"events": events})).json()
    again = await client.post("/v1/events", json={"events": events})
    assert again.status == 200
    assert (await again.json()) == first
    history = await (await client.get("/v1/jobs/r1/events")).json()
    assert len(history["events"]) == 2
    metrics = await (await client.get("/metrics")).text()
    assert "progress_relay_events_deduplicated_total 3" in metrics.replace(".0", "")


async def test_a_partly_retried_batch_publishes_only_the_new_events(client) -> None:
    await client.post("/v1/events", json={"events": [item("p1", "log", {"message": "1"}, "k1")]})
    events = [item("p1", "log", {"message": "1"}, "k1"), item("p1", "log", {"message": "2"}, "k2")]
    body = await (await client.post("/v1/events", json={"events": events})).json()
    [job] = body["jobs"]
    history = await (await client.get("/v1/jobs/p1/events")).json()
    assert [e["id"] for e in history["events"]] == job["ids"]


async def test_a_finished_job_is_refused_and_the_others_published(client) -> None:
    await publish(client, "done", "complete", {})
    events = [
        item("ok1", "log", {"message": "1"}),
        item("done", "log", {"message": "late"}),
        item("ok2", "log", {"message": "2"}),
    ]
    response = await client.post("/v1/events", json={"events": events})
    assert response.status == 207
    jobs = {job["job"]: job for job in (await response.json())["jobs"]}
    assert jobs["done"]["status"] == 409
    assert jobs["done"]["error"]["code"] == "job_finished"
    assert set(jobs["done"]) == {"job", "status", "error"}
    assert len(jobs["ok1"]["ids"]) == 1 and len(jobs["ok2"]["ids"]) == 1
    done = await (await client.get("/v1/jobs/done/events")).json()
    assert [e["event"] for e in done["events"]] == ["complete"]


async def test_cancel_requested_is_answered_per_job(client) -> None:
    await publish(client, "c1", "progress", {})
    await publish(client, "c2", "progress", {})
    assert (await client.post("/v1/jobs/c1/cancel")).status == 202
    events = [item("c1", "progress", {"percent": 5}), item("c2", "progress", {"percent": 5})]
    body = await (await client.post("/v1/events", json={"events": events})).json()
    flags = {job["job"]: job["cancel_requested"] for job in body["jobs"]}
    assert flags == {"c1": True, "c2": False}


async def test_a_job_past_max_jobs_is_refused_alone(make_client: MakeClient) -> None:
    client = await make_client(jobs={"max_jobs": 1})
    events = [item("first", "log", {"message": "1"}), item("second", "log", {"message": "2"})]
    response = await client.post("/v1/events", json={"events": events})
    assert response.status == 207
    jobs = {job["job"]: job for job in (await response.json())["jobs"]}
    assert jobs["second"]["error"]["code"] == "too_many_jobs"
    assert len(jobs["first"]["ids"]) == 1
    assert (await client.get("/v1/jobs/second")).status == 404


@pytest.mark.parametrize(
    ("body", "status", "code", "where"),
    [
        ({"events": []}, 422, "invalid_event", "$.events"),
        ({"events": [{"event": "log", "data": {"message": "x"}}]}, 422, "invalid_event", "job"),
        ({"events": [item("a", "log", {"message": 1})]}, 422, "invalid_event", "$.events[0].data"),
        ({"events": [item("a b", "log", {"message": "x"})]}, 400, "invalid_job_id", "[0].job"),
        ({"events": [{"job": 5, "event": "log"}]}, 422, "invalid_event", "$.events[0].job"),
        ({"events": "many"}, 422, "invalid_event", "$.events"),
        ([item("a", "log", {"message": "x"})], 422, "invalid_event", "object"),
        ({"events": [item("a", "reset")]}, 422, "invalid_event", "$.events[0].event"),
        ({"events": [{**item("a", "x", {"k": 1}), "bogus": 1}]}, 422, "invalid_event", "bogus"),
    ],
)
async def test_a_bad_body_is_refused_whole(client, body, status, code, where) -> None:
    if isinstance(body, dict) and isinstance(body["events"], list) and body["events"]:
        # A good event first: the bad one after it must keep it from being published.
        body = {"events": [item("untouched", "log", {"message": "first"}), *body["events"]]}
        where = where.replace("[0]", "[1]")
    response = await client.post("/v1/events", json=body)
    message = await error_of(response, status, code)
    assert where in message
    assert (await client.get("/v1/jobs/untouched")).status == 404


async def test_a_terminal_event_followed_by_another_of_its_job_is_refused_whole(client) -> None:
    events = [
        item("t", "complete", {}),
        item("u", "log", {"message": "1"}),
        item("t", "log", {"message": "after"}),
    ]
    message = await error_of(
        await client.post("/v1/events", json={"events": events}), 422, "invalid_event"
    )
    assert "$.events[0]" in message
    assert (await client.get("/v1/jobs/u")).status == 404


async def test_too_many_events_are_refused_whole(make_client: MakeClient) -> None:
    client = await make_client(limits={"max_batch_events": 3})
    events = [item(f"j{i}", "log", {"message": "x"}) for i in range(4)]
    message = await error_of(
        await client.post("/v1/events", json={"events": events}), 413, "payload_too_large"
    )
    assert "limits.max_batch_events" in message
    assert (await client.get("/v1/jobs/j0")).status == 404


async def test_too_deep_json_is_refused_whole(make_client: MakeClient) -> None:
    client = await make_client(limits={"max_json_depth": 8})
    deep: Any = 1
    for _ in range(10):
        deep = [deep]
    events = [item("d0", "log", {"message": "x"}), item("d1", "x", {"v": deep})]
    response = await client.post("/v1/events", json={"events": events})
    await error_of(response, 400, "json_too_deep")
    assert (await client.get("/v1/jobs/d0")).status == 404


async def test_a_key_twice_for_one_job_is_refused_and_for_two_jobs_allowed(client) -> None:
    twice = [item("k", "log", {"message": "1"}, "same"), item("k", "log", {"message": "2"}, "same")]
    message = await error_of(
        await client.post("/v1/events", json={"events": twice}), 422, "invalid_event"
    )
    assert "$.events[1].key" in message
    apart = [
        item("k1", "log", {"message": "1"}, "same"),
        item("k2", "log", {"message": "2"}, "same"),
    ]
    assert (await client.post("/v1/events", json={"events": apart})).status == 200


async def test_publisher_credentials_are_needed(make_client: MakeClient) -> None:
    client = await make_client(auth={"publish_tokens": ["secret"]})
    events = [item("cred", "log", {"message": "1"})]
    await error_of(await client.post("/v1/events", json={"events": events}), 401, "unauthorized")
    response = await client.post(
        "/v1/events", json={"events": events}, headers={"Authorization": "Bearer secret"}
    )
    assert response.status == 200


async def test_the_publish_rate_counts_a_request_once(make_client: MakeClient) -> None:
    client = await make_client(limits={"publish_rate": 0.1, "publish_burst": 1})
    events = [item(f"rate{i}", "log", {"message": "1"}) for i in range(3)]
    assert (await client.post("/v1/events", json={"events": events})).status == 200
    await error_of(await client.post("/v1/events", json={"events": events}), 429, "rate_limited")


async def test_concurrent_requests_keep_each_jobs_order(client) -> None:
    jobs = [f"o{i}" for i in range(5)]

    async def send(round_: int) -> list[dict[str, Any]]:
        events = [item(job, "log", {"message": f"{round_}.{n}"}) for job in jobs for n in range(3)]
        response = await client.post("/v1/events", json={"events": events})
        assert response.status == 200
        return list((await response.json())["jobs"])

    answers = await asyncio.gather(*(send(r) for r in range(10)))
    for job in jobs:
        history = await (await client.get(f"/v1/jobs/{job}/events")).json()
        messages = [e["data"]["message"] for e in history["events"]]
        assert len(messages) == 30
        # Each request's three events of the job are together and in order.
        for start in range(0, 30, 3):
            round_ = messages[start].split(".")[0]
            assert messages[start : start + 3] == [f"{round_}.{n}" for n in range(3)]
        ids = [e["id"] for e in history["events"]]
        assert seqs(ids) == sorted(seqs(ids))
        published = [i for answer in answers for j in answer if j["job"] == job for i in j["ids"]]
        assert sorted(published) == sorted(ids)
