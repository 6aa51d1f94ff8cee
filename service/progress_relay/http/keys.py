"""Typed application state."""

from __future__ import annotations

from aiohttp import web

from progress_relay.brokers import Broker
from progress_relay.config import Settings
from progress_relay.core.hub import Hub
from progress_relay.core.reaper import Reaper
from progress_relay.core.stalls import StallWatch
from progress_relay.http.auth import Credentials
from progress_relay.http.clients import Clients
from progress_relay.http.inflight import InFlight
from progress_relay.http.rate import RateLimiter
from progress_relay.ops.connections import Connections
from progress_relay.ops.metrics import Metrics
from progress_relay.ops.webhooks import Webhooks

SETTINGS = web.AppKey("settings", Settings)
BROKER = web.AppKey("broker", Broker)
HUB = web.AppKey("hub", Hub)
REAPER = web.AppKey("reaper", Reaper)
STALLS = web.AppKey("stalls", StallWatch)
CLIENTS = web.AppKey("clients", Clients)
CONNECTIONS = web.AppKey("connections", Connections)
CREDENTIALS = web.AppKey("credentials", Credentials)
PUBLISH_RATE = web.AppKey("publish_rate", RateLimiter)
CREATE_RATE = web.AppKey("create_rate", RateLimiter)
CANCEL_RATE = web.AppKey("cancel_rate", RateLimiter)
IN_FLIGHT = web.AppKey("in_flight", InFlight)
METRICS = web.AppKey("metrics", Metrics)
# Webhook delivery, when the broker has an outbox (webhooks.secret is set).
WEBHOOKS = web.AppKey("webhooks", Webhooks)
# The OpenAPI document, encoded once when the app is made.
OPENAPI = web.AppKey("openapi", bytes)
