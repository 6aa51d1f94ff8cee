"""Reading a job's SSE stream (sans-IO): frames from bytes, and the reconnect rules.

A :class:`StreamSession` remembers the last event id it handed out, so every reconnect asks
for exactly what was missed (``Last-Event-ID``); it ends after the job's terminal event, on
``204`` (nothing will ever come), or after a ``reset`` whose snapshot is finished. Connection
errors and 5xx/429 answers are retried with the client's retry policy, whose budget starts
again with every event received.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from progress_relay.client.errors import RelayUnavailable, error_for
from progress_relay.client.events import TERMINAL, Event
from progress_relay.client.protocol import Wait, job_path, read_error
from progress_relay.client.retry import RETRIED_STATUSES, RetryPolicy, parse_retry_after

FINISHED = frozenset({"completed", "failed", "cancelled"})
# What a stream opened without a last id starts with: the retained history (or a `reset` when it
# no longer reaches the first event), a `reset` with the snapshot, or live events only.
REPLAY_MODES = ("history", "snapshot", "none")


@dataclass(frozen=True)
class Message:
    """One dispatched SSE message: ``id`` is None when the frame had no ``id:`` line."""

    id: str | None
    event: str
    data: str


class SSEDecoder:
    """The text/event-stream format (WHATWG HTML, "event stream interpretation"), incremental."""

    def __init__(self) -> None:
        self._buffer = b""
        self._id: str | None = None
        self._event = ""
        self._data: list[str] = []
        self.retry_ms: int | None = None

    def feed(self, chunk: bytes) -> list[Message]:
        self._buffer += chunk
        messages: list[Message] = []
        while True:
            cut = _line_end(self._buffer)
            if cut is None:
                return messages
            end, after = cut
            line = self._buffer[:end].decode("utf-8", "replace")
            self._buffer = self._buffer[after:]
            message = self._line(line)
            if message is not None:
                messages.append(message)

    def _line(self, line: str) -> Message | None:
        if not line:
            return self._dispatch()
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id" and "\0" not in value:
            self._id = value
        elif name == "retry" and value.isdigit():
            self.retry_ms = int(value)
        return None

    def _dispatch(self) -> Message | None:
        event_id, self._id = self._id, None
        data, self._data = self._data, []
        event, self._event = self._event or "message", ""
        if not data:
            return None
        return Message(event_id, event, "\n".join(data))


def _line_end(buffer: bytes) -> tuple[int, int] | None:
    """(end of the first line, start of the next) for a line ended by CRLF, LF or CR."""
    lf = buffer.find(b"\n")
    cr = buffer.find(b"\r")
    if cr == -1 and lf == -1:
        return None
    if cr == -1 or (lf != -1 and lf < cr):
        return lf, lf + 1
    if cr + 1 == len(buffer):
        return None  # a CR at the end of the chunk may be the first half of a CRLF
    return cr, cr + 2 if buffer[cr + 1 : cr + 2] == b"\n" else cr + 1


class Open:
    """The stream is open: read it."""


class End:
    """Nothing more will come: stop."""


class StreamSession:
    def __init__(
        self,
        job_id: str,
        last_event_id: str | None,
        policy: RetryPolicy,
        now: float,
        replay: str = "history",
        children: bool = False,
    ) -> None:
        if replay not in REPLAY_MODES:
            raise ValueError(f"replay must be one of {', '.join(REPLAY_MODES)}, got {replay!r}")
        self.job_id = job_id
        self.replay = replay
        # A group's stream (`?children=true`): frames are `{"job", "data"}`, unwrapped here.
        self.children = children
        self.last_event_id = last_event_id
        self.done = False
        self._decoder = SSEDecoder()
        self._attempts = policy.start(now)
        self._problem = ""

    @property
    def path(self) -> str:
        # `replay` only counts without a last id; a reconnect resumes from the id whatever it is.
        query = [] if self.replay == "history" else [f"replay={self.replay}"]
        if self.children:
            query.append("children=true")
        return job_path(self.job_id, "/stream") + ("?" + "&".join(query) if query else "")

    def headers(self) -> dict[str, str]:
        result = {"Accept": "text/event-stream", "Cache-Control": "no-cache"}
        if self.last_event_id:
            result["Last-Event-ID"] = self.last_event_id
        return result

    def opened(
        self, status: int, body: bytes, retry_after: str | None, now: float
    ) -> Open | End | Wait:
        """The answer to a (re)connect; ``body`` matters only when it is not 200."""
        if status == 200:
            self._decoder = SSEDecoder()
            return Open()
        if status == 204:
            self.done = True
            return End()
        code, message = read_error(status, body)
        if status in RETRIED_STATUSES:
            self._problem = f"{status} {code}: {message}"
            return self._wait(now, parse_retry_after(retry_after), status, code)
        raise error_for(status, code, message)

    def feed(self, chunk: bytes, now: float) -> list[Event]:
        received: list[Event] = []
        for message in self._decoder.feed(chunk):
            if self.done:
                break
            if message.id is not None:
                self.last_event_id = message.id
            event = Event(message.id, message.event, _decode(message.data), self.job_id)
            if self.children:
                event = _unwrap(event)
            received.append(event)
            self._attempts.reset(now)
            if event.job != self.job_id:
                continue  # a child's end is not the group's
            if event.terminal or (
                event.event == "reset"
                and isinstance(event.data, dict)
                and event.data.get("status") in FINISHED
            ):
                self.done = True
        return received

    def ended(self, now: float) -> Wait | End:
        """The relay closed the stream before the terminal event (it drains, or a proxy cut
        it): reconnect after the relay's ``retry:``."""
        if self.done:
            return End()
        retry_ms = self._decoder.retry_ms
        self._problem = "the stream ended before the job's terminal event"
        if retry_ms is not None:
            return Wait(retry_ms / 1000)
        return self._wait(now, None, 0, "stream_ended")

    def failed(self, problem: str, now: float) -> Wait:
        self._problem = problem
        return self._wait(now, None, 0, "unreachable")

    def _wait(self, now: float, retry_after: float | None, status: int, code: str) -> Wait:
        delay = self._attempts.next_delay(now, retry_after)
        if delay is None:
            raise RelayUnavailable(
                status,
                code,
                f"stream of job {self.job_id}: gave up after {self._attempts.count} attempts in "
                f"{self._attempts.elapsed(now):.1f} s; last: {self._problem}",
            )
        return Wait(delay)


def _unwrap(event: Event) -> Event:
    """A group stream's frame as the event of its job. A group's `reset` becomes the parent's,
    its data the parent's snapshot with the children's snapshots under ``children``."""
    wrapped = event.data
    if not isinstance(wrapped, dict) or "job" not in wrapped:
        return event
    data = wrapped.get("data")
    if event.event == "reset" and isinstance(data, dict) and "children" in wrapped:
        data = {**data, "children": wrapped["children"]}
    return Event(event.id, event.event, data, str(wrapped["job"]))


def _decode(data: str) -> Any:
    try:
        return json.loads(data)
    except ValueError:
        return data


__all__ = ["REPLAY_MODES", "TERMINAL", "End", "Message", "Open", "SSEDecoder", "StreamSession"]
