"""What the relay has done, as plain integers bumped where it happens and read by /metrics.

Plain attribute increments keep counting off the hot path's budget: nothing here is touched per
event per subscriber, only per publish, per write, per stream or on the rare paths (conflation,
drops, resets, errors).
"""

from __future__ import annotations


class RelayCounts:
    __slots__ = (
        "broker_errors",
        "conflated",
        "delivered",
        "dropped",
        "duplicates",
        "memory_refused",
        "no_content",
        "published",
        "replayed",
        "resets",
        "write_timeouts",
        "writes",
    )

    def __init__(self) -> None:
        self.published = 0  # events accepted by publishes (and cancel requests)
        self.duplicates = 0  # events of publishes whose idempotency key was already seen
        self.delivered = 0  # frames written to streams
        self.writes = 0  # writes to streams (each carries one or more frames)
        self.replayed = 0  # events sent from history to streams that (re)connected
        self.resets = 0  # `reset` frames sent
        self.no_content = 0  # streams answered 204: nothing more will come
        self.conflated = 0  # waiting progress frames replaced by newer ones
        self.dropped = 0  # streams dropped for falling too far behind (they resume)
        self.write_timeouts = 0  # streams dropped because a write blocked too long
        self.broker_errors = 0  # requests and catch-ups that found the broker unavailable
        self.memory_refused = 0  # publishes, creates and cancels refused for the memory bound
