"""The bounded history of one job: the last N events or B bytes of frames, whichever is less."""

from __future__ import annotations

from collections import deque

from progress_relay.wire.events import Event


class Ring:
    __slots__ = ("_events", "bytes", "dropped_upto", "max_bytes", "max_events")

    def __init__(self, max_events: int, max_bytes: int) -> None:
        self.max_events = max_events
        self.max_bytes = max_bytes
        self._events: deque[Event] = deque()
        self.bytes = 0
        # seq of the newest event pushed out of the ring; 0 while the ring holds the whole history
        self.dropped_upto = 0

    def __len__(self) -> int:
        return len(self._events)

    def append(self, event: Event) -> None:
        events = self._events
        events.append(event)
        self.bytes += event.size
        # The newest event always stays, even when it alone is larger than max_bytes.
        while len(events) > 1 and (len(events) > self.max_events or self.bytes > self.max_bytes):
            dropped = events.popleft()
            self.bytes -= dropped.size
            self.dropped_upto = dropped.seq

    def covers(self, seq: int) -> bool:
        """Whether every event newer than ``seq`` is still here (0: since the job's first)."""
        return seq >= self.dropped_upto

    def since(self, seq: int) -> list[Event]:
        """The retained events newer than ``seq``, oldest first."""
        found: list[Event] = []
        for event in reversed(self._events):
            if event.seq <= seq:
                break
            found.append(event)
        found.reverse()
        return found
