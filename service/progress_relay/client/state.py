"""``JobState``: a job as its events have left it, folded by the relay's own rule for the
snapshot (progress_relay/wire/snapshot.py ``apply``; the text by wire/content.py), so that the
state built from live events equals the one loaded from ``GET /v1/jobs/{id}`` or a ``reset``.

Sans-IO: it reads :class:`~progress_relay.client.events.Event` s and snapshot dicts, nothing else.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from progress_relay.client.events import Event

FINISHED = frozenset({"completed", "failed", "cancelled"})
# The relay's defaults of jobs.log_tail and jobs.content_bytes.
LOG_TAIL = 20
CONTENT_BYTES = 1024 * 1024
_PROGRESS_FIELDS = ("percent", "stage", "message", "step", "total_steps")


@dataclass(frozen=True)
class LogLine:
    """One `log` event: its id, level and message. (A snapshot's entries also say when the
    relay logged them, ``at``; a live `log` event does not, so the state keeps neither.)"""

    id: str | None
    level: str
    message: str


class _Text:
    """The streamed text by the relay's rule: the newest ``bound`` bytes of the joined `text`s,
    from a character's start. Trimming is amortised as on the relay (past a quarter more)."""

    __slots__ = ("_cache", "_data", "bound", "dropped")

    def __init__(self, bound: int, text: str = "", dropped: bool = False) -> None:
        self.bound = bound
        self._data = bytearray(text.encode())
        self.dropped = dropped
        self._cache: tuple[str, bool] | None = None

    def append(self, text: str) -> None:
        if not text:
            return
        data = self._data
        data += text.encode()
        self._cache = None
        if len(data) > self.bound + self.bound // 4:
            del data[: _char_start(data, len(data) - self.bound)]
            self.dropped = True

    def view(self) -> tuple[str, bool]:
        if self._cache is None:
            data = self._data
            start = _char_start(data, len(data) - self.bound) if len(data) > self.bound else 0
            text = data[start:].decode("utf-8", "replace")
            self._cache = (text, self.dropped or start > 0)
        return self._cache


def _char_start(data: bytearray, start: int) -> int:
    while start < len(data) and data[start] & 0xC0 == 0x80:  # a UTF-8 continuation byte
        start += 1
    return start


