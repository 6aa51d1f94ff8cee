"""Liveness, readiness and metrics."""

from __future__ import annotations

from aiohttp import web

from progress_relay.http.errors import error_response
from progress_relay.http.jobs import json_response
from progress_relay.http.keys import HUB, METRICS
from progress_relay.http.openapi_operation import Operation
from progress_relay.wire.bodies import Health, Ready
from progress_relay.wire.errors import BrokerUnavailable, RelayError, ShuttingDown

routes = web.RouteTableDef()


@routes.get("/healthz")
@Operation(
    "healthz",
    "The process is up and its event loop answers",
    "public",
    responses={200: ("Up", Health)},
)
async def healthz(request: web.Request) -> web.Response:
    """The process is up and its event loop answers."""
    return json_response(Health(streams=request.app[HUB].streams))


@routes.get("/readyz")
@Operation(
    "readyz",
    "The broker answers; send traffic only while this is 200",
    "public",
    responses={200: ("Ready", Ready)},
    errors=(BrokerUnavailable, ShuttingDown),
)
async def readyz(request: web.Request) -> web.Response:
    """The broker answers; a load balancer should only send traffic when this is 200."""
    try:
        await request.app[HUB].ready()
    except RelayError as exc:
        return error_response(503, exc.code, f"not ready: {exc}", exc.headers)
    return json_response(Ready())


@routes.get("/metrics")
@Operation(
    "metrics",
    "Prometheus metrics of this instance (text format; OpenMetrics when the Accept header asks)",
    "public",
    responses={200: ("Metrics", ("text/plain", {"type": "string"}))},
)
async def metrics(request: web.Request) -> web.Response:
    """Prometheus text format, or OpenMetrics when asked; see ops/metrics.py for what is
    counted."""
    body, content_type = await request.app[METRICS].render(request.headers.get("Accept", ""))
    return web.Response(body=body, headers={"Content-Type": content_type})
