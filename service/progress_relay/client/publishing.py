"""What goes out when (sans-IO), shared by both relays: coalescing of ``progress``, each job's
``cancel_requested``, and the failure of a background flush, kept for the job's next call."""

from __future__ import annotations

from collections.abc import Sequence

from progress_relay.client.coalesce import Coalescer
from progress_relay.client.errors import RelayError
from progress_relay.client.events import Outgoing
from progress_relay.client.protocol import Published


class PublishState:
    def __init__(self, progress_rate: float | None) -> None:
        self.coalescer = Coalescer(progress_rate)
        self._cancel_requested: set[str] = set()
        self._deferred: dict[str, RelayError] = {}

    def plan(
        self, job_id: str, batch: Sequence[Outgoing], now: float, *, coalesce: bool = True
    ) -> list[Outgoing]:
        """The events to send now for a call publishing ``batch``; empty when the one event
        is a ``progress`` held back by the coalescer (``coalesce``: not for explicit batches).
        A held progress goes first, in the same request: always before a terminal event,
        otherwise once its interval is over; a progress in ``batch`` (a tracker's stage, an
        explicit batch) supersedes it."""
        self.raise_deferred(job_id)
        if coalesce and len(batch) == 1 and batch[0].event == "progress":
            sent = self.coalescer.offer(job_id, batch[0], now)
            return [sent] if sent is not None else []
        if any(event.event == "progress" for event in batch):
            # The batch's progress is newer: a held one is superseded, not sent after it.
            self.coalescer.take(job_id, now)
            return list(batch)
        if any(event.terminal for event in batch):
            held = self.coalescer.take(job_id, now)
        else:
            held = self.coalescer.take_due(job_id, now)
        return [held, *batch] if held is not None else list(batch)

    def flush(self, job_id: str, now: float, *, force: bool) -> list[Outgoing]:
        take = self.coalescer.take if force else self.coalescer.take_due
        held = take(job_id, now)
        return [held] if held is not None else []

    def record(self, job_id: str, sent: Sequence[Outgoing], published: Published) -> None:
        if published.cancel_requested:
            self._cancel_requested.add(job_id)
        if any(event.terminal for event in sent):
            self.coalescer.forget(job_id)
            self._cancel_requested.discard(job_id)

    def cancel_requested(self, job_id: str) -> bool:
        return job_id in self._cancel_requested

    def defer(self, job_id: str, error: RelayError) -> None:
        """A background flush failed: the job's next call raises it."""
        self._deferred[job_id] = error

    def take_deferred(self) -> list[RelayError]:
        """Every failure of a background flush not raised yet (on flush and close)."""
        errors, self._deferred = list(self._deferred.values()), {}
        return errors

    def raise_deferred(self, job_id: str) -> None:
        error = self._deferred.pop(job_id, None)
        if error is not None:
            raise error
