"""What one open stream holds in the relay's Python heap: a tracemalloc snapshot of one relay
(memory broker, in this process, served as ``serve`` serves it) before and after ``--streams``
idle streams, the difference by the line that allocated it (docs/performance.md, "Issue 17,
the first rounds").

    .venv/bin/python -m bench.stream_memory                # 1,000 streams, top 25 lines
    .venv/bin/python -m bench.stream_memory --traceback    # the same by call chain

The subscribers are raw sockets in a child process, so none of their memory is counted. This is
the Python heap only: RSS adds the allocator's slack and the kernel's socket buffers are apart.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import subprocess
import sys
import textwrap
import tracemalloc

from aiohttp import web

from bench.servers import RELAY_ENV, free_port
from progress_relay.config import load_settings
from progress_relay.http.app import create_app
from progress_relay.http.keys import CONNECTIONS, HUB
from progress_relay.ops import fds
from progress_relay.ops.listener import Site

# The subscribers: connect, ask for a stream, read its first bytes, publish one event per job
# (so each stream is live, as in bench `idle`), read it, then hold until stdin closes.
_CLIENTS = textwrap.dedent("""
    import socket, sys
    port, count, jobs = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    streams = []
    for index in range(count):
        sock = socket.create_connection(("127.0.0.1", port))
        path = f"/v1/jobs/mem-{index % jobs}/stream"
        sock.sendall(f"GET {path} HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n".encode())
        sock.recv(65536)
        streams.append(sock)
    publisher = socket.create_connection(("127.0.0.1", port))
    for job in range(jobs):
        body = b'{"event":"progress","data":{"percent":1}}'
        publisher.sendall(
            f"POST /v1/jobs/mem-{job}/events HTTP/1.1\\r\\nHost: x\\r\\n"
            f"Content-Type: application/json\\r\\nContent-Length: {len(body)}\\r\\n\\r\\n".encode()
            + body
        )
        publisher.recv(65536)
    for sock in streams:
        sock.recv(65536)
    print("open", flush=True)
    sys.stdin.read()
""")


async def _measure(streams: int, frames: int, group: str, top: int) -> None:
    settings = load_settings(environ={**RELAY_ENV, "PROGRESS_RELAY_SERVER_PORT": "0"})
    app = create_app(settings)
    runner = web.AppRunner(app, handler_cancellation=True, access_log=None)
    await runner.setup()
    port = free_port()
    errors = fds.AcceptErrors()
    site = Site(runner, app[CONNECTIONS], "127.0.0.1", port, backlog=4096, errors=errors)
    await site.start()
    jobs = max(1, streams // 10)
    command = [sys.executable, "-c", _CLIENTS, str(port), str(streams), str(jobs)]
    clients = await asyncio.create_subprocess_exec(
        *command, stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    try:
        gc.collect()
        tracemalloc.start(frames)
        before = tracemalloc.take_snapshot()
        assert clients.stdout is not None
        await clients.stdout.readline()
        await asyncio.sleep(0.5)
        gc.collect()
        after = tracemalloc.take_snapshot()
        tracemalloc.stop()
        print(f"open streams: {app[HUB].streams}")
        diff = after.compare_to(before, group)
        total = sum(stat.size_diff for stat in diff)
        print(f"Python heap per stream: {total / streams:,.0f} B")
        for stat in diff[:top]:
            print(f"{stat.size_diff / streams:8,.0f} B {stat.count_diff / streams:6.1f} blocks")
            for line in stat.traceback.format()[-2 * frames :]:
                print(f"    {line}")
    finally:
        if clients.stdin is not None:
            clients.stdin.close()
        await clients.wait()
        await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=1000)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--traceback", action="store_true", help="group by call chain")
    parser.add_argument("--frames", type=int, default=6, help="of each call chain")
    args = parser.parse_args()
    group = "traceback" if args.traceback else "lineno"
    frames = args.frames if args.traceback else 1
    asyncio.run(_measure(args.streams, frames, group, args.top))


if __name__ == "__main__":
    main()
