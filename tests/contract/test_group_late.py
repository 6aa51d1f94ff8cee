"""A group's stream and children created after it opened (issue 19): the stream takes each new
child up, live, its events once and in id order, and a resume by last id stays exact. The late
and early edges: a stream opened before any child, a child finished before the stream, a child
created twice, a child of a finished parent. On both brokers, and across two relays on Redis."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient

from progress_relay.http.app import create_app
from progress_relay.http.keys import HUB
from tests.support.app import MakeClient, make_settings, publish, publish_many, stream_opener
from tests.support.sse_client import Frame

GROUP = "/v1/jobs/{}/stream?children=true"


async def _create(client: Any, body: dict[str, Any], status: int = 201) -> dict[str, Any]:
    response = await client.post("/v1/jobs", json=body)
    assert response.status == status, await response.text()
    found: dict[str, Any] = await response.json()
    return found


def _seen(frames: list[Frame]) -> list[tuple[str, str]]:
    return [(frame.json["job"], frame.event) for frame in frames]


def _seqs(frames: list[Frame]) -> list[int]:
    return [int(frame.id.rsplit("-", 1)[1]) for frame in frames if frame.id]


async def test_a_child_created_after_the_stream_opened_is_followed_live(client) -> None:
    await _create(client, {"id": "b", "children": [{"id": "b-0"}]})
    await publish(client, "b-0", "progress", {"percent": 10})
    async with stream_opener(client)(GROUP.format("b") + "&replay=none") as (_, reader):
        await _create(client, {"id": "b-new", "parent": "b"})
        [joined] = await reader.events(1)  # the parent's event announcing it
        assert _seen([joined]) == [("b", "progress")]
        assert joined.json["data"]["group"]["total"] == 2
        await publish(client, "b-new", "progress", {"percent": 50})
        await publish(client, "b-new", "complete", {})
        await publish(client, "b-0", "complete", {})
        frames = [joined, *await reader.until_end()]
    assert _seen(frames) == [
        ("b", "progress"),
        ("b-new", "progress"),
        ("b", "progress"),
        ("b-new", "complete"),
        ("b", "progress"),
        ("b-0", "complete"),
        ("b", "progress"),
        ("b", "complete"),
    ]
    assert frames[1].json["data"]["percent"] == 50
    seqs = _seqs(frames)
    assert seqs == sorted(set(seqs))  # once each, in id order


async def test_a_stream_opened_before_any_child_takes_up_the_first(client) -> None:
    await _create(client, {"id": "e"})
    async with stream_opener(client)(GROUP.format("e")) as (_, reader):
        await _create(client, {"id": "e-0", "parent": "e"})
        await publish(client, "e-0", "progress", {"percent": 30})
        await publish(client, "e-0", "complete", {})
        frames = await reader.until_end()
    assert _seen(frames) == [
        ("e-0", "progress"),
        ("e", "progress"),
        ("e-0", "complete"),
        ("e", "progress"),
        ("e", "complete"),
    ]
    seqs = _seqs(frames)
    assert seqs == sorted(set(seqs))


async def test_a_resume_after_a_late_child_is_exact(client) -> None:
    await _create(client, {"id": "r", "children": [{"id": "r-0"}]})
    await publish(client, "r-0", "progress", {"percent": 10})
    async with stream_opener(client)(GROUP.format("r") + "&replay=none") as (_, reader):
        await _create(client, {"id": "r-new", "parent": "r"})
        await publish(client, "r-new", "progress", {"percent": 20})
        first = await reader.events(2)  # the announcement, then r-new's progress
    assert _seen(first) == [("r", "progress"), ("r-new", "progress")]
    await publish(client, "r-new", "log", {"message": "missed"})
    await publish(client, "r-new", "complete", {})
    await publish(client, "r-0", "complete", {})
    headers = {"Last-Event-ID": first[-1].id}
    async with stream_opener(client)(GROUP.format("r"), headers=headers) as (_, reader):
        rest = await reader.until_end()
    seen = _seen([*first, *rest])
    assert seen == [
        ("r", "progress"),
        ("r-new", "progress"),
        ("r", "progress"),  # the parent's count of r-new's progress
        ("r-new", "log"),
        ("r-new", "complete"),
        ("r", "progress"),
        ("r-0", "complete"),
        ("r", "progress"),
        ("r", "complete"),
    ]
    assert len({f.id for f in [*first, *rest]}) == len(seen)  # nothing twice


async def test_a_resume_from_before_the_child_existed_gets_all_of_it(client) -> None:
    await _create(client, {"id": "o", "children": [{"id": "o-0"}]})
    await publish(client, "o-0", "progress", {"percent": 10})
    async with stream_opener(client)(GROUP.format("o")) as (_, reader):
        first = await reader.events(2)
    await _create(client, {"id": "o-new", "parent": "o"})
    await publish(client, "o-new", "progress", {"percent": 70})
    headers = {"Last-Event-ID": first[-1].id}
    async with stream_opener(client)(GROUP.format("o"), headers=headers) as (_, reader):
        rest = await reader.events(3)
    assert _seen(rest) == [("o", "progress"), ("o-new", "progress"), ("o", "progress")]


async def test_a_late_child_whose_history_was_trimmed_is_taken_up_by_its_reset(
    make_client: MakeClient,
) -> None:
    client = await make_client(jobs={"ring_events": 2})
    await _create(client, {"id": "k"})
    async with stream_opener(client)(GROUP.format("k")) as (_, reader):
        await _create(client, {"id": "k-0", "parent": "k"})
        # Three events at once: the parent's count follows them, and history keeps two.
        logs = [("log", {"message": f"line {n}"}) for n in range(3)]
        await publish_many(client, "k-0", [("progress", {"percent": 40}), *logs])
        frames = await reader.events(2)
        assert _seen(frames) == [("k-0", "reset"), ("k", "progress")]
        reset = frames[0]
        assert reset.id is None  # it promises nothing about the other jobs
        assert (reset.json["data"]["id"], reset.json["data"]["percent"]) == ("k-0", 40)
        live = await publish(client, "k-0", "complete", {})
        rest = await reader.until_end()
    assert _seen(rest) == [("k-0", "complete"), ("k", "progress"), ("k", "complete")]
    assert rest[0].id == live


async def test_a_child_that_joined_while_the_stream_opened_is_taken_up(client) -> None:
    """The route read the parent's children before this child joined, the Hub's replay after:
    the open itself takes the child up."""
    await _create(client, {"id": "j", "children": [{"id": "j-0"}]})
    await publish(client, "j-0", "progress", {"percent": 10})
    await _create(client, {"id": "j-1", "parent": "j"})
    await publish(client, "j-1", "log", {"message": "early"})
    hub = client.app[HUB]
    subscriber = await hub.open(["j", "j-0"], None, "history", multi=True, group=True)
    assert subscriber is not None
    try:
        received = b""
        while b'"job":"j-1"' not in received:
            chunk = await asyncio.wait_for(subscriber.next_chunk(), 5)
            assert chunk is not None
            received += chunk
        assert "j-1" in subscriber.job_ids
        assert received.count(b'"early"') == 1
    finally:
        hub.close(subscriber)
    assert hub.subscriber_count("j-1") == 0


async def test_a_child_finished_before_the_stream_opened_is_replayed(client) -> None:
    await _create(client, {"id": "f", "children": [{"id": "f-0"}]})
    await publish(client, "f-0", "progress", {"percent": 10})
    await _create(client, {"id": "f-1", "parent": "f"})
    await publish(client, "f-1", "complete", {})
    async with stream_opener(client)(GROUP.format("f")) as (_, reader):
        frames = await reader.events(5)
        assert _seen(frames) == [
            ("f-0", "progress"),
            ("f", "progress"),
            ("f", "progress"),  # f-1 joined
            ("f-1", "complete"),
            ("f", "progress"),
        ]
        await publish(client, "f-0", "complete", {})
        frames += await reader.until_end()
    seen = _seen(frames)
    assert seen.count(("f-1", "complete")) == 1
    assert seen[-2:] == [("f", "progress"), ("f", "complete")]
    seqs = _seqs(frames)
    assert seqs == sorted(set(seqs))


async def test_a_child_created_twice_joins_once(client) -> None:
    await _create(client, {"id": "t", "children": [{"id": "t-0"}]})
    await publish(client, "t-0", "progress", {"percent": 10})
    async with stream_opener(client)(GROUP.format("t") + "&replay=none") as (_, reader):
        await _create(client, {"id": "t-1", "parent": "t"})
        await _create(client, {"id": "t-1", "parent": "t"}, status=200)
        await publish(client, "t-1", "complete", {})
        await publish(client, "t-0", "complete", {})
        frames = await reader.until_end()
    seen = _seen(frames)
    assert seen.count(("t-1", "complete")) == 1
    assert seen[0] == ("t", "progress")  # one announcement: the second create changed nothing
    assert seen[1] == ("t-1", "complete")
    parent = await (await client.get("/v1/jobs/t")).json()
    assert parent["group"]["total"] == 2


async def test_a_child_of_a_finished_parent_is_refused(client) -> None:
    await _create(client, {"id": "d", "children": [{"id": "d-0"}]})
    await publish(client, "d-0", "complete", {})
    response = await client.post("/v1/jobs", json={"id": "d-1", "parent": "d"})
    assert (response.status, (await response.json())["error"]["code"]) == (409, "job_finished")
    assert (await client.get("/v1/jobs/d-1")).status == 404
    parent = await (await client.get("/v1/jobs/d")).json()
    assert (parent["status"], parent["group"]["total"]) == ("completed", 1)


async def test_two_relays_on_redis_the_stream_takes_up_a_child_made_on_the_other(
    aiohttp_client: Any, redis_server: Any
) -> None:
    broker = {"url": redis_server.url, "key_prefix": f"late{uuid.uuid4().hex[:8]}:"}
    relays: list[TestClient[Any, web.Application]] = [
        await aiohttp_client(create_app(make_settings(broker=broker))) for _ in range(2)
    ]
    holding, other = relays
    await _create(other, {"id": "x", "children": [{"id": "x-0"}]})
    await publish(other, "x-0", "progress", {"percent": 10})
    async with stream_opener(holding)(GROUP.format("x") + "&replay=none") as (_, reader):
        await _create(other, {"id": "x-new", "parent": "x"})
        await publish(other, "x-new", "progress", {"percent": 40})
        await publish(other, "x-new", "complete", {})
        await publish(other, "x-0", "complete", {})
        frames = await reader.until_end()
    seen = _seen(frames)
    assert seen[:2] == [("x", "progress"), ("x-new", "progress")]
    assert seen.count(("x-new", "complete")) == 1
    assert seen[-1] == ("x", "complete")
    seqs = _seqs(frames)
    assert seqs == sorted(set(seqs))
