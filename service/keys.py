"""Typed application state."""

from __future__ import annotations

from aiohttp import web

from service.auth import Credentials
from service.brokers import Broker
from service.config import Settings
from service.http.inflight import InFlight
from service.hub import Hub
from service.metrics import Metrics
from service.rate import RateLimiter
from service.reaper import Reaper

SETTINGS = web.AppKey("settings", Settings)
BROKER = web.AppKey("broker", Broker)
HUB = web.AppKey("hub", Hub)
REAPER = web.AppKey("reaper", Reaper)
CREDENTIALS = web.AppKey("credentials", Credentials)
PUBLISH_RATE = web.AppKey("publish_rate", RateLimiter)
IN_FLIGHT = web.AppKey("in_flight", InFlight)
METRICS = web.AppKey("metrics", Metrics)
# The OpenAPI document, encoded once when the app is made.
OPENAPI = web.AppKey("openapi", bytes)
