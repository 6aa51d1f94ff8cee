"""SSE streams: one job, or several jobs on one connection."""

from __future__ import annotations

from typing import cast

from aiohttp import web
from aiohttp_sse import EventSourceResponse

from service import sse
from service.errors import InvalidParameter
from service.http import params
from service.hub import ReplayMode
from service.keys import CREDENTIALS, HUB, SETTINGS

routes = web.RouteTableDef()

_REPLAY_MODES = ("history", "snapshot", "none")

# No HEAD: a stream has no headers-only form, and answering one would open a subscriber.


@routes.get("/v1/jobs/{job_id}/stream", allow_head=False)
async def stream_job(request: web.Request) -> web.StreamResponse:
    return await _stream(request, [params.job_id(request)], multi=False)


@routes.get("/v1/stream", allow_head=False)
async def stream_jobs(request: web.Request) -> web.StreamResponse:
    """One stream for several jobs; each frame's data is ``{"job": ID, "data": PAYLOAD}``."""
    names = request.query.getall("job", [])
    if not names:
        raise InvalidParameter("name at least one job: /v1/stream?job=A&job=B")
    limit = request.app[SETTINGS].limits.max_stream_jobs
    job_ids = list(dict.fromkeys(params.check_job_id(name, "`job`") for name in names))
    if len(job_ids) > limit:
        raise InvalidParameter(f"a stream follows at most {limit} jobs, got {len(job_ids)}")
    return await _stream(request, job_ids, multi=True)


async def _stream(request: web.Request, job_ids: list[str], *, multi: bool) -> web.StreamResponse:
    request.app[CREDENTIALS].require_subscriber(request, job_ids)
    # The header wins: a browser reconnecting on its own sends it, while the URL still carries
    # the `last_event_id` the page started with.
    last_event_id = request.headers.get("Last-Event-ID") or request.query.get("last_event_id")
    mode = cast(ReplayMode, params.choice_param(request, "replay", _REPLAY_MODES))
    hub = request.app[HUB]
    settings = request.app[SETTINGS].stream
    subscriber = await hub.open(job_ids, last_event_id, mode, multi=multi)
    if subscriber is None:
        # Nothing will ever come (finished and seen, or gone): 204 stops EventSource reconnecting.
        return web.Response(status=204)
    response = EventSourceResponse(sep=sse.SEPARATOR, ping_interval=settings.heartbeat)
    response.headers["Cache-Control"] = "no-cache, no-transform"
    if request.transport is not None:
        subscriber.on_drop = request.transport.abort
    try:
        await response.prepare(request)
        async with response:
            while (chunk := await subscriber.next_chunk()) is not None:
                await response.write(chunk)
        return response
    except ConnectionResetError:
        return response  # the client went away; nothing to report
    finally:
        hub.close(subscriber)