class JobState:
    """The state of one job: ``status``, ``percent``, ``stage``, ``message``, ``step``,
    ``total_steps``, ``eta_seconds``, ``result``, ``redirect_url``, ``error`` (``{"message",
    "code", "details"}`` or None), ``cancel_requested``, ``last_event_id``, ``logs`` (the last
    ``log_tail`` :class:`LogLine` s), ``content`` (the streamed text: the newest
    ``content_bytes`` bytes) and ``content_truncated``. A parent's state has ``group`` (its
    snapshot's: ``children``, ``counts``, ``total``, ``failed``; None for other jobs) and
    ``children``: each child's JobState, fed by the events of a group's stream
    (``subscribe(..., children=True)``) and by its `reset`.

    ``apply(event)`` folds each event of :meth:`Relay.subscribe <progress_relay.client.Relay.
    subscribe>` in; a ``reset`` replaces the whole state with its snapshot, text included.
    Two states are equal when these fields are. A state from live events equals the snapshot's
    when ``log_tail`` and ``content_bytes`` are at most the relay's ``jobs.log_tail`` and
    ``jobs.content_bytes`` (the defaults are the relay's defaults).
    """

    __slots__ = (
        "_text",
        "cancel_requested",
        "children",
        "content_bytes",
        "error",
        "eta_seconds",
        "group",
        "job",
        "last_event_id",
        "log_tail",
        "logs",
        "message",
        "percent",
        "redirect_url",
        "result",
        "stage",
        "status",
        "step",
        "total_steps",
    )

    def __init__(
        self, job: str, *, log_tail: int = LOG_TAIL, content_bytes: int = CONTENT_BYTES
    ) -> None:
        if log_tail < 1 or content_bytes < 1:
            raise ValueError(
                f"log_tail and content_bytes must be at least 1, got {log_tail} and {content_bytes}"
            )
        self.job = job
        self.log_tail = log_tail
        self.content_bytes = content_bytes
        self.status = "pending"
        self.percent: int | float | None = None
        self.stage: str | None = None
        self.message: str | None = None
        self.step: int | None = None
        self.total_steps: int | None = None
        self.eta_seconds: int | float | None = None
        self.result: Any = None
        self.redirect_url: str | None = None
        self.error: dict[str, Any] | None = None
        self.cancel_requested = False
        self.last_event_id: str | None = None
        self.logs: list[LogLine] = []
        self._text = _Text(content_bytes)
        self.group: dict[str, Any] | None = None
        self.children: dict[str, JobState] = {}

    @classmethod
    def from_snapshot(
        cls,
        snapshot: Mapping[str, Any],
        *,
        log_tail: int = LOG_TAIL,
        content_bytes: int = CONTENT_BYTES,
    ) -> JobState:
        """The state a snapshot (``Relay.snapshot``, or a ``reset``'s data) describes. An entry
        of the job list has no text (the listing leaves it out): its ``content`` is ""."""
        state = cls(str(snapshot["id"]), log_tail=log_tail, content_bytes=content_bytes)
        state.load(snapshot)
        return state

    # -- reading ------------------------------------------------------------------------

    @property
    def content(self) -> str:
        return self._text.view()[0]

    @property
    def content_truncated(self) -> bool:
        return self._text.view()[1]

    @property
    def finished(self) -> bool:
        return self.status in FINISHED

    def as_dict(self) -> dict[str, Any]:
        """The state's fields (what equality compares), ``logs`` as dicts."""
        return {
            "job": self.job,
            "status": self.status,
            "percent": self.percent,
            "stage": self.stage,
            "message": self.message,
            "step": self.step,
            "total_steps": self.total_steps,
            "eta_seconds": self.eta_seconds,
            "result": self.result,
            "redirect_url": self.redirect_url,
            "error": self.error,
            "cancel_requested": self.cancel_requested,
            "last_event_id": self.last_event_id,
            "logs": [vars(line) for line in self.logs],
            "content": self.content,
            "content_truncated": self.content_truncated,
            "group": self.group,
        }

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, JobState):
            return NotImplemented
        return self.as_dict() == other.as_dict()

    def __repr__(self) -> str:
        fields = self.as_dict()
        content = fields.pop("content")
        shown = content if len(content) <= 40 else content[:37] + "..."
        return f"JobState({fields}, content={shown!r})"

    # -- changing -----------------------------------------------------------------------

    def load(self, snapshot: Mapping[str, Any]) -> None:
        """Replace the whole state with a snapshot's (what a ``reset`` does)."""
        self.status = str(snapshot.get("status", "pending"))
        self.percent = snapshot.get("percent")
        self.stage = snapshot.get("stage")
        self.message = snapshot.get("message")
        self.step = snapshot.get("step")
        self.total_steps = snapshot.get("total_steps")
        self.eta_seconds = snapshot.get("eta_seconds")
        self.result = snapshot.get("result")
        self.redirect_url = snapshot.get("redirect_url")
        error = snapshot.get("error")
        self.error = None if error is None else _error(error)
        self.cancel_requested = bool(snapshot.get("cancel_requested", False))
        self.last_event_id = snapshot.get("last_event_id")
        entries = snapshot.get("logs") or []
        self.logs = [
            LogLine(entry.get("id"), entry.get("level", "info"), entry.get("message", ""))
            for entry in entries[-self.log_tail :]
        ]
        self._text = _Text(
            self.content_bytes,
            str(snapshot.get("content", "")),
            bool(snapshot.get("content_truncated", False)),
        )
        group = snapshot.get("group")
        self.group = dict(group) if isinstance(group, Mapping) else None
        if self.group is not None:
            ids = [str(child) for child in self.group.get("children", ())]
            self.children = {child: self.children.get(child) or self._child(child) for child in ids}
        for child in snapshot.get("children") or ():  # a group stream's reset
            if isinstance(child, Mapping) and "id" in child:
                self._child(str(child["id"])).load(child)

    def _child(self, job: str) -> JobState:
        state = self.children.get(job)
        if state is None:
            state = JobState(job, log_tail=self.log_tail, content_bytes=self.content_bytes)
            self.children[job] = state
        return state

    def apply(self, event: Event) -> None:
        """Fold one event of this job (or, on a group's stream, of one of its children) in, as
        the relay does into the snapshot."""
        if event.job != self.job:
            if self.group is None and not self.children:
                raise ValueError(f"an event of job {event.job} applied to the state of {self.job}")
            # A parent's: a child created after the group's stream opened joins with its first.
            self._child(event.job).apply(event)
            return
        name = event.event
        data = event.data
        if name == "reset":
            self.load(data if isinstance(data, Mapping) else {})
            return
        if event.id is not None:
            self.last_event_id = event.id
        if name == "cancel_requested":
            self.cancel_requested = True  # a pending job stays pending
            return
        if self.status == "pending":
            self.status = "running"
        fields: Mapping[str, Any] = data if isinstance(data, Mapping) else {}
        if name == "progress":
            for field in _PROGRESS_FIELDS:
                if fields.get(field) is not None:
                    setattr(self, field, fields[field])
            # The relay puts the snapshot's ETA into every progress event it delivers; absent,
            # the snapshot has none.
            self.eta_seconds = fields.get("eta_seconds")
            group = fields.get("group")
            if isinstance(group, Mapping):  # a parent's progress: the group but its ids
                self.group = {**(self.group or {}), **group}
        elif name == "log":
            self.logs.append(
                LogLine(event.id, fields.get("level", "info"), str(fields.get("message", "")))
            )
            del self.logs[: -self.log_tail]
        elif name == "content":
            self._text.append(str(fields.get("text", "")))
        elif name == "complete":
            self.status, self.percent, self.eta_seconds = "completed", 100, None
            self.result = fields.get("result")
            self.redirect_url = fields.get("redirect_url")
            if fields.get("message") is not None:
                self.message = fields["message"]
        elif name == "failed":
            self.status, self.eta_seconds = "failed", None
            self.error = _error(fields)
            self.message = self.error["message"]
        elif name == "cancelled":
            self.status, self.eta_seconds = "cancelled", None
            if fields.get("message") is not None:
                self.message = fields["message"]


def _error(fields: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "message": fields.get("message"),
        "code": fields.get("code"),
        "details": fields.get("details"),
    }
