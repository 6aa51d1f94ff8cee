"""Half-open connections, for real: run as
``unshare -rn python -m tests.support.half_open_probe N``.

In a network namespace of its own (so nothing else on the machine is touched) it starts the
relay, opens N streams from 127.0.0.2 and one from 127.0.0.1, then makes 127.0.0.2 vanish with a
blackhole route: the clients never send a FIN or a RST, the relay's packets to them are simply
lost, as when a laptop drops off the network. It prints one JSON line: how many streams the
relay held, how long it took to release the vanished ones, and whether the other stream still
works. The test (tests/system/test_half_open.py) runs it and judges the figures.
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import subprocess
import sys
import time
from typing import Any

import aiohttp
from aiohttp import web

from progress_relay.http.app import create_app
from progress_relay.http.keys import HUB
from tests.support.app import make_settings
from tests.support.process import free_port

VANISHING = "127.0.0.2"
DEADLINE = 30.0


async def open_stream(port: int, job: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(VANISHING, 0))
    writer.write(f"GET /v1/jobs/{job}/stream HTTP/1.1\r\nHost: relay\r\n\r\n".encode())
    head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    return reader, writer


async def until(condition: Any, deadline: float) -> float:
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > deadline:
            break
        await asyncio.sleep(0.05)
    return time.monotonic() - started


async def main(count: int) -> dict[str, Any]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 4 * count + 512)), hard))
    settings = make_settings(
        stream={"heartbeat": 0.25, "write_timeout": 1.0},
        limits={
            "max_streams": count + 10,
            "max_streams_per_job": count + 10,
            "max_streams_per_client": count + 10,
        },
    )
    app = create_app(settings)
    runner = web.AppRunner(app, handler_cancellation=True, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port, backlog=4096).start()
    hub = app[HUB]
    result: dict[str, Any] = {"count": count}
    began = time.monotonic()
    clients: list[asyncio.StreamWriter] = []
    try:
        for start in range(0, count, 200):
            opened = await asyncio.gather(
                *(open_stream(port, f"job-{n % 50}") for n in range(start, min(count, start + 200)))
            )
            clients += [writer for _, writer in opened]
        async with aiohttp.ClientSession() as session:
            control = await session.get(f"http://127.0.0.1:{port}/v1/jobs/control/stream")
            await until(lambda: hub.streams == count + 1, DEADLINE)
            result["open_s"] = round(time.monotonic() - began, 2)
            result["streams_before"] = hub.streams
            result["connections_before"] = len(runner.server.connections)  # type: ignore[union-attr]
            route = await asyncio.create_subprocess_exec(
                "ip", "route", "add", "blackhole", f"{VANISHING}/32", "table", "local"
            )
            assert await route.wait() == 0
            result["released_after_s"] = round(await until(lambda: hub.streams == 1, DEADLINE), 2)
            result["streams_after"] = hub.streams
            await until(lambda: len(runner.server.connections) <= 2, 5)  # type: ignore[union-attr]
            # The control stream and this session's publish connection remain.
            result["connections_after"] = len(runner.server.connections)  # type: ignore[union-attr]
            published = await session.post(
                f"http://127.0.0.1:{port}/v1/jobs/control/events",
                json={"event": "log", "data": {"message": "still here"}},
            )
            event_id = (await published.json())["ids"][0]
            seen = b""
            async with asyncio.timeout(5):
                while event_id.encode() not in seen:
                    seen += await control.content.readany()
            result["control_stream_works"] = True
            control.close()
    finally:
        for writer in clients:
            writer.transport.abort()
        await runner.cleanup()
    return result


if __name__ == "__main__":
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    os.environ.pop("http_proxy", None)
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)  # a new namespace's lo is down
    print(json.dumps(asyncio.run(main(count))))
