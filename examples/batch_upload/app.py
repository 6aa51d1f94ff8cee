"""A batch upload: ``POST /upload`` takes N files (multipart), creates one group on the relay
with a child job per file, and processes the files in background tasks, each child tracked with
``AsyncRelay.track``; the relay adds the children up into the parent (percent, counts, its
end). ``GET /`` is a page that uploads files and shows the batch as one ``<job-progress group>``:
one bar, with every file's own below it.

    python -m examples.batch_upload --relay http://127.0.0.1:8080 --port 8003
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import BodyPartReader, web

from examples.shared import arguments, page
from progress_relay.client import AsyncRelay

log = logging.getLogger("examples.batch_upload")

PAGE = Path(__file__).with_name("page.html")
# The stages of each file's processing, in order; the tracker spreads 0-100 % over them.
STAGES = ["store", "scan", "thumbnail"]
# Files processed at the same time; the others wait, shown as pending.
WORKERS = 4
# Steps of the simulated scan of one file.
SCAN_STEPS = 4
# Files in one batch at most (the relay's limits.max_children is 1000).
MAX_FILES = 100


@dataclass
class Backend:
    relay: AsyncRelay
    page: str
    delay: float
    workers: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(WORKERS))
    # Running batches: a task nobody holds a reference to may be garbage-collected mid-job.
    tasks: set[asyncio.Task[None]] = field(default_factory=set)


BACKEND = web.AppKey("backend", Backend)


async def create_group(relay: AsyncRelay, files: list[tuple[str, bytes]]) -> dict[str, Any]:
    """The parent and one child per file in one call (``POST /v1/jobs`` with ``children``);
    each child's ``meta.name`` is its file's name, which ``<job-progress>`` shows as its
    label. The answer holds the children's links, in order."""
    body = {
        "id": f"batch-{uuid.uuid4().hex}",
        "meta": {"files": len(files)},
        "children": [
            {"id": f"file-{uuid.uuid4().hex}", "meta": {"name": name, "bytes": len(data)}}
            for name, data in files
        ],
    }
    headers = {"Authorization": f"Bearer {relay.token}"} if relay.token else {}
    async with relay.session.post(f"{relay.url}/v1/jobs", json=body, headers=headers) as answer:
        created: dict[str, Any] = await answer.json()
        if answer.status not in (200, 201):
            raise web.HTTPBadGateway(text=f"the relay refused the batch: {created}")
    return created


async def process(backend: Backend, job_id: str, name: str, data: bytes) -> None:
    """One file. Each tracker call publishes; after a Cancel on the batch (the relay passes it
    to every unfinished child) the next one raises ``Cancelled``, which ``track`` ends as
    cancelled. A file named ``fail…`` fails its job, as a damaged upload would: the batch then
    ends ``failed``, naming it."""
    async with backend.workers, backend.relay.track(job_id, stages=STAGES) as tracker:
        await tracker.stage("store", message=f"storing {len(data)} bytes")
        await asyncio.sleep(backend.delay)
        await tracker.stage("scan", message="scanning")
        for step in range(1, SCAN_STEPS + 1):
            await asyncio.sleep(backend.delay)
            if name.startswith("fail") and step == SCAN_STEPS // 2:
                raise ValueError(f"{name} is damaged")
            await tracker.progress(step / SCAN_STEPS, message=f"scan {step} of {SCAN_STEPS}")
        await tracker.stage("thumbnail", message="making the thumbnail")
        await asyncio.sleep(backend.delay)
        tracker.result = {"name": name, "bytes": len(data)}


async def run_batch(backend: Backend, children: list[str], files: list[tuple[str, bytes]]) -> None:
    jobs = zip(children, files, strict=True)
    results = await asyncio.gather(
        *(process(backend, job, name, data) for job, (name, data) in jobs), return_exceptions=True
    )
    failed = [repr(result) for result in results if isinstance(result, BaseException)]
    log.info("batch of %d files done, %d failed: %s", len(files), len(failed), failed)


async def index(request: web.Request) -> web.Response:
    return web.Response(text=request.app[BACKEND].page, content_type="text/html")


async def upload(request: web.Request) -> web.Response:
    backend = request.app[BACKEND]
    if not request.content_type.startswith("multipart/"):
        raise web.HTTPBadRequest(text="send the files as multipart/form-data, field 'files'")
    files: list[tuple[str, bytes]] = []
    reader = await request.multipart()
    async for part in reader:
        if isinstance(part, BodyPartReader) and part.name == "files" and part.filename:
            files.append((part.filename, await part.read()))
    if not files:
        raise web.HTTPBadRequest(text="no files: send at least one in the field 'files'")
    if len(files) > MAX_FILES:
        raise web.HTTPRequestEntityTooLarge(MAX_FILES, len(files))
    group = await create_group(backend.relay, files)
    children = [child["id"] for child in group["children"]]
    task = asyncio.create_task(run_batch(backend, children, files))
    backend.tasks.add(task)
    task.add_done_callback(backend.tasks.discard)
    log.info("batch %s started: %d files", group["id"], len(files))
    token = group.get("subscribe_token")
    answer = {"job_id": group["id"], "children": children, "subscribe_token": token}
    return web.json_response(answer)


def create_app(
    relay_url: str,
    *,
    public_relay_url: str | None = None,
    token: str | None = None,
    progress_rate: float = 10.0,
    delay: float,
) -> web.Application:
    app = web.Application(client_max_size=64 * 1024 * 1024)

    async def lifetime(app: web.Application) -> AsyncIterator[None]:
        async with AsyncRelay(relay_url, token=token, progress_rate=progress_rate) as relay:
            app[BACKEND] = Backend(relay, page(public_relay_url or relay_url, PAGE), delay)
            yield
            # Stopping: files still being processed end as cancelled (track publishes that
            # when its task is cancelled), and so does their batch.
            tasks = list(app[BACKEND].tasks)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    app.cleanup_ctx.append(lifetime)
    app.router.add_get("/", index)
    app.router.add_post("/upload", upload)
    return app


def main() -> None:
    args = arguments("progress-relay example: a batch upload", default_port=8003)
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
