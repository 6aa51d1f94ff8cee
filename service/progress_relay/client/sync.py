"""``Relay``: the synchronous client, for Flask, Django and Celery workers (httpx).

Every publish blocks until the relay answered (retrying within the budget), except a
``progress`` the coalescer holds back: that one returns at once and a small flusher thread
sends the newest held value when its interval is over.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from types import TracebackType
from typing import Any, TypeVar

import httpx

from progress_relay.client import events
from progress_relay.client.batching import CrossJob, Pending
from progress_relay.client.constants import DEFAULT_URL as DEFAULT_URL
from progress_relay.client.errors import RelayError
from progress_relay.client.events import Event, Outgoing
from progress_relay.client.groups import Children, Group, GroupTracker, child_specs
from progress_relay.client.protocol import Call, Calls, Done, Job, Published, Wait, headers
from progress_relay.client.publishing import PublishState
from progress_relay.client.retry import RetryPolicy
from progress_relay.client.sse import End, Open, StreamSession
from progress_relay.client.trackers import Tracker
from progress_relay.client.tracking import Stages, log_deferred
from progress_relay.client.waiting import Waiter

T = TypeVar("T")


class Relay:
    """A client of one relay.

    ``url``: the relay's base URL; ``token``: a publisher token (sent as ``Authorization:
    Bearer``; a subscriber token works for reading); ``progress_rate``: ``progress`` events per
    second per job at most (0: no coalescing); ``retry_budget``: seconds a call keeps retrying
    connection errors and 429/502/503/504 before it raises; ``timeout``: seconds per attempt;
    ``stream_read_timeout``: seconds a stream may stay silent (the relay pings every 15 s)
    before it is reopened. Use it as a context manager, or call :meth:`close`, so that held
    progress is sent.
    """

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
        self._batch_done: dict[int, threading.Event] = {}
        self._batcher: threading.Thread | None = None
        self.token = token
        self._calls = Calls(self.url)
        self._policy = retry or RetryPolicy(budget=retry_budget)
        self._timeout = timeout
        self._stream_timeout = httpx.Timeout(timeout, read=stream_read_timeout)
        self._state = PublishState(progress_rate)
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._batch_wake = threading.Condition(self._lock)
        self._job_locks: dict[str, threading.Lock] = {}
        self._flusher: threading.Thread | None = None
        self._closed = False
        self._pid = os.getpid()
        self._http = self._new_http()

    def _new_http(self) -> httpx.Client:
        return httpx.Client(timeout=self._timeout)

    # -- context manager ------------------------------------------------------------------

    def __enter__(self) -> Relay:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Send every held progress, stop the flusher, close the connections."""
        try:
            self.flush()
        finally:
            with self._lock:
                self._closed = True
                log_deferred(self._state.take_deferred())
                self._wake.notify_all()
                self._batch_wake.notify_all()
            for thread in (self._flusher, self._batcher):
                if thread is not None and thread is not threading.current_thread():
                    thread.join(timeout=self._policy.budget + self._timeout)
            self._http.close()

    # -- jobs -----------------------------------------------------------------------------

    def create_job(
        self,
        job_id: str | None = None,
        *,
        ttl: float | None = None,
        meta: Any = None,
        parent: str | None = None,
        weight: float | None = None,
    ) -> Job:
        """Create a job (idempotent for a given id; the id is random when None); with
        ``parent``, a child of that job of ``weight`` (default 1)."""
        return self._run(self._calls.create_job(job_id, ttl, meta, parent=parent, weight=weight))

    def group(
        self,
        children: Children,
        *,
        weights: Sequence[float] | None = None,
        job_id: str | None = None,
        ttl: float | None = None,
        meta: Any = None,
    ) -> Group:
        """Create a parent with its ``children`` (a count, or their ids) in one call; the relay
        aggregates them into the parent. See client/groups.py."""
        specs = child_specs(children, weights)
        job = self._run(self._calls.create_job(job_id, ttl, meta, children=specs))
        return Group(job, job.children)

    def track_group(
        self,
        children: Children,
        *,
        weights: Sequence[float] | None = None,
        stages: Stages = None,
        job_id: str | None = None,
        ttl: float | None = None,
        meta: Any = None,
    ) -> GroupTracker[Tracker]:
        """``relay.group(...)`` with a :class:`Tracker` per child (``for part in tracked:
        with part: ...``)."""
        group = self.group(children, weights=weights, job_id=job_id, ttl=ttl, meta=meta)
        return GroupTracker(group, tuple(self.track(child.id, stages) for child in group.children))

    def snapshot(self, job_id: str) -> dict[str, Any]:
        """The job's snapshot; JobNotFound when it does not exist."""
        return self._run(self._calls.snapshot(job_id))

    def history(self, job_id: str, after: str | None = None, limit: int = 1000) -> dict[str, Any]:
        """One page of the job's retained history (``GET /v1/jobs/{id}/events``)."""
        return self._run(self._calls.history(job_id, after, limit))

    def jobs(
        self, status: str | Iterable[str] | None = None, *, page_size: int | None = None
    ) -> Iterator[dict[str, Any]]:
        """Every job's snapshot, newest first, following ``next_cursor`` page by page."""
        statuses = [status] if isinstance(status, str) else status
        cursor: str | None = None
        while True:
            page = self._run(self._calls.jobs_page(statuses, page_size, cursor))
            yield from page.jobs
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    def cancel(self, job_id: str) -> dict[str, Any]:
        """Ask the job's worker to stop (what a viewer's cancel button does)."""
        return self._run(self._calls.cancel(job_id))

    def delete(self, job_id: str) -> None:
        self._run(self._calls.delete(job_id))

    # -- publishing -----------------------------------------------------------------------

    def progress(
        self,
        job_id: str,
        percent: float | None = None,
        *,
        stage: str | None = None,
        message: str | None = None,
        step: int | None = None,
        total_steps: int | None = None,
    ) -> Published | None:
        """Publish ``progress``; None when the coalescer holds it (it is sent later)."""
        event = events.progress(
            percent, stage=stage, message=message, step=step, total_steps=total_steps
        )
        return self.publish_events(job_id, [event])

    def log(self, job_id: str, message: str, level: str = "info") -> Published:
        return self._sent(self.publish_events(job_id, [events.log(message, level)]))

    def content(self, job_id: str, text: str) -> Published:
        return self._sent(self.publish_events(job_id, [events.content(text)]))

    def complete(
        self,
        job_id: str,
        result: Any = None,
        *,
        message: str | None = None,
        redirect_url: str | None = None,
    ) -> Published:
        event = events.complete(result, message=message, redirect_url=redirect_url)
        return self._sent(self.publish_events(job_id, [event]))

    def fail(
        self, job_id: str, message: str, *, code: str | None = None, details: Any = None
    ) -> Published:
        event = events.failed(message, code=code, details=details)
        return self._sent(self.publish_events(job_id, [event]))

    def cancelled(self, job_id: str, message: str | None = None) -> Published:
        return self._sent(self.publish_events(job_id, [events.cancelled(message)]))

    def publish(self, job_id: str, event: str, data: Any = None) -> Published | None:
        """Any event by name (``progress`` is coalesced like :meth:`progress`)."""
        return self.publish_events(job_id, [Outgoing(event, data)])

    def batch(self, job_id: str, batch: Sequence[tuple[str, Any]]) -> Published:
        """Several events in one request, published atomically and in order (never coalesced)."""
        outgoing = [Outgoing(name, data) for name, data in batch]
        if not outgoing:
            raise ValueError("a batch needs at least one event")
        return self._sent(self.publish_events(job_id, outgoing, coalesce=False))

    def publish_events(
        self, job_id: str, batch: Sequence[Outgoing], *, coalesce: bool = True
    ) -> Published | None:
        """Publish ``batch`` (built with ``progress_relay.client.events``) in one request, in
        order; None when the one event is a ``progress`` the coalescer holds (it is sent later).
        ``coalesce=False`` sends a ``progress`` at once (a milestone, an explicit batch). The
        calls above and the trackers go through here."""
        with self._job_lock(job_id):
            with self._lock:
                planned = self._state.plan(job_id, batch, time.monotonic(), coalesce=coalesce)
                if not planned:
                    self._start_flusher()
                    self._wake.notify()
                    return None
            return self._send(job_id, planned)

    def flush(self, job_id: str | None = None) -> None:
        """Send held progress now (of one job, or of all); raises what a background flush of
        that job met (RelayUnavailable, JobFinished) if its next call has not yet."""
        with self._lock:
            if job_id is not None:
                self._state.raise_deferred(job_id)
            jobs = [job_id] if job_id is not None else self._state.coalescer.held_jobs()
        errors = self._send_jobs(jobs, force=True)
        if errors:
            raise errors[0][1]

    def cancel_requested(self, job_id: str) -> bool:
        """Whether a publish response for this job said ``cancel_requested: true``."""
        with self._lock:
            return self._state.cancel_requested(job_id)

    def track(self, job_id: str, stages: Stages = None) -> Tracker:
        """``with relay.track(job_id, stages=[...]) as tracker:`` — see :class:`Tracker`."""
        return Tracker(self, job_id, stages)

    # -- reading the stream ---------------------------------------------------------------

    def subscribe(
        self,
        job_id: str,
        last_event_id: str | None = None,
        *,
        replay: str = "history",
        children: bool = False,
    ) -> Iterator[Event]:
        """The job's events as they come (from its retained history first, or after
        ``last_event_id``), resuming after disconnects, until its terminal event. Without
        ``last_event_id``, ``replay="snapshot"`` starts with a ``reset`` (the job's snapshot,
        its text included) and ``"none"`` with live events. Fold them into a
        :class:`~progress_relay.client.JobState` for the job's state. ``children=True``: a
        group's stream, its children's events too (each ``Event.job`` says whose), until the
        parent's end."""
        session = StreamSession(
            job_id, last_event_id, self._policy, time.monotonic(), replay, children
        )
        request_headers = headers(self.token, body=False)
        while not session.done:
            step: Open | End | Wait
            try:
                with self._http.stream(
                    "GET",
                    self._calls.url(session.path),
                    headers=request_headers | session.headers(),
                    timeout=self._stream_timeout,
                ) as response:
                    body = b"" if response.status_code == 200 else response.read()
                    step = session.opened(
                        response.status_code,
                        body,
                        response.headers.get("Retry-After"),
                        time.monotonic(),
                    )
                    if isinstance(step, Open):
                        for chunk in response.iter_bytes():
                            yield from session.feed(chunk, time.monotonic())
                            if session.done:
                                return
                        step = session.ended(time.monotonic())
            except httpx.TransportError as exc:
                step = session.failed(_describe(exc), time.monotonic())
            if isinstance(step, End):
                return
            if not isinstance(step, Open):
                time.sleep(step.delay)

    def wait(self, job_id: str) -> dict[str, Any]:
        """Block until the job is finished; its final snapshot."""
        waiter = Waiter(job_id)
        first: dict[str, Any] | None
        try:
            first = self.snapshot(job_id)
        except RelayError as error:
            first = waiter.missing(error)
        if first is not None and waiter.finished(first):
            return first
        for _ in self.subscribe(job_id, waiter.resume_from(first)):
            pass
        return self.snapshot(job_id)

    # -- internals ------------------------------------------------------------------------

    def _run(self, call: Call[T]) -> T:
        self._check_fork()
        call.begin(self._policy, time.monotonic())
        request_headers = headers(self.token, body=call.request.body is not None)
        while True:
            step: Done[T] | Wait
            try:
                response = self._http.request(
                    call.request.method,
                    self._calls.url(call.request.path),
                    content=call.request.body,
                    headers=request_headers,
                )
            except httpx.TransportError as exc:
                step = call.failed(_describe(exc), time.monotonic())
            else:
                step = call.answered(
                    response.status_code,
                    response.content,
                    response.headers.get("Retry-After"),
                    time.monotonic(),
                )
            if isinstance(step, Done):
                return step.value
            time.sleep(step.delay)

    def _send(self, job_id: str, batch: Sequence[Outgoing]) -> Published:
        """Send under the job's lock, so that the job's events leave in order."""
        if self.cross_job.enabled:
            published = self._send_batched(job_id, batch)
        else:
            published = self._run(self._calls.publish(job_id, batch))
        self._record(job_id, batch, published)
        return published

    def _record(self, job_id: str, batch: Sequence[Outgoing], published: Published) -> None:
        with self._lock:
            self._state.record(job_id, batch, published)
            if any(event.terminal for event in batch):
                self._job_locks.pop(job_id, None)

    def _send_batched(self, job_id: str, batch: Sequence[Outgoing]) -> Published:
        """Wait for the window's request, which the batcher thread sends."""
        pending, done = self._submit(job_id, batch)
        return self._outcome(pending, done)

    def _submit(self, job_id: str, batch: Sequence[Outgoing]) -> tuple[Pending, threading.Event]:
        self._check_fork()
        pending = Pending(job_id, batch)
        done = threading.Event()
        with self._lock:
            if self._closed:
                pending.alone = True
                done.set()
            else:
                self._batch_done[id(pending)] = done
                if self.cross_job.add(pending):
                    self._start_batcher()
                    self._batch_wake.notify_all()
        return pending, done

    def _outcome(self, pending: Pending, done: threading.Event) -> Published:
        done.wait()
        outcome = pending.outcome
        if pending.alone or outcome is None:
            return self._run(self._calls.publish(pending.job_id, pending.events))
        if isinstance(outcome, RelayError):
            raise outcome
        return outcome

    def _send_jobs(self, jobs: Sequence[str], *, force: bool) -> list[tuple[str, RelayError]]:
        """Send the held progress of several jobs (each under its lock) in the same window, not
        one window after another; the errors met, by job."""
        held: list[threading.Lock] = []
        errors: list[tuple[str, RelayError]] = []
        submitted: list[tuple[str, list[Outgoing], Pending, threading.Event]] = []
        try:
            # Always in the same order: the flusher thread and a flush() may run at once.
            for job in sorted(jobs):
                lock = self._job_lock(job)
                lock.acquire()
                held.append(lock)
                with self._lock:
                    batch = self._state.flush(job, time.monotonic(), force=force)
                if not batch:
                    continue
                if not self.cross_job.enabled:
                    try:
                        self._send(job, batch)
                    except RelayError as error:
                        errors.append((job, error))
                    continue
                submitted.append((job, batch, *self._submit(job, batch)))
            for job, batch, pending, done in submitted:
                try:
                    published = self._outcome(pending, done)
                except RelayError as error:
                    errors.append((job, error))
                    continue
                self._record(job, batch, published)
        finally:
            for lock in held:
                lock.release()
        return errors

    def _start_batcher(self) -> None:
        """Called holding ``_lock``."""
        if self._batcher is None or not self._batcher.is_alive():
            self._batcher = threading.Thread(
                target=self._batch_loop, name="progress-relay-batcher", daemon=True
            )
            self._batcher.start()

    def _batch_loop(self) -> None:
        while True:
            with self._lock:
                while not self._batch_done and not self._closed:
                    self._batch_wake.wait()
                if not self._batch_done and self._closed:
                    return
                closing = self._closed
            if not closing:
                time.sleep(self._batch_window)
            with self._lock:
                rounds = self.cross_job.take()
            for round_ in rounds:
                self._send_round(round_)

    def _send_round(self, round_: list[Pending]) -> None:
        try:
            if self.cross_job.supported is False:
                answer = None
            else:
                self.cross_job.requests += 1
                answer = self._run(self._calls.publish_many([(p.job_id, p.events) for p in round_]))
            self.cross_job.settle(round_, answer)
        except RelayError as error:
            self.cross_job.failed(round_, error)
        finally:
            with self._lock:
                events = [self._batch_done.pop(id(pending)) for pending in round_]
            for event in events:
                event.set()

    def _job_lock(self, job_id: str) -> threading.Lock:
        with self._lock:
            return self._job_locks.setdefault(job_id, threading.Lock())

    @staticmethod
    def _sent(published: Published | None) -> Published:
        assert published is not None, "only progress is ever held"
        return published

    def _check_fork(self) -> None:
        # A Relay made before a fork (Celery's prefork pool): the child gets its own
        # connections and flusher; the parent's are not usable there.
        if os.getpid() != self._pid:
            self._pid = os.getpid()
            self._http = self._new_http()
            self._flusher = None
            self._batcher = None
            self.cross_job = CrossJob(supported=self.cross_job.supported)
            self._batch_done = {}
            self._lock = threading.Lock()
            self._wake = threading.Condition(self._lock)
            self._batch_wake = threading.Condition(self._lock)
            self._job_locks = {}

    def _start_flusher(self) -> None:
        """Called holding ``_lock``."""
        if self._flusher is None or not self._flusher.is_alive():
            self._flusher = threading.Thread(
                target=self._flush_loop, name="progress-relay-flusher", daemon=True
            )
            self._flusher.start()

    def _flush_loop(self) -> None:
        while True:
            with self._lock:
                if self._closed:
                    return
                now = time.monotonic()
                due = self._state.coalescer.next_due()
                if due is None or due > now:
                    self._wake.wait(None if due is None else due - now)
                    continue
                jobs = [
                    job
                    for job in self._state.coalescer.held_jobs()
                    if (self._state.coalescer.due(job) or 0.0) <= now
                ]
            for job, error in self._send_jobs(jobs, force=False):
                with self._lock:
                    self._state.defer(job, error)


def _describe(error: Exception) -> str:
    return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
