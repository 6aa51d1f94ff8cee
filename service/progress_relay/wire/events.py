"""The events of the wire: what publishers may send, validated once, and the Event every
subscriber shares once it has an id."""

from __future__ import annotations

import re
import sys
from collections.abc import Sequence
from typing import Annotated, Any, Literal

import msgspec
from msgspec import UNSET, Meta, Raw, Struct, UnsetType

from progress_relay.wire import sse
from progress_relay.wire.errors import InvalidEvent, InvalidJson, PayloadTooLarge
from progress_relay.wire.json_depth import check_nesting

# \Z, not $: msgspec matches with re.search, and $ would accept a name ending in "\n", which
# would end the frame early on the wire.
EVENT_NAME_PATTERN = r"^[A-Za-z][A-Za-z0-9_.-]{0,63}\Z"
TERMINAL = frozenset({"complete", "failed", "cancelled"})
# `reset` and `cancel_requested` are the service's own. `error` would be indistinguishable in the
# browser from EventSource's connection-error event, so publishers use `failed` instead.
RESERVED = {
    "reset": "reserved for the service",
    "cancel_requested": "reserved for the service",
    "error": "indistinguishable from EventSource's own `error` event; publish `failed` instead",
}

Percent = Annotated[int, Meta(ge=0, le=100)] | Annotated[float, Meta(ge=0, le=100)]
Count = Annotated[int, Meta(ge=0)]


class ProgressData(Struct):
    percent: Percent | None = None
    stage: str | None = None
    message: str | None = None
    step: Count | None = None
    total_steps: Count | None = None
    # The publisher's own estimate, which the snapshot takes; unset, the relay adds its own.
    eta_seconds: Annotated[float, Meta(ge=0)] | UnsetType | None = UNSET


class LogData(Struct):
    message: str
    level: Literal["debug", "info", "success", "warning", "error"] = "info"


class ContentData(Struct):
    text: str


class CompleteData(Struct):
    result: Any = None
    message: str | None = None
    redirect_url: str | None = None


class FailedData(Struct):
    message: str
    code: str | None = None
    details: Any = None


class CancelledData(Struct):
    message: str | None = None


Payload = ProgressData | LogData | ContentData | CompleteData | FailedData | CancelledData

# The known event names and the schema of their `data`; any other name carries any JSON.
PAYLOAD_TYPES: dict[str, type[Payload]] = {
    "progress": ProgressData,
    "log": LogData,
    "content": ContentData,
    "complete": CompleteData,
    "failed": FailedData,
    "cancelled": CancelledData,
}
_DECODERS: dict[str, msgspec.json.Decoder[Any]] = {
    name: msgspec.json.Decoder(payload_type) for name, payload_type in PAYLOAD_TYPES.items()
}

EventName = Annotated[str, Meta(pattern=EVENT_NAME_PATTERN)]
# Chosen by the publisher, once per event, and sent again unchanged when it retries the publish.
IdempotencyKey = Annotated[str, Meta(min_length=1, max_length=200)]


class EventIn(Struct, forbid_unknown_fields=True):
    event: EventName
    data: Raw = Raw(b"{}")
    key: IdempotencyKey | UnsetType = UNSET


class PublishIn(Struct, forbid_unknown_fields=True):
    """One event (``event`` and ``data``) or a batch (``events``), never both."""

    event: EventName | None = None
    # UNSET, not a default payload: `data` beside `events` must be refused, not dropped.
    data: Raw | UnsetType = UNSET
    key: IdempotencyKey | UnsetType = UNSET
    events: list[EventIn] | None = None


_PUBLISH_DECODER = msgspec.json.Decoder(PublishIn)
_WHITESPACE = re.compile(rb"[ \t\r\n]")


class Draft:
    """A validated event that has no id yet. ``payload`` is typed for the known names; ``key``
    is the publisher's idempotency key, if it sent one."""

    __slots__ = ("data", "key", "name", "payload")

    def __init__(
        self, name: str, data: bytes, payload: Payload | None, key: str | None = None
    ) -> None:
        self.name = name
        self.data = data
        self.payload = payload
        self.key = key

    @property
    def terminal(self) -> bool:
        return self.name in TERMINAL


