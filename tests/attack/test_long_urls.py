"""Long request lines: a multi-job stream of `limits.max_stream_jobs` ids of the longest length
(and a token naming them all) is read; one job more is the documented JSON 413; a line or a
head longer than the relay reads is a JSON 414 or 431, never aiohttp's text/plain 400."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import jwt
import pytest

from progress_relay.config import Settings
from tests.support.app import MakeClient, error_of
from tests.support.process import Relay, start_relay

SECRET = "j" * 40
MOST = Settings().limits.max_stream_jobs


def longest_ids(count: int) -> list[str]:
    """``count`` distinct job ids of 128 characters, with colons a client may percent-encode."""
    ids = [f"{n:04d}:" + "a:" * 61 + "b" for n in range(count)]
    assert {len(i) for i in ids} == {128}
    return ids


def stream_path(job_ids: list[str], encode: bool = True) -> str:
    params = "&".join(f"job={quote(i, safe='') if encode else i}" for i in job_ids)
    return f"/v1/stream?replay=none&{params}"


@contextlib.contextmanager
def relay_process() -> Iterator[Relay]:
    relay = start_relay(
        env={
            "PROGRESS_RELAY_AUTH_SUBSCRIBE": "token",
            "PROGRESS_RELAY_AUTH_JWT_SECRET": SECRET,
        }
    )
    try:
        yield relay
    finally:
        relay.close()


@pytest.fixture(scope="module")
def relay() -> Iterator[Relay]:
    with relay_process() as process:
        yield process


def token_for(job_ids: list[str] | str) -> str:
    now = int(time.time())
    return jwt.encode({"jobs": job_ids, "iat": now, "exp": now + 60}, SECRET, algorithm="HS256")


async def exchange(relay: Relay, request: bytes) -> bytes:
    """Send ``request``; the response's head and as much of its body as comes in a second."""
    host, port = relay.base_url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(request)
        received = await reader.readuntil(b"\r\n\r\n")
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(1):
                while chunk := await reader.read(65536):
                    received += chunk
        return received
    finally:
        writer.close()


def status_and_json(response: bytes) -> tuple[int, dict[str, Any]]:
    head, _, body = response.partition(b"\r\n\r\n")
    assert b"content-type: application/json" in head.lower(), head
    return int(head.split()[1]), json.loads(body)


def get(path: str, *headers: str) -> bytes:
    lines = [f"GET {path} HTTP/1.1", "Host: relay", *headers, "", ""]
    return "\r\n".join(lines).encode()


@pytest.mark.parametrize("where", ["query", "header", "cookie"])
async def test_a_stream_of_every_job_it_may_follow_with_the_longest_ids_is_read(
    relay: Relay, where: str
) -> None:
    job_ids = longest_ids(MOST)
    token = token_for(job_ids)
    path = stream_path(job_ids)
    headers = []
    if where == "query":
        path += f"&token={token}"
    elif where == "header":
        headers.append(f"Authorization: Bearer {token}")
    else:
        headers.append(f"Cookie: progress_relay_token={token}")
    assert len(path) > 3 * 8190  # far past aiohttp's default line
    response = await exchange(relay, get(path, *headers))
    assert response.startswith(b"HTTP/1.1 200"), response[:300]
    assert b"text/event-stream" in response.partition(b"\r\n\r\n")[0]


async def test_one_job_more_is_the_documented_json_413(relay: Relay) -> None:
    job_ids = longest_ids(MOST + 1)
    path = stream_path(job_ids, encode=False) + f"&token={token_for('*')}"
    status, body = status_and_json(await exchange(relay, get(path)))
    assert status == 413
    assert body["error"]["code"] == "payload_too_large"
    assert "limits.max_stream_jobs" in body["error"]["message"]


async def test_a_line_longer_than_the_relay_reads_is_a_json_414(relay: Relay) -> None:
    from progress_relay.ops.connections import line_limit

    path = stream_path(longest_ids(3 * MOST))
    assert len(path) > line_limit(Settings().limits)
    status, body = status_and_json(await exchange(relay, get(path)))
    assert status == 414
    assert body["error"]["code"] == "uri_too_long"
    assert "limits.max_stream_jobs" in body["error"]["message"]


async def test_a_head_longer_than_the_relay_reads_is_a_json_431(relay: Relay) -> None:
    from progress_relay.ops.connections import head_limit

    headers = [f"X-Filler-{n}: {'f' * 4000}" for n in range(40)]
    assert sum(map(len, headers)) > head_limit(Settings().limits)
    status, body = status_and_json(await exchange(relay, get("/healthz", *headers)))
    assert status == 431
    assert body["error"]["code"] == "headers_too_large"


@pytest.mark.memory_only
async def test_served_in_process_the_same_line_fits(make_client: MakeClient) -> None:
    """aiohttp's own limits are set from the settings too, however the app is served."""
    client = await make_client()
    response = await client.get(stream_path(longest_ids(MOST)))
    assert response.status == 200
    response.close()
    await error_of(await client.get(stream_path(longest_ids(MOST + 1))), 413, "payload_too_large")
