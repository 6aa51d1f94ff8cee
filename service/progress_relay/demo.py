"""The demo: a page at ``/`` and a built-in worker that publishes realistic flows through the
relay's own broker, as a backend would (``demo.enabled``; on in ``make run``).

Flows: a file transcription with stages, a RAG question with tool calls and logs, an LLM answer
streamed as ``content``, and one that fails. Every step checks ``cancel_requested`` (as the
publish response tells a worker) and ends the job as ``cancelled`` when a viewer asked.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import deque
from collections.abc import AsyncIterator
from importlib import resources
from typing import Any

import msgspec
from aiohttp import web

from progress_relay.http.keys import HUB, SETTINGS
from progress_relay.wire.errors import RateLimited
from progress_relay.wire.events import parse_publish

log = logging.getLogger(__name__)
routes = web.RouteTableDef()

_encode = msgspec.json.Encoder().encode
_PAGE = resources.files("progress_relay").joinpath("static/demo.html").read_bytes()
KINDS = ("transcription", "rag", "answer", "failing")
# The demo jobs the page lists, and the flows that may run at once (a page left clicking, or a
# script, must not grow the relay).
LISTED = 20
RUNNING = 50


class _Worker:
    def __init__(self) -> None:
        self.jobs: deque[str] = deque(maxlen=LISTED)  # ids of the newest demo jobs, newest last
        self.tasks: set[asyncio.Task[None]] = set()


_WORKER = web.AppKey("demo_worker", _Worker)

Step = tuple[str, dict[str, Any], float]  # event, data, seconds to wait before it


def _flow(kind: str) -> list[Step]:
    if kind == "transcription":
        steps: list[Step] = [("progress", {"percent": 0, "stage": "uploading"}, 0.2)]
        steps += [("progress", {"percent": p, "stage": "uploading"}, 0.15) for p in (5, 10, 15)]
        steps += [("log", {"message": "upload complete: interview.mp3 (42 MB)"}, 0.1)]
        steps += [("progress", {"percent": 20, "stage": "transcoding"}, 0.4)]
        for n in range(1, 9):
            steps.append(
                (
                    "progress",
                    {
                        "percent": 20 + n * 10,
                        "stage": "transcribing",
                        "step": n,
                        "total_steps": 8,
                        "message": f"segment {n} of 8",
                    },
                    0.35,
                )
            )
        steps += [("complete", {"message": "Transcript ready", "result": {"words": 6120}}, 0.2)]
        return steps
    if kind == "rag":
        return [
            ("progress", {"percent": 5, "stage": "understanding the question"}, 0.3),
            ("log", {"message": "tool call: search_index(query='refund policy 2026')"}, 0.4),
            ("log", {"message": "found 12 documents", "level": "success"}, 0.3),
            ("progress", {"percent": 40, "stage": "reading documents"}, 0.5),
            ("log", {"message": "tool call: fetch(doc=policy.pdf, pages=3-5)"}, 0.4),
            ("log", {"message": "1 document was too large; summarised", "level": "warning"}, 0.3),
            ("progress", {"percent": 75, "stage": "writing the answer"}, 0.5),
            ("content", {"text": "Refunds are possible within 30 days. "}, 0.3),
            ("content", {"text": "See section 4 of the policy."}, 0.3),
            ("complete", {"message": "Answered with 2 sources"}, 0.2),
        ]
    if kind == "answer":
        words = "Server-Sent Events keep one HTTP response open and send events as lines"
        steps = [("progress", {"percent": 0, "stage": "thinking"}, 0.4)]
        for n, word in enumerate(words.split(), 1):
            steps.append(("content", {"text": word + " "}, 0.15))
            steps.append(("progress", {"percent": 100 * n // (len(words.split()) + 1)}, 0.0))
        steps.append(("complete", {"message": "Done"}, 0.2))
        return steps
    return [
        ("progress", {"percent": 10, "stage": "preparing"}, 0.3),
        ("log", {"message": "connecting to the render farm"}, 0.4),
        ("progress", {"percent": 35, "stage": "rendering"}, 0.6),
        ("log", {"message": "node 3 stopped answering", "level": "error"}, 0.4),
        ("failed", {"message": "Rendering failed: the render farm is unavailable"}, 0.2),
    ]


async def run_job(app: web.Application, job_id: str, kind: str) -> None:
    speed = app[SETTINGS].demo.speed
    for event, data, wait in _flow(kind):
        await asyncio.sleep(wait * speed)
        if await _publish(app, job_id, event, data):
            await _publish(app, job_id, "cancelled", {"message": "Cancelled by a viewer"})
            return


async def _publish(app: web.Application, job_id: str, event: str, data: dict[str, Any]) -> bool:
    """Publish as a worker does, validated like a request; whether a viewer asked to cancel."""
    limits = app[SETTINGS].limits
    drafts = parse_publish(
        _encode({"event": event, "data": data}),
        max_event_bytes=limits.max_event_bytes,
        max_batch_events=limits.max_batch_events,
        max_json_depth=limits.max_json_depth,
    )
    published = await app[HUB].publish(job_id, drafts)
    return published.cancel_requested


@routes.get("/")
async def page(request: web.Request) -> web.Response:
    return web.Response(body=_PAGE, content_type="text/html", charset="utf-8")


@routes.get("/demo/jobs")
async def list_jobs(request: web.Request) -> web.Response:
    jobs = list(request.app[_WORKER].jobs)
    return web.Response(body=_encode(jobs), content_type="application/json")


@routes.post("/demo/jobs")
async def start_job(request: web.Request) -> web.Response:
    kind = request.query.get("kind", "transcription")
    if kind not in KINDS:
        raise web.HTTPBadRequest(text=f"kind must be one of {', '.join(KINDS)}")
    job_id = f"demo-{kind}-{uuid.uuid4().hex[:8]}"
    app = request.app
    worker = app[_WORKER]
    if len(worker.tasks) >= RUNNING:
        raise RateLimited(
            f"the demo runs at most {RUNNING} flows at once; wait for one to end",
            headers={"Retry-After": "5"},
        )
    await app[HUB].create(job_id, ttl=None, meta={"kind": kind})
    worker.jobs.append(job_id)
    task = asyncio.create_task(run_job(app, job_id, kind))
    worker.tasks.add(task)
    task.add_done_callback(worker.tasks.discard)
    return web.Response(
        status=201, body=_encode({"id": job_id, "kind": kind}), content_type="application/json"
    )


async def _worker(app: web.Application) -> AsyncIterator[None]:
    app[_WORKER] = _Worker()
    yield
    tasks = list(app[_WORKER].tasks)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def install(app: web.Application) -> None:
    app.add_routes(routes)
    app.cleanup_ctx.append(_worker)
