"""One open stream: a bounded queue of frames that the stream handler drains."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterable, Sequence
from typing import Protocol

import msgspec

from progress_relay.core.counts import RelayCounts
from progress_relay.core.flusher import Flusher
from progress_relay.wire.events import Event


class _GroupTotal(msgspec.Struct):
    total: int


class _GroupProgress(msgspec.Struct):
    group: _GroupTotal


# The relay's `progress` of a parent (core/groups.py): only the count of its children is read.
_GROUP_TOTAL = msgspec.json.Decoder(_GroupProgress)


class Socket(Protocol):
    """What a subscriber writes to: the body of its stream's HTTP response, after the head
    (implemented by the HTTP layer, http/streams.py). Writes never block; ``pushing_back`` says
    when the caller should stop writing and let the handler wait for the socket to drain."""

    @property
    def framed(self) -> bool:
        """The body is HTTP/1.1-chunked, so bytes already framed as chunks may be written."""
        ...

    def write(self, piece: bytes) -> None:
        """A piece of the body (framed as one chunk when the body is chunked)."""

    def write_framed(self, data: bytes) -> None:
        """Bytes already framed as HTTP chunks (only when ``framed``)."""

    def beat(self, comment: bytes) -> None:
        """A heartbeat ``comment``, written as ``write`` writes it but not reported to the stall
        watch: a few bytes an interval never fill a client's buffers, and bytes that wait for a
        peer that vanished are the kernel's to time out (TCP_USER_TIMEOUT, core/stalls.py)."""

    def pushing_back(self) -> bool:
        """The socket's buffer is past its high-water mark."""
        ...

    def buffered(self) -> int:
        """Bytes written and not acknowledged by the peer yet: the transport's own buffer and
        the kernel's send queue (on Linux; elsewhere the transport's alone)."""
        ...

    def written(self) -> int:
        """Bytes written in all, the response's head included (only its growth matters)."""
        ...

    def abort(self) -> None:
        """Cut the connection now (a handler blocked on a client that reads nothing cannot
        see a drop otherwise)."""


