"""Batching across jobs (sans-IO, shared by both relays): what the publishes of every job made
within ``batch_window`` seconds become — one ``POST /v1/events`` per ``MAX_EVENTS`` events, each
job's events together and in order — and what each publisher gets back.

Each job has at most one publish waiting at a time (its relay sends a job's events under the
job's lock), so a job's order is its publishes' order. A job the relay refused with a status
that is retried (429, 502, 503, 504) is sent again on its own route, whose call retries it
within the budget, with the same idempotency keys; any other refusal is that job's error. A
relay without the route (404 or 405: an older one) is remembered, and every job is sent on its
own route from then on. A request refused whole as bad (400, 413, 422: one job's bad event, or a
relay with a smaller ``limits.max_batch_events``) is sent job by job, so that only the job at
fault gets the error.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from progress_relay.client.errors import RelayError
from progress_relay.client.events import Outgoing
from progress_relay.client.protocol import Published
from progress_relay.client.retry import RETRIED_STATUSES

# Events in one request at most: the relay's default limits.max_batch_events.
MAX_EVENTS = 1000
_BAD = frozenset({400, 413, 422})


@dataclass
class Pending:
    """One job's publish, waiting for the next request."""

    job_id: str
    events: Sequence[Outgoing]
    outcome: Published | RelayError | None = None
    alone: bool = False  # to be sent on the job's own route


@dataclass
class CrossJob:
    """Whether the relay takes cross-job requests (None: not asked yet), and the rounds."""

    supported: bool | None = None
    requests: int = 0  # cross-job requests sent, for tests and curious users
    _waiting: list[Pending] = field(default_factory=list)

    @property
    def enabled(self) -> bool:
        return self.supported is not False

    def add(self, pending: Pending) -> bool:
        """Queue a publish; True when it opens a window (the caller starts its timer)."""
        self._waiting.append(pending)
        return len(self._waiting) == 1

    def take(self) -> list[list[Pending]]:
        """What waited, as the requests to send: no job split between two of them."""
        waiting, self._waiting = self._waiting, []
        rounds: list[list[Pending]] = []
        size = MAX_EVENTS
        for pending in waiting:
            if size + len(pending.events) > MAX_EVENTS:
                rounds.append([])
                size = 0
            rounds[-1].append(pending)
            size += len(pending.events)
        return rounds

    def settle(
        self, round_: Sequence[Pending], answer: dict[str, Published | RelayError] | None
    ) -> None:
        """Give each publish of a round its outcome; ``answer`` None: the relay has no route."""
        if answer is None:
            self.supported = False
            for pending in round_:
                pending.alone = True
            return
        self.supported = True
        for pending in round_:
            outcome = answer.get(pending.job_id)
            if outcome is None:
                pending.alone = True  # not in the answer (never, from a relay): play safe
            elif isinstance(outcome, RelayError) and outcome.status in RETRIED_STATUSES:
                pending.alone = True
            else:
                pending.outcome = outcome

    def failed(self, round_: Sequence[Pending], error: RelayError) -> None:
        """The whole request was refused: as bad, it is sent job by job; any other error
        (credentials, the relay unreachable past the retry budget) is every job's."""
        for pending in round_:
            if error.status in _BAD:
                pending.alone = True
            else:
                pending.outcome = error
