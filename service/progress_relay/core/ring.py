"""The bounded history of one job: the last N events or B bytes of frames, whichever is less."""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Sequence

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

    def would_push_out(self, sizes: Sequence[int]) -> tuple[int, int]:
        """How many events, and how many bytes of frames, appending events of these sizes
        would push out, the new ones included (what ``append`` would drop, without changing
        anything)."""
        count = len(self._events) + len(sizes)
        total = self.bytes + sum(sizes)
        events = bytes_out = 0
        for size in itertools.chain((event.size for event in self._events), sizes):
            if count - events <= 1 or (
                count - events <= self.max_events and total - bytes_out <= self.max_bytes
            ):
                break
            events += 1
            bytes_out += size
        return events, bytes_out

    def clear(self) -> None:
        """Drop the whole history; a reader from before its newest event gets ``reset``."""
        events = self._events
        if events:
            self.dropped_upto = events[-1].seq
            events.clear()
            self.bytes = 0

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
