"""A job's streamed text: its `content` events' `text` joined in publish order, bounded.

The rule readers see: at most ``jobs.content_bytes`` bytes of UTF-8, the newest, beginning at a
character boundary; ``truncated`` once the beginning was dropped. A reader after a `reset` thus
has the latest text, and the live `content` events continue it.

Trimming is amortised: the store may hold up to ``trim_limit(bound)`` bytes before it drops the
oldest ones (down to ``bound``), so a job streaming past its bound moves its text once per
quarter of the bound, not on every token; reads cut the newest ``bound`` bytes out of it. The
Redis broker keeps the same rule in lua/publish.lua (APPEND, then the same trim) and reads with
``newest``; the SDK folds live events by it too (progress_relay/client/state.py).
"""

from __future__ import annotations

import sys


def trim_limit(bound: int) -> int:
    """The stored size past which the oldest bytes are dropped."""
    return bound + bound // 4


def char_start(data: bytes | bytearray, start: int) -> int:
    """The first position at or after ``start`` that begins a UTF-8 character (continuation
    bytes are 0b10xxxxxx); ``len(data)`` when there is none."""
    end = len(data)
    while start < end and data[start] & 0xC0 == 0x80:
        start += 1
    return start


def newest(tail: bytes, stored: int, dropped: bool) -> tuple[str, bool]:
    """The text a reader sees, and whether it is truncated, from ``tail``: the last
    ``min(stored, bound)`` bytes of the store (``stored`` bytes long, its beginning already
    dropped when ``dropped``)."""
    start = char_start(tail, 0) if len(tail) < stored else 0
    return tail[start:].decode("utf-8", "replace"), dropped or len(tail) - start < stored


class ContentTail:
    """One job's text in the memory broker. ``held`` (the bytes it keeps) changes in
    ``append`` only."""

    __slots__ = ("_cache", "_data", "bound", "dropped")

    def __init__(self, bound: int) -> None:
        self.bound = bound
        self._data = bytearray()
        self.dropped = False  # the beginning of the text is gone
        self._cache: tuple[str, bool] | None = ("", False)

    @property
    def held(self) -> int:
        return len(self._data)

    @property
    def view_bytes(self) -> int:
        """What the decoded text readers share takes while it is kept: made by the first read
        after a change, dropped by the next ``append`` (for the memory bound)."""
        cache = self._cache
        return 0 if cache is None else sys.getsizeof(cache[0])

    def append(self, text: str) -> None:
        if not text:
            return
        data = self._data
        data += text.encode()
        self._cache = None
        if len(data) > trim_limit(self.bound):
            del data[: char_start(data, len(data) - self.bound)]
            self.dropped = True

    def view(self) -> tuple[str, bool]:
        """The text readers see and whether it is truncated (decoded once per change)."""
        if self._cache is None:
            data = self._data
            self._cache = newest(bytes(data[-self.bound :]), len(data), self.dropped)
        return self._cache
