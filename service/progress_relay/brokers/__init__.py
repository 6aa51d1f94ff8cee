"""Brokers, chosen by ``broker.url``."""

from __future__ import annotations

from progress_relay.brokers.base import Broker, Expired, JobPage, Published, Replay
from progress_relay.brokers.memory import MemoryBroker
from progress_relay.config import Settings

__all__ = [
    "Broker",
    "Expired",
    "JobPage",
    "MemoryBroker",
    "Published",
    "Replay",
    "create_broker",
]


def create_broker(settings: Settings) -> Broker:
    url = settings.broker.url
    if url.startswith("memory://"):
        return MemoryBroker(settings.jobs)
    # Imported here so that the memory broker runs without the Redis client loaded.
    from progress_relay.brokers.redis import RedisBroker

    return RedisBroker(settings)
