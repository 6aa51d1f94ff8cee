"""Log records captured in this process, formatted as the relay formats them (text or JSON)."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from progress_relay.ops.logs import TEXT_FORMAT, JsonFormatter


class CapturedLines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []
        self._text = logging.Formatter(TEXT_FORMAT)
        self._json = JsonFormatter()
        self._more = asyncio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        # Formatted at once, as a StreamHandler does: the record must not need the request later.
        record.text_line = self._text.format(record)
        record.json_line = self._json.format(record)
        self.records.append(record)
        self._more.set()

    async def wait_for(self, count: int) -> None:
        """Until ``count`` records are in: aiohttp writes the access line after the response."""
        async with asyncio.timeout(5):
            while len(self.records) < count:
                self._more.clear()
                await self._more.wait()

    def text(self) -> list[str]:
        return [record.text_line for record in self.records]

    def json(self) -> list[dict[str, Any]]:
        lines = [json.loads(record.json_line) for record in self.records]
        for record in self.records:
            assert "\n" not in record.json_line, record.json_line  # one object, one line
        return lines


@contextmanager
def captured(name: str = "aiohttp.access") -> Iterator[CapturedLines]:
    """Every record of logger ``name`` at INFO and above while the block runs."""
    logger = logging.getLogger(name)
    handler = CapturedLines()
    level = logger.level
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
