"""The cross-job publish: ``POST /v1/events``, events for many jobs in one request."""

from __future__ import annotations

from aiohttp import web

from progress_relay.http import rate
from progress_relay.http.access import PUBLISHER
from progress_relay.http.jobs import json_response
from progress_relay.http.keys import HUB, PUBLISH_RATE, SETTINGS
from progress_relay.http.openapi_operation import Operation, ref
from progress_relay.wire.batch import CrossJobOut, JobOutcome, parse_cross_job
from progress_relay.wire.bodies import ErrorDetail
from progress_relay.wire.errors import (
    BrokerUnavailable,
    InvalidEvent,
    InvalidJobId,
    InvalidJson,
    JsonTooDeep,
    PayloadTooLarge,
    RateLimited,
)

routes = web.RouteTableDef()


@routes.post("/v1/events")
@Operation(
    "publishMany",
    "Publish events for many jobs in one request; creates unknown jobs",
    "publisher",
    description="Each job's events are published atomically and in request order, as "
    "`POST /v1/jobs/{id}/events` publishes a batch; the jobs are independent. 200 when every "
    "job's events were published; 207 when some job was refused (finished, no room, ...): "
    "`jobs` then holds that job's `status` and `error`, and the others' ids. A bad body "
    "anywhere is refused whole and publishes nothing. One request counts once against "
    "`limits.publish_rate`.",
    request=("application/json", ref("CrossJobBatchIn")),
    request_required=True,
    responses={
        200: ("Every job's events were published", CrossJobOut),
        207: ("Some jobs' events were published, others refused (see each job)", CrossJobOut),
    },
    errors=(
        InvalidJson,
        JsonTooDeep,
        InvalidJobId,
        PayloadTooLarge,
        InvalidEvent,
        RateLimited,
        BrokerUnavailable,
    ),
)
async def publish_many(request: web.Request) -> web.Response:
    rate.require(request.app[PUBLISH_RATE], request[PUBLISHER], "publish_rate")
    limits = request.app[SETTINGS].limits
    batches = parse_cross_job(
        await request.read(),
        max_event_bytes=limits.max_event_bytes,
        max_batch_events=limits.max_batch_events,
        max_json_depth=limits.max_json_depth,
    )
    hub = request.app[HUB]
    outcomes = await hub.publish_many(batches)
    jobs: list[JobOutcome] = []
    refused = False
    for batch, outcome in zip(batches, outcomes, strict=True):
        if isinstance(outcome, Exception):
            refused = True
            if isinstance(outcome, BrokerUnavailable):
                hub.counts.broker_errors += 1
            detail = ErrorDetail(outcome.code, str(outcome))
            jobs.append(JobOutcome(batch.job_id, status=outcome.status, error=detail))
        else:
            jobs.append(JobOutcome(batch.job_id, outcome.ids, outcome.cancel_requested))
    return json_response(CrossJobOut(jobs), status=207 if refused else 200)
