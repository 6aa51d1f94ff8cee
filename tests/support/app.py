"""A relay app in this process, for tests: its settings, streams opened on it, publishing to it,
and reading its errors and metrics."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import msgspec
from aiohttp import web
from aiohttp.test_utils import TestClient
from prometheus_client.parser import text_string_to_metric_families

from progress_relay.config import Settings
from tests.support.sse_client import SSEReader

MakeClient = Callable[..., Awaitable[TestClient[Any, web.Application]]]


def make_settings(**sections: dict[str, Any]) -> Settings:
    """Settings for a test: the defaults, with the given sections' keys replaced."""
    raw: dict[str, Any] = msgspec.to_builtins(Settings())
    for section, values in sections.items():
        raw[section].update(values)
    return msgspec.convert(raw, Settings)


def stream_opener(client: TestClient[Any, web.Application]) -> Callable[..., Any]:
    """``async with open_stream("/v1/jobs/a/stream", headers=...) as (response, reader)``."""

    @asynccontextmanager
    async def open_(path: str, **kwargs: Any) -> AsyncIterator[tuple[Any, SSEReader]]:
        response = await client.get(path, **kwargs)
        try:
            yield response, SSEReader(response)
        finally:
            response.close()

    return open_


async def publish(
    client: TestClient[Any, web.Application], job_id: str, event: str, data: Any = None
) -> str:
    body: dict[str, Any] = {"event": event}
    if data is not None:
        body["data"] = data
    response = await client.post(f"/v1/jobs/{job_id}/events", json=body)
    assert response.status == 200, await response.text()
    ids: list[str] = (await response.json())["ids"]
    return ids[0]


async def publish_many(
    client: TestClient[Any, web.Application], job_id: str, events: list[tuple[str, Any]]
) -> list[str]:
    body = {"events": [{"event": name, "data": data} for name, data in events]}
    response = await client.post(f"/v1/jobs/{job_id}/events", json=body)
    assert response.status == 200, await response.text()
    ids: list[str] = (await response.json())["ids"]
    return ids


def parse_metrics(text: str) -> dict[str, float]:
    """/metrics as ``{"name{label=value,...}": value}`` (just ``name`` without labels)."""
    values: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            values[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return values


async def error_of(response: Any, status: int, code: str) -> str:
    """Assert the JSON error shape; return its message."""
    text = await response.text()
    assert response.status == status, text
    assert response.content_type == "application/json", response.headers
    body = json.loads(text)
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"code", "message"}, body
    assert body["error"]["code"] == code, body
    message = body["error"]["message"]
    assert isinstance(message, str) and message, body
    return message
