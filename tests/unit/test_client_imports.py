"""The SDK's modules import without a cycle and without any part of the server.

Each module is imported first, in a fresh interpreter; the import graph of the client's own
modules (every import statement, TYPE_CHECKING and function-level ones included) is read from
their source.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

import progress_relay.client

CLIENT = Path(progress_relay.client.__file__).parent
MODULES = sorted(
    f"progress_relay.client.{path.stem}" for path in CLIENT.glob("*.py") if path.stem != "__init__"
)
SERVER_PARTS = (
    *(f"progress_relay.{part}" for part in ("core", "http", "brokers", "ops", "wire", "cli")),
    "progress_relay.config",
    "progress_relay.demo",
)
SERVER_DEPENDENCIES = ("msgspec", "aiohttp_sse", "redis", "jwt", "prometheus_client")

_REPORT = """
import importlib, json, sys
importlib.import_module(sys.argv[1])
print(json.dumps(sorted(sys.modules)))
"""


def loaded_after_importing(module: str) -> list[str]:
    result = subprocess.run(
        [sys.executable, "-c", _REPORT, module], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    loaded: list[str] = json.loads(result.stdout)
    return loaded


def test_every_module_is_found() -> None:
    assert {"progress_relay.client.sync", "progress_relay.client.aio"} <= set(MODULES)
    assert "progress_relay.client.trackers" in MODULES


@pytest.mark.parametrize("module", MODULES)
def test_a_module_imported_first_loads_nothing_of_the_server(module: str) -> None:
    loaded = loaded_after_importing(module)
    assert module in loaded
    server = [name for name in loaded if is_server(name)]
    assert server == []


def is_server(name: str) -> bool:
    return (
        name in SERVER_PARTS
        or name.startswith(tuple(f"{part}." for part in SERVER_PARTS))
        or name.split(".", 1)[0] in SERVER_DEPENDENCIES
    )


def test_server_modules_are_told_apart() -> None:
    assert is_server("progress_relay.cli") and is_server("progress_relay.http.app")
    assert is_server("redis.asyncio") and is_server("msgspec")
    assert not is_server("progress_relay.client") and not is_server("progress_relay.client.aio")
    assert not is_server("aiohttp") and not is_server("httpx")


def client_imports(path: Path) -> set[str]:
    """The client modules ``path`` imports, wherever the import statement is."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module is not None:
            # `from progress_relay.client import events` names a module too.
            names = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
        else:
            continue
        found.update(name for name in names if name in MODULES)
    return found


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    found: list[list[str]] = []

    def visit(module: str, path: list[str]) -> None:
        for target in sorted(graph[module]):
            if target in path:
                found.append([*path[path.index(target) :], target])
            elif target == path[0] or target > path[0]:
                visit(target, [*path, target])

    for start in sorted(graph):
        visit(start, [start])
    return found


def test_the_client_modules_import_each_other_without_a_cycle() -> None:
    graph = {module: client_imports(CLIENT / f"{module.split('.')[-1]}.py") for module in MODULES}
    assert graph["progress_relay.client.aio"]  # the graph is read, not empty
    assert cycles(graph) == []


def test_a_cycle_is_found() -> None:
    a, b, c = "progress_relay.client.a", "progress_relay.client.b", "progress_relay.client.c"
    assert cycles({a: {b}, b: {c}, c: {a}}) == [[a, b, c, a]]
    assert cycles({a: {b}, b: set(), c: {a}}) == []
