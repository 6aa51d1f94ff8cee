"""Brokers, chosen by ``broker.url``."""

from __future__ import annotations

from service.brokers.base import Broker, Expired, Published, Replay
from service.brokers.memory import MemoryBroker
from service.config import Settings

__all__ = ["Broker", "Expired", "MemoryBroker", "Published", "Replay", "create_broker"]


def create_broker(settings: Settings) -> Broker:
    url = settings.broker.url
    if url.startswith("memory://"):
        return MemoryBroker(settings.jobs)
    raise ValueError(f"unsupported broker.url {url!r}: expected memory://")
