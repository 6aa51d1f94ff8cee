"""Byte-exact frames: what a stream writes, and what publishers cannot make it write."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from progress_relay.wire import sse
from tests.support.app import MakeClient, publish, publish_many


async def _read_exactly(response: Any, size: int) -> bytes:
    async with asyncio.timeout(5):
        return bytes(await response.content.readexactly(size))


async def test_retry_first_then_each_event_as_one_exact_frame(client, open_stream) -> None:
    first = await publish(client, "f", "progress", {"percent": 40, "stage": "searching"})
    async with open_stream("/v1/jobs/f/stream") as (response, _):
        expected = (
            b"retry: 3000\n\n"
            b'id: %s\nevent: progress\ndata: {"percent":40,"stage":"searching"}\n\n'
            % first.encode()
        )
        assert await _read_exactly(response, len(expected)) == expected


async def test_retry_follows_configuration(make_client: MakeClient) -> None:
    client = await make_client(stream={"retry_ms": 1234})
    response = await client.get("/v1/jobs/r/stream")
    try:
        assert await _read_exactly(response, 13) == b"retry: 1234\n\n"
    finally:
        response.close()


@pytest.mark.parametrize(
    ("body", "wire"),
    [
        # newlines and CR inside JSON strings stay escaped on the one data line
        (
            b'{"event":"log","data":{"message":"a\\nb\\rc\\r\\nd"}}',
            b'{"message":"a\\nb\\rc\\r\\nd"}',
        ),
        # non-ASCII passes through as UTF-8
        (
            '{"event":"log","data":{"message":"é 日本 🎉"}}'.encode(),
            '{"message":"é 日本 🎉"}'.encode(),
        ),
        # U+2028 and U+2029 are not line breaks in SSE: they stay on the data line
        (
            '{"event":"log","data":{"message":"x\u2028y\u2029z"}}'.encode(),
            '{"message":"x\u2028y\u2029z"}'.encode(),
        ),
        # pretty-printed JSON is compacted to one line
        (
            b'{"event": "progress",\n "data": {\n   "percent": 5,\n   "stage": "a b"\n }\n}',
            b'{"percent":5,"stage":"a b"}',
        ),
        # compact JSON keeps its exact bytes, number spelling included
        (b'{"event":"metrics","data":{"ratio":1.50,"big":1e3}}', b'{"ratio":1.50,"big":1e3}'),
        (b'{"event":"progress","data":{"percent":1.50}}', b'{"percent":1.50}'),
    ],
)
async def test_payload_reaches_the_wire_as_one_data_line(
    client, open_stream, body: bytes, wire: bytes
) -> None:
    response = await client.post(
        "/v1/jobs/p/events", data=body, headers={"Content-Type": "application/json"}
    )
    assert response.status == 200, await response.text()
    [event_id] = (await response.json())["ids"]
    name = b"log" if b'"log"' in body else b"progress" if b"progress" in body else b"metrics"
    frame = b"id: %s\nevent: %s\ndata: %s\n\n" % (event_id.encode(), name, wire)
    async with open_stream("/v1/jobs/p/stream") as (stream, _):
        received = await _read_exactly(stream, len(b"retry: 3000\n\n") + len(frame))
    assert received == b"retry: 3000\n\n" + frame
    assert received.count(b"\n") == 6
    assert b"\r" not in received


@pytest.mark.parametrize(
    "name",
    [
        "a\nb",
        "a\rb",
        "a\r\nid: 9",
        "x\n\ndata: injected",
        ": comment",
        "id: 5",
        "",
        "a" * 65,
        "1abc",
        "reset",
        "cancel_requested",
        "error",
    ],
)
async def test_event_names_that_could_inject_are_refused(client, open_stream, name: str) -> None:
    async with open_stream("/v1/jobs/inj/stream") as (response, _):
        assert await _read_exactly(response, 13) == b"retry: 3000\n\n"
        refused = await client.post(
            "/v1/jobs/inj/events", json={"event": name, "data": {"message": "x"}}
        )
        assert refused.status == 422
        error = (await refused.json())["error"]
        assert error["code"] == "invalid_event"
        assert "$.event" in error["message"]
        good = await publish(client, "inj", "log", {"message": "ok"})
        frame = b'id: %s\nevent: log\ndata: {"message":"ok"}\n\n' % good.encode()
        assert await _read_exactly(response, len(frame)) == frame


@pytest.mark.parametrize("name", ["log\n", "reset\n", "complete\n"])
async def test_an_event_name_ending_in_a_newline_is_refused(client, open_stream, name: str) -> None:
    async with open_stream("/v1/jobs/nl/stream") as (response, _):
        assert await _read_exactly(response, 13) == b"retry: 3000\n\n"
        refused = await client.post(
            "/v1/jobs/nl/events", json={"event": name, "data": {"message": "x"}}
        )
        assert refused.status == 422
        assert "$.event" in (await refused.json())["error"]["message"]
        good = await publish(client, "nl", "log", {"message": "ok"})
        frame = b'id: %s\nevent: log\ndata: {"message":"ok"}\n\n' % good.encode()
        assert await _read_exactly(response, len(frame)) == frame


async def test_a_batch_with_one_bad_name_is_refused_whole(client, open_stream) -> None:
    async with open_stream("/v1/jobs/bb/stream") as (response, _):
        assert await _read_exactly(response, 13) == b"retry: 3000\n\n"
        refused = await client.post(
            "/v1/jobs/bb/events",
            json={
                "events": [
                    {"event": "log", "data": {"message": "first"}},
                    {"event": "log\r\nevent: injected", "data": {"message": "second"}},
                ]
            },
        )
        assert refused.status == 422
        error = (await refused.json())["error"]
        assert (error["code"], "$.events[1].event" in error["message"]) == ("invalid_event", True)
        good = await publish(client, "bb", "log", {"message": "ok"})
        frame = b'id: %s\nevent: log\ndata: {"message":"ok"}\n\n' % good.encode()
        assert await _read_exactly(response, len(frame)) == frame


@pytest.mark.parametrize(
    "body",
    [
        b'{"event":"log","data":{"message":"\xff"}}',
        b'{"event":"metrics","data":{"m":"\xff"}}',
        b'{"event":"metrics","data":{"m":"\xed\xa0\x80"}}',
    ],
    ids=["typed-ff", "untyped-ff", "untyped-utf8-surrogate"],
)
async def test_invalid_utf8_in_a_payload_is_refused(client, open_stream, body: bytes) -> None:
    async with open_stream("/v1/jobs/u8/stream") as (response, _):
        assert await _read_exactly(response, 13) == b"retry: 3000\n\n"
        refused = await client.post(
            "/v1/jobs/u8/events", data=body, headers={"Content-Type": "application/json"}
        )
        assert (refused.status, refused.content_type) == (400, "application/json")
        assert (await refused.json())["error"]["code"] == "invalid_json"
        good = await publish(client, "u8", "log", {"message": "ok"})
        frame = b'id: %s\nevent: log\ndata: {"message":"ok"}\n\n' % good.encode()
        assert await _read_exactly(response, len(frame)) == frame


@pytest.mark.parametrize("line_break", ["\n", "\r\n", "\r"])
async def test_a_resume_id_with_a_line_break_in_the_query_injects_nothing(
    client, open_stream, line_break: str
) -> None:
    first, second = await publish_many(
        client, "q", [("progress", {"percent": 1}), ("progress", {"percent": 2})]
    )
    last_event_id = f"{first}{line_break}event: injected{line_break}data: injected"
    async with open_stream("/v1/jobs/q/stream", params={"last_event_id": last_event_id}) as (
        response,
        reader,
    ):
        assert response.status == 200
        assert await reader.next_raw() == b"retry: 3000\n\n"
        frame = await reader.next_raw()
    assert frame is not None
    assert b"injected" not in frame
    id_line, event_line, data_line, end, last = frame.split(b"\n")
    assert id_line == b"id: %s" % second.encode()
    assert event_line in (b"event: reset", b"event: progress")
    assert data_line.startswith(b"data: {")
    assert (end, last) == (b"", b"")


async def _raw_stream_request(client: Any, header_lines: bytes, until: bytes) -> bytes:
    reader, writer = await asyncio.open_connection(client.host, client.port)
    try:
        writer.write(b"GET /v1/jobs/h/stream HTTP/1.1\r\nHost: relay\r\n%s\r\n" % header_lines)
        await writer.drain()
        received = b""
        async with asyncio.timeout(5):
            while until not in received and (chunk := await reader.read(65536)):
                received += chunk
        return received
    finally:
        writer.close()


@pytest.mark.parametrize(
    "separator",
    [b"\r\n", b"\n", b"\r", b"\r\n "],
    ids=["crlf-own-header", "bare-lf", "bare-cr", "obs-fold"],
)
async def test_a_resume_header_with_a_line_break_injects_nothing(client, separator: bytes) -> None:
    first, second = await publish_many(
        client, "h", [("progress", {"percent": 1}), ("progress", {"percent": 2})]
    )
    expected_frame = b'id: %s\nevent: progress\ndata: {"percent":2}\n\n' % second.encode()
    header = b"Last-Event-ID: %s%sevent: injected\r\n" % (first.encode(), separator)
    received = await _raw_stream_request(client, header, until=expected_frame)
    status_line = received.split(b"\r\n", 1)[0]
    if status_line.endswith(b" 200 OK"):
        head, _, stream = received.partition(b"\r\n\r\n")
        assert b"text/event-stream" in head
        assert b"retry: 3000\n\n" in stream
        assert expected_frame in stream
        assert b"injected" not in stream
    else:
        assert status_line.split(b" ")[1] == b"400"
        assert b"text/event-stream" not in received


async def test_heartbeat_comments_at_the_configured_interval(make_client: MakeClient) -> None:
    client = await make_client(stream={"heartbeat": 0.2})
    first = await publish(client, "hb", "progress", {"percent": 1})
    response = await client.get("/v1/jobs/hb/stream")
    try:
        head = b'retry: 3000\n\nid: %s\nevent: progress\ndata: {"percent":1}\n\n' % first.encode()
        assert await _read_exactly(response, len(head)) == head
        for _ in range(3):
            assert await _read_exactly(response, len(b": ping\n\n")) == b": ping\n\n"
    finally:
        response.close()


async def test_multi_job_frames_wrap_the_payload_and_keep_the_ids(client, open_stream) -> None:
    a = await publish(client, "a", "progress", {"percent": 1.5})
    posted = await client.post(
        "/v1/jobs/b/events",
        data='{"event":"log","data":{"message":"é"}}'.encode(),
        headers={"Content-Type": "application/json"},
    )
    [b] = (await posted.json())["ids"]
    async with open_stream("/v1/stream?job=a&job=b") as (response, _):
        expected = (
            b"retry: 3000\n\n"
            + b'id: %s\nevent: progress\ndata: {"job":"a","data":{"percent":1.5}}\n\n' % a.encode()
            + b'id: %s\nevent: log\ndata: {"job":"b","data":{"message":"\xc3\xa9"}}\n\n'
            % b.encode()
        )
        assert await _read_exactly(response, len(expected)) == expected


async def test_multi_job_frames_carry_the_per_job_stream_ids_and_data(client, open_stream) -> None:
    replayed = await publish_many(
        client, "ma", [("progress", {"percent": 10}), ("metrics", {"ratio": 1.50})]
    )
    replayed += await publish_many(client, "mb", [("content", {"text": "日本"})])
    async with (
        open_stream("/v1/jobs/ma/stream") as (_, job_a),
        open_stream("/v1/jobs/mb/stream") as (_, job_b),
        open_stream("/v1/stream?job=ma&job=mb") as (_, multi),
    ):
        live = await publish(client, "mb", "log", {"message": "live"})
        live_a = await publish(client, "ma", "progress", {"percent": 20})
        per_job = {
            "ma": [await job_a.next_raw() for _ in range(4)][1:],
            "mb": [await job_b.next_raw() for _ in range(3)][1:],
        }
        assert await multi.next_raw() == b"retry: 3000\n\n"
        wrapped = [await multi.next_raw() for _ in range(5)]
    expected: list[bytes] = []
    for job_id, frames in per_job.items():
        for frame in frames:
            assert frame is not None
            id_line, event_line, data_line, _, _ = frame.split(b"\n")
            payload = data_line.removeprefix(b"data: ")
            expected.append(
                b"%s\n%s\ndata: %s\n\n" % (id_line, event_line, sse.job_data(job_id, payload))
            )
    order = [*replayed, live, live_a]
    expected.sort(key=lambda frame: order.index(frame.split(b"\n")[0][4:].decode()))
    assert wrapped == expected


@pytest.mark.parametrize("job_id", ['a"b', "a\\b", "a\nb", "a\r\nevent: injected", "a b"])
async def test_multi_job_stream_refuses_ids_that_would_need_escaping(client, job_id: str) -> None:
    response = await client.get("/v1/stream", params=[("job", "ok"), ("job", job_id)])
    assert (response.status, response.content_type) == (400, "application/json")
    assert (await response.json())["error"]["code"] == "invalid_job_id"


async def test_job_not_found_frame_then_204_with_its_id(make_client: MakeClient) -> None:
    client = await make_client(jobs={"pending_ttl": 0.3}, reaper={"interval": 0.1})
    response = await client.get("/v1/jobs/ghost/stream")
    async with asyncio.timeout(5):
        body = bytes(await response.read())
    retry, failed, end = body.split(b"\n\n")
    assert (retry, end) == (b"retry: 3000", b"")
    id_line, event_line, data_line = failed.split(b"\n")
    assert id_line.startswith(b"id: ")
    assert event_line == b"event: failed"
    assert data_line == b'data: {"message":"job ghost was never published","code":"job_not_found"}'
    again = await client.get(
        "/v1/jobs/ghost/stream", headers={"Last-Event-ID": id_line[4:].decode()}
    )
    assert again.status == 204
