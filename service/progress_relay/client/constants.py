"""Constants both relays and the CLI share (a module of their own, so that nothing imports a
transport to get them)."""

from __future__ import annotations

DEFAULT_URL = "http://127.0.0.1:8080"
