"""Byte-exact frames: what a stream writes, and what publishers cannot make it write."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from service import sse
from tests.conftest import MakeClient, publish


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


def test_frame_encoding_units() -> None:
    assert sse.event_frame("e-1", "progress", b"{}") == b"id: e-1\nevent: progress\ndata: {}\n\n"
    assert sse.event_frame(None, "reset", b"{}") == b"event: reset\ndata: {}\n\n"
    assert sse.retry_frame(0) == b"retry: 0\n\n"
    assert sse.job_data("j.1:x-y", b'{"a":1}') == b'{"job":"j.1:x-y","data":{"a":1}}'
