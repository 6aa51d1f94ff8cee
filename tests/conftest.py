from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from progress_relay.http.app import create_app
from tests.support.app import MakeClient, make_settings, stream_opener
from tests.support.npm import Package, build_and_pack, shared_workdir
from tests.support.redis_server import RedisServer


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
    # Bounded as docs/reliability.md asks of a production Redis: full, it refuses writes.
    options = ("--maxmemory", "1gb", "--maxmemory-policy", "noeviction")
    server = RedisServer(tmp_path_factory.mktemp("redis"), options=options)
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


@pytest.fixture(scope="session")
def npm_package(tmp_path_factory: pytest.TempPathFactory) -> Package:
    """service/npm installed (``npm ci``), built, packed and unpacked, once per test run."""
    return build_and_pack(shared_workdir(tmp_path_factory))
