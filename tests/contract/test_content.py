"""A job's streamed text survives: the snapshot and every `reset` carry its `content` events'
text joined (the newest `jobs.content_bytes` bytes, cut at a character), consistent with the
reset's id, on both brokers; it goes with the job."""

from __future__ import annotations

import asyncio
from typing import Any

import redis.asyncio as redis
from aiohttp.test_utils import TestClient

from progress_relay.http.app import create_app
from tests.support.app import MakeClient, make_settings, publish, publish_many, stream_opener
from tests.support.sse_client import SSEReader

# Multi-byte text: 1-, 2-, 3- and 4-byte characters, so any cut by bytes can land inside one.
PIECES = ["Hello ", "w\u00f6rld", " \u20ac", "\U0001f600", "!\n", ""]


def texts(count: int) -> list[str]:
    return [f"{PIECES[i % len(PIECES)]}{i}" for i in range(count)]


def newest(text: str, bound: int) -> str:
    """The rule, independent of the relay's code: the longest suffix of at most ``bound`` bytes
    that starts with a whole character."""
    encoded = text.encode()
    start = max(0, len(encoded) - bound)
    while start < len(encoded) and (encoded[start] & 0xC0) == 0x80:
        start += 1
    return encoded[start:].decode()


async def publish_content(client: TestClient[Any, Any], job: str, pieces: list[str]) -> list[str]:
    ids: list[str] = []
    for start in range(0, len(pieces), 1000):  # limits.max_batch_events
        batch = [("content", {"text": text}) for text in pieces[start : start + 1000]]
        ids += await publish_many(client, job, batch)
    return ids


async def snapshot(client: TestClient[Any, Any], job: str) -> dict[str, Any]:
    response = await client.get(f"/v1/jobs/{job}")
    assert response.status == 200, await response.text()
    body: dict[str, Any] = await response.json()
    return body


async def live_texts(reader: SSEReader, until: str) -> list[str]:
    """The `text` of the live `content` frames up to and including the one with id ``until``."""
    found: list[str] = []
    while True:
        [frame] = await reader.events(1)
        if frame.event == "content":
            found.append(frame.json["text"])
        if frame.id == until:
            return found


async def test_the_snapshot_has_the_text_of_5000_content_events(client: TestClient) -> None:
    pieces = texts(5000)
    await publish(client, "llm", "progress", {"percent": 5, "stage": "writing"})
    await publish_content(client, "llm", pieces)
    body = await snapshot(client, "llm")
    assert body["content"] == "".join(pieces)
    assert body["content_truncated"] is False
    assert (body["status"], body["stage"]) == ("running", "writing")


async def test_a_job_without_content_has_empty_text(client: TestClient) -> None:
    await publish(client, "quiet", "progress", {"percent": 5})
    body = await snapshot(client, "quiet")
    assert (body["content"], body["content_truncated"]) == ("", False)
    created = await client.post("/v1/jobs", json={"id": "fresh"})
    assert created.status == 201
    body = await snapshot(client, "fresh")
    assert (body["status"], body["content"], body["content_truncated"]) == ("pending", "", False)


async def test_past_the_bound_the_newest_bytes_stay_from_a_character(
    make_client: MakeClient,
) -> None:
    client = await make_client(jobs={"content_bytes": 13})
    joined = ""
    for index, text in enumerate(texts(40)):
        await publish(client, "long", "content", {"text": text})
        joined += text
        body = await snapshot(client, "long")
        # after every event: never more than the bound, always the newest, whole characters
        assert body["content"] == newest(joined, 13), index
        assert body["content_truncated"] is (len(joined.encode()) > 13), index
    assert len(body["content"].encode()) <= 13
    assert body["content_truncated"] is True
    # one event larger than the bound: its own newest bytes
    await publish(client, "long", "content", {"text": "\U0001f600" * 10})
    body = await snapshot(client, "long")
    assert (body["content"], body["content_truncated"]) == ("\U0001f600" * 3, True)


