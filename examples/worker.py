"""A plain worker script: builds a (simulated) report and publishes its progress through
progress-relay with the synchronous ``Relay``, no web framework involved.

    python examples/worker.py --relay http://127.0.0.1:8080 [--job ID] [--token TOKEN]

It prints the job's id and stream URL first (follow the job with ``progress-relay watch ID``
or ``curl -N URL``), then works through three stages with logs. Exit status: 0 completed,
1 failed, 2 cancelled by a viewer (``curl -X POST RELAY/v1/jobs/ID/cancel``).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from progress_relay.client import Relay

STAGES = ["fetch", "analyse", "render"]
SOURCES = {"sales.csv": 1204, "returns.csv": 87, "regions.json": 12}
ANALYSES = ["totals by region", "month over month", "top products", "returns rate"]

EXIT_FAILED = 1
EXIT_CANCELLED = 2  # as `progress-relay watch` exits for a cancelled job


def build_report(relay: Relay, job_id: str, *, delay: float, fail: bool) -> bool:
    """The job; False when a viewer cancelled it. Every tracker call publishes. Once a viewer
    has asked to cancel, the next one raises ``Cancelled``: that leaves the block, and ``track``
    ends the job as cancelled (and swallows the exception). Any other exception fails the job
    and goes on up; leaving the block normally completes it with ``tracker.result``."""
    with relay.track(job_id, stages=STAGES) as tracker:
        tracker.stage("fetch", message="Fetching the data")
        for n, (name, rows) in enumerate(SOURCES.items(), 1):
            time.sleep(delay)
            tracker.log(f"fetched {name} ({rows} rows)")
            tracker.progress(n / len(SOURCES))

        tracker.stage("analyse", message="Analysing")
        for n, analysis in enumerate(ANALYSES, 1):
            time.sleep(delay)
            tracker.progress(n / len(ANALYSES), message=analysis)
        tracker.log("analysis done", level="success")

        tracker.stage("render", message="Rendering the report")
        time.sleep(delay)
        if fail:
            raise RuntimeError("the renderer ran out of memory")
        tracker.log("wrote report.pdf (12 pages)")
        tracker.result = {"file": "report.pdf", "pages": 12}
    return not tracker.cancelled


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--relay",
        default=os.environ.get("PROGRESS_RELAY_URL", "http://127.0.0.1:8080"),
        help="the relay's URL (default: $PROGRESS_RELAY_URL, or http://127.0.0.1:8080)",
    )
    parser.add_argument("--job", help="the job's id (default: the relay picks one)")
    parser.add_argument(
        "--token",
        default=os.environ.get("PROGRESS_RELAY_TOKEN"),
        help="a publisher token of the relay (auth.publish_tokens); default: $PROGRESS_RELAY_TOKEN",
    )
    parser.add_argument("--delay", type=float, default=0.5, help="seconds each step takes")
    parser.add_argument(
        "--progress-rate",
        type=float,
        default=10.0,
        help="progress events per second per job at most; more often, only the newest is sent"
        " (the SDK's default: %(default)s; 0 sends every one)",
    )
    parser.add_argument("--fail", action="store_true", help="fail in the last stage")
    args = parser.parse_args()

    with Relay(args.relay, token=args.token, progress_rate=args.progress_rate) as relay:
        job = relay.create_job(args.job)
        print(f"job {job.id}", flush=True)
        print(f"stream {job.stream_url}", flush=True)
        try:
            completed = build_report(relay, job.id, delay=args.delay, fail=args.fail)
        except Exception as error:
            print(f"failed: {error}", file=sys.stderr)
            return EXIT_FAILED
        if not completed:
            print("cancelled by a viewer", file=sys.stderr)
            return EXIT_CANCELLED
    print("completed", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
