"""The Hub: the one entry for what changes a job (create, publish, cancel, delete) and for what
reads one (snapshot, history, the job list, a stream's open); this process's topics, the
hand-over from replay to live, and ending streams. Handlers and the demo call the Hub, never the
broker.

With tracing on (``tracer``, set by ops/tracing.py), create, publish, cancel, delete and a
stream's open are spans, with the broker's call a child span of publish and open. With it off
(None) the only cost is the check for None: publish, open, create, cancel and delete are then
the untraced coroutines themselves, without a wrapper."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable, Coroutine, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

import msgspec
from msgspec import Raw

from progress_relay.brokers import Broker, JobPage, MemoryUse, Published, Replay, broker_kind
from progress_relay.config import Settings
from progress_relay.core import catchup, groups
from progress_relay.core.catchup import JobCatchUp, ReplayMode, Resume
from progress_relay.core.counts import RelayCounts
from progress_relay.core.flusher import Flusher
from progress_relay.core.heartbeat import Heartbeat
from progress_relay.core.subscriber import Subscriber
from progress_relay.core.topic import Topic
from progress_relay.wire import sse
from progress_relay.wire.batch import JobBatch
from progress_relay.wire.errors import (
    GONE_REASONS,
    GroupConflict,
    GroupTooDeep,
    JobFinished,
    JobNotFound,
    MemoryFull,
    PayloadTooLarge,
    RelayError,
    ShuttingDown,
    TooManyChildren,
    TooManyStreams,
    no_job,
)
from progress_relay.wire.events import Draft, Event, validate_order
from progress_relay.wire.ids import Position
from progress_relay.wire.snapshot import Snapshot, without_content
from progress_relay.wire.webhooks import JobWebhook

if TYPE_CHECKING:
    from progress_relay.ops.tracing import Attributes, Tracer

log = logging.getLogger(__name__)

_encode = msgspec.json.Encoder().encode


def _no_timer(seconds: float) -> None:
    return None


_JOB_ID = "progress_relay.job_id"
# Reads of a parent's group after a child event (Hub.regroup): the last one confirms the state.
_REGROUP_ROUNDS = 4
# The ids a stream.open span names (a multi-job stream may follow up to limits.max_stream_jobs).
_TRACED_JOB_IDS = 16


def _annotate_open(
    tracer: Tracer, resume: Resume, outcome: str, replayed: int, resets: int
) -> None:
    """A stream's replay decision, on its `stream.open` span: ``outcome`` is `no_content`
    (204), `reset` (a snapshot for at least one job), `replay` (missed events only) or `wait`
    (nothing to send yet)."""
    kind = "foreign" if resume.foreign else "none" if resume.position is None else "current"
    tracer.annotate(
        {
            "progress_relay.last_event_id": kind,
            "progress_relay.outcome": outcome,
            "progress_relay.replayed": replayed,
            "progress_relay.resets": resets,
        }
    )


def _unfollowed_children(parent: Replay | None, job_ids: Sequence[str]) -> bool:
    if parent is None or isinstance(parent.snapshot.group, msgspec.UnsetType):
        return False
    return bool(set(parent.snapshot.group.children).difference(job_ids))


class Child(NamedTuple):
    """A child declared with its parent's creation (``POST /v1/jobs`` with ``children``)."""

    id: str
    weight: float | None = None
    meta: Any = None


class History(NamedTuple):
    """A page of a job's retained history (``GET /v1/jobs/{id}/events``)."""

    snapshot: Snapshot
    events: list[Event]
    truncated: bool  # what the reader asked for reaches back past what is retained
    has_more: bool


