"""One open stream: a bounded queue of frames that the stream handler drains."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Sequence

from service.events import Event


class Subscriber:
    """Frames waiting to be written to one client.

    Contract with the Hub: while ``holding``, live events are kept aside until the replay is known;
    ``start`` then queues the replay and the held events past it, so the hand-over from history to
    live delivery misses nothing and repeats nothing. Afterwards each job's events are taken only
    if newer than the last one queued for that job. Past ``max_frames`` the subscriber is dropped:
    its queue is emptied, the stream ends, and the client resumes from history with its last id.
    """

    __slots__ = (
        "_frames",
        "_held",
        "_high",
        "_waiter",
        "active",
        "dropped",
        "job_ids",
        "max_frames",
        "multi",
        "on_drop",
    )

    def __init__(self, job_ids: Sequence[str], *, multi: bool, max_frames: int) -> None:
        self.job_ids = tuple(job_ids)
        self.multi = multi
        self.max_frames = max_frames
        self.active: set[str] = set(job_ids)
        self.dropped = False
        self._frames: list[bytes] = []
        self._held: list[Event] | None = []
        self._high: dict[str, int] = {}
        self._waiter: asyncio.Future[None] | None = None
        # Set by the stream handler: a handler blocked writing to a client that does not read
        # cannot see the drop, so the connection itself has to be cut.
        self.on_drop: Callable[[], None] | None = None

    @property
    def closed(self) -> bool:
        return self.dropped or not self.active

    def push(self, events: Sequence[Event]) -> None:
        """Live events of one job, in publish order. Never blocks, never awaits."""
        held = self._held
        if held is not None:
            if len(held) + len(events) > self.max_frames:
                self.drop()
            else:
                held.extend(events)
            return
        job_id = events[0].job_id
        if job_id not in self.active or self.dropped:
            return
        high = self._high.get(job_id, 0)
        frames = self._frames
        multi = self.multi
        for event in events:
            if event.seq <= high:
                continue
            if len(frames) >= self.max_frames:
                self.drop()
                return
            high = event.seq
            frames.append(event.job_frame if multi else event.frame)
            if event.terminal:
                self.active.discard(job_id)
                break
        self._high[job_id] = high
        self._wake()

    def start(self, frames: Iterable[bytes], high: dict[str, int], ended: Iterable[str]) -> None:
        """End the hand-over: queue the replay, then the live events held meanwhile."""
        self._frames.extend(frames)
        self._high.update(high)
        for job_id in ended:
            self.active.discard(job_id)
        held, self._held = self._held or [], None
        for event in held:
            if not self.closed:
                self.push((event,))
        self._wake()

    def add(self, frame: bytes) -> None:
        """Queue a frame the service made for this stream."""
        self._frames.append(frame)
        self._wake()

    def high(self, job_id: str) -> int:
        """The seq of the newest event of ``job_id`` queued for this stream (0: none)."""
        return self._high.get(job_id, 0)

    def reset_job(self, job_id: str, frame: bytes, seq: int, finished: bool) -> None:
        """Queue a `reset` for a job whose history this stream can no longer follow, and take
        the job's events after ``seq`` from now on (``seq`` may be lower than before, when the
        broker's history began a new epoch)."""
        if job_id not in self.active or self.dropped:
            return
        if self._held is not None:
            self.drop()  # still connecting: a reconnect sorts it out from the client's last id
            return
        if len(self._frames) >= self.max_frames:
            self.drop()
            return
        self._frames.append(frame)
        self._high[job_id] = seq
        if finished:
            self.active.discard(job_id)
        self._wake()

    def end_job(self, job_id: str) -> None:
        self.active.discard(job_id)
        self._wake()

    def end(self) -> None:
        """Write what is queued, then end the stream."""
        self.active.clear()
        self._wake()

    def drop(self) -> None:
        """End the stream now, discarding what is queued (the client resumes by its last id)."""
        if self.dropped:
            return
        self.dropped = True
        self._frames.clear()
        self._held = None
        self._wake()
        if self.on_drop is not None:
            self.on_drop()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def next_chunk(self) -> bytes | None:
        """Everything queued, as one chunk for one write; None once the stream is over."""
        while True:
            frames = self._frames
            if frames and not self.dropped:
                chunk = frames[0] if len(frames) == 1 else b"".join(frames)
                frames.clear()
                return chunk
            if self.closed:
                return None
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
