"""A Flask backend: ``POST /start`` creates a job on the relay and runs a simulated file
transcription in a worker thread, publishing its progress with the synchronous ``Relay``;
``GET /`` is a page that starts jobs and shows each with the relay's ``<job-progress>`` element.

    python -m examples.flask_app --relay http://127.0.0.1:8080 --port 8001
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor

from flask import Flask, Response, request

from examples.shared import STAGES, TRANSCRIPT, UPLOAD_PARTS, arguments, page, summary
from progress_relay.client import Relay

log = logging.getLogger("examples.flask_app")

# Jobs run on at most this many threads at once; more wait in the pool's queue, and their
# page shows them as pending until a thread takes them.
WORKERS = 4


def transcribe(relay: Relay, job_id: str, file_name: str, delay: float) -> None:
    """The job, on a worker thread. Each tracker call publishes. Once a viewer has asked to
    cancel, the next one raises ``Cancelled``: that leaves the block, and ``track`` ends the job
    as cancelled (and swallows the exception; ``tracker.cancelled`` tells). Any other exception
    ends the job as failed and goes on up; leaving the block normally completes it with
    ``tracker.result``."""
    try:
        with relay.track(job_id, stages=STAGES) as tracker:
            tracker.stage("upload", message=f"Uploading {file_name}")
            for part in range(1, UPLOAD_PARTS + 1):
                time.sleep(delay)
                tracker.progress(part / UPLOAD_PARTS, message=f"part {part} of {UPLOAD_PARTS}")
            tracker.log(f"uploaded {file_name}")

            tracker.stage("transcribe", message="Transcribing")
            for n, line in enumerate(TRANSCRIPT, 1):
                time.sleep(delay)
                tracker.content(line + "\n")  # the page shows the text as it comes
                tracker.progress(n / len(TRANSCRIPT), message=f"segment {n} of {len(TRANSCRIPT)}")
            tracker.log(f"transcribed {len(TRANSCRIPT)} segments", level="success")

            tracker.stage("summarize", message="Summarizing")
            time.sleep(delay)
            tracker.result = summary(TRANSCRIPT)
        log.info("job %s %s", job_id, "cancelled by a viewer" if tracker.cancelled else "completed")
    except Exception:
        # track has published `failed`; the pool would keep the exception to itself.
        log.exception("job %s failed", job_id)


def create_app(
    relay_url: str,
    *,
    public_relay_url: str | None = None,
    token: str | None = None,
    progress_rate: float = 10.0,
    delay: float,
) -> Flask:
    app = Flask(__name__)
    # One client for every request and worker thread: it keeps its connections to the relay.
    relay = Relay(relay_url, token=token, progress_rate=progress_rate)
    workers = ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="job")
    html = page(public_relay_url or relay_url)

    @app.get("/")
    def index() -> Response:
        return Response(html, mimetype="text/html")

    @app.post("/start")
    def start() -> dict[str, str | None]:
        body = request.get_json(silent=True)
        file_name = body.get("file") if isinstance(body, dict) else None
        if not isinstance(file_name, str) or not file_name.strip():
            file_name = "interview.mp3"
        job = relay.create_job(meta={"file": file_name})
        workers.submit(transcribe, relay, job.id, file_name, delay)
        log.info("job %s started: %s", job.id, job.stream_url)
        return {"job_id": job.id, "subscribe_token": job.subscribe_token}

    return app


def main() -> None:
    args = arguments("progress-relay example: a Flask backend", default_port=8001)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # else a line for every publish
    app = create_app(
        args.relay,
        public_relay_url=args.public_relay,
        token=args.token,
        progress_rate=args.progress_rate,
        delay=args.delay,
    )
    # Flask's development server, threaded; in production run create_app under a WSGI server.
    app.run(host=args.host, port=args.port, threaded=True)


if __name__ == "__main__":
    main()
