"""An aiohttp backend: ``POST /start`` creates a job on the relay and runs a simulated file
transcription in a background task, publishing its progress with ``AsyncRelay``; ``GET /``
is a page that starts jobs and shows each with the relay's ``<job-progress>`` element.

    python -m examples.aiohttp_app --relay http://127.0.0.1:8080 --port 8000
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from examples.shared import STAGES, TRANSCRIPT, UPLOAD_PARTS, arguments, page, summary
from progress_relay.client import AsyncRelay

log = logging.getLogger("examples.aiohttp_app")


@dataclass
class Backend:
    relay: AsyncRelay
    page: str
    delay: float
    # Running jobs: a task nobody holds a reference to may be garbage-collected mid-job.
    tasks: set[asyncio.Task[None]] = field(default_factory=set)


BACKEND = web.AppKey("backend", Backend)


async def transcribe(relay: AsyncRelay, job_id: str, file_name: str, delay: float) -> None:
    """The job. Each tracker call publishes. Once a viewer has asked to cancel, the next one
    raises ``Cancelled``: that leaves the block, and ``track`` ends the job as cancelled (and
    swallows the exception; ``tracker.cancelled`` tells). Any other exception ends the job as
    failed and goes on up; leaving the block normally completes it with ``tracker.result``."""
    async with relay.track(job_id, stages=STAGES) as tracker:
        await tracker.stage("upload", message=f"Uploading {file_name}")
        for part in range(1, UPLOAD_PARTS + 1):
            await asyncio.sleep(delay)
            await tracker.progress(part / UPLOAD_PARTS, message=f"part {part} of {UPLOAD_PARTS}")
        await tracker.log(f"uploaded {file_name}")

        await tracker.stage("transcribe", message="Transcribing")
        for n, line in enumerate(TRANSCRIPT, 1):
            await asyncio.sleep(delay)
            await tracker.content(line + "\n")  # the page shows the text as it comes
            await tracker.progress(n / len(TRANSCRIPT), message=f"segment {n} of {len(TRANSCRIPT)}")
        await tracker.log(f"transcribed {len(TRANSCRIPT)} segments", level="success")

        await tracker.stage("summarize", message="Summarizing")
        await asyncio.sleep(delay)
        tracker.result = summary(TRANSCRIPT)
    log.info("job %s %s", job_id, "cancelled by a viewer" if tracker.cancelled else "completed")


async def index(request: web.Request) -> web.Response:
    return web.Response(text=request.app[BACKEND].page, content_type="text/html")


async def start(request: web.Request) -> web.Response:
    backend = request.app[BACKEND]
    try:
        body: Any = await request.json() if request.can_read_body else {}
    except ValueError:
        raise web.HTTPBadRequest(text='the body must be JSON: {"file": "name"}') from None
    file_name = body.get("file") if isinstance(body, dict) else None
    if not isinstance(file_name, str) or not file_name.strip():
        file_name = "interview.mp3"
    job = await backend.relay.create_job(meta={"file": file_name})
    task = asyncio.create_task(transcribe(backend.relay, job.id, file_name, backend.delay))
    backend.tasks.add(task)
    task.add_done_callback(backend.tasks.discard)
    log.info("job %s started: %s", job.id, job.stream_url)
    return web.json_response({"job_id": job.id, "subscribe_token": job.subscribe_token})


def create_app(
    relay_url: str,
    *,
    public_relay_url: str | None = None,
    token: str | None = None,
    progress_rate: float = 10.0,
    delay: float,
) -> web.Application:
    app = web.Application()

    async def lifetime(app: web.Application) -> AsyncIterator[None]:
        async with AsyncRelay(relay_url, token=token, progress_rate=progress_rate) as relay:
            app[BACKEND] = Backend(relay, page(public_relay_url or relay_url), delay)
            yield
            # Stopping: jobs still running end as cancelled (track publishes that when its task
            # is cancelled) instead of being left running.
            tasks = list(app[BACKEND].tasks)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    app.cleanup_ctx.append(lifetime)
    app.router.add_get("/", index)
    app.router.add_post("/start", start)
    return app


def main() -> None:
    args = arguments("progress-relay example: an aiohttp backend", default_port=8000)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    app = create_app(
        args.relay,
        public_relay_url=args.public_relay,
        token=args.token,
        progress_rate=args.progress_rate,
        delay=args.delay,
    )
    web.run_app(app, host=args.host, port=args.port)


if __name__ == "__main__":
    main()
