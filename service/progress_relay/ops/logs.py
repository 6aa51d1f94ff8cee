"""Log lines: human text, or one JSON object per line for log collectors (``log.format``)."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import msgspec

from progress_relay.config import LogSettings

_encode = msgspec.json.Encoder().encode
_TEXT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class JsonFormatter(logging.Formatter):
    """``{"time", "level", "logger", "message"}``, plus ``"exception"`` with its traceback."""

    def format(self, record: logging.LogRecord) -> str:
        line = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return _encode(line).decode()


def configure(settings: LogSettings, level: str | None = None) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if settings.format == "json" else logging.Formatter(_TEXT))
    logging.basicConfig(level=level or settings.level, handlers=[handler], force=True)
