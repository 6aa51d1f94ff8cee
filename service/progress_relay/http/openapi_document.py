"""The OpenAPI 3.1 document of the v1 API: a hand-written table of paths, parameters and
responses over the schemas of progress_relay.http.openapi_schemas.

``docs/api.md`` is the contract in prose; this is the same contract for machines, and
``tests/test_openapi.py`` keeps its paths equal to the routes the app registers. Limits and
credentials come from the relay's settings, so the document describes the relay that serves it.
"""

from __future__ import annotations

from typing import Any

from progress_relay import __version__
from progress_relay.config import Settings
from progress_relay.http.openapi_schemas import Schema, component_schemas, ref


def _json(schema: Schema) -> dict[str, Schema]:
    return {"application/json": {"schema": schema}}


_RETRY_AFTER = {
    "description": "seconds to wait before trying again",
    "schema": {"type": "string", "pattern": "^[0-9]+$"},
}

# What every error code means; each response lists the codes it can carry.
ERROR_CODES: dict[str, str] = {
    "invalid_json": "the body is not valid JSON (or event data is not valid UTF-8)",
    "invalid_job_id": "a job id breaks the rules of JobId",
    "invalid_parameter": "a query parameter is out of range or malformed",
    "invalid_event": "the publish body does not match its schema",
    "invalid_body": "the create body has a wrong field type or an unknown field",
    "payload_too_large": "event data, meta, a batch or the request body is over its limit",
    "unauthorized": "a credential is missing, invalid or expired",
    "forbidden": "the subscriber token does not grant this job",
    "job_not_found": "the job does not exist (never created, deleted or evicted)",
    "job_finished": "the job already had its terminal event",
    "rate_limited": "too many requests for this job or publisher; see Retry-After",
    "too_many_jobs": "a new job while the relay holds its maximum; see Retry-After",
    "too_many_streams": "the relay holds its maximum of open streams; see Retry-After",
    "broker_unavailable": "Redis did not answer in time; nothing was changed, retry",
    "shutting_down": "the relay is draining; connect again (to another instance); see Retry-After",
    "not_found": "no such endpoint",
    "method_not_allowed": "the path exists, the method does not; see Allow",
}


def error(status_text: str, *codes: str, headers: dict[str, Any] | None = None) -> Schema:
    """A documented error response whose ``code`` is one of ``codes``."""
    lines = "\n".join(f"- `{code}`: {ERROR_CODES[code]}" for code in codes)
    schema = {
        "allOf": [
            ref("Error"),
            {"properties": {"error": {"properties": {"code": {"enum": list(codes)}}}}},
        ]
    }
    response: Schema = {"description": f"{status_text}\n\n{lines}", "content": _json(schema)}
    if headers:
        response["headers"] = headers
    return response


def _retry_after(required: bool) -> dict[str, Any]:
    return {"Retry-After": {**_RETRY_AFTER, "required": required}}


# `limit` of the paged reads (history, job list): http.params.int_param's bounds there.
_PAGE_LIMIT: Schema = {
    "name": "limit",
    "in": "query",
    "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100},
}
_BAD_JOB_ID = error("Bad request", "invalid_job_id")
_UNAUTHORIZED = error(
    "No valid credential",
    "unauthorized",
    headers={
        "WWW-Authenticate": {
            "description": "when the credential is missing, or a publisher token is wrong",
            "schema": {"type": "string"},
        }
    },
)
_FORBIDDEN = error("The token does not grant the job", "forbidden")
_NOT_FOUND = error("No such job", "job_not_found")
_FINISHED = error("The job has finished", "job_finished")
_UNAVAILABLE = error("The broker is unavailable", "broker_unavailable")
_FULL = error(
    "The relay is full, or the broker is unavailable (`too_many_jobs` comes with Retry-After)",
    "too_many_jobs",
    "broker_unavailable",
    headers=_retry_after(False),
)
_STREAMS_FULL = error(
    "Too many open streams or shutting down (with Retry-After), or the broker is unavailable",
    "too_many_streams",
    "shutting_down",
    "broker_unavailable",
    headers=_retry_after(False),
)


