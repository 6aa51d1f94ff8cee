"""``python -m bench.memory_flood``: the relay's memory under a publish flood, against its bound.

One relay process on the memory broker (``--memory-bytes``, the relay's limits.memory_bytes;
``--unbounded`` sets it to 1 TiB, as good as none). Concurrent clients publish batches of
large `content` events, each batch to a new job, and every other job ends with `complete`
(when its batch was taken):
the flood of issue 15 ("one client grew the relay by 405 MB in 1.6 s"). Every half second the
relay's RSS (/proc) and its own count (/metrics) are sampled; the table shows them over time,
with how many publishes were accepted and refused (503 memory_full).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time

import aiohttp

from bench.procstat import usage
from bench.servers import free_port

_MIB = 1024 * 1024


async def _metrics(http: aiohttp.ClientSession, base: str) -> dict[str, float]:
    text = await (await http.get(f"{base}/metrics")).text()
    found = {}
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name in ("progress_relay_memory_bytes", "progress_relay_histories_dropped_total"):
            found[name] = float(value)
    return found


async def _flood(
    http: aiohttp.ClientSession, base: str, client: int, stop: float, tally: dict[str, int]
) -> None:
    body = {"events": [{"event": "content", "data": {"text": "x" * 16_000}}] * 60}
    n = 0
    while time.monotonic() < stop:
        job = f"flood-{client}-{n}"
        n += 1
        async with http.post(f"{base}/v1/jobs/{job}/events", json=body) as response:
            tally[str(response.status)] = tally.get(str(response.status), 0) + 1
        if n % 2 and response.status == 200:
            async with http.post(f"{base}/v1/jobs/{job}/events", json={"event": "complete"}):
                pass


async def main(memory_bytes: int, seconds: float, clients: int) -> None:
    port = free_port()
    env = {
        **os.environ,
        "PROGRESS_RELAY_LIMITS_MEMORY_BYTES": str(memory_bytes),
        "PROGRESS_RELAY_LIMITS_PUBLISH_RATE": "100000",
        "PROGRESS_RELAY_LIMITS_PUBLISH_BURST": "100000",
        "PROGRESS_RELAY_LOG_LEVEL": "WARNING",
    }
    process = await asyncio.create_subprocess_exec(
        "progress-relay", "serve", "--port", str(port), env=env
    )
    base = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as http:
            for _ in range(100):
                try:
                    if (await http.get(f"{base}/readyz")).status == 200:
                        break
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.1)
            start_rss = usage([process.pid]).rss_kb / 1024
            print(
                f"limits.memory_bytes = {memory_bytes / _MIB:.0f} MiB; RSS at start "
                f"{start_rss:.0f} MiB; {clients} clients, {seconds:.0f} s"
            )
            print(
                f"{'s':>5} {'RSS MiB':>8} {'counted MiB':>12} {'dropped':>8} {'200':>6} {'503':>6}"
            )
            tally: dict[str, int] = {}
            started = time.monotonic()
            stop = started + seconds
            floods = [
                asyncio.create_task(_flood(http, base, c, stop, tally)) for c in range(clients)
            ]
            peak = 0.0
            while time.monotonic() < stop:
                await asyncio.sleep(0.5)
                rss = usage([process.pid]).rss_kb / 1024
                peak = max(peak, rss)
                scraped = await _metrics(http, base)
                print(
                    f"{time.monotonic() - started:5.1f} {rss:8.0f} "
                    f"{scraped.get('progress_relay_memory_bytes', 0) / _MIB:12.1f} "
                    f"{scraped.get('progress_relay_histories_dropped_total', 0):8.0f} "
                    f"{tally.get('200', 0):6} {tally.get('503', 0):6}"
                )
            await asyncio.gather(*floods)
            print(f"peak RSS {peak:.0f} MiB; statuses {dict(sorted(tally.items()))}")
    finally:
        process.terminate()
        await process.wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m bench.memory_flood", description=__doc__)
    parser.add_argument("--memory-bytes", type=int, default=256 * _MIB)
    parser.add_argument("--unbounded", action="store_true", help="limits.memory_bytes = 1 TiB")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--clients", type=int, default=4)
    args = parser.parse_args()
    limit = 1 << 40 if args.unbounded else args.memory_bytes
    asyncio.run(main(limit, args.seconds, args.clients))
