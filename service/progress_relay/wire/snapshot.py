"""The snapshot of a job: its state as the events so far have left it."""

from __future__ import annotations

import time
from collections import deque
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, get_args

import msgspec
from msgspec import UNSET, Meta, Struct, UnsetType

from progress_relay.wire.content import ContentTail
from progress_relay.wire.events import (
    CancelledData,
    CompleteData,
    ContentData,
    Draft,
    FailedData,
    LogData,
    ProgressData,
)

Status = Literal["pending", "running", "completed", "failed", "cancelled"]
STATUSES: tuple[str, ...] = get_args(Status)
FINISHED: frozenset[str] = frozenset({"completed", "failed", "cancelled"})


class LogEntry(Struct):
    id: str
    at: datetime
    level: str
    message: str


class JobError(Struct):
    message: str
    code: str | None = None
    details: Any = None


_Content = Annotated[
    str,
    Meta(
        description="the job's `content` events' `text` joined in publish order: the newest "
        '`jobs.content_bytes` bytes of it, from a character\'s start; "" when none. Not in the '
        "job list (GET /v1/jobs)"
    ),
]
_ContentTruncated = Annotated[
    bool,
    Meta(description="true when the beginning of the text was dropped; not in the job list"),
]


class GroupCounts(Struct):
    pending: int = 0
    running: int = 0
    completed: int = 0
    failed: int = 0
    cancelled: int = 0


class Group(Struct):
    """A parent's aggregate of its children (core/groups.py makes it)."""

    children: list[str] = msgspec.field(default_factory=list)  # in creation order
    counts: GroupCounts = msgspec.field(default_factory=GroupCounts)
    total: int = 0
    failed: list[str] = msgspec.field(default_factory=list)  # ids of failed children


class Snapshot(Struct):
    id: str
    created_at: datetime
    updated_at: datetime
    status: Status = "pending"
    percent: int | float | None = None
    stage: str | None = None
    message: str | None = None
    step: int | None = None
    total_steps: int | None = None
    eta_seconds: float | None = None
    result: Any = None
    redirect_url: str | None = None
    error: JobError | None = None
    cancel_requested: bool = False
    last_event_id: str | None = None
    subscribers: int = 0
    logs: list[LogEntry] = msgspec.field(default_factory=list)
    meta: Any = None
    # The job's streamed text (wire/content.py). Set by the brokers' reads of one job (its
    # snapshot, a stream's `reset`); UNSET, and so left out, in the job list and in what a
    # broker keeps.
    content: _Content | UnsetType = UNSET
    content_truncated: _ContentTruncated | UnsetType = UNSET
    # Groups (core/groups.py): a child's parent and weight, a parent's aggregate. UNSET on jobs
    # that are neither.
    parent: str | None = None
    weight: float | UnsetType = UNSET
    group: Group | UnsetType = UNSET

    @property
    def finished(self) -> bool:
        return self.status in FINISHED


def new_snapshot(job_id: str, meta: Any = None) -> Snapshot:
    now = datetime.now(UTC)
    return Snapshot(id=job_id, created_at=now, updated_at=now, meta=meta)


def with_content(snapshot: Snapshot, text: str, truncated: bool) -> Snapshot:
    """A copy of ``snapshot`` as a reader of the one job sees it: with its streamed text."""
    return msgspec.structs.replace(snapshot, content=text, content_truncated=truncated)


def without_content(snapshot: Snapshot) -> Snapshot:
    """A copy of ``snapshot`` as the job list shows it: without the streamed text, which can be
    ``jobs.content_bytes`` per job."""
    return msgspec.structs.replace(snapshot, content=UNSET, content_truncated=UNSET)


