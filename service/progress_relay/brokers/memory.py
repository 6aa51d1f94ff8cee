"""The embedded broker: one process, everything in memory, history lost on restart (new epoch).

Its memory is bounded in total (``limits.memory_bytes``, brokers/budget.py): every job's bytes
are counted as they are stored and freed. A publish or create that would not fit first makes
room by dropping the history of the jobs that finished longest ago (a reader resuming from it
gets ``reset``, the snapshot, as for any history that is no longer retained); if it still does
not fit it is refused whole, 503 memory_full, and nothing changes. A publish that ends its job
fits when dropping the job's own history makes room: ending jobs is what frees memory.
"""

from __future__ import annotations

import sys
import time
from collections import Counter, OrderedDict
from collections.abc import Iterable, Sequence
from typing import Any

import msgspec
from msgspec import Raw

from progress_relay.brokers.base import (
    Expired,
    JobPage,
    Listener,
    MemoryUse,
    Published,
    Replay,
    Resync,
    too_many_jobs,
)
from progress_relay.brokers.budget import (
    EVENT_BYTES,
    JOB_BYTES,
    KEY_BYTES,
    LOG_ENTRY_BYTES,
    RAW_BYTES,
    TEXT_BYTES,
    MemoryBudget,
    memory_full,
    text_bytes,
)
from progress_relay.brokers.idempotency import SeenKeys
from progress_relay.brokers.outbox import MemoryOutbox
from progress_relay.config import JobSettings, LimitSettings, WebhookSettings
from progress_relay.core.ring import Ring
from progress_relay.wire.content import ContentTail, trim_limit
from progress_relay.wire.errors import JobFinished, RelayError, no_job
from progress_relay.wire.events import CANCEL_REQUESTED, ContentData, Draft, Event, LogData
from progress_relay.wire.ids import Position, new_epoch
from progress_relay.wire.snapshot import (
    EtaEstimator,
    Snapshot,
    apply,
    changes,
    new_snapshot,
    with_content,
    with_eta,
)
from progress_relay.wire.webhooks import Delivery, JobWebhook, selected

_encode = msgspec.json.Encoder().encode


# Snapshot fields an event may set whose size varies (what replacing them frees).
_SIZED_FIELDS = ("stage", "message", "redirect_url", "result", "error")
# Events that may set those fields.
_STATEFUL = frozenset({"progress", "complete", "failed", "cancelled"})
# Bytes a frame has beyond its event's name and data: "id: ", the epoch, "-", a seq of up to 20
# digits, "\nevent: ", "\ndata: ", "\n\n", and an ETA the relay may add to a progress event.
_FRAME_EXTRA = 96
_EVENT_COST = _FRAME_EXTRA + EVENT_BYTES