class Event:
    """A published event with its id, and its SSE frame encoded once for every subscriber.

    The frame is the only copy of the event's bytes that is kept (history holds events for
    as long as they are retained): ``data`` is cut out of it when asked for, and the frame of a
    multi-job stream is made by whoever sends it (a topic, once for all its streams)."""

    __slots__ = ("_data_at", "conflatable", "frame", "id", "job_id", "name", "seq", "terminal")

    def __init__(self, job_id: str, seq: int, event_id: str, name: str, data: bytes) -> None:
        self.job_id = job_id
        self.seq = seq
        self.id = event_id
        self.name = name
        self.terminal = name in TERMINAL
        # Progress is a state: a newer one makes an older one that is still waiting redundant.
        self.conflatable = name == "progress"
        frame = self.frame = sse.event_frame(event_id, name, data)
        self._data_at = len(frame) - len(data) - 2  # the frame ends with data and "\n\n"

    @property
    def data(self) -> bytes:
        return self.frame[self._data_at : -2]

    @property
    def job_frame(self) -> bytes:
        """The frame for multi-job streams."""
        return sse.event_frame(self.id, self.name, sse.job_data(self.job_id, self.data))

    @property
    def size(self) -> int:
        return len(self.frame)


# The event a viewer's cancel request publishes (on either broker), and the flag it sets.
CANCEL_REQUESTED = Draft("cancel_requested", b'{"cancel_requested":true}', None)


def parse_publish(
    body: bytes, *, max_event_bytes: int, max_batch_events: int, max_json_depth: int
) -> list[Draft]:
    """Validate a publish request body; every problem names its JSON path."""
    check_nesting(body, max_json_depth)
    try:
        request = _PUBLISH_DECODER.decode(body)
    except msgspec.ValidationError as exc:
        raise InvalidEvent(_at_path(str(exc), "$")) from None
    except msgspec.DecodeError as exc:
        raise InvalidJson(f"request body is not valid JSON: {exc}") from None
    if request.events is not None:
        if request.event is not None or request.data is not UNSET or request.key is not UNSET:
            raise InvalidEvent("send either `event`, `data` and `key`, or `events`, not both")
        if not request.events:
            raise InvalidEvent("`events` must not be empty - at `$.events`")
        if len(request.events) > max_batch_events:
            raise PayloadTooLarge(
                f"a batch holds at most {max_batch_events} events, got {len(request.events)}"
                " - at `$.events`"
            )
        drafts = [
            make_draft(item.event, item.data, f"$.events[{index}]", max_event_bytes, _key(item.key))
            for index, item in enumerate(request.events)
        ]
        _check_unique_keys(drafts)
        return drafts
    if request.event is None:
        raise InvalidEvent("Object missing required field `event` - at `$`")
    data = Raw(b"{}") if isinstance(request.data, UnsetType) else request.data
    return [make_draft(request.event, data, "$", max_event_bytes, _key(request.key))]


def _key(key: str | UnsetType) -> str | None:
    return None if isinstance(key, UnsetType) else key


def _check_unique_keys(drafts: Sequence[Draft]) -> None:
    seen: set[str] = set()
    for index, draft in enumerate(drafts):
        if draft.key is None:
            continue
        if draft.key in seen:
            raise InvalidEvent(
                f"idempotency key {draft.key!r} is used twice in the batch - at"
                f" `$.events[{index}].key`"
            )
        seen.add(draft.key)


def make_draft(
    name: str, raw: Raw | bytes, path: str, max_event_bytes: int, key: str | None = None
) -> Draft:
    data = bytes(raw)
    if len(data) > max_event_bytes:
        raise PayloadTooLarge(
            f"event data is {len(data)} bytes, the limit is {max_event_bytes} - at `{path}.data`"
        )
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        # msgspec passes Raw bytes through unchecked; a stream must only carry valid UTF-8.
        raise InvalidJson(
            f"event data is not valid UTF-8 ({exc.reason}) - at `{path}.data`"
        ) from None
    if name in RESERVED:
        raise InvalidEvent(f"event name `{name}` is {RESERVED[name]} - at `{path}.event`")
    payload: Payload | None = None
    decoder = _DECODERS.get(name)
    if decoder is not None:
        try:
            payload = decoder.decode(data)
        except msgspec.ValidationError as exc:
            raise InvalidEvent(_at_path(str(exc), f"{path}.data")) from None
    if _WHITESPACE.search(data) is not None:
        # Frames carry data on one `data:` line: drop every insignificant byte of whitespace.
        data = msgspec.json.format(data, indent=-1)
    # Interned: every event of a name shares one string, however long history is.
    return Draft(sys.intern(name), data, payload, key)


def _at_path(message: str, path: str) -> str:
    """msgspec names the path relative to what it decoded, and none at all for its root."""
    if " - at `$" in message:
        return message.replace("`$", f"`{path}", 1)
    return f"{message} - at `{path}`"


def validate_order(drafts: Sequence[Draft], indices: Sequence[int] | None = None) -> None:
    """A terminal event may only be the last one of a batch (of its job's events, in a
    cross-job request, whose places in the request are ``indices``)."""
    for index, draft in enumerate(drafts[:-1]):
        if draft.terminal:
            place = index if indices is None else indices[index]
            raise InvalidEvent(
                f"`{draft.name}` ends the job, so no event may follow it in the batch"
                f" - at `$.events[{place}]`"
            )