class EtaEstimator:
    """Seconds left, from the rate of the last few progress points; None until it can tell."""

    MIN_POINTS = 3

    __slots__ = ("_points",)

    def __init__(self) -> None:
        self._points: deque[tuple[float, float]] = deque(maxlen=10)

    def add(self, percent: float, at: float | None = None) -> float | None:
        now = time.monotonic() if at is None else at
        points = self._points
        if points and percent < points[-1][1]:
            points.clear()  # progress went back (a new phase): the old rate says nothing
        points.append((now, percent))
        if percent >= 100:
            return 0.0
        if len(points) < self.MIN_POINTS:
            return None
        (t0, p0), (t1, p1) = points[0], points[-1]
        if p1 <= p0 or t1 <= t0:
            return None
        return round((100 - p1) * (t1 - t0) / (p1 - p0), 1)


def changes(draft: Draft) -> dict[str, Any]:
    """The snapshot fields one event sets, other than its position, time, logs and the ETA of a
    progress event.

    Shared by every broker: the memory broker sets them on its Snapshot, the Redis broker
    writes them into the job's hash.
    """
    payload = draft.payload
    if isinstance(payload, ProgressData):
        found: dict[str, Any] = {}
        for name in ("percent", "stage", "message", "step", "total_steps"):
            value = getattr(payload, name)
            if value is not None:
                found[name] = value
        return found
    if isinstance(payload, CompleteData):
        found = {
            "status": "completed",
            "percent": 100,
            "eta_seconds": None,
            "result": payload.result,
            "redirect_url": payload.redirect_url,
        }
        if payload.message is not None:
            found["message"] = payload.message
        return found
    if isinstance(payload, FailedData):
        error = JobError(payload.message, payload.code, payload.details)
        return {"status": "failed", "eta_seconds": None, "error": error, "message": payload.message}
    if isinstance(payload, CancelledData):
        found = {"status": "cancelled", "eta_seconds": None}
        if payload.message is not None:
            found["message"] = payload.message
        return found
    if draft.name == "cancel_requested":
        return {"cancel_requested": True}
    return {}


def progress_percent(draft: Draft) -> float | None:
    """The percent an event reports, the input of the ETA estimate."""
    payload = draft.payload
    if isinstance(payload, ProgressData) and payload.percent is not None:
        return float(payload.percent)
    return None


def own_eta(draft: Draft) -> float | UnsetType | None:
    """The ``eta_seconds`` a publisher sent with a progress event (UNSET when it sent none)."""
    payload = draft.payload
    return payload.eta_seconds if isinstance(payload, ProgressData) else UNSET


def with_eta(draft: Draft, eta_text: bytes | None) -> bytes:
    """The data of an event as the relay stores and delivers it: a progress event carries the
    snapshot's ``eta_seconds`` after it (``eta_text``, a JSON number; None: no estimate), so
    that a live reader shows the number a snapshot reader sees. A publisher's own estimate is
    left as it sent it. Both brokers build the data with this rule (Redis in lua/publish.lua,
    byte for byte the same)."""
    data = draft.data
    if eta_text is None or draft.name != "progress" or own_eta(draft) is not UNSET:
        return data
    # A valid progress payload is a JSON object, made compact by make_draft: `{...}`.
    return data[:-1] + (b"," if len(data) > 2 else b"") + b'"eta_seconds":' + eta_text + b"}"


def apply(
    snapshot: Snapshot,
    draft: Draft,
    event_id: str,
    eta: EtaEstimator,
    tail: int,
    content: ContentTail,
) -> None:
    """Update ``snapshot`` (and the job's ``content``) for one event, in publish order."""
    now = datetime.now(UTC)
    snapshot.updated_at = now
    snapshot.last_event_id = event_id
    if snapshot.status == "pending" and draft.name != "cancel_requested":
        snapshot.status = "running"
    for name, value in changes(draft).items():
        setattr(snapshot, name, value)
    percent = progress_percent(draft)
    if percent is not None:
        snapshot.eta_seconds = eta.add(percent)
    own = own_eta(draft)
    if not isinstance(own, UnsetType):
        snapshot.eta_seconds = own
    payload = draft.payload
    if isinstance(payload, LogData):
        snapshot.logs.append(LogEntry(event_id, now, payload.level, payload.message))
        if len(snapshot.logs) > tail:
            del snapshot.logs[:-tail]
    elif isinstance(payload, ContentData):
        content.append(payload.text)
