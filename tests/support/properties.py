"""Hypothesis for the property tests: one profile, and a way to drive the test's event loop from
hypothesis' worker thread (hypothesis cannot await)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from hypothesis import HealthCheck, settings

T = TypeVar("T")

# Reproducible in CI (same examples every run, no example database); exploring locally.
CI = bool(os.environ.get("CI"))
PROPERTY = settings(
    deadline=None,
    derandomize=CI,
    database=None if CI else settings.default.database,
    suppress_health_check=[HealthCheck.too_slow],
)


def on_loop(loop: asyncio.AbstractEventLoop) -> Callable[[Coroutine[Any, Any, T]], T]:
    """Run a coroutine on ``loop`` from hypothesis' worker thread and wait for its result. The
    bound only turns a stream that never ends into a failing example instead of a hung run."""

    def run(coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(asyncio.wait_for(coroutine, 60), loop).result()

    return run
