"""One job's local subscribers in this process, and the fan-out of its events to them."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Sequence

from progress_relay.core.counts import RelayCounts
from progress_relay.core.flusher import Flusher, chunked
from progress_relay.core.subscriber import Subscriber
from progress_relay.wire.events import Event


class Topic:
    __slots__ = (
        "_batch",
        "_counts",
        "_flusher",
        "_multi",
        "created",
        "job_id",
        "status",
        "subscribers",
        "watching",
    )

    def __init__(
        self, job_id: str, watch: Awaitable[None], flusher: Flusher, counts: RelayCounts
    ) -> None:
        self.job_id = job_id
        self.subscribers: set[Subscriber] = set()
        self.created = time.monotonic()
        # "running" once the job is known to have had events. When the job is gone from the
        # broker, its streams are told `job_expired` if it had, else `job_not_found` once they
        # have waited the pending TTL.
        self.status: str | None = None
        # the broker's watch of the job; subscribers start reading history once it is done
        self.watching: asyncio.Future[None] = asyncio.ensure_future(watch)
        self._flusher = flusher
        self._counts = counts
        self._batch: list[Event] = []  # published during this turn of the loop, not handed out
        # Multi-job subscribers get each publish at once: batching per topic until the end of
        # the turn would hand them one job's later events before another job's earlier ones.
        self._multi: set[Subscriber] = set()

    def add(self, subscriber: Subscriber) -> None:
        self.subscribers.add(subscriber)
        if subscriber.multi:
            self._multi.add(subscriber)

    def discard(self, subscriber: Subscriber) -> None:
        self.subscribers.discard(subscriber)
        self._multi.discard(subscriber)

    def restart(self) -> None:
        """The broker lost the job's history: wait for its events again as if new."""
        self.created = time.monotonic()
        self.status = None

    def publish(self, events: Sequence[Event]) -> None:
        """Never blocks: the events are handed to single-job subscribers at the end of this turn
        of the loop, all of that turn's publishes at once (``flush``), and queued for multi-job
        subscribers at once."""
        self.status = "running"
        if self._multi:
            # Made once per publish for every multi-job stream, and not kept on the events
            # (which history holds: a second copy of every event's bytes).
            job_frames = [event.job_frame for event in events]
            for subscriber in self._multi:
                subscriber.push(events, job_frames)
        if len(self._multi) == len(self.subscribers):
            return
        if not self._batch:
            self._flusher.add(self)
        self._batch.extend(events)

    def flush(self) -> None:
        """Hand this turn's events out: the frames are joined and framed as one HTTP chunk once,
        and the same bytes are written to every stream that is idle and in step; the others
        queue them (``Subscriber.push``)."""
        events = self._batch
        if not events:
            return
        self._batch = []
        # (Publishing ends at a terminal event, so only the last of a turn's events can be one.)
        frames = [event.frame for event in events]
        wire = chunked(frames[0] if len(frames) == 1 else b"".join(frames))
        written = 0
        for subscriber in self.subscribers:
            if not subscriber.multi:
                written += subscriber.take(events, wire)
        if written:
            counts = self._counts
            counts.writes += written
            counts.delivered += written * len(events)