def _parameters() -> dict[str, Schema]:
    return {
        "JobIdPath": {
            "name": "job_id",
            "in": "path",
            "required": True,
            "schema": ref("JobId"),
        },
        "LastEventIdHeader": {
            "name": "Last-Event-ID",
            "in": "header",
            "description": "resume after this id; sent by EventSource when it reconnects. "
            "Wins over the query parameter",
            "schema": {"type": "string"},
        },
        "LastEventIdQuery": {
            "name": "last_event_id",
            "in": "query",
            "description": "resume after this id, for a new EventSource that cannot set headers",
            "schema": {"type": "string"},
        },
        "Replay": {
            "name": "replay",
            "in": "query",
            "description": "what to send when there is no last id",
            "schema": {"enum": ["history", "snapshot", "none"], "default": "history"},
        },
    }


_STREAM_PARAMETERS = [
    {"$ref": "#/components/parameters/LastEventIdHeader"},
    {"$ref": "#/components/parameters/LastEventIdQuery"},
    {"$ref": "#/components/parameters/Replay"},
]


def _stream_responses(event_schema: str, bad_request: Schema, **more: Schema) -> dict[str, Schema]:
    return {
        **more,
        "200": {
            "description": "The stream: a `retry` frame, then events and `: ping` comments. "
            "It ends after the terminal event, deletion, eviction or shutdown.",
            "content": {"text/event-stream": {"schema": ref(event_schema)}},
        },
        "204": {"description": "Nothing will ever come: EventSource stops reconnecting"},
        "400": bad_request,
        "401": _UNAUTHORIZED,
        "403": _FORBIDDEN,
        "503": _STREAMS_FULL,
    }


