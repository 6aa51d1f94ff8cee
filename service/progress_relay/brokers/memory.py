"""The embedded broker: one process, everything in memory, history lost on restart (new epoch)."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

import msgspec

from progress_relay.brokers.base import (
    Expired,
    JobPage,
    Listener,
    Published,
    Replay,
    Resync,
    too_many_jobs,
)
from progress_relay.brokers.idempotency import SeenKeys
from progress_relay.config import JobSettings
from progress_relay.core.ring import Ring
from progress_relay.wire.content import ContentTail
from progress_relay.wire.errors import JobFinished, no_job
from progress_relay.wire.events import CANCEL_REQUESTED, Draft, Event
from progress_relay.wire.ids import Position, new_epoch
from progress_relay.wire.snapshot import (
    EtaEstimator,
    Snapshot,
    apply,
    new_snapshot,
    with_content,
    with_eta,
)

_encode = msgspec.json.Encoder().encode


class _Job:
    __slots__ = (
        "content",
        "eta",
        "finished_at",
        "order",
        "ring",
        "seen",
        "seq",
        "snapshot",
        "touched",
        "ttl",
    )

    def __init__(
        self, snapshot: Snapshot, ring: Ring, content: ContentTail, ttl: float | None, order: int
    ) -> None:
        self.snapshot = snapshot  # without its content: ``view`` adds it for readers
        self.ring = ring
        self.content = content
        self.eta = EtaEstimator()
        self.ttl = ttl
        self.order = order  # creation order, the position of the job in the job list
        self.touched = time.monotonic()
        self.finished_at: float | None = None
        self.seq = 0  # of the job's newest event
        self.seen: SeenKeys | None = None  # made on the first idempotency key

    def view(self) -> Snapshot:
        """The snapshot as a reader of this job gets it: with its streamed text."""
        return with_content(self.snapshot, *self.content.view())


def _no_listener(job_id: str, events: Sequence[Event]) -> None:
    return None


class MemoryBroker:
    def __init__(self, settings: JobSettings) -> None:
        self._settings = settings
        self._epoch = new_epoch()
        self._seq = 0
        self._created = 0
        self._jobs: dict[str, _Job] = {}
        self._listener: Listener = _no_listener

    @property
    def epoch(self) -> str:
        return self._epoch

    def set_listener(self, listener: Listener) -> None:
        self._listener = listener

    def set_resync(self, resync: Resync) -> None:
        return None  # live delivery is a function call here: it is never interrupted

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        self._jobs.clear()

    async def ping(self) -> None:
        return None

    async def job_counts(self) -> dict[str, int]:
        return dict(Counter(job.snapshot.status for job in self._jobs.values()))

    def _new_job(self, job_id: str, ttl: float | None, meta: Any) -> _Job:
        if len(self._jobs) >= self._settings.max_jobs:
            raise too_many_jobs(self._settings)
        settings = self._settings
        self._created += 1
        ring = Ring(settings.ring_events, settings.ring_bytes)
        content = ContentTail(settings.content_bytes)
        job = _Job(new_snapshot(job_id, meta), ring, content, ttl, self._created)
        self._jobs[job_id] = job
        return job

    async def create(self, job_id: str, *, ttl: float | None, meta: Any) -> tuple[Snapshot, bool]:
        job = self._jobs.get(job_id)
        if job is not None:
            return job.snapshot, False
        return self._new_job(job_id, ttl, meta).snapshot, True

    async def publish(self, job_id: str, drafts: Sequence[Draft]) -> Published:
        job = self._jobs.get(job_id) or self._new_job(job_id, None, None)
        snapshot = job.snapshot
        seen = job.seen
        known = [None if seen is None or d.key is None else seen.get(d.key) for d in drafts]
        if None in known and snapshot.finished:
            raise JobFinished(f"job {job_id} has already {snapshot.status}")
        events: list[Event] = []
        ids: list[str] = []
        tail = self._settings.log_tail
        for draft, known_id in zip(drafts, known, strict=True):
            if known_id is not None:
                ids.append(known_id)
                continue
            self._seq += 1
            event_id = str(Position(self._epoch, self._seq))
            apply(snapshot, draft, event_id, job.eta, tail, job.content)
            eta = snapshot.eta_seconds
            data = with_eta(draft, None if eta is None else _encode(eta))
            event = Event(job_id, self._seq, event_id, draft.name, data)
            job.ring.append(event)
            events.append(event)
            ids.append(event_id)
            if draft.key is not None:
                if seen is None:
                    settings = self._settings
                    seen = SeenKeys(settings.idempotency_window, settings.idempotency_keys)
                    job.seen = seen
                seen.add(draft.key, event_id)
        if events:
            job.seq = self._seq
            job.touched = time.monotonic()
            if snapshot.finished:
                job.finished_at = job.touched
            self._listener(job_id, events)
        return Published(events, ids, snapshot.cancel_requested)

    async def request_cancel(self, job_id: str) -> tuple[Snapshot, Event | None]:
        job = self._jobs.get(job_id)
        if job is None:
            raise no_job(job_id)
        if job.snapshot.finished:
            raise JobFinished(f"job {job_id} has already {job.snapshot.status}")
        if job.snapshot.cancel_requested:
            return job.snapshot, None
        published = await self.publish(job_id, [CANCEL_REQUESTED])
        return job.snapshot, published.events[0]

    async def snapshot(self, job_id: str) -> Snapshot | None:
        job = self._jobs.get(job_id)
        return None if job is None else job.view()

    async def replay(self, job_id: str, after: int) -> Replay | None:
        return self._replay(job_id, after)

    async def replays(self, reads: Sequence[tuple[str, int | None]]) -> list[Replay | None]:
        return [self._replay(job_id, after) for job_id, after in reads]

    def _replay(self, job_id: str, after: int | None) -> Replay | None:
        job = self._jobs.get(job_id)
        if job is None:
            return None
        if after is None:
            return Replay(job.view(), [], False, job.seq)
        ring = job.ring
        return Replay(job.view(), ring.since(after), ring.covers(after), job.seq)

    async def delete(self, job_id: str) -> Snapshot | None:
        job = self._jobs.pop(job_id, None)
        return None if job is None else job.snapshot

    async def jobs(self, statuses: frozenset[str], limit: int, before: int | None) -> JobPage:
        found: list[_Job] = []
        for job in reversed(self._jobs.values()):  # creation order
            if before is not None and job.order >= before:
                continue
            if statuses and job.snapshot.status not in statuses:
                continue
            if len(found) == limit:
                return JobPage([job.snapshot for job in found], found[-1].order)
            found.append(job)
        return JobPage([job.snapshot for job in found], None)

    async def existing(self, job_ids: Iterable[str]) -> set[str]:
        return {job_id for job_id in job_ids if job_id in self._jobs}

    async def expired(self) -> list[Expired]:
        now = time.monotonic()
        settings = self._settings
        found = []
        for job_id, job in self._jobs.items():
            status = job.snapshot.status
            if job.finished_at is not None:
                deadline = job.finished_at + settings.finished_ttl
            elif status == "pending":
                deadline = job.touched + (job.ttl or settings.pending_ttl)
            else:
                deadline = job.touched + (job.ttl or settings.idle_ttl)
            if deadline <= now:
                found.append(Expired(job_id, status))
        return found

    async def reserve_seq(self) -> int:
        self._seq += 1
        return self._seq

    async def watch(self, job_id: str) -> None:
        return None

    def unwatch(self, job_id: str) -> None:
        return None

    def count_subscribers(self, job_id: str, count: int) -> None:
        return None

    async def subscribers(self, job_ids: Sequence[str], local: Sequence[int]) -> list[int]:
        return list(local)  # one process: its own streams are all of them