class Hub:
    def __init__(self, broker: Broker, settings: Settings) -> None:
        self.broker = broker
        self.settings = settings
        self._topics: dict[str, Topic] = {}
        self._retry = sse.retry_frame(settings.stream.retry_ms)
        self.streams = 0
        self._by_client: dict[str, int] = {}  # open streams by client (http/clients.py)
        self.draining = False
        self.counts = RelayCounts()
        self.flusher = Flusher()
        # Every live stream's `: ping`, on one timer (streams join it once live: http/streams.py).
        self.heartbeat = Heartbeat(settings.stream.heartbeat)
        # Seconds each publish took, broker included (set by ops.metrics to its histogram).
        self.publish_timer: Callable[[float], None] = _no_timer
        # Spans of what the Hub does (set by ops.tracing when tracing is on; None: off).
        self.tracer: Tracer | None = None
        self._broker_kind = {"progress_relay.broker": broker_kind(settings)}
        # Group streams taking up children created after they opened (take_up_children).
        self._taking_up: set[asyncio.Future[None]] = set()
        broker.set_listener(self.deliver)
        broker.set_resync(self.catch_up)

    # -- changing a job -----------------------------------------------------------------------

    def create(
        self,
        job_id: str,
        *,
        ttl: float | None,
        meta: Any,
        webhook: JobWebhook | None = None,
        parent: str | None = None,
        weight: float | None = None,
        children: Sequence[Child] = (),
    ) -> Coroutine[Any, Any, bool]:
        """Create a job (idempotent); True when this call created it. ``webhook``: its own
        receiver, already checked against ``webhooks.allowed``. With ``parent`` it is that
        job's child (of ``weight``); with ``children`` they are created as its children, each
        idempotent as well (without the webhook: the parent's end is the group's)."""
        call = self._create_in_group(job_id, ttl, meta, webhook, parent, weight, children)
        tracer = self.tracer
        return call if tracer is None else tracer.around("create", {_JOB_ID: job_id}, call)

    async def _create_in_group(
        self,
        job_id: str,
        ttl: float | None,
        meta: Any,
        webhook: JobWebhook | None,
        parent: str | None,
        weight: float | None,
        children: Sequence[Child],
    ) -> bool:
        if parent is None and not children:
            return await self._create(job_id, ttl, meta, webhook)
        parent_snapshot = None
        if parent is not None:
            parent_snapshot = await self._check_parent(parent, 1, 1 + bool(children))
            if job_id in {child.id for child in children} or job_id == parent:
                raise GroupConflict(f"job {job_id} cannot be its own parent")
        if children:
            limit = self.settings.limits.max_children
            if len(children) > limit:
                raise TooManyChildren(
                    f"`children` has {len(children)} jobs; a parent has at most {limit} "
                    "(limits.max_children) - at `$.children`"
                )
            ids = [child.id for child in children]
            if len(set(ids)) != len(ids):
                raise GroupConflict("`children` names a job twice - at `$.children`")
        created = await self._create(job_id, ttl, meta, webhook)
        if parent is not None and parent_snapshot is not None:
            await self._join(parent_snapshot, [Child(job_id, weight)], {job_id: created})
        if children:
            snapshot = await self.broker.snapshot(job_id)
            if snapshot is None:
                raise no_job(job_id)
            made = {}
            for child in children:
                made[child.id] = await self._create(child.id, ttl, child.meta, None)
            await self._join(snapshot, children, made)
        return created

    async def _check_parent(self, parent: str, joining: int, levels: int) -> Snapshot:
        """The parent's snapshot, if ``joining`` more children with ``levels`` of their own (1:
        none) may join it."""
        snapshot = await self.broker.snapshot(parent)
        if snapshot is None:
            raise no_job(parent)
        if snapshot.finished:
            raise JobFinished(f"job {parent} has already {snapshot.status}")
        limits = self.settings.limits
        group = snapshot.group
        have = 0 if isinstance(group, msgspec.UnsetType) else len(group.children)
        if have + joining > limits.max_children:
            raise TooManyChildren(
                f"job {parent} has {have} children; a parent has at most "
                f"{limits.max_children} (limits.max_children)"
            )
        depth = levels + 1
        above = snapshot.parent
        while above is not None and depth <= limits.max_group_depth:
            depth += 1
            ancestor = await self.broker.snapshot(above)
            above = None if ancestor is None else ancestor.parent
        if depth > limits.max_group_depth:
            raise GroupTooDeep(
                f"a group has at most {limits.max_group_depth} levels "
                f"(limits.max_group_depth), the parent included; job {parent} is too deep"
            )
        return snapshot

    async def _join(
        self, parent: Snapshot, children: Sequence[Child], created: dict[str, bool]
    ) -> None:
        """Make ``children`` (created or found by this call: ``created``) children of
        ``parent``; a child that existed must already be one of it."""
        group = parent.group
        known = [] if isinstance(group, msgspec.UnsetType) else list(group.children)
        joining = len({child.id for child in children}.difference(known))
        limit = self.settings.limits.max_children
        if len(known) + joining > limit:
            raise TooManyChildren(
                f"job {parent.id} has {len(known)} children; a parent has at most {limit} "
                "(limits.max_children)"
            )
        for child in children:
            if child.id in known:
                continue
            if not created[child.id]:
                existing = await self.broker.snapshot(child.id)
                if existing is None or existing.parent != parent.id:
                    raise GroupConflict(
                        f"job {child.id} exists and is not a child of {parent.id}: a job's "
                        "parent is set when it is created"
                    )
                continue
            fields: dict[str, Any] = {"parent": parent.id}
            if child.weight is not None:
                fields["weight"] = child.weight
            await self.broker.write_group(child.id, fields)
            known.append(child.id)
        await self.regroup(parent.id, known)

    async def regroup(self, parent_id: str, children: Sequence[str] | None = None) -> None:
        """Bring a parent's aggregate up to date with its children (``children``: its new
        list), and publish the parent's event when it changed (core/groups.py).

        Read again after each write: with Redis, instances regroup one parent at once, and one
        that read before another's child event may write after it; whoever writes last sees
        the children as they are and writes again, so every instance ends on the same state."""
        joining = list(children or ())
        for _ in range(_REGROUP_ROUNDS):
            (parent,) = await self.broker.snapshots([parent_id])
            if parent is None:
                return
            stored = [] if isinstance(parent.group, msgspec.UnsetType) else parent.group.children
            if not stored and not joining:
                return
            # Children are only ever added: the list is the stored one and those joining now
            # (another instance may have stored a list without them, or with others).
            seen = set(stored)
            children = [*stored, *(child for child in joining if child not in seen)]
            new = groups.aggregate(children, await self.broker.snapshots(children))
            if not groups.changed(parent, new):
                return
            if not await self.broker.write_group(parent_id, {"group": new.group}):
                continue  # another instance wrote a newer group meanwhile: read again
            # A child joining a parent that has started is announced (its group streams
            # take the child up from this event); a group that has not started stays pending.
            announce = bool(joining) and parent.status != "pending"
            joining = []
            if parent.finished or (new.group.counts.pending == new.group.total and not announce):
                await self.broker.keep_children(parent_id, children)
                return  # ended by its publisher already, or nothing has started yet
            with contextlib.suppress(JobFinished):  # ended meanwhile
                await self._publish(parent_id, groups.events(new), self.tracer)
            # After the parent's event, which set its lifetime (finished_ttl after its end).
            await self.broker.keep_children(parent_id, children)

    async def _create(
        self, job_id: str, ttl: float | None, meta: Any, webhook: JobWebhook | None
    ) -> bool:
        limits = self.settings.limits
        raw = None
        if meta is not None:
            # Kept as its JSON (Raw): a decoded value would cost up to twenty times as much.
            raw = meta if isinstance(meta, Raw) else Raw(_encode(meta))
            if len(raw) > limits.max_event_bytes:
                raise PayloadTooLarge(
                    f"`meta` is larger than {limits.max_event_bytes} bytes - at `$.meta`"
                )
        try:
            _, created = await self.broker.create(job_id, ttl=ttl, meta=raw, webhook=webhook)
        except MemoryFull:
            self.counts.memory_refused += 1
            raise
        return created

    def publish(self, job_id: str, drafts: Sequence[Draft]) -> Coroutine[Any, Any, Published]:
        """Publish validated drafts to a job (created if unknown); the events reach this
        process's subscribers through ``deliver``."""
        tracer = self.tracer
        if tracer is None:
            return self._publish(job_id, drafts, None)
        attributes: Attributes = {_JOB_ID: job_id, "progress_relay.events": len(drafts)}
        return tracer.around("publish", attributes, self._publish(job_id, drafts, tracer))

    async def _publish(
        self, job_id: str, drafts: Sequence[Draft], tracer: Tracer | None
    ) -> Published:
        validate_order(drafts)
        started = time.perf_counter()
        try:
            if tracer is None:
                published = await self.broker.publish(job_id, drafts)
            else:
                call = self.broker.publish(job_id, drafts)
                published = await tracer.around("broker.publish", self._broker_kind, call)
        except MemoryFull:
            self.counts.memory_refused += 1
            raise
        self.publish_timer(time.perf_counter() - started)
        if published.parent is not None and published.events:
            await self.regroup(published.parent)
        counts = self.counts
        new = len(published.events)
        counts.published += new
        counts.duplicates += len(drafts) - new
        if tracer is not None:
            attributes: dict[str, int | str] = {
                "progress_relay.published": new,
                "progress_relay.deduplicated": len(drafts) - new,
            }
            if published.ids:
                attributes["progress_relay.first_id"] = published.ids[0]
                attributes["progress_relay.last_id"] = published.ids[-1]
            tracer.annotate(attributes)
        return published

    def publish_many(
        self, batches: Sequence[JobBatch]
    ) -> Coroutine[Any, Any, list[Published | RelayError]]:
        """Publish several jobs' drafts (a cross-job request), each job's atomically and in
        order as ``publish`` does, in one call to the broker. The order rule is checked for every
        job before anything is published; past it, a job the broker refuses gets its error in
        its place and the others are published."""
        tracer = self.tracer
        if tracer is None:
            return self._publish_many(batches, None)
        attributes: Attributes = {
            "progress_relay.jobs": len(batches),
            "progress_relay.events": sum(len(batch.drafts) for batch in batches),
        }
        return tracer.around("publish_many", attributes, self._publish_many(batches, tracer))

    async def _publish_many(
        self, batches: Sequence[JobBatch], tracer: Tracer | None
    ) -> list[Published | RelayError]:
        for batch in batches:
            validate_order(batch.drafts, batch.indices)
        started = time.perf_counter()
        call = self.broker.publish_many([(b.job_id, b.drafts) for b in batches])
        if tracer is None:
            outcomes = await call
        else:
            outcomes = await tracer.around("broker.publish_many", self._broker_kind, call)
        self.publish_timer(time.perf_counter() - started)
        counts = self.counts
        for batch, outcome in zip(batches, outcomes, strict=True):
            if isinstance(outcome, MemoryFull):
                counts.memory_refused += 1
            elif isinstance(outcome, Published):
                new = len(outcome.events)
                counts.published += new
                counts.duplicates += len(batch.drafts) - new
        parents = {o.parent for o in outcomes if isinstance(o, Published) and o.events}
        for parent in parents:
            if parent is not None:
                await self.regroup(parent)  # once per parent for all its children's events
        return outcomes

    def cancel(self, job_id: str) -> Coroutine[Any, Any, Snapshot]:
        """A viewer asks for cancellation: the job is marked and a `cancel_requested` event
        goes to its subscribers, once; the worker learns it from its next publish."""
        call = self._cancel(job_id)
        tracer = self.tracer
        return call if tracer is None else tracer.around("cancel", {_JOB_ID: job_id}, call)

    async def _cancel(self, job_id: str) -> Snapshot:
        try:
            snapshot, event = await self.broker.request_cancel(job_id)
        except MemoryFull:
            self.counts.memory_refused += 1
            raise
        if event is not None:
            self.counts.published += 1
        group = snapshot.group
        if not isinstance(group, msgspec.UnsetType):
            for child in group.children:
                with contextlib.suppress(JobFinished, JobNotFound):
                    await self._cancel(child)  # each unfinished child, as if asked itself
        return snapshot

    def delete(self, job_id: str) -> Coroutine[Any, Any, None]:
        """Drop a job and its history; its open streams end."""
        call = self._delete(job_id)
        tracer = self.tracer
        return call if tracer is None else tracer.around("delete", {_JOB_ID: job_id}, call)

    async def _delete(self, job_id: str) -> None:
        snapshot = await self.broker.delete(job_id)
        if snapshot is None:
            raise no_job(job_id)
        await self.end_job(job_id, None)
        await self.drop_children(snapshot, None)

    async def drop_children(self, snapshot: Snapshot, reason: str | None) -> None:
        """A parent has gone (deleted or evicted): its children go with it, and their streams
        end (``reason`` as for ``end_job``)."""
        group = snapshot.group
        if isinstance(group, msgspec.UnsetType):
            return
        for child_id in group.children:
            child = await self.broker.delete(child_id)
            await self.end_job(child_id, reason)
            if child is not None:
                await self.drop_children(child, reason)

    async def children(self, job_id: str) -> list[str]:
        """A job's children (none when it has none); JobNotFound for an unknown job."""
        snapshot = await self.broker.snapshot(job_id)
        if snapshot is None:
            raise no_job(job_id)
        group = snapshot.group
        return [] if isinstance(group, msgspec.UnsetType) else list(group.children)

    # -- reading a job ------------------------------------------------------------------------

    async def ready(self) -> None:
        """Returns when the relay can serve: not draining, and the broker answers."""
        if self.draining:
            raise ShuttingDown("this relay is shutting down")
        await self.broker.ping()

    async def snapshot(self, job_id: str) -> Snapshot:
        snapshot = await self.broker.snapshot(job_id)
        if snapshot is None:
            raise no_job(job_id)
        (view,) = await self._views([snapshot])
        return view

    async def history(self, job_id: str, after: str | None, limit: int) -> History:
        read = catchup.history_after(after, self.broker.epoch)
        replay = await self.broker.replay(job_id, read.seq)
        if replay is None:
            raise no_job(job_id)
        events = replay.events[:limit]
        return History(replay.snapshot, events, read.truncated(replay), len(replay.events) > limit)

    async def jobs(self, statuses: frozenset[str], limit: int, before: int | None) -> JobPage:
        """A page of the job list; its snapshots leave out the streamed text (up to
        ``jobs.content_bytes`` each): the job's own snapshot has it."""
        page = await self.broker.jobs(statuses, limit, before)
        snapshots = [without_content(snapshot) for snapshot in page.snapshots]
        return JobPage(await self._views(snapshots), page.before)

    async def job_counts(self) -> dict[str, int]:
        return await self.broker.job_counts()

    async def memory(self) -> MemoryUse:
        return await self.broker.memory()

    def snapshot_view(self, snapshot: Snapshot, subscribers: int | None = None) -> Snapshot:
        """The snapshot as readers see it: with its open streams (``subscribers``, counted
        across every instance; this process's when None)."""
        if subscribers is None:
            subscribers = self.subscriber_count(snapshot.id)
        return msgspec.structs.replace(snapshot, subscribers=subscribers)

    async def _views(self, snapshots: list[Snapshot]) -> list[Snapshot]:
        """Snapshots as readers see them, with the open streams of every instance."""
        if not snapshots:
            return []
        job_ids = [snapshot.id for snapshot in snapshots]
        counts = await self.broker.subscribers(job_ids, [self.subscriber_count(i) for i in job_ids])
        return [self.snapshot_view(s, n) for s, n in zip(snapshots, counts, strict=True)]

    def subscriber_count(self, job_id: str) -> int:
        topic = self._topics.get(job_id)
        return 0 if topic is None else len(topic.subscribers)

    # -- streams ------------------------------------------------------------------------------

    def deliver(self, job_id: str, events: Sequence[Event]) -> None:
        """The broker's listener: fan a publish out to this process's subscribers of the job."""
        topic = self._topics.get(job_id)
        if topic is not None:
            topic.publish(events)

    def open(
        self,
        job_ids: Sequence[str],
        last_event_id: str | None,
        mode: ReplayMode,
        *,
        multi: bool,
        client: str = "",
        group: bool = False,
    ) -> Coroutine[Any, Any, Subscriber | None]:
        """A subscriber with its replay queued, or None when there is nothing to stream (204).
        ``client``: who opens it (http/clients.py), for ``limits.max_streams_per_client``.
        ``group``: ``job_ids`` are a parent and its children, reset as one (catchup rule 4)."""
        tracer = self.tracer
        call = self._open(job_ids, last_event_id, mode, multi, client, tracer, group)
        if tracer is None:
            return call
        attributes: Attributes = {
            "progress_relay.jobs": len(job_ids),
            "progress_relay.job_ids": list(job_ids[:_TRACED_JOB_IDS]),
            "progress_relay.replay_mode": mode,
        }
        return tracer.around("stream.open", attributes, call)

    async def _open(
        self,
        job_ids: Sequence[str],
        last_event_id: str | None,
        mode: ReplayMode,
        multi: bool,
        client: str,
        tracer: Tracer | None,
        group: bool = False,
    ) -> Subscriber | None:
        self._admit(job_ids, client)
        stream = self.settings.stream
        subscriber = Subscriber(
            job_ids,
            multi=multi,
            max_frames=stream.queue_frames,
            max_bytes=stream.queue_bytes,
            counts=self.counts,
            flusher=self.flusher,
            client=client,
        )
        self.streams += 1
        self._by_client[client] = self._by_client.get(client, 0) + 1
        try:
            # Attach first, so events published while the replay is read are held, not missed.
            for job_id in job_ids:
                await self._attach(job_id, subscriber)
            resume = catchup.resume_from(last_event_id, self.broker.epoch, mode)
            call = self.broker.replays([(job_id, resume.after) for job_id in job_ids])
            if tracer is None:
                replays = await call
            else:
                replays = await tracer.around("broker.replays", self._broker_kind, call)
        except BaseException:
            self.close(subscriber)
            raise
        parts, ended = self._plan(job_ids, replays, resume)
        if not parts:
            self.close(subscriber)
            if tracer is not None:
                _annotate_open(tracer, resume, "no_content", 0, 0)
            return None
        resets, events = catchup.arrange(parts)
        if tracer is not None:
            outcome = "reset" if resets else "replay" if events else "wait"
            _annotate_open(tracer, resume, outcome, len(events), len(resets))
        self._count_catch_up(resets, events)
        reset_frames, event_frames = catchup.frames(
            resets, events, self.broker.epoch, self.subscriber_count, multi=multi
        )
        if group and resets:
            # The whole group as one reset, read at one instant: nothing replayed follows it.
            group_parts = [
                catchup.JobCatchUp(job_id, replay, reset=True)
                for job_id, replay in zip(job_ids, replays, strict=True)
                if replay is not None or job_id == job_ids[0]
            ]
            frame = catchup.group_reset_frame(group_parts, self.broker.epoch, self.subscriber_count)
            reset_frames, event_frames = [frame], []
        high = {part.job_id: part.seq for part in parts}
        ended.extend(part.job_id for part in parts if part.finished)
        if group:
            subscriber.follow_group(self._on_new_children)
        subscriber.start([self._retry, *reset_frames, *event_frames], high, ended)
        if group and _unfollowed_children(replays[0], job_ids):
            # Joined between the route's read of the children and the attach.
            subscriber.hold()
            self._on_new_children(subscriber)
        return subscriber

    def _on_new_children(self, subscriber: Subscriber) -> None:
        task = asyncio.ensure_future(self.take_up_children(subscriber))
        self._taking_up.add(task)
        task.add_done_callback(self._taking_up.discard)

    async def take_up_children(self, subscriber: Subscriber) -> None:
        """A group's stream (held meanwhile) follows the children created after it opened:
        each one's retained events from its first, merged in id order with the live ones held
        meanwhile; a ``reset`` (without id) instead for a child whose history no longer starts
        at its first event, or whose events are older than ones the stream has already queued
        (docs/api.md, "The group stream"). Read again until no child is new."""
        parent = subscriber.job_ids[0]
        try:
            while not subscriber.gone and not subscriber.dropped:
                new = [c for c in await self.children(parent) if c not in subscriber.job_ids]
                if not new:
                    break
                subscriber.job_ids = (*subscriber.job_ids, *new)
                for child in new:
                    await self._attach(child, subscriber)
                replays = await self.broker.replays([(child, 0) for child in new])
                if subscriber.gone:
                    break
                mark = max((subscriber.high(j) for j in subscriber.job_ids), default=0)
                resets, events = await self._plan_take_up(new, replays, mark)
                self._count_catch_up(resets, events)
                frames = [
                    catchup.reset_frame(
                        part,
                        self.broker.epoch,
                        self.subscriber_count(part.job_id),
                        multi=True,
                        with_id=False,
                    )
                    for part in resets
                ]
                subscriber.take_up(new, frames, {part.job_id: part.seq for part in resets}, events)
                for part in resets:
                    if part.finished:
                        subscriber.end_job(part.job_id)
        except RelayError as exc:
            log.warning("taking up new children of group %s failed (%s)", parent, exc)
            subscriber.drop()  # the client resumes with its last id, with every child
        finally:
            if subscriber.gone:
                self._detach(subscriber, subscriber.job_ids)
            subscriber.release()

    async def _plan_take_up(
        self, children: list[str], replays: list[Replay | None], mark: int
    ) -> tuple[list[JobCatchUp], list[Event]]:
        """New children of a group's stream: those to reset (their history no longer starts at
        their first event, or it does below ``mark``, the newest seq the stream has queued),
        read again for their text where the first read left it out; the others' events."""
        resets: list[JobCatchUp] = []
        events: list[Event] = []
        for child, replay in zip(children, replays, strict=True):
            if replay is None:
                continue  # not published yet: its events come live
            if replay.complete and not (replay.events and replay.events[0].seq <= mark):
                events.extend(replay.events)
            else:
                resets.append(JobCatchUp(child, replay, reset=True))
        textless = [
            part.job_id
            for part in resets
            if part.replay is not None
            and isinstance(part.replay.snapshot.content, msgspec.UnsetType)
        ]
        if textless:
            again = await self.broker.replays([(child, None) for child in textless])
            read = dict(zip(textless, again, strict=True))
            resets = [
                JobCatchUp(part.job_id, read[part.job_id], reset=True)
                if part.job_id in read
                else part
                for part in resets
                if read.get(part.job_id, part.replay) is not None
            ]
        return resets, events

    def _plan(
        self, job_ids: Sequence[str], replays: list[Replay | None], resume: Resume
    ) -> tuple[list[JobCatchUp], list[str]]:
        """Each job's part of a new stream, and the jobs with nothing more to come."""
        parts: list[JobCatchUp] = []
        ended: list[str] = []
        for job_id, replay in zip(job_ids, replays, strict=True):
            part = catchup.plan(job_id, replay, resume)
            if part is None:
                ended.append(job_id)  # gone, or its terminal event already seen
                continue
            topic = self._topics.get(job_id)
            if topic is not None and topic.status is None and part.seq:
                topic.status = "running"
            parts.append(part)
        return parts, ended

    def _count_catch_up(self, resets: list[JobCatchUp], events: list[Event]) -> None:
        self.counts.resets += len(resets)
        self.counts.replayed += len(events)

    def _admit(self, job_ids: Sequence[str], client: str) -> None:
        """Refuse a stream past the limits on open streams: in total, per job, per client."""
        limits = self.settings.limits
        # Come back after about one reconnect delay.
        retry_after = {"Retry-After": str(max(1, round(self.settings.stream.retry_ms / 1000)))}
        if self.draining:
            raise ShuttingDown("this relay is shutting down; connect again", headers=retry_after)
        if self.streams >= limits.max_streams:
            raise TooManyStreams(
                f"this relay has its maximum of {limits.max_streams} open streams",
                headers=retry_after,
            )
        if self._by_client.get(client, 0) >= limits.max_streams_per_client:
            raise TooManyStreams(
                f"this client ({client}) has its maximum of {limits.max_streams_per_client} "
                "open streams on this relay (limits.max_streams_per_client)",
                headers=retry_after,
            )
        for job_id in job_ids:
            if self.subscriber_count(job_id) >= limits.max_streams_per_job:
                raise TooManyStreams(
                    f"job {job_id} has its maximum of {limits.max_streams_per_job} open streams "
                    "on this relay",
                    headers=retry_after,
                )

    async def _attach(self, job_id: str, subscriber: Subscriber) -> None:
        """Returns once the broker delivers the job's events here; a subscriber that joins
        while the first one's watch is under way waits for the same watch."""
        topic = self._topics.get(job_id)
        if topic is None:
            topic = Topic(job_id, self.broker.watch(job_id), self.flusher, self.counts)
            self._topics[job_id] = topic
        topic.add(subscriber)
        self.broker.count_subscribers(job_id, len(topic.subscribers))
        await asyncio.shield(topic.watching)

    def close(self, subscriber: Subscriber) -> None:
        """Detach a subscriber whose stream is over (or whose open failed)."""
        self.streams -= 1
        self.heartbeat.discard(subscriber)
        client = subscriber.client
        left = self._by_client[client] - 1
        if left:
            self._by_client[client] = left
        else:
            del self._by_client[client]
        subscriber.gone = True
        self._detach(subscriber, subscriber.job_ids)

    def _detach(self, subscriber: Subscriber, job_ids: Sequence[str]) -> None:
        for job_id in job_ids:
            topic = self._topics.get(job_id)
            if topic is None or subscriber not in topic.subscribers:
                continue
            topic.discard(subscriber)
            self.broker.count_subscribers(job_id, len(topic.subscribers))
            if not topic.subscribers:
                del self._topics[job_id]
                self.broker.unwatch(job_id)

    async def end_job(self, job_id: str, reason: str | None) -> None:
        """The job is gone: tell its subscribers why (``reason``, a key of GONE_REASONS; None
        when they could not know) and end them."""
        topic = self._topics.get(job_id)
        if topic is None:
            return
        topic.flush()  # what was published before goes out before the end
        frame_data: bytes | None = None
        seq = 0
        told = [s for s in topic.subscribers if job_id in s.active]
        if reason is not None and told:
            seq = await self.broker.reserve_seq()
            message = GONE_REASONS[reason].format(job_id=job_id)
            frame_data = _encode({"message": message, "code": reason})
        for subscriber in list(topic.subscribers):
            if frame_data is not None and job_id in subscriber.active:
                data = sse.job_data(job_id, frame_data) if subscriber.multi else frame_data
                # The id matters even to a stream that saw no event: reconnecting with it to a
                # job that is gone gets 204, so a browser stops asking.
                event_id = str(Position(self.broker.epoch, seq))
                subscriber.add(sse.event_frame(event_id, "failed", data))
            subscriber.end_job(job_id)

    async def sweep(self) -> None:
        """End the streams of jobs that have gone from the broker (expired there, or never
        published within the pending TTL of the stream's wait)."""
        if not self._topics:
            return
        existing = await self.broker.existing(list(self._topics))
        deadline = time.monotonic() - self.settings.jobs.pending_ttl
        for job_id, topic in list(self._topics.items()):
            if job_id in existing:
                continue
            if topic.status == "running":
                await self.end_job(job_id, "job_expired")
            elif topic.created <= deadline:
                await self.end_job(job_id, "job_not_found")

    async def catch_up(self, job_ids: list[str], lost: bool) -> None:
        """After live delivery was interrupted, bring every subscriber of these jobs up to date
        from history: the missed events, or `reset` when they are out of reach (``lost``: the
        broker's history itself was lost). All jobs are read at one instant and each stream gets
        its share in id order, as on a fresh open."""
        topics = [topic for job_id in job_ids if (topic := self._topics.get(job_id))]
        reads: list[tuple[str, int | None]] = []
        for topic in topics:
            if lost:
                # History is gone; whatever comes now starts a new life of the job.
                topic.restart()
                reads.append((topic.job_id, None))
            else:
                highs = {subscriber.high(topic.job_id) for subscriber in topic.subscribers}
                reads.extend((topic.job_id, high) for high in sorted(highs))
        try:
            replays = await self.broker.replays(reads) if reads else []
        except RelayError as exc:
            # The broker went away again: drop these streams, their clients resume later.
            log.warning("catching up %d jobs failed (%s); dropping their streams", len(topics), exc)
            self.counts.broker_errors += 1
            for topic in topics:
                for subscriber in list(topic.subscribers):
                    subscriber.drop()
            return
        found = dict(zip(reads, replays, strict=True))
        caught = {topic.job_id for topic in topics}
        for subscriber in {s for topic in topics for s in topic.subscribers}:
            parts = []
            for job_id in subscriber.job_ids:
                if job_id not in caught or job_id not in subscriber.active:
                    continue
                read = (job_id, None if lost else subscriber.high(job_id))
                if read not in found:
                    continue  # live events moved this stream on while the reads were made
                part = catchup.plan_resync(job_id, found[read], lost)
                if part is not None:
                    parts.append(part)
            resets, events = catchup.arrange(parts)
            self._count_catch_up(resets, events)
            frames = catchup.reset_frames(
                resets, self.broker.epoch, self.subscriber_count, multi=subscriber.multi
            )
            for part, frame in zip(resets, frames, strict=True):
                subscriber.reset_job(part.job_id, frame, part.seq, part.finished)
            for event in events:
                subscriber.push((event,))

    def shutdown(self) -> None:
        """End every stream: write what is queued and a jittered `retry:`, then close. New
        streams are refused from now on."""
        if self.draining:
            return
        self.draining = True
        longest = self.settings.server.drain_retry_ms
        ended: set[Subscriber] = set()
        for topic in self._topics.values():
            topic.flush()  # what was published before goes out before the `retry:`
        for topic in self._topics.values():
            for subscriber in topic.subscribers:
                if subscriber in ended:
                    continue  # a multi-job stream is in several topics
                ended.add(subscriber)
                retry = random.randint(longest // 10, longest)
                subscriber.add(sse.retry_frame(retry))
                subscriber.end()
