"""The Hub: this process's topics, the hand-over from replay to live, and ending streams."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Sequence
from typing import Literal

import msgspec

from progress_relay.brokers import Broker, Replay
from progress_relay.config import Settings
from progress_relay.core.catchup import JobCatchUp, arrange
from progress_relay.core.counts import RelayCounts
from progress_relay.core.flusher import Flusher
from progress_relay.core.subscriber import Subscriber
from progress_relay.core.topic import Topic
from progress_relay.wire import sse
from progress_relay.wire.errors import RelayError, ShuttingDown, TooManyStreams
from progress_relay.wire.events import Event
from progress_relay.wire.ids import Position, parse_event_id
from progress_relay.wire.snapshot import Snapshot, new_snapshot

log = logging.getLogger(__name__)

ReplayMode = Literal["history", "snapshot", "none"]
_encode = msgspec.json.Encoder().encode


class Hub:
    def __init__(self, broker: Broker, settings: Settings) -> None:
        self.broker = broker
        self.settings = settings
        self._topics: dict[str, Topic] = {}
        self._retry = sse.retry_frame(settings.stream.retry_ms)
        self.streams = 0
        self.draining = False
        self.counts = RelayCounts()
        self.flusher = Flusher()
        broker.set_listener(self.deliver)
        broker.set_resync(self.catch_up)

    def deliver(self, job_id: str, events: Sequence[Event]) -> None:
        """The broker's listener: fan a publish out to this process's subscribers of the job."""
        topic = self._topics.get(job_id)
        if topic is not None:
            topic.publish(events)

    def subscriber_count(self, job_id: str) -> int:
        topic = self._topics.get(job_id)
        return 0 if topic is None else len(topic.subscribers)

    async def open(
        self, job_ids: Sequence[str], last_event_id: str | None, mode: ReplayMode, *, multi: bool
    ) -> Subscriber | None:
        """A subscriber with its replay queued, or None when there is nothing to stream (204)."""
        self._admit(job_ids)
        stream = self.settings.stream
        subscriber = Subscriber(
            job_ids,
            multi=multi,
            max_frames=stream.queue_frames,
            max_bytes=stream.queue_bytes,
            counts=self.counts,
            flusher=self.flusher,
        )
        self.streams += 1
        try:
            # Attach first, so events published while the replay is read are held, not missed.
            for job_id in job_ids:
                await self._attach(job_id, subscriber)
            position: Position | None = None
            foreign = False
            if last_event_id:
                position = parse_event_id(last_event_id)
                foreign = position is None or position.epoch != self.broker.epoch
            after: int | None = None  # read only the snapshot
            if position is not None and not foreign:
                after = position.seq
            elif not foreign and mode == "history":
                after = 0
            replays = await self.broker.replays([(job_id, after) for job_id in job_ids])
        except BaseException:
            self.streams -= 1
            self._detach(subscriber)
            raise
        parts: list[JobCatchUp] = []
        high: dict[str, int] = {}
        ended: list[str] = []
        for job_id, replay in zip(job_ids, replays, strict=True):
            part = self._plan(job_id, replay, position, foreign, mode)
            if part is None:
                ended.append(job_id)  # gone, or its terminal event already seen
                continue
            self._note_status(job_id, part.seq)
            parts.append(part)
        if not parts:
            self.streams -= 1
            self._detach(subscriber)
            return None
        resets, events = arrange(parts)
        frames = [self._retry]
        for n, part in enumerate(resets, 1):
            frames.append(self._reset_frame(part.job_id, part.replay, multi, n == len(resets)))
        frames.extend(event.job_frame if multi else event.frame for event in events)
        self.counts.resets += len(resets)
        self.counts.replayed += len(events)
        for part in parts:
            high[part.job_id] = part.seq
            if part.replay is not None and part.replay.snapshot.finished:
                ended.append(part.job_id)
        subscriber.start(frames, high, ended)
        return subscriber

    def _admit(self, job_ids: Sequence[str]) -> None:
        """Refuse a stream past the limits on open streams, in total and per job."""
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
        for job_id in job_ids:
            if self.subscriber_count(job_id) >= limits.max_streams_per_job:
                raise TooManyStreams(
                    f"job {job_id} has its maximum of {limits.max_streams_per_job} open streams "
                    "on this relay",
                    headers=retry_after,
                )

    def _plan(
        self,
        job_id: str,
        replay: Replay | None,
        position: Position | None,
        foreign: bool,
        mode: ReplayMode,
    ) -> JobCatchUp | None:
        """What one job's subscriber needs, or None when nothing more will come."""
        if foreign or (mode == "snapshot" and position is None):
            return JobCatchUp(job_id, replay, reset=True)
        if position is not None:
            if replay is None:
                return None  # evicted or deleted
            if replay.snapshot.finished and position.seq >= replay.seq:
                return None  # the client has seen the terminal event
            return JobCatchUp(job_id, replay, reset=not replay.complete)
        if mode == "history":
            # (replay None: not published yet, the stream waits for it)
            return JobCatchUp(job_id, replay, reset=replay is not None and not replay.complete)
        if replay is not None and replay.snapshot.finished:
            return None
        return JobCatchUp(job_id, replay, reset=False)  # mode "none": from now on

    def _note_status(self, job_id: str, seq: int) -> None:
        topic = self._topics.get(job_id)
        if topic is not None and topic.status is None and seq:
            topic.status = "running"

    def _reset_frame(
        self, job_id: str, replay: Replay | None, multi: bool, with_id: bool = True
    ) -> bytes:
        """One `reset`: data is the current snapshot, id is the position the snapshot reflects
        (left out where it would promise more than the stream has sent; see catchup.py)."""
        if replay is None:
            snapshot, seq = new_snapshot(job_id), 0
        else:
            snapshot, seq = replay.snapshot, replay.seq
        snapshot = msgspec.structs.replace(snapshot, subscribers=self.subscriber_count(job_id))
        data = _encode(snapshot)
        if multi:
            data = sse.job_data(job_id, data)
        # A job without events has no position to give; the id line is left out.
        event_id = str(Position(self.broker.epoch, seq)) if seq and with_id else None
        return sse.event_frame(event_id, "reset", data)

    def snapshot_view(self, snapshot: Snapshot) -> Snapshot:
        """The snapshot as readers see it: with this process's subscriber count."""
        return msgspec.structs.replace(snapshot, subscribers=self.subscriber_count(snapshot.id))

    async def _attach(self, job_id: str, subscriber: Subscriber) -> None:
        """Returns once the broker delivers the job's events here; a subscriber that joins
        while the first one's watch is under way waits for the same watch."""
        topic = self._topics.get(job_id)
        if topic is None:
            topic = self._topics[job_id] = Topic(job_id, self.flusher, self.counts)
            topic.watching = asyncio.ensure_future(self.broker.watch(job_id))
        topic.add(subscriber)
        assert topic.watching is not None
        await asyncio.shield(topic.watching)

    def close(self, subscriber: Subscriber) -> None:
        """Detach a subscriber whose stream is over (after ``open`` returned it)."""
        self.streams -= 1
        self._detach(subscriber)

    def _detach(self, subscriber: Subscriber) -> None:
        for job_id in subscriber.job_ids:
            topic = self._topics.get(job_id)
            if topic is None:
                continue
            topic.discard(subscriber)
            if not topic.subscribers:
                del self._topics[job_id]
                self.broker.unwatch(job_id)

    async def end_job(self, job_id: str, reason: str | None) -> None:
        """The job is gone: tell its subscribers why (when they could not know) and end them."""
        topic = self._topics.get(job_id)
        if topic is None:
            return
        topic.flush()  # what was published before goes out before the end
        frame_data: bytes | None = None
        seq = 0
        told = [s for s in topic.subscribers if job_id in s.active]
        if reason is not None and told:
            seq = await self.broker.reserve_seq()
            message = {
                "job_not_found": f"job {job_id} was never published",
                "job_expired": f"job {job_id} stopped reporting progress and expired",
            }.get(reason, reason)
            frame_data = _encode({"message": message, "code": reason})
        for subscriber in list(topic.subscribers):
            if frame_data is not None and job_id in subscriber.active:
                data = sse.job_data(job_id, frame_data) if subscriber.multi else frame_data
                # The id matters even to a stream that saw no event: reconnecting with it to a
                # job that is gone gets 204, so a browser stops asking.
                event_id = str(Position(self.broker.epoch, seq))
                subscriber.add(sse.event_frame(event_id, "failed", data))
            subscriber.end_job(job_id)

    async def sweep_gone(self) -> None:
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

    async def catch_up(self, job_ids: list[str], reset: bool) -> None:
        """After live delivery was interrupted, bring every subscriber of these jobs up to date
        from history: the missed events, or `reset` when they are out of reach. All jobs are
        read at one instant and each stream gets its share in id order, as on a fresh open."""
        topics = [topic for job_id in job_ids if (topic := self._topics.get(job_id))]
        reads: list[tuple[str, int | None]] = []
        for topic in topics:
            if reset:
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
                read = (job_id, None if reset else subscriber.high(job_id))
                if read not in found:
                    continue  # live events moved this stream on while the reads were made
                replay = found[read]
                if reset:  # a new life of the job: its snapshot, even if it is not there yet
                    parts.append(JobCatchUp(job_id, replay, reset=True))
                elif replay is not None:  # (None: it has gone; sweep_gone ends the stream)
                    parts.append(JobCatchUp(job_id, replay, reset=not replay.complete))
            resets, events = arrange(parts)
            self.counts.resets += len(resets)
            self.counts.replayed += len(events)
            for n, part in enumerate(resets, 1):
                frame = self._reset_frame(
                    part.job_id, part.replay, subscriber.multi, n == len(resets)
                )
                finished = part.replay is not None and part.replay.snapshot.finished
                subscriber.reset_job(part.job_id, frame, part.seq, finished)
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
