"""The JSON bodies of the HTTP API, other than the publish body (progress_relay.wire.events) and
the snapshot (progress_relay.wire.snapshot): what handlers decode and encode, and what the
OpenAPI document describes."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from msgspec import UNSET, Meta, Raw, Struct, UnsetType

from progress_relay.config import MAX_LIFETIME
from progress_relay.wire.ids import EVENT_ID_PATTERN, JOB_ID_PATTERN
from progress_relay.wire.snapshot import Snapshot, Status
from progress_relay.wire.webhooks import MAX_URL_LENGTH, WebhookIn

# Ids as the document describes them. Only described: progress_relay.wire.ids checks them, with
# the errors of its own (a decoder checking the pattern would answer invalid_body instead).
JobIdText = Annotated[str, Meta(extra_json_schema={"pattern": JOB_ID_PATTERN})]
EventIdText = Annotated[str, Meta(extra_json_schema={"pattern": EVENT_ID_PATTERN})]


Weight = Annotated[
    float, Meta(gt=0, le=1e6, description="the child's share of its parent's percent (default 1)")
]


class ChildIn(Struct, forbid_unknown_fields=True):
    id: JobIdText | None = None
    weight: Weight | None = None
    meta: Any = None


class CreateJobIn(Struct, forbid_unknown_fields=True):
    id: JobIdText | None = None
    ttl: (
        Annotated[
            float,
            Meta(
                gt=0,
                le=MAX_LIFETIME,
                description="seconds; at most jobs.max_ttl (30 days unless configured)",
            ),
        ]
        | None
    ) = None
    meta: Any = None
    parent: (
        Annotated[
            JobIdText,
            Meta(description="an existing, unfinished job: this job becomes its child"),
        ]
        | None
    ) = None
    weight: Weight | None = None
    children: (
        Annotated[
            list[ChildIn],
            Meta(description="children created with this job, at most limits.max_children"),
        ]
        | None
    ) = None
    webhook: (
        Annotated[
            WebhookIn | Annotated[str, Meta(max_length=MAX_URL_LENGTH)],
            Meta(description="a receiver of this job's events (a URL, or the URL and events)"),
        ]
        | None
    ) = None


class CreatedJob(Struct):
    id: JobIdText
    stream_url: str
    status_url: str
    subscribe_token: (
        Annotated[
            str,
            Meta(description="a subscriber JWT for this job; only when the relay has a jwt_secret"),
        ]
        | UnsetType
    ) = UNSET
    children: (
        Annotated[list[CreatedJob], Meta(description="each child, in order; only for `children`")]
        | UnsetType
    ) = UNSET

    @classmethod
    def links(cls, job_id: str) -> CreatedJob:
        return cls(job_id, f"/v1/jobs/{job_id}/stream", f"/v1/jobs/{job_id}")


class PublishedOut(Struct):
    ids: Annotated[
        list[EventIdText],
        Meta(
            min_length=1,
            description="one per event, in order; for a key seen before, the id it was "
            "published with",
        ),
    ]
    cancel_requested: bool


class CancelOut(Struct):
    id: JobIdText
    cancel_requested: Annotated[bool, Meta(extra_json_schema={"const": True})]


class HistoryEvent(Struct):
    id: str
    event: str
    data: Raw


class HistoryOut(Struct):
    job: str
    status: Status
    events: list[HistoryEvent]
    truncated: bool
    has_more: bool
    next_after: str | None


class JobListOut(Struct):
    jobs: list[Snapshot]
    next_cursor: str | None


class Health(Struct, kw_only=True):
    status: Literal["ok"] = "ok"
    streams: Annotated[int, Meta(ge=0)]


class Ready(Struct):
    status: Literal["ready"] = "ready"


class ErrorDetail(Struct):
    code: str
    message: str


class ErrorBody(Struct):
    """Every error response: `{"error": {"code": ..., "message": ...}}`."""

    error: ErrorDetail
