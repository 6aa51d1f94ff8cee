"""The aiohttp application, assembled from parts."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from progress_relay import demo
from progress_relay.brokers import create_broker
from progress_relay.config import Settings
from progress_relay.core.hub import Hub
from progress_relay.core.reaper import Reaper
from progress_relay.http import admin, health, jobs, openapi, static, streams
from progress_relay.http.auth import Credentials
from progress_relay.http.cors import Cors
from progress_relay.http.errors import json_errors
from progress_relay.http.inflight import InFlight
from progress_relay.http.keys import (
    BROKER,
    CREDENTIALS,
    HUB,
    IN_FLIGHT,
    METRICS,
    OPENAPI,
    PUBLISH_RATE,
    REAPER,
    SETTINGS,
)
from progress_relay.http.rate import RateLimiter
from progress_relay.ops.metrics import Metrics


def create_app(settings: Settings) -> web.Application:
    # Middlewares run outermost first; errors wrap everything. Credentials are checked by each
    # handler (the rights depend on the job), CORS headers are added as any response is prepared.
    cors = Cors(settings.cors)
    in_flight = InFlight()
    app = web.Application(
        middlewares=[in_flight.track, json_errors, cors.preflight],
        client_max_size=settings.limits.max_request_bytes,
    )
    broker = create_broker(settings)
    hub = Hub(broker, settings)
    app[SETTINGS] = settings
    app[IN_FLIGHT] = in_flight
    app[BROKER] = broker
    app[HUB] = hub
    app[METRICS] = Metrics(hub)
    app[CREDENTIALS] = Credentials(settings.auth)
    app[PUBLISH_RATE] = RateLimiter(settings.limits.publish_rate, settings.limits.publish_burst)
    app[REAPER] = Reaper(broker, hub, settings.reaper.interval)
    app.add_routes(jobs.routes)
    app.add_routes(streams.routes)
    app.add_routes(health.routes)
    app.add_routes(static.routes)
    if settings.demo.enabled:
        demo.install(app)
    if settings.admin.enabled:
        app.add_routes(admin.routes)
    app.add_routes(openapi.routes)
    app[OPENAPI] = openapi.encode_document(app)  # of the routes above
    app.on_response_prepare.append(cors.on_prepare)
    app.cleanup_ctx.append(_relay)
    app.on_shutdown.append(_end_streams)
    return app


async def _relay(app: web.Application) -> AsyncIterator[None]:
    broker, reaper = app[BROKER], app[REAPER]
    await broker.start()
    reaper.start()
    yield
    await reaper.close()
    await broker.close()


async def _end_streams(app: web.Application) -> None:
    """On shutdown, every open stream writes what it has queued and ends."""
    app[HUB].shutdown()
