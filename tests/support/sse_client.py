"""A strict reader of SSE frames for tests: it keeps the exact bytes of every frame."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any

import aiohttp


@dataclass
class Frame:
    raw: bytes
    id: str | None = None
    event: str | None = None
    data: str | None = None
    retry: int | None = None
    comments: list[str] = field(default_factory=list)

    @property
    def json(self) -> Any:
        assert self.data is not None, f"frame has no data: {self.raw!r}"
        return json.loads(self.data)


def parse_frame(raw: bytes) -> Frame:
    frame = Frame(raw=raw)
    data_lines = []
    for line in raw.decode().split("\n"):
        if not line:
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "":
            frame.comments.append(value)
        elif name == "id":
            frame.id = value
        elif name == "event":
            frame.event = value
        elif name == "data":
            data_lines.append(value)
        elif name == "retry":
            frame.retry = int(value)
        else:
            raise AssertionError(f"unexpected field {name!r} in frame {raw!r}")
    if data_lines:
        frame.data = "\n".join(data_lines)
    return frame


class SSEReader:
    """Reads frames off an open SSE response; ``next`` skips heartbeats unless asked not to."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self.response = response
        self._buffer = b""
        self.eof = False

    async def next_raw(self, timeout: float = 5.0) -> bytes | None:
        async with asyncio.timeout(timeout):
            while b"\n\n" not in self._buffer:
                chunk = await self.response.content.readany()
                if not chunk:
                    self.eof = True
                    if self._buffer:
                        raise AssertionError(f"stream ended mid-frame: {self._buffer!r}")
                    return None
                self._buffer += chunk
        raw, _, self._buffer = self._buffer.partition(b"\n\n")
        return raw + b"\n\n"

    async def next(self, timeout: float = 5.0, *, heartbeats: bool = False) -> Frame | None:
        while True:
            raw = await self.next_raw(timeout)
            if raw is None:
                return None
            frame = parse_frame(raw)
            if heartbeats or not (frame.comments and frame.data is None and frame.id is None):
                return frame

    async def events(self, count: int, timeout: float = 5.0) -> list[Frame]:
        """The next ``count`` frames that carry an event (skipping `retry:` and heartbeats)."""
        found: list[Frame] = []
        while len(found) < count:
            frame = await self.next(timeout)
            assert frame is not None, f"stream ended after {len(found)} of {count} events"
            if frame.event is not None or frame.data is not None:
                found.append(frame)
        return found

    async def until_end(self, timeout: float = 5.0) -> list[Frame]:
        """Every event frame until the server ends the stream."""
        found: list[Frame] = []
        while (frame := await self.next(timeout)) is not None:
            if frame.event is not None or frame.data is not None:
                found.append(frame)
        return found
