"""Job ids and event ids.

An event id is ``<epoch>-<seq>``: ``seq`` is one sequence for the whole deployment, so ids grow
strictly along every stream, single-job or multi-job; ``epoch`` names the life of the history
that issued it. An id whose epoch is not the current one (a restarted in-memory relay, a Redis
that lost its data) is recognised as such, and the client gets ``reset`` instead of a silent gap.
"""

from __future__ import annotations

import random
import re
import time
from typing import NamedTuple

JOB_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$"
EVENT_ID_PATTERN = r"^([a-z0-9]{1,32})-(0|[1-9][0-9]{0,18})$"
_JOB_ID = re.compile(JOB_ID_PATTERN)
_EVENT_ID = re.compile(EVENT_ID_PATTERN)


def is_valid_job_id(job_id: str) -> bool:
    return _JOB_ID.fullmatch(job_id) is not None


def new_epoch() -> str:
    """A short id unlikely to repeat across restarts: time in ms and 16 random bits, base 36.
    (Made for every Redis publish, as the epoch to start if Redis lost it: the bits come from
    the process's generator, seeded from the OS, not from a system call each time.)"""
    value = (int(time.time() * 1000) << 16) | random.getrandbits(16)
    return _base36(value)


def _base36(value: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = []
    while value:
        value, rem = divmod(value, 36)
        out.append(digits[rem])
    return "".join(reversed(out)) or "0"


class Position(NamedTuple):
    """Where a client stands: ``seq`` is meaningful only within ``epoch``."""

    epoch: str
    seq: int

    def __str__(self) -> str:
        return f"{self.epoch}-{self.seq}"


def parse_event_id(value: str) -> Position | None:
    """The position an event id names, or None when it is not one of ours."""
    match = _EVENT_ID.fullmatch(value)
    if match is None:
        return None
    return Position(match.group(1), int(match.group(2)))
