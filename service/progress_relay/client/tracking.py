"""What a tracker publishes (sans-IO), shared by ``Relay.track`` and ``AsyncRelay.track``.

- ``stage(name)`` puts the job at the start of that stage (``progress`` with ``percent``,
  ``stage``, ``step`` of ``total_steps``);
- ``progress(fraction)`` maps a fraction of the current stage to the overall percent (before
  any ``stage`` call the current stage is the first one; without stages, 0-1 is 0-100 %);
- leaving the block: a clean exit publishes ``complete`` with ``tracker.result``; ``Cancelled``
  publishes ``cancelled`` and is suppressed (the job ended as the viewer asked); any other
  exception publishes ``failed`` (its message, its type as ``code``) and propagates; an
  ``asyncio.CancelledError`` publishes ``cancelled`` and propagates.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from progress_relay.client import events
from progress_relay.client.errors import Cancelled, RelayError
from progress_relay.client.events import Outgoing
from progress_relay.client.stages import StageTable

Stages = Sequence[str] | Mapping[str, float] | None


class TrackState:
    def __init__(self, job_id: str, stages: Stages) -> None:
        self.job_id = job_id
        self.stages = StageTable(stages) if stages is not None else None
        self.current: str | None = None
        self.result: Any = None
        self.finished = False
        self.cancelled = False

    def enter(self, name: str, message: str | None) -> Outgoing:
        if self.stages is None:
            return events.progress(stage=name, message=message)
        self.current = name
        return events.progress(
            self.stages.start(name),
            stage=name,
            message=message,
            step=self.stages.step(name),
            total_steps=len(self.stages.names),
        )

    def advance(
        self,
        fraction: float,
        message: str | None,
        step: int | None,
        total_steps: int | None,
    ) -> Outgoing:
        if self.stages is None:
            percent = 100.0 * min(1.0, max(0.0, fraction))
            return events.progress(
                percent, stage=self.current, message=message, step=step, total_steps=total_steps
            )
        name = self.current or self.stages.names[0]
        return events.progress(
            self.stages.percent(name, fraction),
            stage=name,
            message=message,
            step=step if step is not None else self.stages.step(name),
            total_steps=total_steps if total_steps is not None else len(self.stages.names),
        )

    def exit_event(self, error: BaseException | None) -> tuple[Outgoing | None, bool]:
        """The terminal event to publish on leaving the block (None if the tracker already
        ended the job), and whether to suppress ``error``."""
        suppress = isinstance(error, Cancelled)
        if self.finished:
            return None, suppress
        if error is None:
            return events.complete(self.result), False
        if isinstance(error, Cancelled):
            return events.cancelled(str(error)), True
        if isinstance(error, asyncio.CancelledError):
            return events.cancelled("the worker was cancelled"), False
        return events.failed(str(error) or type(error).__name__, code=type(error).__name__), False

    def ended(self, event: Outgoing) -> None:
        self.finished = True
        self.cancelled = event.event == "cancelled"


def log_lost_terminal(job_id: str, event: Outgoing) -> None:
    logging.getLogger("progress_relay.client").warning(
        "could not publish %s for job %s: the relay is unreachable", event.event, job_id
    )


def log_deferred(errors: list[RelayError]) -> None:
    for error in errors:
        logging.getLogger("progress_relay.client").warning(
            "a held progress was not delivered: %s", error
        )
