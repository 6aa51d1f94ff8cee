"""Jobs: create, publish, read the snapshot and history, cancel, delete."""

from __future__ import annotations

import uuid
from typing import Any

import msgspec
from aiohttp import web
from msgspec import Raw

from progress_relay.config import WebhookSettings
from progress_relay.core.hub import Child
from progress_relay.http import params, rate
from progress_relay.http.access import PUBLISHER
from progress_relay.http.auth import Credentials
from progress_relay.http.keys import (
    CANCEL_RATE,
    CLIENTS,
    CREATE_RATE,
    CREDENTIALS,
    HUB,
    PUBLISH_RATE,
    SETTINGS,
)
from progress_relay.http.openapi_operation import Operation, Schema, ref
from progress_relay.wire.bodies import (
    CancelOut,
    CreatedJob,
    CreateJobIn,
    HistoryEvent,
    HistoryOut,
    JobListOut,
    PublishedOut,
)
from progress_relay.wire.errors import (
    BrokerUnavailable,
    GroupConflict,
    GroupTooDeep,
    InvalidBody,
    InvalidEvent,
    InvalidJobId,
    InvalidJson,
    InvalidParameter,
    JobFinished,
    JobNotFound,
    JsonTooDeep,
    MemoryFull,
    PayloadTooLarge,
    RateLimited,
    TooManyChildren,
    TooManyJobs,
    WebhookNotAllowed,
)
from progress_relay.wire.events import parse_publish
from progress_relay.wire.json_depth import check_nesting
from progress_relay.wire.snapshot import STATUSES
from progress_relay.wire.webhooks import JobWebhook, WebhookIn, destination_problem

routes = web.RouteTableDef()
_encode = msgspec.json.Encoder().encode

# `limit` of the paged reads (history, job list): the bounds their int_param calls check.
_PAGE_LIMIT: Schema = {
    "name": "limit",
    "in": "query",
    "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100},
}
_FULL = (TooManyJobs, MemoryFull, BrokerUnavailable)
# A cursor is a creation number: a positive 64-bit integer.
_CURSOR_DIGITS = 19

_CREATE_DECODER = msgspec.json.Decoder(CreateJobIn)


def _webhook(spec: WebhookIn | str, settings: WebhookSettings) -> JobWebhook:
    """A job's webhook, refused unless it goes where the operator allows and can be signed."""
    url, events = (spec, None) if isinstance(spec, str) else (spec.url, spec.events)
    if not settings.secret:
        raise WebhookNotAllowed("this relay sends no webhooks (webhooks.secret is not set)")
    problem = destination_problem(url, settings.allowed)
    if problem:
        raise WebhookNotAllowed(f"{problem} - at `$.webhook`")
    return JobWebhook(url, events)


def json_response(body: Any, status: int = 200) -> web.Response:
    return web.Response(body=_encode(body), status=status, content_type="application/json")


@routes.post("/v1/jobs")
@Operation(
    "createJob",
    "Create a job (optional: publishing creates it too)",
    "publisher",
    request=CreateJobIn,
    responses={
        201: ("Created", CreatedJob),
        200: ("The job already exists; ttl and meta are unchanged", CreatedJob),
    },
    errors=(
        InvalidJson,
        JsonTooDeep,
        InvalidJobId,
        PayloadTooLarge,
        InvalidBody,
        JobNotFound,
        JobFinished,
        TooManyChildren,
        GroupTooDeep,
        GroupConflict,
        WebhookNotAllowed,
        RateLimited,
        *_FULL,
    ),
)
async def create_job(request: web.Request) -> web.Response:
    credentials = request.app[CREDENTIALS]
    rate.require(request.app[CREATE_RATE], request[PUBLISHER], "create_rate")
    settings = request.app[SETTINGS]
    body = await request.read()
    check_nesting(body, settings.limits.max_json_depth)
    try:
        spec = _CREATE_DECODER.decode(body) if body.strip() else CreateJobIn()
    except msgspec.ValidationError as exc:
        raise InvalidBody(str(exc)) from None
    except msgspec.DecodeError as exc:
        raise InvalidJson(f"request body is not valid JSON: {exc}") from None
    if spec.ttl is not None and spec.ttl > settings.jobs.max_ttl:
        raise InvalidBody(
            f"`ttl` is at most {settings.jobs.max_ttl:.15g} seconds (jobs.max_ttl), "
            f"got {spec.ttl:.15g} - at `$.ttl`"
        )
    job_id = params.check_job_id(spec.id, "`$.id`") if spec.id is not None else uuid.uuid4().hex
    webhook = None if spec.webhook is None else _webhook(spec.webhook, settings.webhooks)
    parent = None if spec.parent is None else params.check_job_id(spec.parent, "`$.parent`")
    children = [
        Child(
            params.check_job_id(child.id, f"`$.children[{index}].id`")
            if child.id is not None
            else uuid.uuid4().hex,
            child.weight,
            child.meta,
        )
        for index, child in enumerate(spec.children or ())
    ]
    created = await request.app[HUB].create(
        job_id,
        ttl=spec.ttl,
        meta=spec.meta,
        webhook=webhook,
        parent=parent,
        weight=spec.weight,
        children=children,
    )
    body_out = CreatedJob.links(job_id)
    if credentials.can_mint:
        body_out.subscribe_token = credentials.mint([job_id])
    if spec.children is not None:
        body_out.children = [_links(child.id, credentials) for child in children]
    return json_response(body_out, status=201 if created else 200)


def _links(job_id: str, credentials: Credentials) -> CreatedJob:
    links = CreatedJob.links(job_id)
    if credentials.can_mint:
        links.subscribe_token = credentials.mint([job_id])
    return links


