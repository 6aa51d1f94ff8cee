"""The order in which a stream catches up several jobs: missed events, or `reset` snapshots.

A stream's last id is a promise: a client that saw id X has every event of every job of the stream
up to X, as an event or reflected in a `reset`; it resumes from X alone. Events in id order keep
that promise. A `reset` of job J reflects J up to the moment its replay was read, which is past
every replayed event, so it goes first; but its id (J's newest seq) would promise the other jobs
up to that seq too. So every job with a replayed event at or below that seq is reset as well, and
only the last `reset` carries an id. A client cut off among the resets keeps its old id and gets
them again.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from progress_relay.brokers import Replay
from progress_relay.wire.events import Event


@dataclass(slots=True)
class JobCatchUp:
    job_id: str
    replay: Replay | None  # None: the broker has no such job (yet)
    reset: bool  # the replay cannot reach back far enough: send the snapshot instead

    @property
    def seq(self) -> int:
        return 0 if self.replay is None else self.replay.seq

    @property
    def events(self) -> list[Event]:
        return [] if self.reset or self.replay is None else self.replay.events


def arrange(jobs: Iterable[JobCatchUp]) -> tuple[list[JobCatchUp], list[Event]]:
    """The jobs to reset first (in seq order; only the last frame carries its id), then the
    events to send, in id order."""
    jobs = list(jobs)
    resets = [job for job in jobs if job.reset]
    if resets:
        mark = max(job.seq for job in resets)
        grew = True
        while grew:
            grew = False
            for job in jobs:
                events = job.events
                if events and events[0].seq <= mark:
                    job.reset = True
                    resets.append(job)
                    mark = max(mark, job.seq)
                    grew = True
        resets.sort(key=lambda job: job.seq)
    events = sorted((event for job in jobs for event in job.events), key=lambda e: e.seq)
    return resets, events
