"""Brokers, chosen by ``broker.url``."""

from __future__ import annotations

from typing import Literal

from progress_relay.brokers.base import Broker, Expired, JobPage, MemoryUse, Published, Replay
from progress_relay.brokers.memory import MemoryBroker
from progress_relay.config import Settings

__all__ = [
    "Broker",
    "Expired",
    "JobPage",
    "MemoryBroker",
    "MemoryUse",
    "Published",
    "Replay",
    "broker_kind",
    "create_broker",
]


def broker_kind(settings: Settings) -> Literal["memory", "redis"]:
    """Which broker ``broker.url`` names (for metrics and traces, and ``create_broker``)."""
    return "memory" if settings.broker.url.startswith("memory://") else "redis"


def create_broker(settings: Settings) -> Broker:
    if broker_kind(settings) == "memory":
        return MemoryBroker(settings.jobs, settings.limits.memory_bytes, settings.webhooks)
    # Imported here so that the memory broker runs without the Redis client loaded.
    from progress_relay.brokers.redis import RedisBroker

    return RedisBroker(settings)
