"""The memory bound of the relay (``limits.memory_bytes``): what every job together may hold.

One place counts it: each store that keeps a job's bytes (history, log tail, streamed text,
idempotency keys, meta, result, the job's own state) reports what it takes and gives back, as it
happens, so the total is known at any moment without scanning anything. The sizes are those of
the objects as Python holds them: ``sys.getsizeof`` of each bytes and str, and for the objects
around them the constants below, measured with ``tracemalloc`` (tests/attack/test_memory_bound.py
checks the count against what tracemalloc sees). JSON values are kept as their encoded bytes for
that reason: a decoded value costs up to twenty times its JSON.

The rule past the bound lives with the broker that holds the jobs (brokers/memory.py): the
oldest finished jobs' history goes first, then what would not fit is refused.
"""

from __future__ import annotations

import sys

from progress_relay.wire.errors import MemoryFull

# An event in history beyond its frame's length: the Event, its id string, its seq, the
# frame's bytes header and its place in the ring.
EVENT_BYTES = 240
# A log tail entry beyond its message: the entry, its time, id and place in the tail.
LOG_ENTRY_BYTES = 200
# An idempotency key beyond the key: the event id it maps to, the time it was seen, and its
# place in the table.
KEY_BYTES = 220
# A job with no events: its snapshot, history ring, ETA points (when full), its place in the
# job table and the job id.
JOB_BYTES = 3300
# A JSON value kept as its encoded bytes (meta, result, error details), beyond its length.
RAW_BYTES = 80
# A job's streamed text beyond its bytes and their decoded view: the buffer and string headers.
TEXT_BYTES = 200


# Seconds a refused publisher is told to wait: memory comes back as jobs finish (their history
# can then go) and as finished jobs are evicted, which the reaper does every few seconds.
RETRY_AFTER = 5


def memory_full(what: str) -> MemoryFull:
    return MemoryFull(
        f"{what} would take the relay past its memory bound; retry when jobs have finished",
        headers={"Retry-After": str(RETRY_AFTER)},
    )


def text_bytes(text: str | None) -> int:
    return 0 if text is None else sys.getsizeof(text)


class MemoryBudget:
    """Bytes held against ``limit``; ``add`` a change (negative when bytes are freed)."""

    __slots__ = ("dropped", "held", "limit")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held = 0
        self.dropped = 0  # finished jobs' histories dropped to stay within the bound

    def add(self, size: int) -> None:
        self.held += size

    def room(self) -> int:
        """Bytes that may still be taken before the bound (negative: past it)."""
        return self.limit - self.held
