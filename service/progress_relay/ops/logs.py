"""Log lines: human text, or one JSON object per line for log collectors (``log.format``)."""

from __future__ import annotations

import logging
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any, Protocol

import msgspec

from progress_relay.config import LogSettings

_encode = msgspec.json.Encoder().encode
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

request_id: ContextVar[str | None] = ContextVar("request_id", default=None)
"""The id of the request being handled (set by http/observe.py); JSON lines carry it."""


class Fields(Protocol):
    """A log message with fields of its own (the access line): ``str()`` is its text line, and
    a JSON line puts ``fields()`` at its top level. Only JSON mode pays for the fields."""

    def fields(self) -> dict[str, Any]: ...


class JsonFormatter(logging.Formatter):
    """``{"time", "level", "logger", "message"}``, plus the message's own fields (an access
    line's: docs/operations.md), ``"request_id"`` on lines written while handling a request, and
    ``"exception"`` with its traceback."""

    def format(self, record: logging.LogRecord) -> str:
        line = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = getattr(record.msg, "fields", None)  # a Fields message; a str has none
        if fields is not None:
            line.update(fields())
        elif (current := request_id.get()) is not None:
            line["request_id"] = current
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return _encode(line).decode()


class MalformedRequests(logging.Filter):
    """On aiohttp's server logger: a request aiohttp cannot parse is logged as an error with a
    traceback whose message quotes the offending bytes, an Authorization header's token
    included, and anyone can send thousands a second. Its access line (status 400) stays; this
    line goes, and at DEBUG it is kept without the bytes: the client and the kind of error."""

    MESSAGE = "Error handling request from %s"

    def filter(self, record: logging.LogRecord) -> bool:
        if record.msg != self.MESSAGE:
            return True
        if not logging.getLogger(record.name).isEnabledFor(logging.DEBUG):
            return False
        error = record.exc_info[1] if record.exc_info else None
        record.msg = "a request from %s could not be parsed (%s)"
        client = record.args[0] if isinstance(record.args, tuple) and record.args else None
        record.args = (client, type(error).__name__)
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        record.exc_info = record.exc_text = None
        return True


def configure(settings: LogSettings, level: str | None = None) -> None:
    handler = logging.StreamHandler()
    json = settings.format == "json"
    handler.setFormatter(JsonFormatter() if json else logging.Formatter(TEXT_FORMAT))
    logging.basicConfig(level=level or settings.level, handlers=[handler], force=True)
    server = logging.getLogger("aiohttp.server")
    if not any(isinstance(f, MalformedRequests) for f in server.filters):
        server.addFilter(MalformedRequests())
