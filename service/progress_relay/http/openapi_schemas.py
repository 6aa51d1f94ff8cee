"""The JSON Schemas of the OpenAPI document: the msgspec Structs of the wire as msgspec writes
them (JSON Schema 2020-12, which OpenAPI 3.1 uses), made exact where a Struct cannot say it all,
and the few shapes that have no Struct (ids, the publish batch, stream events)."""

from __future__ import annotations

from collections.abc import Iterable

import msgspec
import msgspec.inspect as mi
from msgspec import NODEFAULT, Struct

from progress_relay.config import Settings
from progress_relay.http.openapi_operation import Schema, ref
from progress_relay.wire.events import PAYLOAD_TYPES, RESERVED, IdempotencyKey
from progress_relay.wire.ids import EVENT_ID_PATTERN, JOB_ID_PATTERN
from progress_relay.wire.snapshot import STATUSES

# The event-name pattern as JSON Schema (ECMA 262) writes it: `$` there never matches before a
# trailing newline, so it says what `\Z` says in progress_relay.wire.events.
EVENT_NAME_PATTERN = r"^[A-Za-z][A-Za-z0-9_.-]{0,63}$"


def _encoded(types: Iterable[type[Struct]]) -> dict[str, mi.StructType]:
    """The Structs reachable from ``types``, by name."""
    found: dict[str, mi.StructType] = {}
    pending: list[object] = list(mi.multi_type_info(list(types)))
    while pending:
        node = pending.pop()
        if isinstance(node, mi.StructType):
            if node.cls.__name__ in found:
                continue
            found[node.cls.__name__] = node
        if isinstance(node, Struct):
            pending.extend(getattr(node, name) for name in node.__struct_fields__)
        elif isinstance(node, tuple):
            pending.extend(node)
    return found


def _struct_schemas(
    settings: Settings, requests: Iterable[type[Struct]], responses: Iterable[type[Struct]]
) -> dict[str, Schema]:
    responses = list(responses)
    types = [*requests, *responses, *PAYLOAD_TYPES.values()]
    _, components = msgspec.json.schema_components(
        types, ref_template="#/components/schemas/{name}"
    )
    # The relay writes every field of what it sends, but those it may leave UNSET (fields that
    # msgspec sees as neither required nor defaulted).
    for name, info in _encoded(responses).items():
        components[name]["required"] = [
            field.encode_name
            for field in info.fields
            if field.required or (field.default, field.default_factory) != (NODEFAULT, NODEFAULT)
        ]
    for name in ("created_at", "updated_at"):
        components["Snapshot"]["properties"][name]["format"] = "date-time"
    components["LogEntry"]["properties"]["at"]["format"] = "date-time"
    return components


def _payload_rules(data: str) -> list[Schema]:
    """``if event is NAME then <data> follows NAME's schema``, for every known name."""
    return [
        {
            "if": {"properties": {"event": {"const": name}}, "required": ["event"]},
            "then": {"properties": {data: ref(struct.__name__)}},
        }
        for name, struct in PAYLOAD_TYPES.items()
    ]


def _event_in(settings: Settings) -> Schema:
    return {
        "type": "object",
        "properties": {
            "event": ref("EventName"),
            "data": {
                "description": f"any JSON, at most {settings.limits.max_event_bytes} bytes "
                "encoded; an object of the name's schema for the known names",
                "default": {},
            },
            "key": {
                **msgspec.json.schema(IdempotencyKey),
                "description": "idempotency key: a publish whose key this job has seen in "
                f"the last {settings.jobs.idempotency_window:g} s is not published again, "
                "and its original id is returned. Unique within a batch",
            },
        },
        "required": ["event"],
        "additionalProperties": False,
        "allOf": _payload_rules("data"),
    }


