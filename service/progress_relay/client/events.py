"""Events going out (with their idempotency keys) and coming in (from a stream)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

TERMINAL = frozenset({"complete", "failed", "cancelled"})
LOG_LEVELS = ("debug", "info", "success", "warning", "error")


def new_key() -> str:
    return uuid.uuid4().hex


@dataclass(frozen=True)
class Outgoing:
    """An event to publish. Its ``key`` is made once, when the event is made, and sent with
    every attempt: the relay publishes an event at most once per key."""

    event: str
    data: Any = None
    key: str = field(default_factory=new_key)

    @property
    def terminal(self) -> bool:
        return self.event in TERMINAL

    def wire(self) -> dict[str, Any]:
        body: dict[str, Any] = {"event": self.event, "key": self.key}
        if self.data is not None:
            body["data"] = self.data
        return body


@dataclass(frozen=True)
class Event:
    """An event read from a stream: ``id`` (None on a ``reset`` of a job without events),
    ``event`` (its name), ``data`` (decoded JSON; a ``reset``'s is the job's snapshot) and
    ``job`` (the job it belongs to)."""

    id: str | None
    event: str
    data: Any
    job: str

    @property
    def terminal(self) -> bool:
        return self.event in TERMINAL


def _present(**fields: Any) -> dict[str, Any]:
    return {name: value for name, value in fields.items() if value is not None}


def progress(
    percent: float | None = None,
    *,
    stage: str | None = None,
    message: str | None = None,
    step: int | None = None,
    total_steps: int | None = None,
) -> Outgoing:
    if percent is not None:
        percent = round(min(100.0, max(0.0, float(percent))), 2)
        if percent.is_integer():
            percent = int(percent)
    return Outgoing(
        "progress",
        _present(percent=percent, stage=stage, message=message, step=step, total_steps=total_steps),
    )


def log(message: str, level: str = "info") -> Outgoing:
    if level not in LOG_LEVELS:
        raise ValueError(f"log level must be one of {', '.join(LOG_LEVELS)}, got {level!r}")
    return Outgoing("log", {"message": message, "level": level})


def content(text: str) -> Outgoing:
    return Outgoing("content", {"text": text})


def complete(
    result: Any = None, *, message: str | None = None, redirect_url: str | None = None
) -> Outgoing:
    return Outgoing("complete", _present(result=result, message=message, redirect_url=redirect_url))


def failed(message: str, *, code: str | None = None, details: Any = None) -> Outgoing:
    return Outgoing("failed", _present(message=message, code=code, details=details))


def cancelled(message: str | None = None) -> Outgoing:
    return Outgoing("cancelled", _present(message=message))
