"""The heartbeat: one timer for every open stream's `: ping` comment.

A timer (or a task) per stream would cost each idle stream a timer handle, a task and its frame
for as long as it is open, and a wake-up of its own every interval. Instead the streams sit in a
wheel of ``SLOTS`` buckets; one timer turns the wheel a slot every ``interval / SLOTS`` and
beats the streams of that slot only (``Beating.beat``). A stream joins the slot that was just
turned, so its first comment comes about one interval after it went live and one every interval
after that, whatever else it was sent (as aiohttp-sse's own heartbeat did). With no stream open
the timer is not armed.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Protocol

log = logging.getLogger(__name__)

# Buckets of the wheel: each turn of the timer looks at one in this many open streams.
SLOTS = 16
PING = b": ping\n\n"


class Beating(Protocol):
    def beat(self, frame: bytes) -> None:
        """Write ``frame`` (a comment) now, unless the stream is busy writing or over."""


class Heartbeat:
    __slots__ = ("_due", "_hand", "_slot_of", "_slots", "_timer", "frame", "interval")

    def __init__(self, interval: float, frame: bytes = PING) -> None:
        self.interval = interval
        self.frame = frame
        # Ordered sets (dicts): a slot's streams are beaten in the order they joined.
        self._slots: list[dict[Beating, None]] = [{} for _ in range(SLOTS)]
        self._slot_of: dict[Beating, int] = {}
        self._hand = 0  # the slot the timer turns next
        self._timer: asyncio.TimerHandle | None = None
        self._due = 0.0  # loop time of that turn

    @property
    def streams(self) -> int:
        return len(self._slot_of)

    @property
    def armed(self) -> bool:
        """Whether the timer is set (it is iff a stream is in the wheel)."""
        return self._timer is not None

    def add(self, stream: Beating) -> None:
        """Beat ``stream`` every interval from now on, until ``discard``."""
        if stream in self._slot_of:
            return
        if self._timer is None:
            loop = asyncio.get_running_loop()
            self._due = loop.time() + self.interval / SLOTS
            self._timer = loop.call_at(self._due, self._turn)
        slot = (self._hand - 1) % SLOTS  # turned last: next turned one interval from now
        self._slots[slot][stream] = None
        self._slot_of[stream] = slot

    def discard(self, stream: Beating) -> None:
        """The stream is over: it leaves the wheel (the timer stops with the last one)."""
        slot = self._slot_of.pop(stream, None)
        if slot is None:
            return
        del self._slots[slot][stream]
        if not self._slot_of and self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def close(self) -> None:
        for slot in self._slots:
            slot.clear()
        self._slot_of.clear()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _turn(self) -> None:
        slot = self._slots[self._hand]
        self._hand = (self._hand + 1) % SLOTS
        frame = self.frame
        for stream in list(slot):  # a beat may end a stream, which leaves the wheel
            try:
                stream.beat(frame)
            except Exception:
                log.exception("the heartbeat of %r failed", stream)
        if not self._slot_of:
            self._timer = None
            return
        loop = asyncio.get_running_loop()
        # From the schedule, not from now: turns do not drift later under load; a timer that
        # fell more than a turn behind starts again from now.
        self._due = max(self._due + self.interval / SLOTS, loop.time())
        self._timer = loop.call_at(self._due, self._turn)