def _paths(
    settings: Settings, publisher: list[Schema], subscriber: list[Schema]
) -> dict[str, Schema]:
    job_id = [{"$ref": "#/components/parameters/JobIdPath"}]
    max_jobs = settings.limits.max_stream_jobs
    return {
        "/v1/jobs": {
            "post": {
                "operationId": "createJob",
                "summary": "Create a job (optional: publishing creates it too)",
                "security": publisher,
                "requestBody": {"required": False, "content": _json(ref("CreateJobIn"))},
                "responses": {
                    "201": {"description": "Created", "content": _json(ref("JobLinks"))},
                    "200": {
                        "description": "The job already exists; ttl and meta are unchanged",
                        "content": _json(ref("JobLinks")),
                    },
                    "400": error("Bad request", "invalid_json", "invalid_job_id"),
                    "401": _UNAUTHORIZED,
                    "413": error("`meta` or the body is too large", "payload_too_large"),
                    "422": error("Wrong field type or unknown field", "invalid_body"),
                    "503": _FULL,
                },
            },
            "get": {
                "operationId": "listJobs",
                "summary": "Jobs with their snapshots, newest first, a page at a time",
                "description": "A page may hold fewer than `limit` jobs (a status filter that "
                "few jobs match); follow `next_cursor` until it is null.",
                "security": publisher,
                "parameters": [
                    {
                        "name": "status",
                        "in": "query",
                        "description": "only jobs of these statuses: repeated or comma-separated",
                        "style": "form",
                        "explode": True,
                        "schema": {"type": "array", "items": ref("JobStatus")},
                    },
                    _PAGE_LIMIT,
                    {
                        "name": "cursor",
                        "in": "query",
                        "description": "`next_cursor` of the previous page",
                        "schema": {"type": "string", "pattern": "^[0-9]+$"},
                    },
                ],
                "responses": {
                    "200": {"description": "A page of jobs", "content": _json(ref("JobListOut"))},
                    "400": error("Bad request", "invalid_parameter"),
                    "401": _UNAUTHORIZED,
                    "503": _UNAVAILABLE,
                },
            },
        },
        "/v1/jobs/{job_id}/events": {
            "parameters": job_id,
            "post": {
                "operationId": "publish",
                "summary": "Publish one event or a batch; creates the job if unknown",
                "security": publisher,
                "requestBody": {
                    "required": True,
                    "content": _json({"oneOf": [ref("EventIn"), ref("EventBatchIn")]}),
                },
                "responses": {
                    "200": {"description": "Published", "content": _json(ref("Published"))},
                    "400": error("Bad request", "invalid_json", "invalid_job_id"),
                    "401": _UNAUTHORIZED,
                    "409": _FINISHED,
                    "413": error("Event data, batch or body too large", "payload_too_large"),
                    "422": error("The body does not match the schema", "invalid_event"),
                    "429": error("Slow down", "rate_limited", headers=_retry_after(True)),
                    "503": _FULL,
                },
            },
            "get": {
                "operationId": "getHistory",
                "summary": "The retained history as JSON: the polling fallback of the stream",
                "security": subscriber,
                "parameters": [
                    {
                        "name": "after",
                        "in": "query",
                        "description": "only events after this event id; empty is the same as none",
                        "schema": {"anyOf": [ref("EventId"), {"const": ""}]},
                    },
                    _PAGE_LIMIT,
                ],
                "responses": {
                    "200": {"description": "Events", "content": _json(ref("HistoryOut"))},
                    "400": error("Bad request", "invalid_job_id", "invalid_parameter"),
                    "401": _UNAUTHORIZED,
                    "403": _FORBIDDEN,
                    "404": _NOT_FOUND,
                    "503": _UNAVAILABLE,
                },
            },
        },
        "/v1/jobs/{job_id}": {
            "parameters": job_id,
            "get": {
                "operationId": "getSnapshot",
                "summary": "The job's snapshot",
                "security": subscriber,
                "responses": {
                    "200": {"description": "The snapshot", "content": _json(ref("Snapshot"))},
                    "400": _BAD_JOB_ID,
                    "401": _UNAUTHORIZED,
                    "403": _FORBIDDEN,
                    "404": _NOT_FOUND,
                    "503": _UNAVAILABLE,
                },
            },
            "delete": {
                "operationId": "deleteJob",
                "summary": "Drop the job, its snapshot and history; its streams end",
                "security": publisher,
                "responses": {
                    "204": {"description": "Deleted"},
                    "400": _BAD_JOB_ID,
                    "401": _UNAUTHORIZED,
                    "404": _NOT_FOUND,
                    "503": _UNAVAILABLE,
                },
            },
        },
        "/v1/jobs/{job_id}/stream": {
            "parameters": job_id,
            "get": {
                "operationId": "streamJob",
                "summary": "The SSE stream of one job",
                "security": subscriber,
                "parameters": _STREAM_PARAMETERS,
                "responses": _stream_responses(
                    "StreamEvent", error("Bad request", "invalid_job_id", "invalid_parameter")
                ),
            },
        },
        "/v1/stream": {
            "get": {
                "operationId": "streamJobs",
                "summary": "One SSE stream for several jobs",
                "security": subscriber,
                "parameters": [
                    {
                        "name": "job",
                        "in": "query",
                        "required": True,
                        "description": f"repeated; duplicates count once; at most {max_jobs}",
                        "style": "form",
                        "explode": True,
                        "schema": {"type": "array", "items": ref("JobId"), "minItems": 1},
                    },
                    *_STREAM_PARAMETERS,
                ],
                "responses": _stream_responses(
                    "MultiStreamEvent",
                    error("Bad request", "invalid_job_id", "invalid_parameter"),
                    **{"413": error(f"More than {max_jobs} jobs", "payload_too_large")},
                ),
            }
        },
        "/v1/jobs/{job_id}/cancel": {
            "parameters": job_id,
            "post": {
                "operationId": "cancelJob",
                "summary": "Ask the worker to cancel the job",
                "security": subscriber,
                "responses": {
                    "202": {
                        "description": "Requested (also when already requested)",
                        "content": _json(ref("CancelAccepted")),
                    },
                    "400": _BAD_JOB_ID,
                    "401": _UNAUTHORIZED,
                    "403": _FORBIDDEN,
                    "404": _NOT_FOUND,
                    "409": _FINISHED,
                    "503": _UNAVAILABLE,
                },
            },
        },
        "/healthz": {
            "get": {
                "operationId": "healthz",
                "summary": "The process is up and its event loop answers",
                "security": [],
                "responses": {"200": {"description": "Up", "content": _json(ref("Health"))}},
            }
        },
        "/readyz": {
            "get": {
                "operationId": "readyz",
                "summary": "The broker answers; send traffic only while this is 200",
                "security": [],
                "responses": {
                    "200": {"description": "Ready", "content": _json(ref("Ready"))},
                    "503": error(
                        "Not ready: the broker is unavailable, or the relay is draining",
                        "broker_unavailable",
                        "shutting_down",
                    ),
                },
            }
        },
        "/static/progress-relay.js": {
            "get": {
                "operationId": "browserClient",
                "summary": "The browser client, an ES module (see the README)",
                "security": [],
                "responses": {
                    "200": {
                        "description": "The module",
                        "content": {"text/javascript": {"schema": {"type": "string"}}},
                    },
                    "304": {"description": "Not modified (If-None-Match)"},
                },
            }
        },
        "/metrics": {
            "get": {
                "operationId": "metrics",
                "summary": "Prometheus metrics of this instance (text exposition format)",
                "security": [],
                "responses": {
                    "200": {
                        "description": "Metrics",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    }
                },
            }
        },
        "/v1/openapi.json": {
            "get": {
                "operationId": "openapi",
                "summary": "This document",
                "security": [],
                "responses": {
                    "200": {
                        "description": "OpenAPI 3.1",
                        "content": _json({"type": "object"}),
                    }
                },
            }
        },
    }


