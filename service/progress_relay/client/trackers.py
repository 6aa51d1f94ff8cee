"""The trackers of ``relay.track(job_id, stages=...)``: ``Tracker`` (a ``with`` block over a
``Relay``) and ``AsyncTracker`` (``async with`` over an ``AsyncRelay``). What they publish and
how a block ends is decided by ``tracking.TrackState``; these only send it, through the public
``publish_events`` and ``cancel_requested`` of a relay (the Protocols below), so that they
depend on no transport."""

from __future__ import annotations

from collections.abc import Sequence
from types import TracebackType
from typing import Any, Protocol

from progress_relay.client import events
from progress_relay.client.errors import Cancelled, RelayError
from progress_relay.client.events import Outgoing
from progress_relay.client.protocol import Published
from progress_relay.client.tracking import Stages, TrackState, log_lost_terminal


class Publisher(Protocol):
    """What a :class:`Tracker` needs of its relay (``progress_relay.client.Relay``)."""

    def publish_events(
        self, job_id: str, batch: Sequence[Outgoing], *, coalesce: bool = True
    ) -> Published | None: ...

    def cancel_requested(self, job_id: str) -> bool: ...


class AsyncPublisher(Protocol):
    """What an :class:`AsyncTracker` needs of its relay (``progress_relay.client.AsyncRelay``)."""

    async def publish_events(
        self, job_id: str, batch: Sequence[Outgoing], *, coalesce: bool = True
    ) -> Published | None: ...

    def cancel_requested(self, job_id: str) -> bool: ...


class _Tracked:
    """What both trackers show of a tracked block."""

    def __init__(self, job_id: str, stages: Stages) -> None:
        self.job_id = job_id
        self._state = TrackState(job_id, stages)

    @property
    def result(self) -> Any:
        return self._state.result

    @result.setter
    def result(self, value: Any) -> None:
        self._state.result = value

    @property
    def cancelled(self) -> bool:
        return self._state.cancelled

    @property
    def stage_name(self) -> str | None:
        return self._state.current


class Tracker(_Tracked):
    """Publishes a job's progress by named stages; see ``progress_relay.client.tracking``.

    ``stage(name)``, ``progress(fraction)``, ``log``, ``content`` raise :class:`Cancelled`
    once the relay has said that a viewer asked to cancel; ``result`` is sent with
    ``complete`` on a clean exit; ``cancelled`` tells, after the block, whether the job
    ended as cancelled.
    """

    def __init__(self, relay: Publisher, job_id: str, stages: Stages) -> None:
        super().__init__(job_id, stages)
        self.relay = relay

    def __enter__(self) -> Tracker:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        event, suppress = self._state.exit_event(error)
        if event is None:
            return suppress
        try:
            self._end(event)
        except RelayError:
            if error is None:
                raise
            # The worker's own exception matters more than the relay being unreachable.
            log_lost_terminal(self.job_id, event)
        return suppress

    def check(self) -> None:
        """Raise Cancelled if a viewer asked to cancel (as far as the relay has said)."""
        if self.relay.cancel_requested(self.job_id):
            raise Cancelled(self.job_id)

    def stage(self, name: str, *, message: str | None = None) -> None:
        self.check()
        # A stage change is a milestone, never coalesced: it goes out before the stage's logs.
        self.relay.publish_events(self.job_id, [self._state.enter(name, message)], coalesce=False)

    def progress(
        self,
        fraction: float,
        *,
        message: str | None = None,
        step: int | None = None,
        total_steps: int | None = None,
    ) -> None:
        self.check()
        event = self._state.advance(fraction, message, step, total_steps)
        self.relay.publish_events(self.job_id, [event])

    def log(self, message: str, level: str = "info") -> None:
        self.check()
        self.relay.publish_events(self.job_id, [events.log(message, level)])

    def content(self, text: str) -> None:
        self.check()
        self.relay.publish_events(self.job_id, [events.content(text)])

    def complete(
        self, result: Any = None, *, message: str | None = None, redirect_url: str | None = None
    ) -> None:
        """End the job now (the block's exit then publishes nothing)."""
        self._end(events.complete(result, message=message, redirect_url=redirect_url))

    def fail(self, message: str, *, code: str | None = None, details: Any = None) -> None:
        self._end(events.failed(message, code=code, details=details))

    def _end(self, event: Outgoing) -> None:
        self.relay.publish_events(self.job_id, [event])
        self._state.ended(event)


class AsyncTracker(_Tracked):
    """The asyncio twin of :class:`Tracker`: ``await tracker.stage(...)``."""

    def __init__(self, relay: AsyncPublisher, job_id: str, stages: Stages) -> None:
        super().__init__(job_id, stages)
        self.relay = relay

    async def __aenter__(self) -> AsyncTracker:
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        event, suppress = self._state.exit_event(error)
        if event is None:
            return suppress
        try:
            await self._end(event)
        except RelayError:
            if error is None:
                raise
            log_lost_terminal(self.job_id, event)
        return suppress

    def check(self) -> None:
        if self.relay.cancel_requested(self.job_id):
            raise Cancelled(self.job_id)

    async def stage(self, name: str, *, message: str | None = None) -> None:
        self.check()
        # A stage change is a milestone, never coalesced: it goes out before the stage's logs.
        event = self._state.enter(name, message)
        await self.relay.publish_events(self.job_id, [event], coalesce=False)

    async def progress(
        self,
        fraction: float,
        *,
        message: str | None = None,
        step: int | None = None,
        total_steps: int | None = None,
    ) -> None:
        self.check()
        event = self._state.advance(fraction, message, step, total_steps)
        await self.relay.publish_events(self.job_id, [event])

    async def log(self, message: str, level: str = "info") -> None:
        self.check()
        await self.relay.publish_events(self.job_id, [events.log(message, level)])

    async def content(self, text: str) -> None:
        self.check()
        await self.relay.publish_events(self.job_id, [events.content(text)])

    async def complete(
        self, result: Any = None, *, message: str | None = None, redirect_url: str | None = None
    ) -> None:
        await self._end(events.complete(result, message=message, redirect_url=redirect_url))

    async def fail(self, message: str, *, code: str | None = None, details: Any = None) -> None:
        await self._end(events.failed(message, code=code, details=details))

    async def _end(self, event: Outgoing) -> None:
        await self.relay.publish_events(self.job_id, [event])
        self._state.ended(event)
