"""The JSON Schemas of the OpenAPI document: the msgspec types that validate and encode the wire,
as msgspec writes them (JSON Schema 2020-12, which OpenAPI 3.1 uses), and the few shapes that
have no type of their own (publish bodies, small responses, stream events)."""

from __future__ import annotations

from typing import Any

import msgspec

from progress_relay.config import Settings
from progress_relay.http.jobs import CreateJobIn, HistoryOut, JobListOut
from progress_relay.wire.events import PAYLOAD_TYPES, RESERVED
from progress_relay.wire.ids import EVENT_ID_PATTERN, JOB_ID_PATTERN
from progress_relay.wire.snapshot import STATUSES, Snapshot

Schema = dict[str, Any]

# Structs the relay only encodes: msgspec writes every field, defaults included.
_RESPONSE_STRUCTS = (
    "Snapshot",
    "JobError",
    "LogEntry",
    "HistoryOut",
    "HistoryEvent",
    "JobListOut",
)
# The event-name pattern as JSON Schema (ECMA 262) writes it: `$` there never matches before a
# trailing newline, so it says what `\Z` says in progress_relay.wire.events.
EVENT_NAME_PATTERN = r"^[A-Za-z][A-Za-z0-9_.-]{0,63}$"


def ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def _struct_schemas() -> dict[str, Schema]:
    types = [*PAYLOAD_TYPES.values(), Snapshot, HistoryOut, CreateJobIn, JobListOut]
    _, components = msgspec.json.schema_components(
        types, ref_template="#/components/schemas/{name}"
    )
    for name in _RESPONSE_STRUCTS:
        schema = components[name]
        schema["required"] = list(schema["properties"])
    for name in ("created_at", "updated_at"):
        components["Snapshot"]["properties"][name]["format"] = "date-time"
    components["LogEntry"]["properties"]["at"]["format"] = "date-time"
    components["CreateJobIn"]["properties"]["id"]["anyOf"][0] = ref("JobId")
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


def _wire_schemas(settings: Settings) -> dict[str, Schema]:
    limits = settings.limits
    reserved = sorted(RESERVED)
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
        "EventIn": {
            "type": "object",
            "properties": {
                "event": ref("EventName"),
                "data": {
                    "description": f"any JSON, at most {limits.max_event_bytes} bytes encoded; "
                    "an object of the name's schema for the known names",
                    "default": {},
                },
                "key": {
                    "type": "string",
                    "minLength": 1,
                    "maxLength": 200,
                    "description": "idempotency key: a publish whose key this job has seen in "
                    f"the last {settings.jobs.idempotency_window:g} s is not published again, "
                    "and its original id is returned. Unique within a batch",
                },
            },
            "required": ["event"],
            "additionalProperties": False,
            "allOf": _payload_rules("data"),
        },
        "EventBatchIn": {
            "type": "object",
            "properties": {
                "events": {
                    "type": "array",
                    "items": ref("EventIn"),
                    "minItems": 1,
                    "maxItems": limits.max_batch_events,
                    "description": "published in order, atomically; a terminal event "
                    "(complete, failed, cancelled) only as the last",
                }
            },
            "required": ["events"],
            "additionalProperties": False,
        },
        "JobLinks": {
            "type": "object",
            "properties": {
                "id": ref("JobId"),
                "stream_url": {"type": "string"},
                "status_url": {"type": "string"},
                "subscribe_token": {
                    "type": "string",
                    "description": "a subscriber JWT for this job; only when the relay has "
                    "auth.jwt_secret",
                },
            },
            "required": ["id", "stream_url", "status_url"],
        },
        "Published": {
            "type": "object",
            "properties": {
                "ids": {
                    "type": "array",
                    "items": ref("EventId"),
                    "minItems": 1,
                    "description": "one per event, in order; for a key seen before, the id "
                    "it was published with",
                },
                "cancel_requested": {"type": "boolean"},
            },
            "required": ["ids", "cancel_requested"],
        },
        "CancelAccepted": {
            "type": "object",
            "properties": {"id": ref("JobId"), "cancel_requested": {"const": True}},
            "required": ["id", "cancel_requested"],
        },
        "Health": {
            "type": "object",
            "properties": {
                "status": {"const": "ok"},
                "streams": {"type": "integer", "minimum": 0},
            },
            "required": ["status", "streams"],
        },
        "Ready": {
            "type": "object",
            "properties": {"status": {"const": "ready"}},
            "required": ["status"],
        },
        "Error": {
            "type": "object",
            "properties": {
                "error": {
                    "type": "object",
                    "properties": {
                        "code": {"type": "string"},
                        "message": {"type": "string"},
                    },
                    "required": ["code", "message"],
                }
            },
            "required": ["error"],
        },
        "StreamEvent": _sse_event_schema(wrapped=False),
        "MultiStreamEvent": _sse_event_schema(wrapped=True),
    }


def _sse_event_schema(*, wrapped: bool) -> Schema:
    """One event of a stream as OpenAPI 3.1 describes ``text/event-stream``: its fields, with
    ``data`` a line of JSON. On a multi-job stream the JSON is ``{"job": ID, "data": PAYLOAD}``."""
    rules = [
        *_payload_rules("payload"),
        {
            "if": {"properties": {"event": {"const": "reset"}}, "required": ["event"]},
            "then": {"properties": {"payload": ref("Snapshot")}},
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


def component_schemas(settings: Settings) -> dict[str, Schema]:
    return {**_struct_schemas(), **_wire_schemas(settings)}