def _wire_schemas(settings: Settings) -> dict[str, Schema]:
    reserved = sorted(RESERVED)
    event_in = _event_in(settings)
    return {
        "JobId": {"type": "string", "pattern": JOB_ID_PATTERN},
        "EventId": {
            "type": "string",
            "pattern": EVENT_ID_PATTERN,
            "description": "`<epoch>-<seq>`; opaque to clients",
        },
        "JobStatus": {"enum": list(STATUSES)},
        "EventName": {
            "type": "string",
            "pattern": EVENT_NAME_PATTERN,
            "not": {"enum": reserved},
            "description": f"not one of the reserved names {', '.join(reserved)}",
        },
        # progress_relay.wire.events.EventIn (msgspec cannot write a Raw default).
        "EventIn": event_in,
        # progress_relay.wire.events.PublishIn with `events`: its batch form.
        "EventBatchIn": {
            "type": "object",
            "properties": {
                "events": {
                    "type": "array",
                    "items": ref("EventIn"),
                    "minItems": 1,
                    "maxItems": settings.limits.max_batch_events,
                    "description": "published in order, atomically; a terminal event "
                    "(complete, failed, cancelled) only as the last",
                }
            },
            "required": ["events"],
            "additionalProperties": False,
        },
        # progress_relay.wire.batch.JobEventIn: an EventIn that names its job.
        "JobEventIn": {
            "type": "object",
            "properties": {"job": ref("JobId"), **event_in["properties"]},
            "required": ["job", "event"],
            "additionalProperties": False,
            "allOf": _payload_rules("data"),
        },
        # progress_relay.wire.batch.CrossJobIn (POST /v1/events).
        "CrossJobBatchIn": {
            "type": "object",
            "properties": {
                "events": {
                    "type": "array",
                    "items": ref("JobEventIn"),
                    "minItems": 1,
                    "maxItems": settings.limits.max_batch_events,
                    "description": "each job's events are published in order, atomically; a "
                    "terminal event (complete, failed, cancelled) only as the last of its job's",
                }
            },
            "required": ["events"],
            "additionalProperties": False,
        },
        # What GET /v1/jobs/{id} and a `reset` send: the Snapshot with its streamed text,
        # which only the job list leaves out.
        "FullSnapshot": {
            "allOf": [ref("Snapshot")],
            "required": ["content", "content_truncated"],
            "description": "a job's snapshot with its streamed text (`content`, at most "
            f"{settings.jobs.content_bytes} bytes, the newest)",
        },
        "StreamEvent": _sse_event_schema(wrapped=False),
        "MultiStreamEvent": _sse_event_schema(wrapped=True),
        "GroupStreamEvent": _sse_event_schema(wrapped=True, group=True),
        # GET /v1/jobs/{id}/stream: one job's, or with `children=true` a group's.
        "JobStreamEvent": {"anyOf": [ref("StreamEvent"), ref("GroupStreamEvent")]},
    }


def _sse_event_schema(*, wrapped: bool, group: bool = False) -> Schema:
    """One event of a stream as OpenAPI 3.1 describes ``text/event-stream``: its fields, with
    ``data`` a line of JSON. On a multi-job stream the JSON is ``{"job": ID, "data": PAYLOAD}``;
    on a group's stream (``group``) a `reset` also has ``children``, their snapshots."""
    rules = [
        *_payload_rules("payload"),
        {
            "if": {"properties": {"event": {"const": "reset"}}, "required": ["event"]},
            "then": {"properties": {"payload": ref("FullSnapshot")}},
        },
        {
            "if": {"properties": {"event": {"const": "cancel_requested"}}, "required": ["event"]},
            "then": {"properties": {"payload": {"const": {"cancel_requested": True}}}},
        },
    ]
    # Each rule names the payload as `payload`; put it where the frame's JSON holds it.
    for rule in rules:
        payload = rule["then"]["properties"].pop("payload")
        if wrapped:
            payload = {
                "type": "object",
                "properties": {"job": ref("JobId"), "data": payload},
                "required": ["job", "data"],
            }
            if group and rule["if"]["properties"]["event"] == {"const": "reset"}:
                children = {"type": "array", "items": ref("Snapshot")}
                payload["properties"]["children"] = children
                payload["required"] = ["job", "data", "children"]
        rule["then"]["properties"]["data"] = {
            "contentMediaType": "application/json",
            "contentSchema": payload,
        }
    content: Schema = {}
    if wrapped:
        content = {
            "type": "object",
            "properties": {"job": ref("JobId"), "data": {}},
            "required": ["job", "data"],
        }
    return {
        "type": "object",
        "properties": {
            "id": ref("EventId"),
            "event": {"type": "string", "pattern": EVENT_NAME_PATTERN},
            "data": {
                "type": "string",
                "contentMediaType": "application/json",
                "contentSchema": content,
            },
        },
        "required": ["event", "data"],
        "allOf": rules,
    }


def component_schemas(
    settings: Settings, requests: Iterable[type[Struct]], responses: Iterable[type[Struct]]
) -> dict[str, Schema]:
    """Every schema: of the Structs the operations take and send, and of the wire's shapes."""
    return {**_struct_schemas(settings, requests, responses), **_wire_schemas(settings)}
