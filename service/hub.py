"""The Hub: this process's topics, the hand-over from replay to live, and ending streams."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import Literal

import msgspec

from service import sse
from service.brokers import Broker, Replay
from service.config import Settings
from service.errors import RelayError
from service.events import Event
from service.ids import Position, parse_event_id
from service.snapshot import Snapshot, new_snapshot
from service.subscriber import Subscriber
from service.topic import Topic

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
        subscriber = Subscriber(job_ids, multi=multi, max_frames=self.settings.stream.queue_frames)
        try:
            # Attach first, so events published while the replay is read are held, not missed.
            for job_id in job_ids:
                await self._attach(job_id, subscriber)
            position: Position | None = None
            foreign = False
            if last_event_id:
                position = parse_event_id(last_event_id)
                foreign = position is None or position.epoch != self.broker.epoch
            items: list[tuple[int, bytes]] = []
            high: dict[str, int] = {}
            ended: list[str] = []
            for job_id in job_ids:
                outcome = await self._plan(job_id, position, foreign, mode, multi, items)
                self._note_status(job_id, outcome)
                if outcome is None:
                    ended.append(job_id)
                    continue
                seq, finished = outcome
                high[job_id] = seq
                if finished:
                    ended.append(job_id)
        except BaseException:
            self._detach(subscriber)
            raise
        gone = {job_id for job_id in ended if job_id not in high}
        if len(gone) == len(job_ids):
            self._detach(subscriber)
            return None
        items.sort(key=lambda item: item[0])
        self.streams += 1
        subscriber.start([self._retry, *(frame for _, frame in items)], high, ended)
        return subscriber

    async def _plan(
        self,
        job_id: str,
        position: Position | None,
        foreign: bool,
        mode: ReplayMode,
        multi: bool,
        items: list[tuple[int, bytes]],
    ) -> tuple[int, bool] | None:
        """Queue one job's replay into ``items``: (seq covered, job finished), or None if gone."""
        broker = self.broker
        if foreign:
            return self._reset(job_id, await self._current(job_id), multi, items)
        if position is not None:
            replay = await broker.replay(job_id, position.seq)
            if replay is None:
                return None  # evicted or deleted: nothing more will come
            if replay.snapshot.finished and position.seq >= replay.seq:
                return None  # the client has seen the terminal event
            if not replay.complete:
                return self._reset(job_id, replay, multi, items)
            return self._replay(replay, multi, items)
        if mode == "history":
            replay = await broker.replay(job_id, 0)
            if replay is None:
                return 0, False  # not published yet: wait for it
            if not replay.complete:
                return self._reset(job_id, replay, multi, items)
            return self._replay(replay, multi, items)
        replay = await self._current(job_id)
        if mode == "snapshot":
            return self._reset(job_id, replay, multi, items)
        if replay is None:
            return 0, False
        if replay.snapshot.finished:
            return None
        return replay.seq, False

    def _note_status(self, job_id: str, outcome: tuple[int, bool] | None) -> None:
        topic = self._topics.get(job_id)
        if topic is not None and topic.status is None and outcome is not None:
            seq, _ = outcome
            if seq:
                topic.status = "running"

    async def _current(self, job_id: str) -> Replay | None:
        snapshot = await self.broker.snapshot(job_id)
        if snapshot is None:
            return None
        position = parse_event_id(snapshot.last_event_id) if snapshot.last_event_id else None
        return Replay(snapshot, [], False, position.seq if position else 0)

    def _replay(
        self, replay: Replay, multi: bool, items: list[tuple[int, bytes]]
    ) -> tuple[int, bool]:
        for event in replay.events:
            items.append((event.seq, event.job_frame if multi else event.frame))
        return replay.seq, replay.snapshot.finished

    def _reset(
        self, job_id: str, replay: Replay | None, multi: bool, items: list[tuple[int, bytes]]
    ) -> tuple[int, bool]:
        """One `reset`: data is the current snapshot, id is the position the snapshot reflects."""
        if replay is None:
            snapshot, seq = new_snapshot(job_id), 0
        else:
            snapshot, seq = replay.snapshot, replay.seq
        snapshot = msgspec.structs.replace(snapshot, subscribers=self.subscriber_count(job_id))
        data = _encode(snapshot)
        if multi:
            data = sse.job_data(job_id, data)
        # A job without events has no position to give; the id line is left out.
        event_id = str(Position(self.broker.epoch, seq)) if seq else None
        items.append((seq if seq else 2**63, sse.event_frame(event_id, "reset", data)))
        return seq, snapshot.finished

    def snapshot_view(self, snapshot: Snapshot) -> Snapshot:
        """The snapshot as readers see it: with this process's subscriber count."""
        return msgspec.structs.replace(snapshot, subscribers=self.subscriber_count(snapshot.id))

    async def _attach(self, job_id: str, subscriber: Subscriber) -> None:
        """Returns once the broker delivers the job's events here; a subscriber that joins
        while the first one's watch is under way waits for the same watch."""
        topic = self._topics.get(job_id)
        if topic is None:
            topic = self._topics[job_id] = Topic(job_id)
            topic.watching = asyncio.ensure_future(self.broker.watch(job_id))
        topic.subscribers.add(subscriber)
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
            topic.subscribers.discard(subscriber)
            if not topic.subscribers:
                del self._topics[job_id]
                self.broker.unwatch(job_id)

    async def end_job(self, job_id: str, reason: str | None) -> None:
        """The job is gone: tell its subscribers why (when they could not know) and end them."""
        topic = self._topics.get(job_id)
        if topic is None:
            return
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
        from history: the missed events, or `reset` when they are out of reach."""
        for job_id in job_ids:
            topic = self._topics.get(job_id)
            if topic is None:
                continue
            try:
                await self._catch_up(topic, reset)
            except RelayError as exc:
                # The broker went away again: drop these streams, their clients resume later.
                log.warning("catching up job %s failed (%s); dropping its streams", job_id, exc)
                for subscriber in list(topic.subscribers):
                    subscriber.drop()

    async def _catch_up(self, topic: Topic, reset: bool) -> None:
        job_id = topic.job_id
        if reset:
            # History is gone; whatever comes now starts a new life of the job.
            topic.restart()
            current = await self._current(job_id)
            self._reset_all(job_id, list(topic.subscribers), current)
            return
        by_high: dict[int, list[Subscriber]] = {}
        for subscriber in topic.subscribers:
            by_high.setdefault(subscriber.high(job_id), []).append(subscriber)
        for high, subscribers in by_high.items():
            replay = await self.broker.replay(job_id, high)
            if replay is None:
                continue  # the job has gone: sweep_gone ends these streams
            if not replay.complete:
                self._reset_all(job_id, subscribers, replay)
            elif replay.events:
                for subscriber in subscribers:
                    subscriber.push(replay.events)

    def _reset_all(self, job_id: str, subscribers: list[Subscriber], replay: Replay | None) -> None:
        for multi in (False, True):
            group = [s for s in subscribers if s.multi is multi]
            if not group:
                continue
            items: list[tuple[int, bytes]] = []
            seq, finished = self._reset(job_id, replay, multi, items)
            for subscriber in group:
                subscriber.reset_job(job_id, items[0][1], seq, finished)

    def shutdown(self) -> None:
        """End every stream: write what is queued, then close."""
        for topic in self._topics.values():
            for subscriber in topic.subscribers:
                subscriber.end()