async def test_a_fresh_stream_past_the_ring_gets_the_text_in_its_reset_then_live_content(
    make_client: MakeClient,
) -> None:
    client = await make_client()  # ring: the default 1,000 events
    pieces = texts(1100)
    await publish_content(client, "answer", pieces)
    async with stream_opener(client)("/v1/jobs/answer/stream") as (_, reader):
        [reset] = await reader.events(1)
        assert reset.event == "reset"
        assert reset.json["content"] == "".join(pieces)
        assert reset.json["content_truncated"] is False
        more = await publish_content(client, "answer", ["and ", "more"])
        follow = await live_texts(reader, more[-1])
    assert reset.json["content"] + "".join(follow) == "".join([*pieces, "and ", "more"])
    assert (await snapshot(client, "answer"))["content"] == "".join([*pieces, "and ", "more"])


async def test_a_resume_older_than_the_ring_gets_a_reset_with_the_text(
    make_client: MakeClient,
) -> None:
    client = await make_client(jobs={"ring_events": 5})
    pieces = texts(12)
    ids = await publish_content(client, "r", pieces)
    async with stream_opener(client)("/v1/jobs/r/stream", headers={"Last-Event-ID": ids[2]}) as (
        _,
        reader,
    ):
        [reset] = await reader.events(1)
        assert (reset.event, reset.id) == ("reset", ids[-1])
        assert reset.json["content"] == "".join(pieces)
        live = await publish(client, "r", "content", {"text": " end"})
        assert await live_texts(reader, live) == [" end"]
    # within the ring the missed events come instead, and no reset
    async with stream_opener(client)("/v1/jobs/r/stream", headers={"Last-Event-ID": ids[-2]}) as (
        _,
        reader,
    ):
        frames = await reader.events(2)
        assert [(f.event, f.json["text"]) for f in frames] == [
            ("content", pieces[-1]),
            ("content", " end"),
        ]


async def test_the_multi_job_reset_wraps_a_snapshot_with_the_text(client: TestClient) -> None:
    await publish_content(client, "m1", ["one ", "two"])
    await publish(client, "m2", "progress", {"percent": 1})
    path = "/v1/stream?job=m1&job=m2&replay=snapshot"
    async with stream_opener(client)(path) as (_, reader):
        frames = await reader.events(2)
    by_job = {frame.json["job"]: frame.json["data"] for frame in frames}
    assert {frame.event for frame in frames} == {"reset"}
    assert by_job["m1"]["content"] == "one two"
    assert (by_job["m2"]["content"], by_job["m2"]["content_truncated"]) == ("", False)


async def test_a_reset_taken_while_text_streams_is_continued_exactly(
    make_client: MakeClient,
) -> None:
    """Readers that join with `replay=snapshot` while a publisher streams: each gets a `reset`
    whose text is exactly that of the events up to its id, then every later event once, so its
    text ends as the whole text: no event applied twice or missed."""
    client = await make_client()
    pieces = texts(300)
    done = asyncio.Event()

    async def stream_text() -> str:
        ids: list[str] = []
        for start in range(0, len(pieces), 10):
            ids += await publish_content(client, "race", pieces[start : start + 10])
            await asyncio.sleep(0)
        done.set()
        return ids[-1]

    async def join_late(delay: int) -> str:
        for _ in range(delay):
            await asyncio.sleep(0)
        async with stream_opener(client)("/v1/jobs/race/stream?replay=snapshot") as (_, reader):
            [reset] = await reader.events(1)
            assert reset.event == "reset"
            await done.wait()
            last = (await snapshot(client, "race"))["last_event_id"]
            if reset.json["last_event_id"] == last:
                return str(reset.json["content"])
            return str(reset.json["content"]) + "".join(await live_texts(reader, last))

    await publish(client, "race", "content", {"text": ""})  # the job exists before any reader
    publisher = asyncio.create_task(stream_text())
    readers = await asyncio.gather(*(join_late(delay) for delay in range(0, 60, 6)))
    await publisher
    assert readers == ["".join(pieces)] * len(readers)


async def test_the_job_list_leaves_the_text_out(client: TestClient) -> None:
    await publish_content(client, "listed", ["a long ", "answer"])
    response = await client.get("/v1/jobs")
    assert response.status == 200
    [job] = [job for job in (await response.json())["jobs"] if job["id"] == "listed"]
    assert "content" not in job and "content_truncated" not in job
    assert job["status"] == "running"


