"""Jobs: create, publish, read the snapshot and history, cancel, delete."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

import msgspec
from aiohttp import web
from msgspec import Meta, Raw, Struct

from progress_relay.http import params
from progress_relay.http.keys import CREDENTIALS, HUB, PUBLISH_RATE, SETTINGS
from progress_relay.wire.errors import (
    InvalidBody,
    InvalidJson,
    InvalidParameter,
    RateLimited,
)
from progress_relay.wire.events import parse_publish
from progress_relay.wire.snapshot import STATUSES, Snapshot, Status

routes = web.RouteTableDef()
_encode = msgspec.json.Encoder().encode


class CreateJobIn(Struct, forbid_unknown_fields=True):
    id: str | None = None
    ttl: Annotated[float, Meta(gt=0)] | None = None
    meta: Any = None


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


_CREATE_DECODER = msgspec.json.Decoder(CreateJobIn)


def json_response(body: Any, status: int = 200) -> web.Response:
    return web.Response(body=_encode(body), status=status, content_type="application/json")


def job_links(job_id: str) -> dict[str, str]:
    return {
        "id": job_id,
        "stream_url": f"/v1/jobs/{job_id}/stream",
        "status_url": f"/v1/jobs/{job_id}",
    }


@routes.post("/v1/jobs")
async def create_job(request: web.Request) -> web.Response:
    credentials = request.app[CREDENTIALS]
    credentials.require_publisher(request)
    body = await request.read()
    try:
        spec = _CREATE_DECODER.decode(body) if body.strip() else CreateJobIn()
    except msgspec.ValidationError as exc:
        raise InvalidBody(str(exc)) from None
    except msgspec.DecodeError as exc:
        raise InvalidJson(f"request body is not valid JSON: {exc}") from None
    job_id = params.check_job_id(spec.id, "`$.id`") if spec.id is not None else uuid.uuid4().hex
    created = await request.app[HUB].create(job_id, ttl=spec.ttl, meta=spec.meta)
    body_out: dict[str, Any] = job_links(job_id)
    if credentials.can_mint:
        body_out["subscribe_token"] = credentials.mint([job_id])
    return json_response(body_out, status=201 if created else 200)


@routes.post("/v1/jobs/{job_id}/events")
async def publish(request: web.Request) -> web.Response:
    publisher = request.app[CREDENTIALS].require_publisher(request)
    job_id = params.job_id(request)
    wait = request.app[PUBLISH_RATE].take(publisher)
    if wait:
        raise RateLimited(
            f"more than limits.publish_rate publishes per second from this {publisher.split()[0]}",
            headers={"Retry-After": str(wait)},
        )
    limits = request.app[SETTINGS].limits
    drafts = parse_publish(
        await request.read(),
        max_event_bytes=limits.max_event_bytes,
        max_batch_events=limits.max_batch_events,
    )
    published = await request.app[HUB].publish(job_id, drafts)
    return json_response(
        {
            "ids": published.ids,
            "cancel_requested": published.cancel_requested,
        }
    )


@routes.get("/v1/jobs")
async def list_jobs(request: web.Request) -> web.Response:
    """Jobs newest first, a page at a time, for dashboards and the CLI."""
    request.app[CREDENTIALS].require_publisher(request)
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
        if not cursor.isascii() or not cursor.isdigit():
            raise InvalidParameter(f"`cursor` is not a cursor of this relay: {cursor!r}")
        before = int(cursor)
    page = await request.app[HUB].jobs(statuses, limit, before)
    return json_response(
        JobListOut(
            jobs=page.snapshots,
            next_cursor=None if page.before is None else str(page.before),
        )
    )


@routes.get("/v1/jobs/{job_id}")
async def get_snapshot(request: web.Request) -> web.Response:
    job_id = params.job_id(request)
    request.app[CREDENTIALS].require_subscriber(request, [job_id])
    return json_response(await request.app[HUB].snapshot(job_id))


@routes.get("/v1/jobs/{job_id}/events")
async def get_history(request: web.Request) -> web.Response:
    """Retained history as JSON, the polling fallback of the stream."""
    job_id = params.job_id(request)
    request.app[CREDENTIALS].require_subscriber(request, [job_id])
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
async def cancel(request: web.Request) -> web.Response:
    job_id = params.job_id(request)
    request.app[CREDENTIALS].require_subscriber(request, [job_id])
    snapshot = await request.app[HUB].cancel(job_id)
    return json_response({"id": job_id, "cancel_requested": snapshot.cancel_requested}, 202)


@routes.delete("/v1/jobs/{job_id}")
async def delete_job(request: web.Request) -> web.Response:
    request.app[CREDENTIALS].require_publisher(request)
    job_id = params.job_id(request)
    await request.app[HUB].delete(job_id)
    return web.Response(status=204)
