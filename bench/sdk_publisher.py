"""The publisher of the `many-sdk` scenario, run as its own process so that its CPU is its own:
one task per job publishing through the real SDK (``progress_relay.client.AsyncRelay``, batching
across jobs on), each job at its rate, on a fixed schedule (a publish that comes back late makes
the next one go at once, never two at a time).

Reads ``{"url", "jobs", "first": [per job], "per_job", "rate", "deadline_s", "batch_window"}``
as JSON on stdin (``first``: each job's first sequence, for a phase that continues an earlier
one); writes ``{"sent": [per job], "errors", "error_kinds", "publishing_s", "cpu_s",
"requests"}`` as JSON on stdout once every job is done. Each payload is
bench.publisher.payload's: its sequence in the job and its publish time, taken right before the
call (the window's wait is latency)."""

from __future__ import annotations

import asyncio
import json
import resource
import sys
import time
from collections import Counter
from typing import Any

from progress_relay.client import AsyncRelay, RelayError

PAD = "processing chunk of the input"
EVENT = "tick"


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def main(spec: dict[str, Any]) -> dict[str, Any]:
    jobs: list[str] = spec["jobs"]
    firsts: list[int] = spec["first"]
    per_job: int = spec["per_job"]
    interval = 1.0 / float(spec["rate"])
    sent = [0] * len(jobs)
    errors: Counter[str] = Counter()
    loop = asyncio.get_running_loop()
    async with AsyncRelay(
        spec["url"], progress_rate=0, batch_window=float(spec["batch_window"]), retry_budget=10
    ) as relay:
        cpu_start = _cpu_s()
        start = loop.time() + 0.05
        deadline = start + float(spec["deadline_s"])

        async def job_task(index: int) -> None:
            job = jobs[index]
            # Jobs start spread over one interval, as independent workers would.
            first = start + interval * index / len(jobs)
            for seq in range(per_job):
                due = first + seq * interval
                now = loop.time()
                if now > deadline:
                    return
                if due > now:
                    await asyncio.sleep(due - now)
                data = {"s": firsts[index] + seq, "t": time.time_ns() // 1000, "m": PAD}
                try:
                    await relay.publish(job, EVENT, data)
                except RelayError as error:
                    errors[error.code] += 1
                    return  # the job's next events would be gaps
                sent[index] = seq + 1

        await asyncio.gather(*(job_task(i) for i in range(len(jobs))))
        publishing_s = loop.time() - start
        cpu_s = _cpu_s() - cpu_start
        requests = relay.cross_job.requests
    return {
        "sent": sent,
        "errors": sum(errors.values()),
        "error_kinds": ", ".join(f"{k}: {n}" for k, n in sorted(errors.items())) or "-",
        "publishing_s": publishing_s,
        "cpu_s": cpu_s,
        "requests": requests,
    }


if __name__ == "__main__":
    result = asyncio.run(main(json.loads(sys.stdin.read())))
    sys.stdout.write(json.dumps(result))
