"""The aiohttp application, assembled from parts."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

from aiohttp import web

from progress_relay import demo
from progress_relay.brokers import broker_kind, create_broker
from progress_relay.config import Settings
from progress_relay.core.hub import Hub
from progress_relay.core.reaper import Reaper
from progress_relay.core.stalls import StallWatch
from progress_relay.http import admin, batch, health, jobs, openapi, static, streams
from progress_relay.http.access import Access
from progress_relay.http.auth import Credentials
from progress_relay.http.clients import Clients
from progress_relay.http.cors import Cors
from progress_relay.http.inflight import InFlight
from progress_relay.http.keys import (
    BROKER,
    CANCEL_RATE,
    CLIENTS,
    CONNECTIONS,
    CREATE_RATE,
    CREDENTIALS,
    HUB,
    IN_FLIGHT,
    METRICS,
    OPENAPI,
    PUBLISH_RATE,
    REAPER,
    SETTINGS,
    STALLS,
    WEBHOOKS,
)
from progress_relay.http.middleware import relay_middleware
from progress_relay.http.observe import Observe
from progress_relay.http.rate import RateLimiter
from progress_relay.ops import connections, tracing
from progress_relay.ops.metrics import Metrics
from progress_relay.ops.tracing import Tracer
from progress_relay.ops.webhooks import Webhooks


def create_app(settings: Settings, *, tracer: Tracer | None = None) -> web.Application:
    """The relay's app. ``tracer``: its spans (tests pass one); None: as the OTEL_* environment
    says (ops/tracing.py), off when it says nothing."""
    # One middleware around every handler (http/middleware.py: the connection's guard, request
    # id and metrics, in-flight count, JSON errors, preflight, access). CORS headers and the
    # request id are added as any response is prepared.
    broker = create_broker(settings)
    hub = Hub(broker, settings)
    metrics = Metrics(hub, broker=broker_kind(settings))
    observe = Observe(metrics)
    cors = Cors(settings.cors)
    in_flight = InFlight()
    credentials = Credentials(settings.auth)
    access = Access(credentials, cors, settings.server.body_timeout)
    guards = connections.Connections(settings)
    app = web.Application(
        middlewares=[relay_middleware(guards, observe, in_flight, cors, access)],
        client_max_size=settings.limits.max_request_bytes,
        handler_args=connections.handler_args(settings),
    )
    app[SETTINGS] = settings
    app[IN_FLIGHT] = in_flight
    app[BROKER] = broker
    app[HUB] = hub
    app[METRICS] = metrics
    app[CONNECTIONS] = guards
    app[CLIENTS] = Clients(settings.server.trusted_proxies)
    app[STALLS] = StallWatch(hub, settings.stream.write_timeout)
    app[CREDENTIALS] = credentials
    limits = settings.limits
    app[PUBLISH_RATE] = RateLimiter(limits.publish_rate, limits.publish_burst)
    app[CREATE_RATE] = RateLimiter(limits.create_rate, limits.create_burst)
    app[CANCEL_RATE] = RateLimiter(limits.cancel_rate, limits.cancel_burst)
    app[REAPER] = Reaper(broker, hub, settings.reaper.interval)
    if broker.outbox is not None:
        app[WEBHOOKS] = webhooks = Webhooks(settings.webhooks, broker.outbox)
        metrics.watch_webhooks(webhooks)
    app.add_routes(jobs.routes)
    app.add_routes(batch.routes)
    app.add_routes(streams.routes)
    app.add_routes(health.routes)
    app.add_routes(static.routes)
    if settings.demo.enabled:
        demo.install(app)
    if settings.admin.enabled:
        app.add_routes(admin.routes)
    app.add_routes(openapi.routes)
    app[OPENAPI] = openapi.encode_document(app)  # of the routes above
    app.on_response_prepare.append(_before_head(cors, observe))
    app.cleanup_ctx.append(_relay)
    app.on_shutdown.append(_end_streams)
    tracing.setup(app, tracer or tracing.from_environment())
    return app


def _before_head(
    cors: Cors, observe: Observe
) -> Callable[[web.Request, web.StreamResponse], Awaitable[None]]:
    """The one ``on_response_prepare`` signal handler (one coroutine per response, not one per
    part): CORS headers, then the request id."""

    async def before_head(request: web.Request, response: web.StreamResponse) -> None:
        cors.on_prepare(request, response)
        observe.on_prepare(request, response)

    return before_head


async def _relay(app: web.Application) -> AsyncIterator[None]:
    broker, reaper, stalls = app[BROKER], app[REAPER], app[STALLS]
    await broker.start()
    reaper.start()
    stalls.start()
    webhooks = app.get(WEBHOOKS)
    if webhooks is not None:
        await webhooks.start()
    yield
    if webhooks is not None:
        await webhooks.close()  # before the broker: what is under way finishes or stays queued
    await stalls.close()
    await reaper.close()
    await broker.close()


async def _end_streams(app: web.Application) -> None:
    """On shutdown, every open stream writes what it has queued and ends."""
    app[HUB].shutdown()