class Subscriber:
    """Frames waiting to be written to one client.

    Contract with the Hub: while ``holding``, live events are kept aside until the replay is known;
    ``start`` then queues the replay and the held events past it, so the hand-over from history to
    live delivery misses nothing and repeats nothing. Afterwards each job's events are taken only
    if newer than the last one queued for that job. A group's stream holds again the same way
    while the Hub takes up children created after it opened (``follow_group``, ``take_up``,
    ``release``: the held events and the children's replayed ones go out in id order).

    Slow clients: while the stream handler is blocked writing (the socket pushes back), a new
    `progress` frame of a job replaces the one of that job still waiting (it moves to the end, so
    ids stay in order on the wire); nothing else is ever conflated. Past ``max_frames`` waiting,
    or ``max_bytes`` waiting counting the socket's write buffer while it pushes back, the
    subscriber is dropped: its queue is emptied, the stream ends, and the client resumes from
    history with its last id. A subscriber with nothing waiting always takes a whole publish.

    Stuck peers: every fraction of ``stream.write_timeout`` the Hub's stall watch calls
    ``watch``. What waits for the client, its queue and its socket's buffers with the kernel's,
    counts against ``max_bytes`` as above; and a stream whose client acknowledged none of the
    bytes waiting for it for the write timeout is dropped even when its socket never pushed
    back (a stopped process, whose kernel took what fitted in its receive buffer, leaves only
    heartbeats waiting, far below any high-water mark).

    Writing: the handler connects the subscriber to its ``Socket`` before the response's head
    goes out (so a drop can cut the connection and the byte bound can count the socket's
    buffer); once the head and the first chunk are out it makes the subscriber ``live``. From
    then on the handler sleeps while the stream is idle: at the end
    of each turn of the loop the topic writes that turn's events, framed once for all its
    streams, to every idle stream in step (``take``), and the ``Flusher`` writes what others
    have queued, all of it in one write. The handler is woken to end the stream, or when the
    socket pushes back, to wait for it to drain (under the write timeout) and write what queued
    up meanwhile itself.
    """

    __slots__ = (
        "_acked",
        "_bytes",
        "_count",
        "_flusher",
        "_flushing",
        "_frames",
        "_held",
        "_high",
        "_on_new_children",
        "_progress_at",
        "_seen",
        "_since",
        "_taking_up",
        "_unsent",
        "_waiter",
        "active",
        "client",
        "counts",
        "dropped",
        "gone",
        "job_ids",
        "live",
        "max_bytes",
        "max_frames",
        "multi",
        "socket",
        "taken",
        "writing",
    )

    def __init__(
        self,
        job_ids: Sequence[str],
        *,
        multi: bool,
        max_frames: int,
        max_bytes: int,
        counts: RelayCounts,
        flusher: Flusher,
        client: str = "",
    ) -> None:
        self.job_ids = tuple(job_ids)
        # A group's stream: called when the parent counts children it does not follow yet.
        self._on_new_children: Callable[[Subscriber], None] | None = None
        self._taking_up = False
        self.gone = False  # the Hub has closed it (a late attach must detach again)
        self.client = client  # who opened it, for the limit per client
        self.multi = multi
        self.max_frames = max_frames
        self.max_bytes = max_bytes
        self.active: set[str] = set(job_ids)
        self.dropped = False
        self._frames: list[bytes] = []
        self._count = 0  # frames waiting, not counting the blanks conflation leaves
        self._bytes = 0  # bytes waiting
        # Index in _frames of each job's waiting `progress` frame, while the socket pushes back.
        self._progress_at: dict[str, int] = {}
        self._held: list[Event] | None = []
        self._high: dict[str, int] = {}
        self._waiter: asyncio.Future[None] | None = None
        # Set by the stream handler: True while it is blocked writing to the socket.
        self.writing = False
        self.socket: Socket | None = None  # see ``connect``
        self.live = False  # the head is out: topics and the flusher write to the socket
        self.counts = counts
        self.taken = 0  # frames in the last chunk handed out
        self._flusher = flusher
        self._flushing = False  # in the flusher's list for this turn of the loop
        # What ``watch`` saw last: bytes written, and of them waiting and acknowledged, and
        # since when nothing was waiting or the client last acknowledged some (-1: not yet).
        self._seen = 0
        self._unsent = 0
        self._acked = 0
        self._since = -1.0

    def connect(self, socket: Socket) -> None:
        """The stream handler's socket, before the response's head is written."""
        self.socket = socket

    def go_live(self) -> None:
        """The head and the first chunk are out: from now on idle writes go to the socket."""
        self.live = self.socket is not None

    def beat(self, frame: bytes) -> None:
        """The heartbeat's turn (core/heartbeat.py): write ``frame``, a comment, straight to the
        socket of a live stream whose handler sleeps; a handler that is writing is left to it
        (its socket pushes back: what waits there is the stall watch's to judge)."""
        socket = self.socket
        waiter = self._waiter
        if not self.live or socket is None or self.dropped or waiter is None or waiter.done():
            return
        socket.beat(frame)
        if socket.pushing_back():
            waiter.set_result(None)  # the handler waits for the socket, under the write timeout

    def disconnect(self) -> None:
        """The stream is over: nothing writes to its socket any more."""
        self.live = False
        self.socket = None

    @property
    def closed(self) -> bool:
        return self.dropped or not self.active

    def push(self, events: Sequence[Event], job_frames: Sequence[bytes] | None = None) -> None:
        """Live events of one job, in publish order. Never blocks, never awaits. A multi-job
        stream's frames are ``job_frames`` when the topic made them once for all its streams,
        else made here."""
        if (
            self._on_new_children is not None
            and not self._taking_up
            and events[0].job_id == self.job_ids[0]
            and self._counts_new_children(events)
        ):
            self.hold()
            self._on_new_children(self)
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
        pressed = self.writing
        for index, event in enumerate(events):
            if event.seq <= high:
                continue
            high = event.seq
            if not multi:
                frame = event.frame
            elif job_frames is not None:
                frame = job_frames[index]
            else:
                frame = event.job_frame
            if pressed and event.conflatable:
                self._conflate(job_id)
            frames.append(frame)
            self._count += 1
            self._bytes += len(frame)
            if event.terminal:
                self.active.discard(job_id)
                break
        self._high[job_id] = high
        if self._count > self.max_frames or (pressed and self._over_bytes()):
            self.drop()
            return
        self._wake()

    # -- a group's stream taking up children created after it opened (Hub.take_up_children)

    def follow_group(self, on_new_children: Callable[[Subscriber], None]) -> None:
        """This stream is a group's (its first job the parent, the others its children): a
        relay-made `progress` of the parent counting more children than it follows calls
        ``on_new_children``, once at a time, after ``hold``-ing the stream's live events."""
        self._on_new_children = on_new_children

    def _counts_new_children(self, events: Sequence[Event]) -> bool:
        followed = len(self.job_ids) - 1
        for event in events:
            if event.name == "progress":
                with contextlib.suppress(msgspec.DecodeError):
                    if _GROUP_TOTAL.decode(event.data).group.total > followed:
                        return True
        return False

    def hold(self) -> None:
        """Keep live events aside, as during the open, until ``release``."""
        self._taking_up = True
        if self._held is None and not self.dropped:
            self._held = []

    def take_up(
        self,
        job_ids: Sequence[str],
        frames: Sequence[bytes],
        high: dict[str, int],
        events: Sequence[Event],
    ) -> None:
        """While held: follow ``job_ids`` too, with their ``reset`` frames queued now and their
        replayed ``events`` merged in id order with the held ones at ``release``."""
        held = self._held
        if held is None or self.dropped:
            return
        self.active.update(job_ids)
        for frame in frames:
            self._frames.append(frame)
            self._count += 1
            self._bytes += len(frame)
        self._high.update(high)
        held.extend(events)

    def release(self) -> None:
        """Stop holding: queue the held events in id order (each job's once)."""
        self._taking_up = False
        held, self._held = self._held, None
        if held is None or self.dropped:
            return
        held.sort(key=lambda event: event.seq)
        for event in held:
            if not self.closed:
                self.push((event,))
        self._wake()

    def _over_bytes(self) -> bool:
        socket = self.socket
        buffered = 0 if socket is None else socket.buffered()
        return self._bytes + buffered > self.max_bytes

    def watch(self, now: float, timeout: float, clean_since: float | None = None) -> bool:
        """The stall watch's look at a live stream, at loop time ``now``: drop it when what
        waits for its client is past ``max_bytes``, or when bytes have waited for ``timeout``
        seconds without the client acknowledging any. True when it was dropped.

        A socket written nothing since a look that found nothing waiting still has nothing
        waiting: it costs no system call. ``clean_since``: the watch skipped such a stream
        since its last look and was last looking at that time; the stream counts as seen
        clean then (the wait for acknowledgements starts there, as if it had been looked at)."""
        socket = self.socket
        if socket is None or not self.live or self.dropped:
            return False
        written = socket.written()
        if self._since < 0:
            self._since = now  # the first look: its bytes may be waiting already
        elif written == self._seen and not self._unsent:
            self._since = now
            return False
        elif clean_since is not None and not self._unsent:
            self._since = max(self._since, clean_since)
        unsent = socket.buffered()
        self._seen, self._unsent = written, unsent
        if unsent + self._bytes > self.max_bytes:
            self.drop()
            return True
        acked = written - unsent
        if not unsent or acked > self._acked:
            self._acked = acked
            self._since = now
            return False
        if now - self._since < timeout:
            return False
        self.counts.write_timeouts += 1
        self.drop()
        return True

    @property
    def unacknowledged(self) -> bool:
        """The last look found bytes its client had not acknowledged yet."""
        return self._unsent > 0

    def take(self, events: Sequence[Event], wire: bytes) -> bool:
        """A turn's events of one job from its topic, with ``wire``, their frames as one HTTP
        chunk. Written straight to the socket when the stream is idle and in step (nothing
        waiting, all of them new); else queued as by ``push``. True when written."""
        waiter = self._waiter
        socket = self.socket
        if (
            not self.live
            or socket is None
            or not socket.framed
            or waiter is None
            or waiter.done()
            or self._frames
            or self.multi
        ):
            self.push(events)
            return False
        first = events[0]
        job_id = first.job_id
        if job_id not in self.active or self._high.get(job_id, 0) >= first.seq:
            self.push(events)
            return False
        last = events[-1]
        self._high[job_id] = last.seq
        socket.write_framed(wire)
        if last.terminal:
            self.active.discard(job_id)
        if not self.active or socket.pushing_back():
            waiter.set_result(None)  # the handler ends the stream, or waits for the socket
        return True

    def _conflate(self, job_id: str) -> None:
        """Blank the job's waiting `progress` frame; the one about to be appended replaces it."""
        frames = self._frames
        at = self._progress_at.get(job_id)
        if at is not None:
            old = frames[at]
            frames[at] = b""
            self._count -= 1
            self._bytes -= len(old)
            self.counts.conflated += 1
        self._progress_at[job_id] = len(frames)

    def start(self, frames: Iterable[bytes], high: dict[str, int], ended: Iterable[str]) -> None:
        """End the hand-over: queue the replay, then the live events held meanwhile."""
        for frame in frames:
            self._frames.append(frame)
            self._count += 1
            self._bytes += len(frame)
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
        self._count += 1
        self._bytes += len(frame)
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
        if self._count >= self.max_frames:
            self.drop()
            return
        self._frames.append(frame)
        self._count += 1
        self._bytes += len(frame)
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
        self.counts.dropped += 1
        self._clear()
        self._held = None
        self._wake()
        if self.socket is not None:
            self.socket.abort()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is None or waiter.done():
            return  # the handler is busy; it looks at the queue when it is done
        if self.live and not self.closed:
            if not self._flushing:
                self._flushing = True
                self._flusher.add(self)
            return
        waiter.set_result(None)

    def flush(self) -> None:
        """The Flusher's turn: write everything queued, unless the handler has taken over."""
        self._flushing = False
        waiter = self._waiter
        socket = self.socket
        if waiter is None or waiter.done() or not self.live or socket is None or not self._frames:
            return
        frames = self._frames
        chunk = frames[0] if len(frames) == 1 else b"".join(frames)
        taken = self._count
        self._clear()
        socket.write(chunk)
        counts = self.counts
        counts.writes += 1
        counts.delivered += taken
        if self.closed or socket.pushing_back():
            waiter.set_result(None)

    def _clear(self) -> None:
        self._frames.clear()
        self._count = 0
        self._bytes = 0
        self._progress_at.clear()

    async def next_chunk(self) -> bytes | None:
        """Everything queued, as one chunk for one write; None once the stream is over; b""
        when the handler was woken with nothing queued (the socket pushes back)."""
        if not self._frames and not self.closed:
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        if self.dropped:
            return None
        frames = self._frames
        if frames:
            chunk = frames[0] if len(frames) == 1 else b"".join(frames)
            self.taken = self._count
            self._clear()
            return chunk
        return None if self.closed else b""
