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
of progress (``coalesce``, ``publishing``), stages (``stages``, ``tracking``) and the stream
(``sse``). See docs/client.md.
"""

from progress_relay.client.aio import AsyncRelay
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
from progress_relay.client.protocol import Job, Published
from progress_relay.client.retry import RetryPolicy
from progress_relay.client.stages import StageTable
from progress_relay.client.sync import Relay
from progress_relay.client.trackers import AsyncTracker, Tracker

__all__ = [
    "AsyncRelay",
    "AsyncTracker",
    "BadRequest",
    "Cancelled",
    "Event",
    "Forbidden",
    "Job",
    "JobFinished",
    "JobNotFound",
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
