from __future__ import annotations

import socket
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from typing import Any

import msgspec
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from prometheus_client.parser import text_string_to_metric_families

from progress_relay.config import Settings
from progress_relay.http.app import create_app
from tests.redis_server import RedisServer
from tests.sse_client import SSEReader

MakeClient = Callable[..., Awaitable[TestClient[Any, web.Application]]]


def make_settings(**sections: dict[str, Any]) -> Settings:
    """Settings for a test: the defaults, with the given sections' keys replaced."""
    raw: dict[str, Any] = msgspec.to_builtins(Settings())
    for section, values in sections.items():
        raw[section].update(values)
    return msgspec.convert(raw, Settings)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "memory_only: a behaviour of the in-memory broker alone (not run on Redis)"
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked memory_only are not collected for the Redis broker (not skipped: absent)."""
    kept: list[pytest.Item] = []
    dropped: list[pytest.Item] = []
    for item in items:
        params = getattr(item, "callspec", None)
        on_redis = params is not None and params.params.get("broker") == "redis"
        (dropped if on_redis and item.get_closest_marker("memory_only") else kept).append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One real redis-server for the session; each relay in it uses its own key prefix."""
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(params=["memory", "redis"])
def broker(request: pytest.FixtureRequest) -> dict[str, Any]:
    """The broker section for relays of this test: the whole contract suite runs on both."""
    if request.param == "memory":
        return {"url": "memory://"}
    server: RedisServer = request.getfixturevalue("redis_server")
    return {"url": server.url, "key_prefix": f"t{uuid.uuid4().hex[:12]}:"}


@pytest.fixture
def make_client(aiohttp_client: Any, broker: dict[str, Any]) -> MakeClient:
    """``await make_client(stream={"heartbeat": 0.2})``: a real relay on a free port, on the
    broker of this test run (relays made in one test share it, like instances of a deployment;
    pass ``broker={"url": "memory://"}`` for one of its own)."""

    async def make(**sections: dict[str, Any]) -> TestClient[Any, web.Application]:
        sections.setdefault("broker", broker)
        app = create_app(make_settings(**sections))
        client: TestClient[Any, web.Application] = await aiohttp_client(app)
        return client

    return make


@pytest.fixture
async def client(make_client: MakeClient) -> TestClient[Any, web.Application]:
    return await make_client()


@pytest.fixture
def open_stream(
    client: TestClient[Any, web.Application],
) -> Callable[..., Any]:
    return stream_opener(client)


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


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def parse_metrics(text: str) -> dict[str, float]:
    """/metrics as ``{"name{label=value,...}": value}`` (just ``name`` without labels)."""
    values: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            values[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return values
