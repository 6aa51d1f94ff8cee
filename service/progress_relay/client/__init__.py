"""The Python SDK of progress-relay.

```python
from progress_relay.client import Relay

with Relay("http://127.0.0.1:8080", token="pub-secret") as relay:
    relay.progress("report-42", 40, stage="searching", message="Searching documents")
    relay.complete("report-42", {"pages": 12})
```

``Relay`` is synchronous (httpx; Flask, Django, Celery), ``AsyncRelay`` the asyncio twin
(aiohttp; also ``subscribe`` and ``wait``). Both share the sans-IO core: request building and
answer parsing (``protocol``), idempotency keys (``events``), retries (``retry``), coalescing
of progress (``coalesce``, ``publishing``), stages (``stages``, ``tracking``), the stream
(``sse``) and a job's state folded from its events (``state``: ``JobState``). See
docs/client.md.

``pip install progress-relay`` is enough for ``Relay``: it needs httpx only. ``AsyncRelay`` and
``AsyncTracker`` need aiohttp (``pip install 'progress-relay[aio]'``), so they are imported on
first use and importing this package never needs aiohttp.
"""

import importlib
from typing import TYPE_CHECKING, Any

from progress_relay.client.errors import (
    BadRequest,
    Cancelled,
    Forbidden,
    JobFinished,
    JobNotFound,
    RateLimited,
    RelayError,
    RelayUnavailable,
    Unauthorized,
)
from progress_relay.client.events import Event
from progress_relay.client.groups import Group, GroupTracker
from progress_relay.client.protocol import Job, Published
from progress_relay.client.retry import RetryPolicy
from progress_relay.client.stages import StageTable
from progress_relay.client.state import JobState, LogLine
from progress_relay.client.sync import Relay
from progress_relay.client.trackers import Tracker

if TYPE_CHECKING:
    from progress_relay.client.aio import AsyncRelay
    from progress_relay.client.trackers import AsyncTracker

__all__ = [
    "AsyncRelay",
    "AsyncTracker",
    "BadRequest",
    "Cancelled",
    "Event",
    "Forbidden",
    "Group",
    "GroupTracker",
    "Job",
    "JobFinished",
    "JobNotFound",
    "JobState",
    "LogLine",
    "Published",
    "RateLimited",
    "Relay",
    "RelayError",
    "RelayUnavailable",
    "RetryPolicy",
    "StageTable",
    "Tracker",
    "Unauthorized",
]

# the names that need aiohttp, and the module each one lives in
_AIO = {
    "AsyncRelay": "progress_relay.client.aio",
    "AsyncTracker": "progress_relay.client.trackers",
}


def __getattr__(name: str) -> Any:
    module_name = _AIO.get(name)
    if module_name is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    try:
        # the asyncio client first, whichever name was asked for: both are of no use without it
        importlib.import_module("progress_relay.client.aio")
    except ModuleNotFoundError as error:
        if error.name != "aiohttp":
            raise
        raise ImportError(
            f"progress_relay.client.{name} needs aiohttp: pip install 'progress-relay[aio]'",
            name=__name__,
        ) from error
    value = getattr(importlib.import_module(module_name), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
