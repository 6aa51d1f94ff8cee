"""A FastAPI backend for a chat page (seed 003's stack): ``POST /api/ask`` answers a question
within the request, publishing each step (step X of 5, with its logs) and the answer as it is
written through ``AsyncRelay``. The page (examples/react_page, React with the npm package's
``useJob``) makes the job's id, has ``POST /api/jobs`` create the job (and hand it the job's
subscriber token, when the relay checks subscribers), opens the job's stream, and only then
asks (seed 001's order).

    python -m examples.fastapi_app --relay http://127.0.0.1:8080 --port 8002
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import uvicorn
from fastapi import FastAPI, HTTPException
from fastapi.responses import FileResponse, HTMLResponse
from pydantic import BaseModel, Field

from examples.shared import arguments, page
from progress_relay.client import AsyncRelay, BadRequest, JobFinished

log = logging.getLogger("examples.fastapi_app")

PAGE = Path(__file__).resolve().parents[1] / "react_page" / "index.html"
# Built by `make npm` (or `npm run example` in service/npm) from examples/react_page/main.jsx.
BUNDLE = PAGE.with_name("dist") / "app.js"

# The analysis's steps, in order: the tracker sends each as `step` of `total_steps` (1 of 5 ...).
STEPS = ["cache", "context", "query", "analysis", "answer"]
DOCUMENTS = ["q3-report.pdf", "holdings.csv", "prices-2026.parquet"]
TICKERS = ["ACME", "GLOBEX", "INITECH", "UMBRELLA"]


class Question(BaseModel):
    question: str = Field(min_length=1, max_length=2000)
    # The id the page made for the job (and whose stream it opened before it asks).
    job_id: str


def answer_to(question: str) -> str:
    """The simulated analysis' answer (what the page shows as it is streamed)."""
    return (
        f"For “{question}”: over the last quarter ACME gained 9\u00a0%, GLOBEX 4\u00a0% and"
        " INITECH 6\u00a0%; UMBRELLA had no price data."
    )


async def analyse(relay: AsyncRelay, job_id: str, question: str, delay: float) -> str | None:
    """The job: the answer, or None when a viewer cancelled it. Each tracker call publishes;
    after a viewer's Cancel the next one raises ``Cancelled``, which ends the job as cancelled
    (``track`` swallows it); any other exception fails the job and goes on up."""
    answer = answer_to(question)
    async with relay.track(job_id, stages=STEPS) as tracker:
        await tracker.stage("cache", message="Checking the cache")
        await tracker.log(f"Processing question: {question}")
        await asyncio.sleep(delay)
        await tracker.log("Cache miss: proceeding")

        await tracker.stage("context", message="Searching for context")
        await asyncio.sleep(delay)
        await tracker.log(f"Found {len(DOCUMENTS)} documents", level="success")

        await tracker.stage("query", message="Expanding the query")
        await asyncio.sleep(delay)
        await tracker.log(f"Query expanded: {', '.join(TICKERS)}, last quarter")

        await tracker.stage("analysis", message="Analysing prices")
        for n, ticker in enumerate(TICKERS, 1):
            await asyncio.sleep(delay)
            await tracker.progress(n / len(TICKERS), message=f"{ticker} ({n} of {len(TICKERS)})")
        await tracker.log(f"No price data for {TICKERS[-1]}", level="warning")

        await tracker.stage("answer", message="Writing the answer")
        for n, word in enumerate(answer.split(" ")):  # streamed word by word, as an LLM would
            await tracker.content(word if n == 0 else f" {word}")
            await asyncio.sleep(delay / 4)
        await tracker.log("Analysis complete", level="success")
        tracker.result = {"answer": answer, "sources": len(DOCUMENTS)}
    log.info("job %s %s", job_id, "cancelled by a viewer" if tracker.cancelled else "completed")
    return None if tracker.cancelled else answer


def create_app(
    relay_url: str,
    *,
    public_relay_url: str | None = None,
    token: str | None = None,
    progress_rate: float = 10.0,
    delay: float,
    bundle: Path = BUNDLE,
) -> FastAPI:
    clients: dict[str, AsyncRelay] = {}

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with AsyncRelay(relay_url, token=token, progress_rate=progress_rate) as relay:
            clients["relay"] = relay
            yield

    app = FastAPI(title="progress-relay example: a FastAPI backend", lifespan=lifespan)
    index = page(public_relay_url or relay_url, PAGE)

    @app.get("/", response_class=HTMLResponse)
    async def home() -> str:
        return index

    @app.get("/app.js")
    async def script() -> FileResponse:
        return FileResponse(bundle, media_type="text/javascript")

    @app.post("/api/jobs")
    async def create(body: Question) -> dict[str, Any]:
        """The job of the page's id, created before the page opens its stream; the answer
        carries the token that lets the page (and only it) watch this job, when the relay
        checks subscribers (None when it is open)."""
        try:
            job = await clients["relay"].create_job(body.job_id, meta={"question": body.question})
        except BadRequest as error:  # the relay's rules, e.g. for the job id
            raise HTTPException(400, str(error)) from None
        return {"job_id": job.id, "subscribe_token": job.subscribe_token}

    @app.post("/api/ask")
    async def ask(body: Question) -> dict[str, Any]:
        try:
            answer = await analyse(clients["relay"], body.job_id, body.question, delay)
        except BadRequest as error:
            raise HTTPException(400, str(error)) from None
        except JobFinished:
            raise HTTPException(409, f"job {body.job_id} has already run") from None
        if answer is None:
            return {"status": "cancelled"}
        return {"status": "completed", "answer": answer, "sources": len(DOCUMENTS)}

    return app


def main() -> None:
    def more(parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--bundle",
            type=Path,
            default=BUNDLE,
            help="the page's script, built from examples/react_page (default: %(default)s)",
        )

    args = arguments("progress-relay example: a FastAPI backend", default_port=8002, more=more)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if not args.bundle.is_file():
        sys.exit(
            f"{args.bundle} is missing: build the page first with `make npm` (or, in service/npm,"
            " `npm ci && npm run example`)"
        )
    app = create_app(
        args.relay,
        public_relay_url=args.public_relay,
        token=args.token,
        progress_rate=args.progress_rate,
        delay=args.delay,
        bundle=args.bundle,
    )
    uvicorn.run(app, host=args.host, port=args.port, log_level="info")


if __name__ == "__main__":
    main()
