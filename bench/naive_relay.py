"""BASELINE, not progress-relay: the naive aiohttp-sse relay that the bench compares against.

It is the SSE progress relay most people write first, kept deliberately plain: a dict of
job → list of ``asyncio.Queue`` (unbounded), the publish handler puts the event in every
subscriber's queue, and each stream handler awaits ``resp.send()`` once per event. Pings every
15 s come from aiohttp-sse. No history, so no resume: ``Last-Event-ID`` is ignored.

Run: ``python -m bench.naive_relay --port 8090``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging

from aiohttp import web
from aiohttp_sse import EventSourceResponse

SUBSCRIBERS = web.AppKey("subscribers", dict[str, list[asyncio.Queue[tuple[str, str, str]]]])
COUNTERS = web.AppKey("counters", dict[str, int])


async def publish(request: web.Request) -> web.Response:
    job = request.match_info["job_id"]
    body = await request.json()
    events = body.get("events", [body])
    counters = request.app[COUNTERS]
    ids = []
    for event in events:
        counters[job] = counters.get(job, 0) + 1
        event_id = str(counters[job])
        item = (event_id, event["event"], json.dumps(event["data"], separators=(",", ":")))
        for queue in request.app[SUBSCRIBERS].get(job, []):
            queue.put_nowait(item)
        ids.append(event_id)
    return web.json_response({"ids": ids, "cancel_requested": False})


async def stream(request: web.Request) -> web.StreamResponse:
    job = request.match_info["job_id"]
    queue: asyncio.Queue[tuple[str, str, str]] = asyncio.Queue()
    subscribers = request.app[SUBSCRIBERS].setdefault(job, [])
    subscribers.append(queue)
    try:
        async with EventSourceResponse(ping_interval=15) as response:
            await response.prepare(request)
            while True:
                event_id, name, data = await queue.get()
                await response.send(data, id=event_id, event=name)
    finally:
        subscribers.remove(queue)
        if not subscribers:
            del request.app[SUBSCRIBERS][job]


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


def create_app() -> web.Application:
    app = web.Application()
    app[SUBSCRIBERS] = {}
    app[COUNTERS] = {}
    app.router.add_post("/v1/jobs/{job_id}/events", publish)
    app.router.add_get("/v1/jobs/{job_id}/stream", stream)
    app.router.add_get("/healthz", healthz)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8090)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    web.run_app(
        create_app(),
        host=args.host,
        port=args.port,
        access_log=None,
        backlog=4096,
        print=None,
        handler_cancellation=True,
    )


if __name__ == "__main__":
    main()
