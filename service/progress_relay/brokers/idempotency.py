"""The idempotency keys a job has seen recently, for the embedded broker (Redis keeps its own
in the publish script): a retried publish gets the ids of the first one."""

from __future__ import annotations

import time
from collections import OrderedDict


class SeenKeys:
    """Key → event id, oldest first; forgotten after ``window`` seconds or past ``limit``."""

    __slots__ = ("_keys", "_limit", "_window")

    def __init__(self, window: float, limit: int) -> None:
        self._window = window
        self._limit = limit
        self._keys: OrderedDict[str, tuple[str, float]] = OrderedDict()

    def get(self, key: str) -> str | None:
        self._forget(time.monotonic())
        found = self._keys.get(key)
        return None if found is None else found[0]

    def add(self, key: str, event_id: str) -> None:
        now = time.monotonic()
        self._keys[key] = (event_id, now)
        self._forget(now)

    def _forget(self, now: float) -> None:
        keys = self._keys
        cutoff = now - self._window
        while keys and (len(keys) > self._limit or next(iter(keys.values()))[1] <= cutoff):
            keys.popitem(last=False)

    def __len__(self) -> int:
        return len(self._keys)