def _security_schemes(settings: Settings) -> dict[str, Schema]:
    return {
        "publisherToken": {
            "type": "http",
            "scheme": "bearer",
            "description": "one of auth.publish_tokens; also accepted wherever a subscriber "
            "token is",
        },
        "subscriberToken": {
            "type": "http",
            "scheme": "bearer",
            "bearerFormat": "JWT",
            "description": "an HS256 JWT whose `jobs` claim lists the jobs (or is `*`)",
        },
        "subscriberTokenQuery": {"type": "apiKey", "in": "query", "name": "token"},
        "subscriberTokenCookie": {
            "type": "apiKey",
            "in": "cookie",
            "name": settings.auth.cookie_name,
        },
    }


def _security(settings: Settings) -> tuple[list[Schema], list[Schema]]:
    """The credentials of publisher and subscriber operations. ``{}`` in a list: no credential
    needed, as when the settings leave that side open."""
    auth = settings.auth
    publisher: list[Schema] = [{"publisherToken": []}]
    subscriber: list[Schema] = [
        {"subscriberToken": []},
        {"subscriberTokenQuery": []},
        {"subscriberTokenCookie": []},
        {"publisherToken": []},
    ]
    if not auth.publish_tokens:
        publisher.insert(0, {})
    if auth.subscribe == "open":
        subscriber.insert(0, {})
    return publisher, subscriber


def build_document(settings: Settings) -> Schema:
    publisher, subscriber = _security(settings)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "progress-relay",
            "version": __version__,
            "summary": "Relays the progress of long-running jobs over Server-Sent Events",
            "description": "The prose contract is docs/api.md. Every error is "
            '`{"error": {"code": ..., "message": ...}}`; besides the responses listed per '
            "operation, any path answers `404 not_found` for a path that is not routed and "
            "`405 method_not_allowed` (with `Allow`) for a method it does not have. HEAD is "
            "answered on every GET route but the two streams.",
        },
        "paths": _paths(settings, publisher, subscriber),
        "components": {
            "schemas": component_schemas(settings),
            "parameters": _parameters(),
            "securitySchemes": _security_schemes(settings),
            "responses": {
                "NotFound": error("No such endpoint", "not_found"),
                "MethodNotAllowed": error(
                    "The method is not allowed on this path",
                    "method_not_allowed",
                    headers={"Allow": {"required": True, "schema": {"type": "string"}}},
                ),
            },
        },
    }
