"""Client-side coalescing of ``progress`` (sans-IO: the caller passes the time).

Progress is a state: only the newest value matters. Per job at most one ``progress`` leaves
every ``1 / rate`` seconds; a call inside the interval replaces the held value, which leaves as
soon as the interval is over (the transports schedule that flush), with the next event of the
job that goes out anyway, or before a terminal event and on close. Nothing else is ever held.
"""

from __future__ import annotations

from dataclasses import dataclass

from progress_relay.client.events import Outgoing


@dataclass
class _Slot:
    last_sent: float | None = None
    held: Outgoing | None = None


class Coalescer:
    """``rate``: progress events per second per job; 0 or None sends every one."""

    def __init__(self, rate: float | None) -> None:
        if rate is not None and rate < 0:
            raise ValueError("progress_rate must be >= 0")
        self.interval = 1.0 / rate if rate else 0.0
        self._slots: dict[str, _Slot] = {}

    def offer(self, job_id: str, event: Outgoing, now: float) -> Outgoing | None:
        """The progress ``event`` if it may leave now (counted as sent), else None: it is held
        (replacing any older held one) until :meth:`due`."""
        slot = self._slots.setdefault(job_id, _Slot())
        if slot.held is None and (slot.last_sent is None or now - slot.last_sent >= self.interval):
            slot.last_sent = now
            return event
        slot.held = event
        return None

    def due(self, job_id: str) -> float | None:
        """When the held progress of ``job_id`` may leave, or None when none is held."""
        slot = self._slots.get(job_id)
        if slot is None or slot.held is None:
            return None
        return slot.last_sent + self.interval if slot.last_sent is not None else 0.0

    def take_due(self, job_id: str, now: float) -> Outgoing | None:
        """The held progress if its time has come (counted as sent)."""
        due = self.due(job_id)
        if due is None or now < due:
            return None
        return self.take(job_id, now)

    def take(self, job_id: str, now: float) -> Outgoing | None:
        """The held progress whatever the time (before a terminal event, on flush and close)."""
        slot = self._slots.get(job_id)
        if slot is None or slot.held is None:
            return None
        held, slot.held = slot.held, None
        slot.last_sent = now
        return held

    def held_jobs(self) -> list[str]:
        return [job_id for job_id, slot in self._slots.items() if slot.held is not None]

    def next_due(self) -> float | None:
        dues = [due for job_id in self.held_jobs() if (due := self.due(job_id)) is not None]
        return min(dues, default=None)

    def forget(self, job_id: str) -> None:
        """The job is over: its slot goes (a bounded map: one slot per running job)."""
        self._slots.pop(job_id, None)