@routes.post("/v1/jobs/{job_id}/events")
@Operation(
    "publish",
    "Publish one event or a batch; creates the job if unknown",
    "publisher",
    request=("application/json", {"oneOf": [ref("EventIn"), ref("EventBatchIn")]}),
    request_required=True,
    responses={200: ("Published", PublishedOut)},
    errors=(
        InvalidJson,
        JsonTooDeep,
        InvalidJobId,
        JobFinished,
        PayloadTooLarge,
        InvalidEvent,
        RateLimited,
        *_FULL,
    ),
)
async def publish(request: web.Request) -> web.Response:
    publisher = request[PUBLISHER]
    job_id = params.job_id(request)
    rate.require(request.app[PUBLISH_RATE], publisher, "publish_rate")
    limits = request.app[SETTINGS].limits
    drafts = parse_publish(
        await request.read(),
        max_event_bytes=limits.max_event_bytes,
        max_batch_events=limits.max_batch_events,
        max_json_depth=limits.max_json_depth,
    )
    published = await request.app[HUB].publish(job_id, drafts)
    return json_response(PublishedOut(published.ids, published.cancel_requested))


@routes.get("/v1/jobs")
@Operation(
    "listJobs",
    "Jobs with their snapshots, newest first, a page at a time",
    "operator",
    description="A page may hold fewer than `limit` jobs (a status filter that few jobs "
    "match); follow `next_cursor` until it is null.",
    parameters=(
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
    ),
    responses={200: ("A page of jobs", JobListOut)},
    errors=(InvalidParameter, BrokerUnavailable),
)
async def list_jobs(request: web.Request) -> web.Response:
    """Jobs newest first, a page at a time, for dashboards and the CLI."""
    statuses = frozenset(
        status.strip()
        for raw in request.query.getall("status", [])
        for status in raw.split(",")
        if status.strip()
    )
    unknown = sorted(statuses.difference(STATUSES))
    if unknown:
        raise InvalidParameter(
            f"`status` must be among {', '.join(sorted(STATUSES))}; got {', '.join(unknown)}"
        )
    limit = params.int_param(request, "limit", default=100, low=1, high=1000)
    cursor = request.query.get("cursor")
    before = None
    if cursor is not None:
        if not (cursor.isascii() and cursor.isdigit() and len(cursor) <= _CURSOR_DIGITS):
            raise InvalidParameter(
                f"`cursor` is not a cursor of this relay: {params.shown(cursor)}"
            )
        before = int(cursor)
    page = await request.app[HUB].jobs(statuses, limit, before)
    return json_response(
        JobListOut(
            jobs=page.snapshots,
            next_cursor=None if page.before is None else str(page.before),
        )
    )


@routes.get("/v1/jobs/{job_id}")
@Operation(
    "getSnapshot",
    "The job's snapshot",
    "subscriber",
    responses={200: ("The snapshot", ("application/json", ref("FullSnapshot")))},
    errors=(InvalidJobId, JobNotFound, BrokerUnavailable),
)
async def get_snapshot(request: web.Request) -> web.Response:
    job_id = params.job_id(request)
    return json_response(await request.app[HUB].snapshot(job_id))


@routes.get("/v1/jobs/{job_id}/events")
@Operation(
    "getHistory",
    "The retained history as JSON: the polling fallback of the stream",
    "subscriber",
    parameters=(
        {
            "name": "after",
            "in": "query",
            "description": "only events after this event id; empty is the same as none",
            "schema": {"anyOf": [ref("EventId"), {"const": ""}]},
        },
        _PAGE_LIMIT,
    ),
    responses={200: ("Events", HistoryOut)},
    errors=(InvalidJobId, InvalidParameter, JobNotFound, BrokerUnavailable),
)
async def get_history(request: web.Request) -> web.Response:
    """Retained history as JSON, the polling fallback of the stream."""
    job_id = params.job_id(request)
    limit = params.int_param(request, "limit", default=100, low=1, high=1000)
    after = request.query.get("after")
    history = await request.app[HUB].history(job_id, after, limit)
    events = history.events
    return json_response(
        HistoryOut(
            job=job_id,
            status=history.snapshot.status,
            events=[HistoryEvent(e.id, e.name, Raw(e.data)) for e in events],
            truncated=history.truncated,
            has_more=history.has_more,
            next_after=events[-1].id if events else after or None,
        )
    )


@routes.post("/v1/jobs/{job_id}/cancel")
@Operation(
    "cancelJob",
    "Ask the worker to cancel the job",
    "subscriber",
    responses={202: ("Requested (also when already requested)", CancelOut)},
    errors=(InvalidJobId, JobNotFound, JobFinished, RateLimited, MemoryFull, BrokerUnavailable),
)
async def cancel(request: web.Request) -> web.Response:
    job_id = params.job_id(request)
    client = request.app[CLIENTS].of(request)
    rate.require(request.app[CANCEL_RATE], f"address {client}", "cancel_rate")
    snapshot = await request.app[HUB].cancel(job_id)
    return json_response(CancelOut(job_id, snapshot.cancel_requested), 202)


@routes.delete("/v1/jobs/{job_id}")
@Operation(
    "deleteJob",
    "Drop the job, its snapshot and history; its streams end",
    "operator",
    responses={204: ("Deleted", None)},
    errors=(InvalidJobId, JobNotFound, BrokerUnavailable),
)
async def delete_job(request: web.Request) -> web.Response:
    job_id = params.job_id(request)
    await request.app[HUB].delete(job_id)
    return web.Response(status=204)
