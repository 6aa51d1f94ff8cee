"""The idempotency keys a job has seen recently, for the embedded broker (Redis keeps its own
in the publish script): a retried publish gets the ids of the first one."""

from __future__ import annotations

import sys
import time
from collections import OrderedDict

from progress_relay.brokers.budget import KEY_BYTES


class SeenKeys:
    """Key → event id, oldest first; forgotten after ``window`` seconds or past ``limit``.
    ``bytes`` is what the table holds, as brokers/budget.py counts it."""

    __slots__ = ("_keys", "_limit", "_window", "bytes")

    def __init__(self, window: float, limit: int) -> None:
        self._window = window
        self._limit = limit
        self._keys: OrderedDict[str, tuple[str, float]] = OrderedDict()
        self.bytes = 0

    def get(self, key: str) -> str | None:
        self._forget(time.monotonic())
        found = self._keys.get(key)
        return None if found is None else found[0]

    def add(self, key: str, event_id: str) -> None:
        now = time.monotonic()
        if key not in self._keys:
            self.bytes += KEY_BYTES + sys.getsizeof(key)
        self._keys[key] = (event_id, now)
        self._forget(now)

    def _forget(self, now: float) -> None:
        keys = self._keys
        cutoff = now - self._window
        while keys and (len(keys) > self._limit or next(iter(keys.values()))[1] <= cutoff):
            key, _ = keys.popitem(last=False)
            self.bytes -= KEY_BYTES + sys.getsizeof(key)

    def __len__(self) -> int:
        return len(self._keys)
