"""``AsyncRelay``: the asyncio client (aiohttp), for services.

The same calls as ``Relay`` as coroutines, plus ``subscribe`` (an async iterator over a job's
stream that resumes after disconnects) and ``wait``. A ``progress`` held back by the coalescer
is sent by a timer of the event loop when its interval is over.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from types import TracebackType
from typing import Any, TypeVar

import aiohttp

from progress_relay.client import events
from progress_relay.client.batching import CrossJob, Pending
from progress_relay.client.constants import DEFAULT_URL
from progress_relay.client.errors import RelayError
from progress_relay.client.events import Event, Outgoing
from progress_relay.client.groups import Children, Group, GroupTracker, child_specs
from progress_relay.client.protocol import Call, Calls, Done, Job, Published, Wait, headers
from progress_relay.client.publishing import PublishState
from progress_relay.client.retry import RetryPolicy
from progress_relay.client.sse import End, Open, StreamSession
from progress_relay.client.trackers import AsyncTracker
from progress_relay.client.tracking import Stages, log_deferred
from progress_relay.client.waiting import Waiter

T = TypeVar("T")

_CONNECTION_ERRORS = (aiohttp.ClientError, asyncio.TimeoutError, OSError)


class AsyncRelay:
    """A client of one relay; the options are those of :class:`progress_relay.client.Relay`. Use it
    as ``async with AsyncRelay(url) as relay:`` or await :meth:`close`."""

    def __init__(
        self,
        url: str = DEFAULT_URL,
        token: str | None = None,
        *,
        progress_rate: float = 10.0,
        retry_budget: float = 30.0,
        timeout: float = 10.0,
        stream_read_timeout: float = 45.0,
        retry: RetryPolicy | None = None,
        batch_window: float = 0.005,
    ) -> None:
        self.url = url.rstrip("/")
        self._batch_window = batch_window
        self.cross_job = CrossJob(supported=False if batch_window <= 0 else None)
        self.token = token
        self._calls = Calls(self.url)
        self._policy = retry or RetryPolicy(budget=retry_budget)
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._stream_timeout = aiohttp.ClientTimeout(
            total=None, connect=timeout, sock_read=stream_read_timeout
        )
        self._state = PublishState(progress_rate)
        self._session: aiohttp.ClientSession | None = None
        self._job_locks: dict[str, asyncio.Lock] = {}
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._flushes: set[asyncio.Task[None]] = set()
        self._batch_done: dict[int, asyncio.Future[None]] = {}
        self._window: asyncio.TimerHandle | None = None  # open while publishes are collected

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession()
        return self._session

    async def __aenter__(self) -> AsyncRelay:
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Send every held progress, then close the connections."""
        try:
            for timer in self._timers.values():
                timer.cancel()
            self._timers.clear()
            if self._window is not None:  # publishes are waiting: send them now
                self._window.cancel()
                self._start_round()
            if self._flushes:
                await asyncio.gather(*self._flushes, return_exceptions=True)
            await self.flush()
        finally:
            log_deferred(self._state.take_deferred())
            if self._session is not None:
                await self._session.close()
                self._session = None

    # -- jobs -----------------------------------------------------------------------------

    async def create_job(
        self,
        job_id: str | None = None,
        *,
        ttl: float | None = None,
        meta: Any = None,
        parent: str | None = None,
        weight: float | None = None,
    ) -> Job:
        return await self._run(
            self._calls.create_job(job_id, ttl, meta, parent=parent, weight=weight)
        )

    async def group(
        self,
        children: Children,
        *,
        weights: Sequence[float] | None = None,
        job_id: str | None = None,
        ttl: float | None = None,
        meta: Any = None,
    ) -> Group:
        """The asyncio twin of ``Relay.group``."""
        specs = child_specs(children, weights)
        job = await self._run(self._calls.create_job(job_id, ttl, meta, children=specs))
        return Group(job, job.children)

    async def track_group(
        self,
        children: Children,
        *,
        weights: Sequence[float] | None = None,
        stages: Stages = None,
        job_id: str | None = None,
        ttl: float | None = None,
        meta: Any = None,
    ) -> GroupTracker[AsyncTracker]:
        """``await relay.group(...)`` with an :class:`AsyncTracker` per child."""
        group = await self.group(children, weights=weights, job_id=job_id, ttl=ttl, meta=meta)
        return GroupTracker(group, tuple(self.track(child.id, stages) for child in group.children))

    async def snapshot(self, job_id: str) -> dict[str, Any]:
        return await self._run(self._calls.snapshot(job_id))

    async def history(
        self, job_id: str, after: str | None = None, limit: int = 1000
    ) -> dict[str, Any]:
        return await self._run(self._calls.history(job_id, after, limit))

    async def jobs(
        self, status: str | Iterable[str] | None = None, *, page_size: int | None = None
    ) -> AsyncIterator[dict[str, Any]]:
        statuses = [status] if isinstance(status, str) else status
        cursor: str | None = None
        while True:
            page = await self._run(self._calls.jobs_page(statuses, page_size, cursor))
            for job in page.jobs:
                yield job
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    async def cancel(self, job_id: str) -> dict[str, Any]:
        return await self._run(self._calls.cancel(job_id))

    async def delete(self, job_id: str) -> None:
        await self._run(self._calls.delete(job_id))

    # -- publishing -----------------------------------------------------------------------

    async def progress(
        self,
        job_id: str,
        percent: float | None = None,
        *,
        stage: str | None = None,
        message: str | None = None,
        step: int | None = None,
        total_steps: int | None = None,
    ) -> Published | None:
        event = events.progress(
            percent, stage=stage, message=message, step=step, total_steps=total_steps
        )
        return await self.publish_events(job_id, [event])

    async def log(self, job_id: str, message: str, level: str = "info") -> Published:
        return _sent(await self.publish_events(job_id, [events.log(message, level)]))

    async def content(self, job_id: str, text: str) -> Published:
        return _sent(await self.publish_events(job_id, [events.content(text)]))

    async def complete(
        self,
        job_id: str,
        result: Any = None,
        *,
        message: str | None = None,
        redirect_url: str | None = None,
    ) -> Published:
        event = events.complete(result, message=message, redirect_url=redirect_url)
        return _sent(await self.publish_events(job_id, [event]))

    async def fail(
        self, job_id: str, message: str, *, code: str | None = None, details: Any = None
    ) -> Published:
        event = events.failed(message, code=code, details=details)
        return _sent(await self.publish_events(job_id, [event]))

    async def cancelled(self, job_id: str, message: str | None = None) -> Published:
        return _sent(await self.publish_events(job_id, [events.cancelled(message)]))

    async def publish(self, job_id: str, event: str, data: Any = None) -> Published | None:
        return await self.publish_events(job_id, [Outgoing(event, data)])

    async def batch(self, job_id: str, batch: Sequence[tuple[str, Any]]) -> Published:
        outgoing = [Outgoing(name, data) for name, data in batch]
        if not outgoing:
            raise ValueError("a batch needs at least one event")
        return _sent(await self.publish_events(job_id, outgoing, coalesce=False))

    async def publish_events(
        self, job_id: str, batch: Sequence[Outgoing], *, coalesce: bool = True
    ) -> Published | None:
        """Publish ``batch`` (built with ``progress_relay.client.events``) in one request, in
        order; None when the one event is a ``progress`` the coalescer holds (it is sent later).
        ``coalesce=False`` sends a ``progress`` at once (a milestone, an explicit batch). The
        calls above and the trackers go through here."""
        async with self._job_lock(job_id):
            planned = self._state.plan(job_id, batch, time.monotonic(), coalesce=coalesce)
            if not planned:
                self._schedule_flush(job_id)
                return None
            return await self._send(job_id, planned)

    async def flush(self, job_id: str | None = None) -> None:
        """Send held progress now (of one job, or of all); raises what a background flush of
        that job met if its next call has not yet."""
        if job_id is not None:
            self._state.raise_deferred(job_id)
        jobs = [job_id] if job_id is not None else self._state.coalescer.held_jobs()

        async def flush_one(job: str) -> None:
            async with self._job_lock(job):
                batch = self._state.flush(job, time.monotonic(), force=True)
                if batch:
                    await self._send(job, batch)

        # All at once: with batching across jobs, they go in the same request.
        await asyncio.gather(*(flush_one(job) for job in jobs))

    def cancel_requested(self, job_id: str) -> bool:
        return self._state.cancel_requested(job_id)

    def track(self, job_id: str, stages: Stages = None) -> AsyncTracker:
        """``async with relay.track(job_id, stages=[...]) as tracker:``."""
        return AsyncTracker(self, job_id, stages)

    # -- reading the stream ---------------------------------------------------------------

    async def subscribe(
        self,
        job_id: str,
        last_event_id: str | None = None,
        *,
        replay: str = "history",
        children: bool = False,
    ) -> AsyncIterator[Event]:
        """``async for event in relay.subscribe(job_id)``: the job's events (its retained
        history first, or those after ``last_event_id``), live, resuming by the last id after
        any disconnect, until the terminal event (or 204: nothing more will come). ``replay``
        as for ``Relay.subscribe``."""
        session = StreamSession(
            job_id, last_event_id, self._policy, time.monotonic(), replay, children
        )
        request_headers = headers(self.token, body=False)
        while not session.done:
            step: Open | End | Wait
            try:
                async with self.session.get(
                    self._calls.url(session.path),
                    headers=request_headers | session.headers(),
                    timeout=self._stream_timeout,
                ) as response:
                    body = b"" if response.status == 200 else await response.read()
                    step = session.opened(
                        response.status, body, response.headers.get("Retry-After"), time.monotonic()
                    )
                    if isinstance(step, Open):
                        async for chunk in response.content.iter_any():
                            for event in session.feed(chunk, time.monotonic()):
                                yield event
                            if session.done:
                                return
                        step = session.ended(time.monotonic())
            except _CONNECTION_ERRORS as exc:
                step = session.failed(_describe(exc), time.monotonic())
            if isinstance(step, End):
                return
            if isinstance(step, Wait):
                await asyncio.sleep(step.delay)

    async def wait(self, job_id: str) -> dict[str, Any]:
        """Wait until the job is finished; its final snapshot."""
        waiter = Waiter(job_id)
        try:
            first: dict[str, Any] | None = await self.snapshot(job_id)
        except RelayError as error:
            first = waiter.missing(error)
        if first is not None and waiter.finished(first):
            return first
        async for _ in self.subscribe(job_id, waiter.resume_from(first)):
            pass
        return await self.snapshot(job_id)

    # -- internals ------------------------------------------------------------------------

    async def _run(self, call: Call[T]) -> T:
        call.begin(self._policy, time.monotonic())
        request_headers = headers(self.token, body=call.request.body is not None)
        while True:
            step: Done[T] | Wait
            try:
                async with self.session.request(
                    call.request.method,
                    self._calls.url(call.request.path),
                    data=call.request.body,
                    headers=request_headers,
                    timeout=self._timeout,
                ) as response:
                    body = await response.read()
                    step = call.answered(
                        response.status,
                        body,
                        response.headers.get("Retry-After"),
                        time.monotonic(),
                    )
            except _CONNECTION_ERRORS as exc:
                step = call.failed(_describe(exc), time.monotonic())
            if isinstance(step, Done):
                return step.value
            await asyncio.sleep(step.delay)

    async def _send(self, job_id: str, batch: Sequence[Outgoing]) -> Published:
        if self.cross_job.enabled:
            published = await self._send_batched(job_id, batch)
        else:
            published = await self._run(self._calls.publish(job_id, batch))
        self._state.record(job_id, batch, published)
        if any(event.terminal for event in batch):
            self._job_locks.pop(job_id, None)
            timer = self._timers.pop(job_id, None)
            if timer is not None:
                timer.cancel()
        return published

    async def _send_batched(self, job_id: str, batch: Sequence[Outgoing]) -> Published:
        """Wait for the window's request (the first publish of a window starts its timer)."""
        pending = Pending(job_id, batch)
        done = asyncio.get_running_loop().create_future()
        self._batch_done[id(pending)] = done
        if self.cross_job.add(pending):
            self._window = asyncio.get_running_loop().call_later(
                self._batch_window, self._start_round
            )
        await asyncio.shield(done)
        outcome = pending.outcome
        if pending.alone or outcome is None:
            return await self._run(self._calls.publish(job_id, batch))
        if isinstance(outcome, RelayError):
            raise outcome
        return outcome

    def _start_round(self) -> None:
        self._window = None
        for round_ in self.cross_job.take():
            task = asyncio.get_running_loop().create_task(self._send_round(round_))
            self._flushes.add(task)
            task.add_done_callback(self._flushes.discard)

    async def _send_round(self, round_: list[Pending]) -> None:
        try:
            if self.cross_job.supported is False:
                answer = None  # learnt by a round sent meanwhile
            else:
                self.cross_job.requests += 1
                call = self._calls.publish_many([(p.job_id, p.events) for p in round_])
                answer = await self._run(call)
            self.cross_job.settle(round_, answer)
        except RelayError as error:
            self.cross_job.failed(round_, error)
        finally:
            for pending in round_:
                done = self._batch_done.pop(id(pending))
                if not done.done():
                    done.set_result(None)

    def _job_lock(self, job_id: str) -> asyncio.Lock:
        return self._job_locks.setdefault(job_id, asyncio.Lock())

    def _schedule_flush(self, job_id: str) -> None:
        if job_id in self._timers:
            return
        due = self._state.coalescer.due(job_id)
        if due is None:
            return
        delay = max(0.0, due - time.monotonic())
        self._timers[job_id] = asyncio.get_running_loop().call_later(
            delay, self._start_flush, job_id
        )

    def _start_flush(self, job_id: str) -> None:
        self._timers.pop(job_id, None)
        task = asyncio.get_running_loop().create_task(self._flush_due(job_id))
        self._flushes.add(task)
        task.add_done_callback(self._flushes.discard)

    async def _flush_due(self, job_id: str) -> None:
        async with self._job_lock(job_id):
            batch = self._state.flush(job_id, time.monotonic(), force=False)
            if not batch:
                self._schedule_flush(job_id)  # replaced by a newer one, due later
                return
            try:
                await self._send(job_id, batch)
            except RelayError as error:
                self._state.defer(job_id, error)


def _sent(published: Published | None) -> Published:
    assert published is not None, "only progress is ever held"
    return published


def _describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