async def test_the_text_goes_with_the_deleted_job(client: TestClient) -> None:
    await publish_content(client, "gone", ["old ", "text"])
    assert (await client.delete("/v1/jobs/gone")).status == 204
    assert (await client.get("/v1/jobs/gone")).status == 404
    await publish(client, "gone", "content", {"text": "new"})
    assert (await snapshot(client, "gone"))["content"] == "new"


async def test_the_text_goes_with_the_evicted_job(make_client: MakeClient) -> None:
    client = await make_client(jobs={"finished_ttl": 0.3}, reaper={"interval": 0.05})
    await publish_content(client, "evicted", ["old ", "text"])
    await publish(client, "evicted", "complete", {})
    assert (await snapshot(client, "evicted"))["content"] == "old text"
    for _ in range(100):
        if (await client.get("/v1/jobs/evicted")).status == 404:
            break
        await asyncio.sleep(0.05)
    assert (await client.get("/v1/jobs/evicted")).status == 404
    await publish(client, "evicted", "content", {"text": "new"})
    assert (await snapshot(client, "evicted"))["content"] == "new"


async def test_redis_keeps_the_text_under_the_jobs_key_and_lifetime(
    aiohttp_client: Any, redis_server: Any
) -> None:
    prefix = "content-keys:"
    broker = {"url": redis_server.url, "key_prefix": prefix}
    settings = make_settings(broker=broker, jobs={"finished_ttl": 0.5, "content_bytes": 8})
    client = await aiohttp_client(create_app(settings))
    connection = redis.Redis.from_url(redis_server.url)
    key = f"{prefix}job:k:c"
    try:
        await publish_content(client, "k", ["abcdef", "ghij"])  # 10 bytes: held, up to 10
        assert await connection.get(key) == b"abcdefghij"
        assert (await snapshot(client, "k"))["content"] == "cdefghij"
        await publish(client, "k", "content", {"text": "k"})  # 11 > 8 + 2: trimmed to the newest 8
        assert await connection.get(key) == b"defghijk"
        idle = await connection.pttl(f"{prefix}job:k")
        assert 0 < await connection.pttl(key) <= idle  # the job's lifetime, set by one publish
        await publish(client, "k", "complete", {})
        assert 0 < await connection.pttl(key) <= 500  # now the finished job's
        await asyncio.sleep(0.6)
        assert await connection.exists(key, f"{prefix}job:k") == 0
        await publish(client, "d", "content", {"text": "x"})
        assert (await client.delete("/v1/jobs/d")).status == 204
        assert await connection.exists(f"{prefix}job:d:c") == 0
    finally:
        await connection.aclose()


async def test_the_openapi_document_says_which_snapshots_carry_the_text(
    client: TestClient,
) -> None:
    document = await (await client.get("/v1/openapi.json")).json()
    schemas = document["components"]["schemas"]
    assert set(schemas["FullSnapshot"]["required"]) == {"content", "content_truncated"}
    assert not {"content", "content_truncated"} & set(schemas["Snapshot"]["required"])
    ok = document["paths"]["/v1/jobs/{job_id}"]["get"]["responses"]["200"]
    assert ok["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/FullSnapshot"
    }
    listing = document["paths"]["/v1/jobs"]["get"]["responses"]["200"]
    assert listing["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/JobListOut"
    }


async def test_a_job_reset_beside_another_on_a_multi_job_stream_has_its_text(
    make_client: MakeClient,
) -> None:
    """Job b's history covers the reader's id, but its missed event is older than job a's
    `reset`, so b is reset too (the multi-job rule): its reset carries its text as well."""
    client = await make_client(jobs={"ring_events": 3})
    [seen] = await publish_content(client, "b", ["B1 "])
    await publish_content(client, "b", ["B2"])
    await publish_content(client, "a", [f"A{i} " for i in range(5)])  # a's ring: the last 3
    path = "/v1/stream?job=a&job=b"
    async with stream_opener(client)(path, headers={"Last-Event-ID": seen}) as (_, reader):
        frames = await reader.events(2)
    assert [(frame.event, frame.json["job"]) for frame in frames] == [
        ("reset", "b"),
        ("reset", "a"),
    ]
    assert frames[0].json["data"]["content"] == "B1 B2"
    assert frames[1].json["data"]["content"] == "A0 A1 A2 A3 A4 "
