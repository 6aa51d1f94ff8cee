"""Opening, resuming and closing many subscribers, and the tallies a scenario reports from."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from bench.servers import HOST, Server
from bench.subscriber import SseSubscriber, Tally, expected_sequences, stream_request

# Connection attempts in flight at once. The kernel's accept queue and SYN backlog are a few
# thousand here; more at once only measures SYN retransmits (a one-second penalty each).
CONNECT_CONCURRENCY = 1000


@dataclass
class Subscription:
    job: str
    port: int
    target: int  # the sequence after the last event this subscriber must see
    sample: bool
    protocol: SseSubscriber | None = None
    reconnects: int = 0


@dataclass
class Load:
    """All subscribers of one measurement."""

    server: Server
    subscriptions: list[Subscription]
    tally: Tally = field(default_factory=Tally)
    resume_on_drop: bool = False
    reconnects: int = 0
    _finished: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self.tally.target_subscribers = len(self.subscriptions)
        self.tally.on_complete = self._finished.set

    async def connect_all(
        self, first_seq: int = 0, resume: bool = False, concurrency: int = CONNECT_CONCURRENCY
    ) -> float:
        """Open every stream (``resume``: with its Last-Event-ID), ``concurrency`` attempts at a
        time; seconds until all answered."""
        self._finished.clear()
        self.tally.complete = 0
        semaphore = asyncio.Semaphore(concurrency)
        started = time.perf_counter()

        async def one(subscription: Subscription) -> None:
            async with semaphore:
                await self._open(subscription, first_seq, resume)

        results = await asyncio.gather(
            *(one(s) for s in self.subscriptions), return_exceptions=True
        )
        elapsed = time.perf_counter() - started
        for result in results:
            if isinstance(result, BaseException):
                self.tally.error(type(result).__name__)
        return elapsed

    async def _open(self, subscription: Subscription, first_seq: int, resume: bool) -> None:
        loop = asyncio.get_running_loop()
        previous = subscription.protocol
        last_id = previous.last_id if (resume and previous is not None) else b""
        start_seq = previous.next_seq if previous is not None and resume else first_seq
        protocol = SseSubscriber(
            self.tally, subscription.target, first_seq=start_seq, sample=subscription.sample
        )
        protocol.on_lost = self._lost(subscription)
        subscription.protocol = protocol
        if protocol.done:
            self.tally.complete += 1
        transport, _ = await loop.create_connection(lambda: protocol, HOST, subscription.port)
        path = self.server.stream_path(subscription.job)
        transport.write(stream_request(path, f"{HOST}:{subscription.port}", last_id))
        await protocol.connected

    def _lost(self, subscription: Subscription):  # type: ignore[no-untyped-def]
        def lost(protocol: SseSubscriber) -> None:
            if protocol is not subscription.protocol or protocol.done or protocol.closing:
                return
            if not protocol.connected.done() or protocol.connected.exception() is not None:
                return
            self.tally.error("closed by server")
            if self.resume_on_drop and self.server.resume:
                # What EventSource does: reconnect with the last id seen.
                subscription.reconnects += 1
                self.reconnects += 1
                task = asyncio.get_running_loop().create_task(
                    self._open(subscription, 0, resume=True)
                )
                task.add_done_callback(_ignore_result)

        return lost

    async def wait_complete(self, within: float) -> bool:
        """Until every subscriber has seen its last event, or ``within`` seconds."""
        if self.tally.complete >= len(self.subscriptions):
            return True
        try:
            async with asyncio.timeout(within):
                await self._finished.wait()
        except TimeoutError:
            return False
        return True

    def retarget(self, target: int | Callable[[str], int]) -> None:
        """Fewer events were published than planned: a subscriber is done at ``target`` (or
        ``target(job)``)."""
        self._finished.clear()
        self.tally.complete = 0
        for subscription in self.subscriptions:
            target_of = target(subscription.job) if callable(target) else target
            subscription.target = target_of
            protocol = subscription.protocol
            if protocol is None:
                continue
            protocol.target = target_of
            protocol.expected = expected_sequences(target_of)
            protocol.done = protocol.next_seq >= target_of
            if protocol.done:
                self.tally.complete += 1
        if self.tally.complete >= len(self.subscriptions):
            self.tally.completed_at = time.perf_counter()
            self._finished.set()

    def close_all(self) -> None:
        for subscription in self.subscriptions:
            if subscription.protocol is not None:
                subscription.protocol.close()

    @property
    def lost(self) -> int:
        """Events skipped inside a stream: a later event of the job came, this one never."""
        return self.tally.lost

    @property
    def undelivered(self) -> int:
        """Events not delivered by the end of the measurement (its grace period included): lost
        or still queued somewhere; either way not delivered in time."""
        return sum(
            max(0, s.target - s.protocol.next_seq) if s.protocol is not None else s.target
            for s in self.subscriptions
        )


def _ignore_result(task: asyncio.Task[None]) -> None:
    if not task.cancelled():
        task.exception()


def spread(
    server: Server, jobs: Sequence[str], per_job: int, target: int, sample_every: int
) -> list[Subscription]:
    """``per_job`` subscribers on each job, over the server's ports in turn; every
    ``sample_every``-th measures latency."""
    subscriptions = []
    ports = server.ports
    for index in range(len(jobs) * per_job):
        job = jobs[index // per_job]
        subscriptions.append(
            Subscription(
                job=job,
                port=ports[index % len(ports)],
                target=target,
                sample=index % sample_every == 0,
            )
        )
    return subscriptions