class _Job:
    __slots__ = (
        "content",
        "eta",
        "finished_at",
        "fixed_bytes",
        "held",
        "log_bytes",
        "order",
        "ring",
        "seen",
        "seq",
        "snapshot",
        "touched",
        "ttl",
        "webhook",
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
        self.held = 0  # bytes this job has reported to the budget
        self.fixed_bytes = 0  # the job itself, its id and meta
        self.log_bytes = 0  # its log tail
        self.webhook: JobWebhook | None = None

    def view(self) -> Snapshot:
        """The snapshot as a reader of this job gets it: with its streamed text (decoded on the
        first read after a change, and kept: the broker counts it, ``MemoryBroker._view``)."""
        return with_content(self.snapshot, *self.content.view())


_sizeof = sys.getsizeof


def _raw_bytes(value: Any) -> int:
    return len(value) + RAW_BYTES if isinstance(value, Raw) else 0


def _field_bytes(name: str, value: Any) -> int:
    if value is None:
        return 0
    if name == "result":
        return _raw_bytes(value)
    if name == "error":
        return text_bytes(value.message) + text_bytes(value.code) + _raw_bytes(value.details)
    return text_bytes(value) if isinstance(value, str) else 0


def _state_bytes(snapshot: Snapshot) -> int:
    """What the snapshot's fields that events set hold: texts, numbers, result and error (the
    log tail is counted apart, only when it changes). Inlined: it runs on every publish."""
    size = (
        _sizeof(snapshot.stage)
        + _sizeof(snapshot.message)
        + _sizeof(snapshot.redirect_url)
        + _sizeof(snapshot.step)
        + _sizeof(snapshot.total_steps)
    )
    if snapshot.result is not None:
        size += _raw_bytes(snapshot.result)
    error = snapshot.error
    if error is not None:
        size += _sizeof(error.message) + _sizeof(error.code) + _raw_bytes(error.details)
    return size


def _log_bytes(snapshot: Snapshot) -> int:
    return sum(LOG_ENTRY_BYTES + _sizeof(entry.message) for entry in snapshot.logs)


def _job_bytes(job: _Job) -> int:
    """What ``job`` holds, by the count of brokers/budget.py."""
    ring = job.ring
    seen = job.seen
    return (
        job.fixed_bytes
        + ring.bytes
        + len(ring) * EVENT_BYTES
        + _state_bytes(job.snapshot)
        + job.log_bytes
        + _text_bytes(job.content)
        + (0 if seen is None else seen.bytes)
    )


def _text_bytes(content: ContentTail) -> int:
    """A job's streamed text: its bytes (a buffer that grows by an eighth more than it needs),
    and, once a reader has read it, the text decoded from the newest of them."""
    held = content.held
    return held + held // 8 + content.view_bytes + TEXT_BYTES if held else 0


def _compact(snapshot: Snapshot) -> None:
    """Keep a finished job's result and error details as their JSON bytes: decoded, a value
    costs up to twenty times as much, for as long as the job is kept."""
    if snapshot.result is not None and not isinstance(snapshot.result, Raw):
        snapshot.result = Raw(_encode(snapshot.result))
    error = snapshot.error
    if error is not None and error.details is not None and not isinstance(error.details, Raw):
        error.details = Raw(_encode(error.details))


def _no_listener(job_id: str, events: Sequence[Event]) -> None:
    return None


class MemoryBroker:
    def __init__(
        self,
        settings: JobSettings,
        memory_bytes: int = LimitSettings().memory_bytes,
        webhooks: WebhookSettings | None = None,
    ) -> None:
        self._settings = settings
        # Webhook deliveries, queued as their events are published (None: webhooks are off).
        self.outbox: MemoryOutbox | None = None
        self._hooks = webhooks
        if webhooks is not None and webhooks.secret:
            self.outbox = MemoryOutbox(webhooks.outbox_size)
        self._epoch = new_epoch()
        self._seq = 0
        self._created = 0
        self._jobs: dict[str, _Job] = {}
        self._listener: Listener = _no_listener
        self.budget = MemoryBudget(memory_bytes)
        # Finished jobs that still hold history, the longest finished first: what goes first
        # when memory runs short.
        self._finished: OrderedDict[str, _Job] = OrderedDict()

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
        self._finished.clear()
        self.budget.add(-self.budget.held)

    async def ping(self) -> None:
        return None

    async def job_counts(self) -> dict[str, int]:
        return dict(Counter(job.snapshot.status for job in self._jobs.values()))

    async def memory(self) -> MemoryUse:
        budget = self.budget
        return MemoryUse(budget.held, budget.limit, budget.dropped)

    def _new_job(self, job_id: str, ttl: float | None, meta: Any) -> _Job:
        settings = self._settings
        self._created += 1
        ring = Ring(settings.ring_events, settings.ring_bytes)
        content = ContentTail(settings.content_bytes)
        job = _Job(new_snapshot(job_id, meta), ring, content, ttl, self._created)
        job.fixed_bytes = self._job_cost(job_id, meta)
        self._jobs[job_id] = job
        self._account(job)
        return job

    @staticmethod
    def _job_cost(job_id: str, meta: Any) -> int:
        return JOB_BYTES + sys.getsizeof(job_id) + _raw_bytes(meta)

    async def create(
        self, job_id: str, *, ttl: float | None, meta: Any, webhook: JobWebhook | None = None
    ) -> tuple[Snapshot, bool]:
        """``meta`` is kept as given: the Hub gives its JSON as ``Raw``, so it costs its bytes."""
        job = self._jobs.get(job_id)
        if job is not None:
            return job.snapshot, False
        if len(self._jobs) >= self._settings.max_jobs:
            raise too_many_jobs(self._settings)
        if not self._make_room(self._job_cost(job_id, meta)):
            raise memory_full("this job")
        job = self._new_job(job_id, ttl, meta)
        job.webhook = webhook
        return job.snapshot, True

    async def publish(self, job_id: str, drafts: Sequence[Draft]) -> Published:
        job = self._jobs.get(job_id)
        seen = None if job is None else job.seen
        known = [None if seen is None or d.key is None else seen.get(d.key) for d in drafts]
        new = None in known
        if new and job is not None and job.snapshot.finished:
            raise JobFinished(f"job {job_id} has already {job.snapshot.status}")
        if new:
            if job is None and len(self._jobs) >= self._settings.max_jobs:
                raise too_many_jobs(self._settings)
            fresh = (
                drafts
                if seen is None
                else [draft for draft, id_ in zip(drafts, known, strict=True) if id_ is None]
            )
            if not self._admit(job_id, job, fresh):
                raise memory_full("this publish")
        if job is None:
            job = self._new_job(job_id, None, None)
        snapshot = job.snapshot
        events: list[Event] = []
        ids: list[str] = []
        tail = self._settings.log_tail
        logs = False
        hooked = self._hooked(job)
        stage_changes: list[bool] = []
        for draft, known_id in zip(drafts, known, strict=True):
            if known_id is not None:
                ids.append(known_id)
                continue
            logs = logs or isinstance(draft.payload, LogData)
            self._seq += 1
            event_id = str(Position(self._epoch, self._seq))
            stage = snapshot.stage
            apply(snapshot, draft, event_id, job.eta, tail, job.content)
            if hooked:
                stage_changes.append(draft.name == "progress" and snapshot.stage != stage)
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
                _compact(snapshot)
                if len(job.ring):
                    self._finished[job_id] = job
        if logs:
            job.log_bytes = _log_bytes(snapshot)
        self._account(job)
        if self.budget.room() < 0:
            self._make_room(0)  # only a publish that ended its job gets here: its history goes
        if events:
            if hooked:
                self._enqueue(job, events, stage_changes)
            self._listener(job_id, events)
        return Published(events, ids, snapshot.cancel_requested, snapshot.parent)

    async def keep_children(self, parent_id: str, children: Sequence[str]) -> None:
        return None  # ``expired`` leaves a child alone while its parent exists

    async def write_group(self, job_id: str, fields: dict[str, Any]) -> bool:
        # One process, and the Hub's read and write of a group do not yield in between: the
        # group written is never older than the one stored.
        job = self._jobs.get(job_id)
        if job is not None:
            for name, value in fields.items():
                setattr(job.snapshot, name, value)
        return True

    async def snapshots(self, job_ids: Sequence[str]) -> list[Snapshot | None]:
        found = [self._jobs.get(job_id) for job_id in job_ids]
        return [None if job is None else job.snapshot for job in found]

    async def publish_many(
        self, batches: Sequence[tuple[str, Sequence[Draft]]]
    ) -> list[Published | RelayError]:
        outcomes: list[Published | RelayError] = []
        for job_id, drafts in batches:
            try:
                outcomes.append(await self.publish(job_id, drafts))
            except RelayError as exc:
                outcomes.append(exc)
        return outcomes

    # -- the memory bound ------------------------------------------------------------------

    def _view(self, job: _Job) -> Snapshot:
        """A reader's snapshot of ``job``. A read is never refused: when the text it decoded
        takes the relay past the bound, the oldest finished histories make up for it."""
        viewed = job.content.view_bytes
        snapshot = job.view()
        if job.content.view_bytes != viewed:
            self._account(job)
            if self.budget.room() < 0:
                self._make_room(0)
        return snapshot

    def _account(self, job: _Job) -> None:
        """Tell the budget what ``job`` holds now."""
        held = _job_bytes(job)
        self.budget.add(held - job.held)
        job.held = held

    def _make_room(self, size: int) -> bool:
        """Drop the oldest finished jobs' history until ``size`` more bytes fit; whether they
        do."""
        budget = self.budget
        finished = self._finished
        while budget.room() < size and finished:
            _, job = finished.popitem(last=False)
            job.ring.clear()
            budget.dropped += 1
            self._account(job)
        return budget.room() >= size

    def _admit(self, job_id: str, job: _Job | None, drafts: Sequence[Draft]) -> bool:
        """Whether publishing ``drafts`` fits the bound, making room if needed. What they add
        is estimated from above; what they free (the history they push out, the log entries
        and texts they replace) is counted only when that estimate does not fit at once."""
        added = 0
        for draft in drafts:
            data = len(draft.data)
            added += data + len(draft.name) + _EVENT_COST
            if draft.key is not None:
                added += KEY_BYTES + _sizeof(draft.key)
            payload = draft.payload
            if isinstance(payload, LogData):
                added += LOG_ENTRY_BYTES + _sizeof(payload.message)
            elif isinstance(payload, ContentData):
                added += data + data // 8  # the text (its decoded view is dropped)
            elif draft.name in _STATEFUL:
                added += data + 2 * RAW_BYTES  # texts, result, error
        if job is None:
            return self._make_room(added + self._job_cost(job_id, None))
        if added <= self.budget.room():
            return True
        sizes = [len(draft.data) + len(draft.name) + _FRAME_EXTRA for draft in drafts]
        events = sum(sizes) + EVENT_BYTES * len(drafts)
        added -= self._freed(job, drafts, sizes)
        if self._make_room(added):
            return True
        # Ending the job lets its whole history go (the newest finished, it goes last).
        ring = job.ring
        return drafts[-1].terminal and self._make_room(
            added - events - ring.bytes - len(ring) * EVENT_BYTES
        )

    def _freed(self, job: _Job, drafts: Sequence[Draft], sizes: Sequence[int]) -> int:
        """What publishing ``drafts`` frees for certain: history pushed out, log entries past
        the tail, and the snapshot texts they replace."""
        out, out_bytes = job.ring.would_push_out(sizes)
        freed = out_bytes + out * EVENT_BYTES
        snapshot = job.snapshot
        logs = sum(isinstance(draft.payload, LogData) for draft in drafts)
        for entry in snapshot.logs[: max(0, len(snapshot.logs) + logs - self._settings.log_tail)]:
            freed += LOG_ENTRY_BYTES + _sizeof(entry.message)
        content = job.content
        text = sum(len(d.data) for d in drafts if isinstance(d.payload, ContentData))
        if text:
            freed += content.view_bytes  # appending drops the decoded view
            if content.held + text > trim_limit(content.bound):  # and trims the text
                freed += (content.held + text - content.bound) * 9 // 8
        replaced = {name for draft in drafts for name in changes(draft)}
        for name in replaced.intersection(_SIZED_FIELDS):
            freed += _field_bytes(name, getattr(snapshot, name))
        return freed

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
        return None if job is None else self._view(job)

    async def replay(self, job_id: str, after: int) -> Replay | None:
        return self._replay(job_id, after)

    async def replays(self, reads: Sequence[tuple[str, int | None]]) -> list[Replay | None]:
        return [self._replay(job_id, after) for job_id, after in reads]

    def _replay(self, job_id: str, after: int | None) -> Replay | None:
        job = self._jobs.get(job_id)
        if job is None:
            return None
        if after is None:
            return Replay(self._view(job), [], False, job.seq)
        ring = job.ring
        return Replay(self._view(job), ring.since(after), ring.covers(after), job.seq)

    async def delete(self, job_id: str) -> Snapshot | None:
        job = self._jobs.pop(job_id, None)
        if job is None:
            return None
        self._finished.pop(job_id, None)
        self.budget.add(-job.held)
        return job.snapshot

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
            parent = job.snapshot.parent
            if parent is not None and parent in self._jobs:
                continue  # a child lives as long as its parent: the group goes as one
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

    # -- webhooks ----------------------------------------------------------------------------

    def _hooked(self, job: _Job) -> bool:
        """Whether ``job``'s events go to a webhook: its own, or the relay's `webhooks.url`."""
        hooks = self._hooks
        if self.outbox is None or hooks is None:
            return False
        return job.webhook is not None or bool(hooks.url)

    def _enqueue(self, job: _Job, events: list[Event], stage_changes: list[bool]) -> None:
        """The published events the job's receiver asked for, into the outbox, in the same step
        as the publish; each with the snapshot as the publish left it."""
        hooks, outbox = self._hooks, self.outbox
        if hooks is None or outbox is None:
            return
        hook = job.webhook
        mode = hooks.events if hook is None or hook.events is None else hook.events
        url = "" if hook is None else hook.url
        snapshot: Raw | None = None
        for event, stage_changed in zip(events, stage_changes, strict=True):
            if not selected(mode, event.name, stage_changed):
                continue
            if snapshot is None:
                snapshot = Raw(_encode(job.snapshot))
            data = Raw(event.data)
            outbox.put(Delivery(event.id, job.snapshot.id, event.name, data, snapshot, url))
